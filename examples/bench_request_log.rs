//! What the request log costs execute: the time `InstanceLog::record` takes on the request path
//! (sampling, building the entry, offering it to the writer's channel), measured while the
//! writer thread serializes and writes the same entries to a file, as in the backend.
//!
//!     bench_request_log [ENTRIES] [RATE] [PATH]
//!
//! Records ENTRIES successful requests (default 200,000) at RATE per second (default 100,000,
//! far above what one server answers on a few cores; 0: as fast as possible, which measures how
//! many lines a second the writer sustains before it drops). Prints one JSON line: ns per
//! record (mean, p50 and p99 over batches of 1,000), entries dropped because the writer fell
//! behind, lines written, and the writer's lines per second.
// A benchmark tool: a bad argument should stop it with the reason.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::path::PathBuf;
use std::time::{Duration, Instant};

use triton_onnxrs::request_log::{InstanceNames, LoggedOutcome, ModelLog, RequestLog, RequestLogSettings, RunSize};

const BATCH: usize = 1000;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let entries: usize = args.get(1).map_or(200_000, |v| v.parse().expect("ENTRIES"));
    let rate: f64 = args.get(2).map_or(100_000.0, |v| v.parse().expect("RATE"));
    let path = args.get(3).map_or_else(
        || std::env::temp_dir().join(format!("onnxrs-bench-request-log-{}.jsonl", std::process::id())),
        PathBuf::from,
    );
    let _ = std::fs::remove_file(&path);
    let log = RequestLog::open(&RequestLogSettings { path: path.clone(), sample: 1.0 }).expect("open the log");
    let names = InstanceNames { model: "mlp_fp32".into(), version: 1, instance: "mlp_fp32_0_0".into() };
    let instance = ModelLog::new(&log, None).instance(names);

    let batches = entries.div_ceil(BATCH);
    let mut per_batch_ns = Vec::with_capacity(batches);
    let mut timed = Duration::ZERO;
    let start = Instant::now();
    for b in 0..batches {
        // Request ids as clients send them, made outside the timed loop (the server has them).
        let ids: Vec<String> = (0..BATCH).map(|i| format!("req-{:08}", b * BATCH + i)).collect();
        let t = Instant::now();
        for request_id in &ids {
            let outcome = LoggedOutcome::Success { input_ns: 21_000, infer_ns: 64_000, output_ns: 9_000 };
            instance.record(request_id, Some(RunSize { requests: 4, rows: 4 }), outcome);
        }
        let spent = t.elapsed();
        timed += spent;
        per_batch_ns.push(spent.as_nanos() as f64 / BATCH as f64);
        if rate > 0.0 {
            let due = Duration::from_secs_f64(((b + 1) * BATCH) as f64 / rate);
            if let Some(wait) = due.checked_sub(start.elapsed()) {
                std::thread::sleep(wait);
            }
        }
    }
    let dropped = log.dropped();
    drop(instance);
    drop(log); // waits until the writer has written and flushed everything
    let wall = start.elapsed().as_secs_f64();
    let lines = std::fs::read_to_string(&path).map(|t| t.lines().count()).unwrap_or(0);
    if args.get(3).is_none() {
        let _ = std::fs::remove_file(&path);
    }
    per_batch_ns.sort_by(f64::total_cmp);
    let pct = |p: f64| per_batch_ns[((per_batch_ns.len() - 1) as f64 * p).round() as usize];
    let n = batches * BATCH;
    println!(
        "{{\"entries\": {n}, \"rate_per_s\": {rate}, \"ns_per_record_mean\": {:.0}, \"ns_per_record_p50\": {:.0}, \"ns_per_record_p99\": {:.0}, \"dropped\": {dropped}, \"lines_written\": {lines}, \"writer_lines_per_s\": {:.0}}}",
        timed.as_nanos() as f64 / n as f64,
        pct(0.5),
        pct(0.99),
        lines as f64 / wall,
    );
}

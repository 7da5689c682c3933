//! What the request log costs execute: the time `InstanceLog::record` takes on the request path
//! (sampling, building the entry, offering it to the writer's channel), measured while the
//! writer thread serializes and writes the same entries to a file, as in the backend.
//!
//!     bench_request_log [ENTRIES] [RATE] [PATH]
//!
//! Records ENTRIES successful requests (default 200,000), one at a time, RATE a second (default
//! 100,000, far above what one server answers on a few cores): between two requests the writer
//! is idle, as in a server. Prints one JSON line: ns per record call (mean, p50, p99), entries
//! dropped because the writer fell behind, lines written, and lines written per second.
// A benchmark tool: a bad argument should stop it with the reason.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::path::PathBuf;
use std::time::{Duration, Instant};

use triton_onnxrs::request_log::{InstanceNames, LoggedOutcome, ModelLog, RequestLog, RequestLogSettings, RunSize};

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

    // Requests arrive one at a time, RATE a second (the writer idles between them, as in a
    // server); each record call is timed on its own (the clock reads add ~25 ns).
    let ids: Vec<String> = (0..entries).map(|i| format!("req-{i:08}")).collect();
    let mut per_call_ns = Vec::with_capacity(entries);
    let gap = if rate > 0.0 { Duration::from_secs_f64(1.0 / rate) } else { Duration::ZERO };
    let start = Instant::now();
    let mut due = start;
    for request_id in &ids {
        due += gap;
        while Instant::now() < due {
            std::hint::spin_loop();
        }
        let outcome = LoggedOutcome::Success { input_ns: 21_000, infer_ns: 64_000, output_ns: 9_000 };
        let t = Instant::now();
        instance.record(request_id, Some(RunSize { requests: 4, rows: 4 }), outcome);
        per_call_ns.push(t.elapsed().as_nanos() as f64);
    }
    let dropped = log.dropped();
    drop(instance);
    drop(log); // waits until the writer has written and flushed everything
    let wall = start.elapsed().as_secs_f64();
    let lines = std::fs::read_to_string(&path).map(|t| t.lines().count()).unwrap_or(0);
    if args.get(3).is_none() {
        let _ = std::fs::remove_file(&path);
    }
    let mean = per_call_ns.iter().sum::<f64>() / per_call_ns.len().max(1) as f64;
    per_call_ns.sort_by(f64::total_cmp);
    let pct =
        |p: f64| per_call_ns.get(((per_call_ns.len().max(1) - 1) as f64 * p).round() as usize).copied().unwrap_or(0.0);
    println!(
        "{{\"entries\": {entries}, \"rate_per_s\": {rate}, \"ns_per_record_mean\": {mean:.0}, \"ns_per_record_p50\": {:.0}, \"ns_per_record_p99\": {:.0}, \"dropped\": {dropped}, \"lines_written\": {lines}, \"writer_lines_per_s\": {:.0}}}",
        pct(0.5),
        pct(0.99),
        lines as f64 / wall,
    );
}

//! The benchmark's floor: the same ONNX Runtime session a model instance builds (same library,
//! same settings), called in-process in a loop with the same inputs (zeros), no server at all.
//!
//!     bench_floor ORT_LIBRARY MODEL.onnx BATCH SECONDS [INTRA_OP INTER_OP]
//!
//! Prints one JSON line: runs, seconds, inferences/s, p50/p99 latency in ms.
// A benchmark tool: a bad argument should stop it with the reason.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::path::Path;
use std::time::Instant;

use triton_onnxrs::dtype::DataType;
use triton_onnxrs::onnx::runtime;
use triton_onnxrs::onnx::session::{OnnxSession, SessionSettings};
use triton_onnxrs::onnx::tensor;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 5 {
        eprintln!("usage: bench_floor ORT_LIBRARY MODEL.onnx BATCH SECONDS [INTRA_OP INTER_OP]");
        std::process::exit(2);
    }
    let rt = runtime::init(Path::new(&args[1])).expect("load ONNX Runtime");
    let batch: i64 = args[3].parse().expect("BATCH");
    let seconds: f64 = args[4].parse().expect("SECONDS");
    let intra = args.get(5).map_or(2, |v| v.parse().expect("INTRA_OP"));
    let inter = args.get(6).map_or(1, |v| v.parse().expect("INTER_OP"));
    let settings = SessionSettings { intra_op_threads: intra, inter_op_threads: inter, ..SessionSettings::default() };
    let session = OnnxSession::load(&rt, Path::new(&args[2]), &settings, None).expect("load the model");
    let inputs: Vec<(String, DataType, Vec<i64>)> = session
        .io()
        .inputs
        .iter()
        .map(|t| {
            let shape: Vec<i64> = t
                .shape
                .iter()
                .enumerate()
                .map(|(i, &d)| if d < 0 { if i == 0 { batch } else { 1 } } else { d })
                .collect();
            (t.name.clone(), t.data_type.expect("a tensor input"), shape)
        })
        .collect();
    let buffers: Vec<Vec<u8>> = inputs
        .iter()
        .map(|(_, dt, shape)| {
            vec![0u8; shape.iter().product::<i64>() as usize * dt.byte_size().expect("fixed-size input")]
        })
        .collect();
    let tensors: Vec<_> = inputs
        .iter()
        .zip(&buffers)
        .map(|((_, dt, shape), b)| tensor::from_bytes(*dt, shape, b).expect("tensor"))
        .collect();
    let feeds: Vec<(&str, &tensor::InputTensor<'_>)> =
        inputs.iter().zip(&tensors).map(|((n, _, _), t)| (n.as_str(), t)).collect();
    // Warm-up: first runs allocate the arena and pick kernels.
    for _ in 0..3 {
        drop(session.run(&feeds).expect("run"));
    }
    let mut lat = Vec::new();
    let start = Instant::now();
    while start.elapsed().as_secs_f64() < seconds || lat.len() < 5 {
        let t = Instant::now();
        drop(session.run(&feeds).expect("run"));
        lat.push(t.elapsed().as_secs_f64() * 1e3);
    }
    let total = start.elapsed().as_secs_f64();
    lat.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let pct = |p: f64| lat[((lat.len() as f64 - 1.0) * p).round() as usize];
    let mean = lat.iter().sum::<f64>() / lat.len() as f64;
    println!(
        "{{\"runs\": {}, \"seconds\": {:.3}, \"infer_per_s\": {:.2}, \"mean_ms\": {:.4}, \"p50_ms\": {:.4}, \"p99_ms\": {:.4}, \"batch\": {}}}",
        lat.len(),
        total,
        lat.len() as f64 * batch as f64 / total,
        mean,
        pct(0.5),
        pct(0.99),
        batch
    );
}

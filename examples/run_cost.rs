//! What one run costs on top of ONNX Runtime itself: the backend's run path (`OnnxSession`:
//! an input tensor over our memory, the run, the output's shape and data read in place) against
//! the same steps written straight against ONNX Runtime's C API (names made once, a fixed array
//! for the shape: the least any backend can do), and against the same steps through `ort`'s
//! `Value` wrapper and `run_with_options` (onnxrs's run path before issue 12). Three sessions of
//! the same model with the same settings (one intra-op thread, so no pool noise), called in
//! many short rounds with the order rotated; figures are medians and minimums over the rounds.
//!
//!     run_cost ORT_LIBRARY MODEL.onnx [ROUNDS] [RUNS_PER_ROUND]
//!
//! Prints one JSON line: ns per run for each path (median and minimum over rounds), and
//! onnxrs's cost over the C API loop.
// A benchmark tool: a bad argument or a failed run should stop it with the reason.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::ffi::CString;
use std::path::Path;
use std::ptr;
use std::time::Instant;

use ort::AsPointer;
use ort::memory::{AllocationDevice, Allocator, AllocatorType, MemoryInfo, MemoryType};
use ort::session::builder::GraphOptimizationLevel;
use ort::session::{OutputSelector, RunOptions, Session};
use ort::value::{DynValue, TensorElementType};
use triton_onnxrs::dtype::DataType;
use triton_onnxrs::onnx::runtime;
use triton_onnxrs::onnx::session::{OnnxSession, SessionSettings};
use triton_onnxrs::onnx::tensor;

/// `ort`'s session, on an environment of `ort`'s own (ONNX Runtime hands it the process's one).
fn ort_session(env: &ort::environment::Environment, path: &Path) -> Session {
    Session::builder(env)
        .unwrap()
        .with_optimization_level(GraphOptimizationLevel::All)
        .unwrap()
        .with_intra_threads(1)
        .unwrap()
        .with_inter_threads(1)
        .unwrap()
        .commit_from_file(path)
        .unwrap()
}

fn input_tensor(info: &MemoryInfo<'_>, data: &mut [u8], shape: &[i64]) -> *mut ort::sys::OrtValue {
    let mut raw = ptr::null_mut();
    // SAFETY: `data` outlives the value, which the caller releases before touching `data` again.
    unsafe {
        ort::Error::result_from_status((ort::api().CreateTensorWithDataAsOrtValue)(
            info.ptr(),
            data.as_mut_ptr().cast(),
            data.len(),
            shape.as_ptr(),
            shape.len(),
            TensorElementType::Float32.into(),
            &mut raw,
        ))
        .unwrap()
    };
    raw
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 3 {
        eprintln!("usage: run_cost ORT_LIBRARY MODEL.onnx [ROUNDS] [RUNS_PER_ROUND]");
        std::process::exit(2);
    }
    let rt = runtime::init(Path::new(&args[1])).expect("load ONNX Runtime");
    let env = ort::init().with_name("run_cost").build().expect("ort's environment");
    let path = Path::new(&args[2]);
    // Many short rounds, the three paths side by side in each: load from other processes falls
    // on all three alike, and the minimum over rounds is the cost without it.
    let rounds: usize = args.get(3).map_or(201, |v| v.parse().expect("ROUNDS"));
    let runs: usize = args.get(4).map_or(300, |v| v.parse().expect("RUNS_PER_ROUND"));

    let settings = SessionSettings { intra_op_threads: 1, inter_op_threads: 1, ..SessionSettings::default() };
    let probe = OnnxSession::load(&rt, path, &settings, None).expect("load the model");
    let (input, output) = (probe.io().inputs[0].clone(), probe.io().outputs[0].clone());
    assert_eq!(input.data_type, Some(DataType::Fp32), "a model with one FP32 input");
    let shape: Vec<i64> = input.shape.iter().map(|&d| if d < 0 { 1 } else { d }).collect();
    let mut data = vec![0u8; shape.iter().product::<i64>() as usize * 4];
    let outputs = [output.name.clone()];

    // 1. The backend's run path.
    let onnxrs = OnnxSession::load(&rt, path, &settings, Some(&outputs)).expect("load the model");
    let onnxrs_run = |data: &mut [u8]| {
        let t = tensor::from_bytes(DataType::Fp32, &shape, data).unwrap();
        let out = onnxrs.run(&[(input.name.as_str(), &t)]).unwrap();
        std::hint::black_box(out.read(&output.name).unwrap().shape.len());
    };

    // 2. The same steps against the C API, names made once.
    let c_session = ort_session(&env, path);
    let info = MemoryInfo::new(AllocationDevice::CPU, 0, AllocatorType::Arena, MemoryType::Default).unwrap();
    let in_name = CString::new(input.name.as_str()).unwrap();
    let out_name = CString::new(output.name.as_str()).unwrap();
    let c_run = |data: &mut [u8]| {
        let value = input_tensor(&info, data, &shape);
        let mut out: *mut ort::sys::OrtValue = ptr::null_mut();
        let mut p: *mut std::ffi::c_void = ptr::null_mut();
        // SAFETY: a live session; one input and one output named by live C strings; the values
        // are ours and released once.
        unsafe {
            ort::Error::result_from_status((ort::api().Run)(
                c_session.ptr().cast_mut(),
                ptr::null(),
                &in_name.as_ptr(),
                &value.cast_const(),
                1,
                &out_name.as_ptr(),
                1,
                &mut out,
            ))
            .unwrap();
            // What any backend must learn of an output to answer: its shape and where it lies.
            let mut info = ptr::null_mut();
            ort::Error::result_from_status((ort::api().GetTensorTypeAndShape)(out, &mut info)).unwrap();
            let mut rank = 0usize;
            ort::Error::result_from_status((ort::api().GetDimensionsCount)(info, &mut rank)).unwrap();
            let mut dims = [0i64; 8];
            ort::Error::result_from_status((ort::api().GetDimensions)(info, dims.as_mut_ptr(), rank.min(8))).unwrap();
            (ort::api().ReleaseTensorTypeAndShapeInfo)(info);
            ort::Error::result_from_status((ort::api().GetTensorMutableData)(out, &mut p)).unwrap();
            std::hint::black_box((p, dims));
            (ort::api().ReleaseValue)(out);
            (ort::api().ReleaseValue)(value);
        }
    };

    // 3. Through ort's Value wrapper and run_with_options (the path before issue 12).
    let mut wrapped = ort_session(&env, path);
    let options = RunOptions::new().unwrap().with_outputs(OutputSelector::no_default().with(output.name.clone()));
    let mut wrapped_run = |data: &mut [u8]| {
        let raw = input_tensor(&info, data, &shape);
        // SAFETY: a tensor we own; dropping the wrapper releases it.
        let value = unsafe { DynValue::from_ptr(ptr::NonNull::new(raw).unwrap(), Some(&Allocator::default())) };
        let out = wrapped
            .run_with_options(
                vec![(input.name.as_str(), ort::session::SessionInputValue::from(value.view()))],
                &options,
            )
            .unwrap();
        let y = out.get(&output.name).unwrap();
        std::hint::black_box(y.dtype());
        let mut p: *mut std::ffi::c_void = ptr::null_mut();
        // SAFETY: a live output tensor.
        unsafe {
            ort::Error::result_from_status((ort::api().GetTensorMutableData)(y.ptr().cast_mut(), &mut p)).unwrap()
        };
        std::hint::black_box(p);
    };

    let mut times: [Vec<f64>; 3] = [Vec::new(), Vec::new(), Vec::new()];
    let mut timed = |which: usize, data: &mut [u8], keep: bool| {
        let start = Instant::now();
        for _ in 0..runs {
            match which {
                0 => onnxrs_run(data),
                1 => c_run(data),
                _ => wrapped_run(data),
            }
        }
        if keep {
            times[which].push(start.elapsed().as_nanos() as f64 / runs as f64);
        }
    };
    // Warm-up: the first runs size the arenas and pick kernels.
    for which in 0..3 {
        timed(which, &mut data, false);
    }
    for round in 0..rounds {
        for k in 0..3 {
            timed((round + k) % 3, &mut data, true);
        }
    }
    for v in &mut times {
        v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    }
    let median = |v: &Vec<f64>| v[v.len() / 2];
    let min = |v: &Vec<f64>| v[0];
    let [a, b, c] = &times;
    println!(
        "{{\"model\": \"{}\", \"rounds\": {rounds}, \"runs_per_round\": {runs}, \"median_ns\": {{\"onnxrs\": {:.0}, \"c_api\": {:.0}, \"ort_value\": {:.0}}}, \"min_ns\": {{\"onnxrs\": {:.0}, \"c_api\": {:.0}, \"ort_value\": {:.0}}}, \"onnxrs_over_c_api_ns\": {{\"median\": {:.0}, \"min\": {:.0}}}, \"ort_value_over_c_api_ns\": {{\"median\": {:.0}, \"min\": {:.0}}}}}",
        path.display(),
        median(a),
        median(b),
        median(c),
        min(a),
        min(b),
        min(c),
        median(a) - median(b),
        min(a) - min(b),
        median(c) - median(b),
        min(c) - min(b),
    );
}

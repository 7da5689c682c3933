//! ONNX Runtime level: our session, tensor and memory code against the real library and the
//! script-made test models, without a server. Needs `ONNXRS_TEST_MODELS` (the output folder of
//! tests/models/make_models.py) and `ONNXRS_ORT_LIBRARY` (libonnxruntime.so); `ci/test.sh` sets
//! both. Missing either fails the test with a message saying so, never skips it.
// Helpers outside #[test] functions may panic too: a panic is how a test fails.
#![allow(clippy::expect_used)]

use std::path::PathBuf;
use std::sync::Arc;

use triton_onnxrs::dtype::DataType;
use triton_onnxrs::onnx::runtime::{self, Runtime};
use triton_onnxrs::onnx::session::{OnnxSession, SessionSettings};
use triton_onnxrs::onnx::tensor::{self, OutputData};

fn env_path(key: &str) -> PathBuf {
    let v = std::env::var(key).unwrap_or_else(|_| panic!("{key} is not set: run `bash ci/test.sh`"));
    let p = PathBuf::from(v);
    assert!(p.exists(), "{key}={} does not exist: run `bash ci/test.sh`", p.display());
    p
}

fn rt() -> Arc<Runtime> {
    runtime::init(&env_path("ONNXRS_ORT_LIBRARY")).expect("load ONNX Runtime")
}

fn model(name: &str) -> PathBuf {
    env_path("ONNXRS_TEST_MODELS").join(name).join("1").join("model.onnx")
}

fn settings() -> SessionSettings {
    SessionSettings { intra_op_threads: 1, ..SessionSettings::default() }
}

fn f32s(bytes: &[u8]) -> Vec<f32> {
    bytes.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect()
}

#[test]
fn describes_inputs_outputs_and_initializer_backed_inputs() {
    let s = OnnxSession::load(&rt(), &model("optional_input"), &settings(), None).unwrap();
    let io = s.io();
    let names: Vec<&str> = io.inputs.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, ["X", "BIAS"]);
    assert!(io.overridable.contains("BIAS") && !io.overridable.contains("X"));
    assert_eq!(io.input("X").unwrap().shape, vec![2, 4]);
    assert_eq!(io.output("Y").unwrap().data_type, Some(DataType::Fp32));

    let s = OnnxSession::load(&rt(), &model("mlp_fp32"), &settings(), None).unwrap();
    assert_eq!(s.io().input("X").unwrap().shape, vec![-1, 16], "symbolic dims read as -1");
}

#[test]
fn runs_with_borrowed_input_and_reads_output_in_place() {
    let s = OnnxSession::load(&rt(), &model("gather_fail"), &settings(), None).unwrap();
    let idx: Vec<u8> = [4i64, 0, 2].iter().flat_map(|v| v.to_le_bytes()).collect();
    let t = tensor::from_bytes(DataType::Int64, &[1, 3], &idx).unwrap();
    let out = s.run(&[("IDX", &t)]).unwrap();
    let view = out.read("Y").unwrap();
    assert_eq!(view.shape, vec![1, 3]);
    let OutputData::Fixed(bytes) = view.data else { panic!("float output read as strings") };
    assert_eq!(f32s(bytes), vec![50.0, 10.0, 30.0]);
}

#[test]
fn a_failing_run_is_an_invalid_argument_error_and_the_session_stays_usable() {
    let s = OnnxSession::load(&rt(), &model("gather_fail"), &settings(), None).unwrap();
    let bad: Vec<u8> = 9i64.to_le_bytes().to_vec();
    let t = tensor::from_bytes(DataType::Int64, &[1, 1], &bad).unwrap();
    let Err(e) = s.run(&[("IDX", &t)]) else { panic!("index 9 is out of range, the run must fail") };
    assert_eq!(e.kind(), triton_onnxrs::error::ErrorKind::InvalidArg, "{e}");
    assert!(e.message().contains("out of data bounds"), "{e}");
    let good: Vec<u8> = 1i64.to_le_bytes().to_vec();
    let t = tensor::from_bytes(DataType::Int64, &[1, 1], &good).unwrap();
    let out = s.run(&[("IDX", &t)]).unwrap();
    let OutputData::Fixed(bytes) = out.read("Y").unwrap().data else { panic!() };
    assert_eq!(f32s(bytes), vec![20.0]);
}

#[test]
fn string_tensors_round_trip() {
    let s = OnnxSession::load(&rt(), &model("string_concat"), &settings(), None).unwrap();
    let elements: [&[u8]; 3] = [b"", "\u{e9}t\u{e9}".as_bytes(), b"x"];
    let t = tensor::from_strings(&[1, 3], &elements).unwrap();
    let out = s.run(&[("TEXT", &t)]).unwrap();
    let OutputData::Strings(got) = out.read("OUT").unwrap().data else { panic!("strings expected") };
    let got: Vec<&[u8]> = (0..got.len()).map(|i| got.get(i).unwrap()).collect();
    assert_eq!(got, [&b"|ok"[..], "\u{e9}t\u{e9}|ok".as_bytes(), b"x|ok"]);
}

#[test]
fn a_wrong_byte_count_never_reaches_onnx_runtime() {
    // Requests are checked before (inputs.rs); reaching here with a wrong count is our bug.
    let data = [0u8; 12];
    let e = tensor::from_bytes(DataType::Int64, &[1, 2], &data).err().expect("12 bytes are not 2 int64");
    assert_eq!(e.kind(), triton_onnxrs::error::ErrorKind::Internal, "{e}");
}

#[test]
fn the_arena_reports_what_it_holds() {
    let s = OnnxSession::load(&rt(), &model("mlp_fp32"), &settings(), None).unwrap();
    let x = vec![0u8; 64 * 16 * 4];
    let t = tensor::from_bytes(DataType::Fp32, &[64, 16], &x).unwrap();
    drop(s.run(&[("X", &t)]).unwrap());
    let held = s.allocator_bytes().expect("the CPU arena keeps statistics");
    // At least the run's activations (64 x 32 floats) were allocated through it.
    assert!(held >= 64 * 32 * 4, "{held}");

    let no_arena = SessionSettings { mem_arena: false, ..settings() };
    let s = OnnxSession::load(&rt(), &model("mlp_fp32"), &no_arena, None).unwrap();
    assert_eq!(s.allocator_bytes(), None, "no arena, no arena statistics");
}

#[test]
fn a_gpu_session_without_the_cuda_provider_fails_clearly() {
    // The test machine's library is the CPU build of ONNX Runtime: asking for the CUDA provider
    // must fail the load with a message that says what is missing, never fall back to the CPU.
    let gpu = SessionSettings {
        device: triton_onnxrs::onnx::session::Device::Cuda { device_id: 0, options: vec![] },
        ..settings()
    };
    let Err(e) = OnnxSession::load(&rt(), &model("mlp_fp32"), &gpu, None) else {
        panic!("a CUDA session loaded on the CPU build of ONNX Runtime")
    };
    let msg = e.message();
    assert!(msg.contains("CUDA execution provider on GPU 0") && msg.contains("onnxruntime-gpu"), "{msg}");
}

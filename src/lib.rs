//! onnxrs: a Triton Inference Server backend that serves ONNX models through ONNX Runtime.
//!
//! Layers, from the host inward:
//! - `sys`: the generated bindings to our declaration of Triton's C API;
//! - `triton`: safe handles over the server's objects, and the panic guard;
//! - `entry`: the exported TRITONBACKEND_* functions, each one call through the guard;
//! - the backend itself: `backend`, `model`, `instance` (the three states Triton keeps for us)
//!   and `execute`, built on pure pieces (`config`, `inputs`, `batch`, `bytes`, `dtype`, `clock`,
//!   `cpu`, `memory`) and `onnx`, the ONNX Runtime side.

pub mod backend;
pub mod batch;
pub mod bytes;
pub mod clock;
pub mod config;
pub mod cpu;
pub mod dtype;
mod entry;
pub mod error;
mod execute;
pub mod handover;
pub mod inputs;
pub mod instance;
pub mod memory;
mod metrics;
pub mod model;
pub mod onnx;
mod sys;
mod triton;

/// Stand-ins for the server's functions in the unit-test binary (see build.rs): never called.
#[cfg(test)]
#[allow(clippy::missing_safety_doc, non_snake_case)]
mod server_stubs {
    include!(concat!(env!("OUT_DIR"), "/test_stubs.rs"));
}

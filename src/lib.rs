//! onnxrs: a Triton Inference Server backend that serves ONNX models through ONNX Runtime.
//! ARCHITECTURE.md at the root of the repository maps the code.
//!
//! Layers, from the host inward:
//! - `sys`: the generated bindings to our declaration of Triton's C API;
//! - `triton`: safe handles over the server's objects, and the panic guard;
//! - `entry`: the exported TRITONBACKEND_* functions, each one call through the guard;
//! - the backend itself: `backend`, `model`, `instance` (the three states Triton keeps for us)
//!   and `execute`, built on pure pieces (`config`, `inputs`, `batch`, `bytes`, `dtype`, `clock`,
//!   `cpu`, `memory`) and `onnx`, the ONNX Runtime side.
//!
//! `unsafe` is denied here, for every module, and allowed again only on the ring below: the
//! modules that talk to C (Triton, ONNX Runtime, the OS), each with the reason it needs to.
#![deny(unsafe_code)]

pub mod backend;
pub mod batch;
pub mod bytes;
// Reads CLOCK_MONOTONIC through libc.
#[allow(unsafe_code)]
pub mod clock;
pub mod config;
// Asks the OS for the CPUs this process may run on (sched_getaffinity).
#[allow(unsafe_code)]
pub mod cpu;
pub mod dtype;
// The exported `extern "C"` functions: they take the server's raw pointers.
#[allow(unsafe_code)]
mod entry;
pub mod error;
mod execute;
pub mod generate;
pub mod handover;
pub mod hold;
pub mod inputs;
pub mod instance;
// Reads the allocator's figures (mallinfo2).
#[allow(unsafe_code)]
pub mod memory;
mod metrics;
pub mod model;
// Calls ONNX Runtime's C API where `ort` has no safe wrapper (tensors over our memory, allocator
// statistics).
#[allow(unsafe_code)]
pub mod onnx;
pub mod request_log;
mod response_timings;
// The generated bindings to Triton's C API.
#[allow(unsafe_code)]
mod sys;
// Safe handles over the server's objects: the only callers of `sys`.
#[allow(unsafe_code)]
mod triton;

/// Stand-ins for the server's functions in the unit-test binary (see build.rs): never called.
#[cfg(test)]
#[allow(unsafe_code, clippy::missing_safety_doc, non_snake_case)]
mod server_stubs {
    include!(concat!(env!("OUT_DIR"), "/test_stubs.rs"));
}

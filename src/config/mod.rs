//! The model configuration: reading it, completing it from the model, checking it against the
//! model, and the session settings it asks for.
// Safe Rust only: unsafe code lives in crate::triton, crate::onnx and the small OS modules.
#![deny(unsafe_code)]

pub mod autocomplete;
pub mod check;
pub mod model_config;
pub mod params;

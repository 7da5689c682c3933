//! The ONNX Runtime side: loading the library, building sessions, and moving tensors in and out.

pub mod runtime;
pub mod session;
pub mod tensor;

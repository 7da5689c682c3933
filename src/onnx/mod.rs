//! The ONNX Runtime side: loading the library, building sessions, and moving tensors in and out.
//! The only code that names `ort`: what leaves this module is the crate's own types (`DataType`,
//! `Error`, `OutputView`, `RunOutputs`).

pub mod arena;
pub(crate) mod element;
mod error;
pub mod runtime;
pub mod session;
pub mod tensor;
pub(crate) mod value;

//! The ONNX Runtime side: loading the library, building sessions, and moving tensors in and out.
//! The only code that names `ort`: what leaves this module is the crate's own types (`DataType`,
//! `Error`, `OutputView`, `RunOutputs`).

pub mod arena;
pub(crate) mod element;
pub mod env;
mod error;
pub mod io;
mod options;
pub mod runtime;
pub mod session;
pub mod tensor;
pub(crate) mod value;

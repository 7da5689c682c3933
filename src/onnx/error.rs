//! ONNX Runtime's errors as ours, so that `?` works on `ort` calls inside `crate::onnx` and
//! `crate::error` stays free of ONNX Runtime.

use crate::error::Error;

/// ONNX Runtime failures are internal errors unless a caller knows better (a bad request that
/// ORT rejects is mapped to `InvalidArg` where it is run).
impl<R> From<ort::Error<R>> for Error {
    fn from(e: ort::Error<R>) -> Self {
        Error::internal(format!("onnxruntime: {e}"))
    }
}

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

/// The status a C API call returned, as a `Result` (null is success).
///
/// # Safety
/// `status` is null or a status a call has just returned; it is consumed here and not used again.
pub(crate) unsafe fn check(status: ort::sys::OrtStatusPtr) -> Result<(), ort::Error> {
    // SAFETY: the caller's contract.
    unsafe { ort::Error::result_from_status(status) }
}

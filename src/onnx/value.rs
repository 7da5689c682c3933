//! An `OrtValue` we own, released on drop, and what a run needs to know of one: its element
//! type, its shape and where its data lies.
//!
//! The run path works on raw values rather than `ort`'s `Value`: wrapping a value there asks ONNX
//! Runtime for its type, its shape with symbolic dimension names, its memory info and (for a
//! session output) a new allocator handle, every time. That is a dozen C calls and as many heap
//! allocations per tensor per run, spent before and after a run of a few microseconds on small
//! models (issue 12's profile). Here a value is a pointer, and its type and shape are read once,
//! when an output is read.

use std::ptr::{self, NonNull};

use ort::value::TensorElementType;

use crate::error::{Error, Result};

/// An `OrtValue` created for us (a tensor over our memory, a string tensor, a run's output).
pub(crate) struct OwnedValue(NonNull<ort::sys::OrtValue>);

// SAFETY: an OrtValue is plain data owned by this handle alone; ONNX Runtime has no thread
// affinity for values.
unsafe impl Send for OwnedValue {}

impl OwnedValue {
    /// Takes ownership of `raw`, a value ONNX Runtime just created for us; null is an error.
    pub(crate) fn new(raw: *mut ort::sys::OrtValue) -> Result<Self> {
        NonNull::new(raw).map(OwnedValue).ok_or_else(|| Error::internal("onnxruntime returned a null value"))
    }

    pub(crate) fn ptr(&self) -> *mut ort::sys::OrtValue {
        self.0.as_ptr()
    }

    /// The value's element type and shape; an error for anything but a tensor.
    pub(crate) fn tensor_type(&self) -> Result<(TensorElementType, Vec<i64>)> {
        let mut kind = ort::sys::ONNXType::ONNX_TYPE_UNKNOWN;
        // SAFETY: a live value; `kind` is written by the call.
        unsafe { ort::Error::result_from_status((ort::api().GetValueType)(self.ptr(), &mut kind))? };
        if kind != ort::sys::ONNXType::ONNX_TYPE_TENSOR {
            return Err(Error::unsupported(format!("output is a {kind:?}, only tensors are supported")));
        }
        let mut info = ptr::null_mut();
        // SAFETY: a live tensor value; on success `info` is ours and released below.
        unsafe { ort::Error::result_from_status((ort::api().GetTensorTypeAndShape)(self.ptr(), &mut info))? };
        let info = TypeAndShape(NonNull::new(info).ok_or_else(|| Error::internal("onnxruntime returned no shape"))?);
        let mut element = ort::sys::ONNXTensorElementDataType::ONNX_TENSOR_ELEMENT_DATA_TYPE_UNDEFINED;
        let mut rank = 0usize;
        // SAFETY: `info` is live; each call writes one scalar.
        unsafe {
            ort::Error::result_from_status((ort::api().GetTensorElementType)(info.0.as_ptr(), &mut element))?;
            ort::Error::result_from_status((ort::api().GetDimensionsCount)(info.0.as_ptr(), &mut rank))?;
        }
        let mut shape = vec![0i64; rank];
        // SAFETY: `shape` holds exactly the `rank` dimensions the call writes.
        unsafe {
            ort::Error::result_from_status((ort::api().GetDimensions)(info.0.as_ptr(), shape.as_mut_ptr(), rank))?
        };
        Ok((element.into(), shape))
    }

    /// The address of a tensor's data (null for an empty tensor).
    pub(crate) fn data_ptr(&self) -> Result<*mut u8> {
        let mut p: *mut std::ffi::c_void = ptr::null_mut();
        // SAFETY: a live tensor value; the pointer stays owned by it.
        unsafe { ort::Error::result_from_status((ort::api().GetTensorMutableData)(self.ptr(), &mut p))? };
        Ok(p.cast())
    }
}

impl Drop for OwnedValue {
    fn drop(&mut self) {
        // SAFETY: we own the value and release it once. Releasing a tensor created over our
        // memory does not free that memory.
        unsafe { (ort::api().ReleaseValue)(self.ptr()) }
    }
}

/// `OrtTensorTypeAndShapeInfo`, released on drop.
struct TypeAndShape(NonNull<ort::sys::OrtTensorTypeAndShapeInfo>);

impl Drop for TypeAndShape {
    fn drop(&mut self) {
        // SAFETY: created for us by GetTensorTypeAndShape and released once.
        unsafe { (ort::api().ReleaseTensorTypeAndShapeInfo)(self.0.as_ptr()) }
    }
}

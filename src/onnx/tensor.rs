//! Tensors in and out of ONNX Runtime, for any element type, without going through typed arrays.
//!
//! Inputs are created over memory we already hold (a request's buffer, or our gather buffer):
//! ONNX Runtime reads it in place. Outputs are read in place from the values a run returns.

use std::marker::PhantomData;
use std::ptr::{self, NonNull};

use once_cell::sync::OnceCell;
use ort::AsPointer;
use ort::memory::{AllocationDevice, Allocator, AllocatorType, MemoryInfo, MemoryType};
use ort::session::SessionOutputs;
use ort::value::{DynValue, ValueType};

use crate::dtype::DataType;
use crate::error::{Error, Result};
use crate::onnx::element;

/// A value for `session.run` whose data may be borrowed for `'a`. The borrow is the lifetime
/// contract of `CreateTensorWithDataAsOrtValue`: ONNX Runtime keeps the pointer, not a copy.
pub struct InputTensor<'a> {
    value: DynValue,
    _data: PhantomData<&'a [u8]>,
}

impl InputTensor<'_> {
    pub(crate) fn value(&self) -> &DynValue {
        &self.value
    }
}

fn cpu_memory_info() -> Result<&'static MemoryInfo<'static>> {
    static INFO: OnceCell<MemoryInfo<'static>> = OnceCell::new();
    INFO.get_or_try_init(|| Ok(MemoryInfo::new(AllocationDevice::CPU, 0, AllocatorType::Arena, MemoryType::Default)?))
}

fn element_count(shape: &[i64]) -> Result<usize> {
    shape.iter().try_fold(1usize, |n, &d| {
        let d = usize::try_from(d).map_err(|_| Error::invalid_arg(format!("negative dimension {d}")))?;
        n.checked_mul(d).ok_or_else(|| Error::invalid_arg("tensor element count overflows"))
    })
}

/// Wraps a new OrtValue we own (the status said success).
fn wrap(raw: *mut ort::sys::OrtValue) -> Result<DynValue> {
    let raw = NonNull::new(raw).ok_or_else(|| Error::internal("onnxruntime returned a null value"))?;
    // SAFETY: `raw` is a valid tensor value that nobody else owns. The default allocator is passed
    // only because `ort` requires one for tensors; dropping the value releases the OrtValue,
    // which never frees memory it did not allocate.
    Ok(unsafe { DynValue::from_ptr(raw, Some(&Allocator::default())) })
}

/// A tensor of fixed-size elements over `data`, read in place.
pub fn from_bytes<'a>(data_type: DataType, shape: &[i64], data: &'a [u8]) -> Result<InputTensor<'a>> {
    let size = data_type.byte_size().ok_or_else(|| Error::internal("from_bytes called for a BYTES tensor"))?;
    let expected = element_count(shape)?.checked_mul(size).ok_or_else(|| Error::invalid_arg("tensor too large"))?;
    if expected != data.len() {
        return Err(Error::internal(format!("tensor of shape {shape:?} needs {expected} bytes, got {}", data.len())));
    }
    let mut raw = ptr::null_mut();
    // SAFETY: the memory info is a live static; `data` is valid for `data.len()` bytes and, by the
    // returned type's lifetime, outlives the value. ONNX Runtime does not write to run inputs, so
    // casting away const is sound.
    unsafe {
        ort::Error::result_from_status((ort::api().CreateTensorWithDataAsOrtValue)(
            cpu_memory_info()?.ptr(),
            data.as_ptr().cast_mut().cast(),
            data.len(),
            shape.as_ptr(),
            shape.len(),
            element::to_onnx(data_type).into(),
            &mut raw,
        ))?
    };
    Ok(InputTensor { value: wrap(raw)?, _data: PhantomData })
}

/// A string tensor holding copies of `elements` (ONNX Runtime owns string storage). Elements are
/// byte strings: embedded NULs and non-UTF-8 bytes are kept as they are.
pub fn from_strings(shape: &[i64], elements: &[&[u8]]) -> Result<InputTensor<'static>> {
    if element_count(shape)? != elements.len() {
        return Err(Error::internal(format!("string tensor of shape {shape:?} given {} elements", elements.len())));
    }
    let allocator = Allocator::default();
    let mut raw = ptr::null_mut();
    // SAFETY: valid allocator and shape; the new value is ours.
    unsafe {
        ort::Error::result_from_status((ort::api().CreateTensorAsOrtValue)(
            allocator.ptr().cast_mut(),
            shape.as_ptr(),
            shape.len(),
            element::to_onnx(DataType::Bytes).into(),
            &mut raw,
        ))?
    };
    let value = wrap(raw)?;
    for (index, element) in elements.iter().enumerate() {
        let mut buf: *mut std::ffi::c_char = ptr::null_mut();
        // SAFETY: `index` is within the tensor's element count (checked above); the returned
        // buffer holds exactly `element.len()` bytes owned by the value.
        unsafe {
            ort::Error::result_from_status((ort::api().GetResizedStringTensorElementBuffer)(
                raw,
                index,
                element.len(),
                &mut buf,
            ))?;
            if !element.is_empty() {
                ptr::copy_nonoverlapping(element.as_ptr(), buf.cast::<u8>(), element.len());
            }
        }
    }
    Ok(InputTensor { value, _data: PhantomData })
}

/// An output of a run, viewed in place.
pub struct OutputView<'v> {
    pub data_type: DataType,
    pub shape: Vec<i64>,
    pub data: OutputData<'v>,
}

pub enum OutputData<'v> {
    /// Fixed-size elements, row-major.
    Fixed(&'v [u8]),
    /// String elements, copied out of ONNX Runtime's storage.
    Strings(Strings),
}

/// String elements stored back to back, with the offset where each starts.
pub struct Strings {
    content: Vec<u8>,
    offsets: Vec<usize>,
}

impl Strings {
    pub fn len(&self) -> usize {
        self.offsets.len()
    }

    pub fn is_empty(&self) -> bool {
        self.offsets.is_empty()
    }

    pub fn get(&self, i: usize) -> Option<&[u8]> {
        let start = *self.offsets.get(i)?;
        let end = self.offsets.get(i + 1).copied().unwrap_or(self.content.len());
        self.content.get(start..end)
    }
}

/// The values one run returned, borrowed from the session until dropped.
pub struct RunOutputs<'s>(SessionOutputs<'s>);

impl<'s> RunOutputs<'s> {
    pub(crate) fn new(outputs: SessionOutputs<'s>) -> Self {
        RunOutputs(outputs)
    }

    /// The output `name`, viewed in place.
    pub fn read(&self, name: &str) -> Result<OutputView<'_>> {
        let value =
            self.0.get(name).ok_or_else(|| Error::internal(format!("onnxruntime returned no output '{name}'")))?;
        read_output(value).map_err(|e| e.context(format_args!("output '{name}'")))
    }
}

/// Reads an output value: its type, real shape and data. Only CPU-resident tensors.
fn read_output(value: &DynValue) -> Result<OutputView<'_>> {
    let ValueType::Tensor { ty, shape, .. } = value.dtype() else {
        return Err(Error::unsupported(format!("output is a {:?}, only tensors are supported", value.dtype())));
    };
    let data_type = element::from_onnx(*ty)
        .ok_or_else(|| Error::unsupported(format!("output element type {ty} has no Triton equivalent")))?;
    let shape: Vec<i64> = shape.to_vec();
    let count = element_count(&shape)?;
    let data = match data_type.byte_size() {
        Some(size) => {
            let len = count * size;
            let mut p: *mut std::ffi::c_void = ptr::null_mut();
            // SAFETY: `value` is a live tensor; the pointer stays owned by it.
            unsafe {
                ort::Error::result_from_status((ort::api().GetTensorMutableData)(value.ptr().cast_mut(), &mut p))?
            };
            let p = p.cast::<u8>().cast_const();
            if len == 0 {
                OutputData::Fixed(&[])
            } else if p.is_null() {
                return Err(Error::internal("onnxruntime returned an output without data"));
            } else {
                // SAFETY: a CPU tensor of `count` elements of `size` bytes owned by `value`, which
                // the returned view borrows.
                OutputData::Fixed(unsafe { std::slice::from_raw_parts(p, len) })
            }
        }
        None => OutputData::Strings(read_strings(value, count)?),
    };
    Ok(OutputView { data_type, shape, data })
}

fn read_strings(value: &DynValue, count: usize) -> Result<Strings> {
    let mut total = 0usize;
    // SAFETY: `value` is a live string tensor.
    unsafe { ort::Error::result_from_status((ort::api().GetStringTensorDataLength)(value.ptr(), &mut total))? };
    let mut content = vec![0u8; total];
    let mut offsets = vec![0usize; count];
    if count > 0 {
        // SAFETY: buffers sized as ONNX Runtime reported: `total` bytes and `count` offsets.
        unsafe {
            ort::Error::result_from_status((ort::api().GetStringTensorContent)(
                value.ptr(),
                content.as_mut_ptr().cast(),
                total,
                offsets.as_mut_ptr(),
                count,
            ))?
        };
    }
    Ok(Strings { content, offsets })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn element_count_checks() {
        assert_eq!(element_count(&[]).unwrap(), 1);
        assert_eq!(element_count(&[2, 0, 3]).unwrap(), 0);
        assert!(element_count(&[-1]).is_err());
        assert!(element_count(&[i64::MAX, i64::MAX]).is_err());
    }

    #[test]
    fn strings_index_by_offsets() {
        let s = Strings { content: b"abcde".to_vec(), offsets: vec![0, 2, 2] };
        assert_eq!(s.get(0), Some(&b"ab"[..]));
        assert_eq!(s.get(1), Some(&b""[..]));
        assert_eq!(s.get(2), Some(&b"cde"[..]));
        assert_eq!(s.get(3), None);
    }
}

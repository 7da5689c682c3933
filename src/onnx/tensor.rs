//! Tensors in and out of ONNX Runtime, for any element type, without going through typed arrays.
//!
//! Inputs are created over memory we already hold (a request's buffer, or our gather buffer):
//! ONNX Runtime reads it in place. Outputs are read in place from the values a run returns.

use std::marker::PhantomData;
use std::ptr;

use once_cell::sync::OnceCell;
use ort::AsPointer;
use ort::memory::{AllocationDevice, Allocator, AllocatorType, MemoryInfo, MemoryType};

use crate::dtype::DataType;
use crate::error::{Error, Result};
use crate::onnx::element;
use crate::onnx::value::OwnedValue;

/// A value for `session.run` whose data may be borrowed for `'a`. The borrow is the lifetime
/// contract of `CreateTensorWithDataAsOrtValue`: ONNX Runtime keeps the pointer, not a copy.
pub struct InputTensor<'a> {
    value: OwnedValue,
    _data: PhantomData<&'a [u8]>,
}

impl InputTensor<'_> {
    pub(crate) fn value(&self) -> &OwnedValue {
        &self.value
    }
}

/// A tensor a run writes its output into, over memory the caller holds for `'a` (a response's
/// output buffer): the output is then written once, by ONNX Runtime, with no copy after the run.
/// ONNX Runtime fails the run when the output's real shape differs from this one.
pub struct OutputTensor<'a> {
    value: OwnedValue,
    _data: PhantomData<&'a mut [u8]>,
}

impl OutputTensor<'_> {
    pub(crate) fn into_value(self) -> OwnedValue {
        self.value
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

/// A tensor value over `len` bytes at `data` (which the caller keeps alive and, for an input,
/// unwritten by others while the value lives).
fn over_memory(data_type: DataType, shape: &[i64], data: *mut u8, len: usize) -> Result<OwnedValue> {
    let size = data_type.byte_size().ok_or_else(|| Error::internal("a BYTES tensor cannot lie over raw memory"))?;
    let expected = element_count(shape)?.checked_mul(size).ok_or_else(|| Error::invalid_arg("tensor too large"))?;
    if expected != len {
        return Err(Error::internal(format!("tensor of shape {shape:?} needs {expected} bytes, got {len}")));
    }
    let mut raw = ptr::null_mut();
    // SAFETY: the memory info is a live static; `data` is valid for `len` bytes for as long as the
    // caller's borrow, which the returned value's wrapper carries.
    unsafe {
        ort::Error::result_from_status((ort::api().CreateTensorWithDataAsOrtValue)(
            cpu_memory_info()?.ptr(),
            data.cast(),
            len,
            shape.as_ptr(),
            shape.len(),
            element::to_onnx(data_type).into(),
            &mut raw,
        ))?
    };
    OwnedValue::new(raw)
}

/// A tensor of fixed-size elements over `data`, read in place.
pub fn from_bytes<'a>(data_type: DataType, shape: &[i64], data: &'a [u8]) -> Result<InputTensor<'a>> {
    // ONNX Runtime does not write to run inputs, so casting away const is sound.
    let value = over_memory(data_type, shape, data.as_ptr().cast_mut(), data.len())?;
    Ok(InputTensor { value, _data: PhantomData })
}

/// A tensor of fixed-size elements over `buffer`, for a run to write an output into.
pub fn output_into<'a>(data_type: DataType, shape: &[i64], buffer: &'a mut [u8]) -> Result<OutputTensor<'a>> {
    let value = over_memory(data_type, shape, buffer.as_mut_ptr(), buffer.len())?;
    Ok(OutputTensor { value, _data: PhantomData })
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
    let value = OwnedValue::new(raw)?;
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

/// The values one run returned, in the session's output order, borrowed (with the buffers
/// outputs were written into) until dropped.
pub struct RunOutputs<'s> {
    names: &'s [String],
    values: Vec<OwnedValue>,
    _borrows: PhantomData<&'s mut [u8]>,
}

impl<'s> RunOutputs<'s> {
    pub(crate) fn new(names: &'s [String], values: Vec<OwnedValue>) -> Self {
        RunOutputs { names, values, _borrows: PhantomData }
    }

    /// The output `name`, viewed in place.
    pub fn read(&self, name: &str) -> Result<OutputView<'_>> {
        let value = self
            .names
            .iter()
            .position(|n| n == name)
            .and_then(|i| self.values.get(i))
            .ok_or_else(|| Error::internal(format!("onnxruntime returned no output '{name}'")))?;
        read_output(value).map_err(|e| e.context(format_args!("output '{name}'")))
    }
}

/// Reads an output value: its type, real shape and data. Only CPU-resident tensors.
fn read_output(value: &OwnedValue) -> Result<OutputView<'_>> {
    let (ty, shape) = value.tensor_type()?;
    let data_type = element::from_onnx(ty)
        .ok_or_else(|| Error::unsupported(format!("output element type {ty} has no Triton equivalent")))?;
    let count = element_count(&shape)?;
    let data = match data_type.byte_size() {
        Some(size) => {
            let len = count * size;
            let p = value.data_ptr()?.cast_const();
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

fn read_strings(value: &OwnedValue, count: usize) -> Result<Strings> {
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

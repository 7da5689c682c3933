//! TRITONBACKEND_Request and its inputs. `Request` is a borrowed view; `OwnedRequest` is the
//! ownership execute takes at its commit point and gives back (releases) on drop.

use std::ffi::{CStr, c_char};
use std::marker::PhantomData;
use std::ptr::{self, NonNull};

use crate::dtype::DataType;
use crate::error::{Error, Result};
use crate::sys;
use crate::triton::error::check_server_error;
use crate::triton::{MemoryType, borrowed_str, data_type_from_sys};

#[derive(Clone, Copy)]
pub(crate) struct Request<'a> {
    raw: NonNull<sys::TRITONBACKEND_Request>,
    _life: PhantomData<&'a ()>,
}

impl<'a> Request<'a> {
    pub(crate) fn ptr(&self) -> *mut sys::TRITONBACKEND_Request {
        self.raw.as_ptr()
    }

    /// The client's request id; empty when it set none.
    pub(crate) fn id(&self) -> Result<&'a str> {
        let mut p: *const c_char = ptr::null();
        // SAFETY: live request; the id is owned by it.
        unsafe { check_server_error(sys::TRITONBACKEND_RequestId(self.ptr(), &mut p))? };
        if p.is_null() {
            return Ok("");
        }
        // SAFETY: as above.
        unsafe { borrowed_str(p, "request id") }
    }

    pub(crate) fn is_cancelled(&self) -> Result<bool> {
        let mut b = false;
        // SAFETY: live request.
        unsafe { check_server_error(sys::TRITONBACKEND_RequestIsCancelled(self.ptr(), &mut b))? };
        Ok(b)
    }

    /// Where the request lies in its sequence: (starts it, ends it).
    pub(crate) fn sequence_flags(&self) -> Result<(bool, bool)> {
        let mut flags = 0u32;
        // SAFETY: live request.
        unsafe { check_server_error(sys::TRITONBACKEND_RequestFlags(self.ptr(), &mut flags))? };
        Ok((flags & sys::ONNXRS_REQUEST_FLAG_SEQUENCE_START != 0, flags & sys::ONNXRS_REQUEST_FLAG_SEQUENCE_END != 0))
    }

    /// Whether the request carries a correlation id: a non-zero integer or a non-empty string.
    /// Clients cannot send a sequence's request without one; the null requests Triton adds to
    /// fill the empty slots of a Direct batch have none.
    pub(crate) fn has_correlation_id(&self) -> Result<bool> {
        let mut id = 0u64;
        // SAFETY: live request.
        if unsafe { check_server_error(sys::TRITONBACKEND_RequestCorrelationId(self.ptr(), &mut id)) }.is_ok() {
            return Ok(id != 0);
        }
        let mut p: *const c_char = ptr::null();
        // SAFETY: live request; the string is owned by it.
        unsafe { check_server_error(sys::TRITONBACKEND_RequestCorrelationIdString(self.ptr(), &mut p))? };
        // SAFETY: null, or a NUL-terminated string the request owns while it is borrowed.
        Ok(!p.is_null() && !unsafe { CStr::from_ptr(p) }.to_bytes().is_empty())
    }

    /// The value of the request parameter `name` (the client's `parameters`), if it has one.
    pub(crate) fn parameter(&self, name: &str) -> Result<Option<ParameterValue<'a>>> {
        let mut count = 0u32;
        // SAFETY: live request.
        unsafe { check_server_error(sys::TRITONBACKEND_RequestParameterCount(self.ptr(), &mut count))? };
        for index in 0..count {
            let mut key: *const c_char = ptr::null();
            let mut kind = sys::TRITONSERVER_ParameterType::TRITONSERVER_PARAMETER_STRING;
            let mut value: *const std::ffi::c_void = ptr::null();
            // SAFETY: live request, index below its count; the key and value are owned by it.
            unsafe {
                check_server_error(sys::TRITONBACKEND_RequestParameter(
                    self.ptr(),
                    index,
                    &mut key,
                    &mut kind,
                    &mut value,
                ))?
            };
            // SAFETY: a NUL-terminated key the request owns for 'a.
            if unsafe { borrowed_str(key, "parameter name") }? != name {
                continue;
            }
            if value.is_null() {
                return Ok(Some(ParameterValue::Other));
            }
            use sys::TRITONSERVER_ParameterType as T;
            // SAFETY: the server documents what `value` points at for each type; it is owned by
            // the request for 'a.
            let v = unsafe {
                match kind {
                    T::TRITONSERVER_PARAMETER_BOOL => ParameterValue::Bool(*value.cast::<bool>()),
                    T::TRITONSERVER_PARAMETER_INT => ParameterValue::Int(*value.cast::<i64>()),
                    T::TRITONSERVER_PARAMETER_STRING => ParameterValue::Str(borrowed_str(value.cast(), "parameter")?),
                    _ => ParameterValue::Other,
                }
            };
            return Ok(Some(v));
        }
        Ok(None)
    }

    pub(crate) fn input_count(&self) -> Result<u32> {
        let mut n = 0u32;
        // SAFETY: live request.
        unsafe { check_server_error(sys::TRITONBACKEND_RequestInputCount(self.ptr(), &mut n))? };
        Ok(n)
    }

    pub(crate) fn input(&self, index: u32) -> Result<Input<'a>> {
        let mut raw = ptr::null_mut();
        // SAFETY: live request; the input is owned by it.
        unsafe { check_server_error(sys::TRITONBACKEND_RequestInputByIndex(self.ptr(), index, &mut raw))? };
        let raw = NonNull::new(raw).ok_or_else(|| Error::internal("server returned a null input"))?;
        Ok(Input { raw, _life: PhantomData })
    }

    pub(crate) fn output_count(&self) -> Result<u32> {
        let mut n = 0u32;
        // SAFETY: live request.
        unsafe { check_server_error(sys::TRITONBACKEND_RequestOutputCount(self.ptr(), &mut n))? };
        Ok(n)
    }

    /// The name of the index-th output the client asked for (the server fills in all of the
    /// model's outputs when the client names none).
    pub(crate) fn output_name(&self, index: u32) -> Result<&'a str> {
        let mut p: *const c_char = ptr::null();
        // SAFETY: live request; the name is owned by it.
        unsafe { check_server_error(sys::TRITONBACKEND_RequestOutputName(self.ptr(), index, &mut p))? };
        // SAFETY: as above.
        unsafe { borrowed_str(p, "requested output name") }
    }

    /// Adds `(timestamp, name)` activities to the request's trace, when Triton traces it (a
    /// request without a trace, or a failure, changes nothing: tracing must not fail requests).
    pub(crate) fn report_trace_activities(&self, activities: &[(u64, &CStr)]) {
        let mut trace = ptr::null_mut();
        // SAFETY: live request; the trace (if any) is owned by it.
        if unsafe { check_server_error(sys::TRITONBACKEND_RequestTrace(self.ptr(), &mut trace)) }.is_err()
            || trace.is_null()
        {
            return;
        }
        for (ts, name) in activities {
            // SAFETY: live trace of a live request; the name is copied.
            let _ = unsafe {
                check_server_error(sys::TRITONSERVER_InferenceTraceReportActivity(trace, *ts, name.as_ptr()))
            };
        }
    }
}

/// A request execute has taken from the server; released (given back) when dropped.
pub(crate) struct OwnedRequest {
    raw: NonNull<sys::TRITONBACKEND_Request>,
}

// SAFETY: the server's request calls may be made from any thread (decoupled backends answer
// and release requests on threads of their own); an `OwnedRequest` is used by one at a time.
unsafe impl Send for OwnedRequest {}

impl OwnedRequest {
    /// # Safety
    /// `raw` is a request passed to TRITONBACKEND_ModelInstanceExecute, and that call will return
    /// success: from now on the backend owns it and nothing else releases it.
    pub(crate) unsafe fn take(raw: *mut sys::TRITONBACKEND_Request) -> Option<Self> {
        NonNull::new(raw).map(|raw| OwnedRequest { raw })
    }

    pub(crate) fn view(&self) -> Request<'_> {
        Request { raw: self.raw, _life: PhantomData }
    }
}

impl Drop for OwnedRequest {
    fn drop(&mut self) {
        // SAFETY: we own the request and release it exactly once, here.
        let r = unsafe {
            check_server_error(sys::TRITONBACKEND_RequestRelease(self.raw.as_ptr(), sys::ONNXRS_REQUEST_RELEASE_ALL))
        };
        if let Err(e) = r {
            log::error!("onnxrs: failed to release a request: {e}");
        }
    }
}

/// A request parameter's value, as the client sent it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum ParameterValue<'a> {
    Bool(bool),
    Int(i64),
    Str(&'a str),
    /// A double or bytes: no setting of ours takes one.
    Other,
}

/// One input tensor of a request.
#[derive(Clone, Copy)]
pub(crate) struct Input<'a> {
    raw: NonNull<sys::TRITONBACKEND_Input>,
    _life: PhantomData<&'a ()>,
}

/// What the client declared about an input.
#[derive(Debug, Clone, Copy)]
pub(crate) struct InputProperties<'a> {
    pub name: &'a str,
    /// `None` when the server sent a type we do not know.
    pub data_type: Option<DataType>,
    pub shape: &'a [i64],
    pub buffer_count: u32,
}

/// One piece of an input's data: where it is and how long.
#[derive(Debug, Clone, Copy)]
pub(crate) enum InputBuffer<'a> {
    /// In memory the CPU can read (plain or pinned).
    Host(&'a [u8]),
    /// In GPU memory (the CPU path cannot read it).
    Device { len: usize, device: i64 },
}

impl<'a> Input<'a> {
    pub(crate) fn properties(&self) -> Result<InputProperties<'a>> {
        let mut name: *const c_char = ptr::null();
        let mut dt = sys::TRITONSERVER_DataType::TRITONSERVER_TYPE_INVALID;
        let mut shape: *const i64 = ptr::null();
        let mut dims = 0u32;
        let mut byte_size = 0u64;
        let mut buffer_count = 0u32;
        // SAFETY: live input; every out-pointer is valid; returned pointers are owned by the request.
        unsafe {
            check_server_error(sys::TRITONBACKEND_InputProperties(
                self.raw.as_ptr(),
                &mut name,
                &mut dt,
                &mut shape,
                &mut dims,
                &mut byte_size,
                &mut buffer_count,
            ))?
        };
        // SAFETY: the name is owned by the request, alive for 'a.
        let name = unsafe { borrowed_str(name, "input name") }?;
        let shape = if dims == 0 || shape.is_null() {
            &[][..]
        } else {
            // SAFETY: the server returned `dims` dimensions at `shape`, owned by the request.
            unsafe { std::slice::from_raw_parts(shape, dims as usize) }
        };
        Ok(InputProperties { name, data_type: data_type_from_sys(dt), shape, buffer_count })
    }

    pub(crate) fn buffer(&self, index: u32) -> Result<InputBuffer<'a>> {
        let mut base: *const std::ffi::c_void = ptr::null();
        let mut len = 0u64;
        // Asking for CPU memory lets the server copy GPU data for us when it has to; what it
        // returns tells where the buffer really is.
        let mut mem = sys::TRITONSERVER_MemoryType::TRITONSERVER_MEMORY_CPU;
        let mut device = 0i64;
        // SAFETY: live input; out-pointers valid; the buffer is owned by the request.
        unsafe {
            check_server_error(sys::TRITONBACKEND_InputBuffer(
                self.raw.as_ptr(),
                index,
                &mut base,
                &mut len,
                &mut mem,
                &mut device,
            ))?
        };
        let len = usize::try_from(len).map_err(|_| Error::invalid_arg("input buffer exceeds the address space"))?;
        match MemoryType::from_sys(mem)? {
            MemoryType::Gpu => Ok(InputBuffer::Device { len, device }),
            _ if len == 0 => Ok(InputBuffer::Host(&[])),
            _ if base.is_null() => Err(Error::internal("server returned a null input buffer")),
            // SAFETY: host memory of `len` bytes owned by the request, unchanged while it lives.
            _ => Ok(InputBuffer::Host(unsafe { std::slice::from_raw_parts(base.cast::<u8>(), len) })),
        }
    }
}

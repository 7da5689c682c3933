//! TRITONBACKEND_Response and its outputs. A response is sent exactly once; one dropped unsent
//! answers its client with an internal error instead of leaving it waiting.

use std::ffi::c_void;
use std::ptr::{self, NonNull};

use crate::dtype::DataType;
use crate::error::{Error, Result};
use crate::sys;
use crate::triton::error::{ServerError, c_string, check_server_error};
use crate::triton::factory::ResponseFactory;
use crate::triton::request::Request;
use crate::triton::{MemoryType, data_type_to_sys};

pub(crate) struct Response {
    raw: Option<NonNull<sys::TRITONBACKEND_Response>>,
}

/// Where an output's bytes must be written.
pub(crate) enum OutputBuffer<'r> {
    Host(&'r mut [u8]),
    /// GPU memory on `device` (the CPU path cannot write it).
    Device {
        device: i64,
    },
}

impl Response {
    pub(crate) fn new(request: Request<'_>) -> Result<Self> {
        let mut raw = ptr::null_mut();
        // SAFETY: live request; the new response is ours until sent.
        unsafe { check_server_error(sys::TRITONBACKEND_ResponseNew(&mut raw, request.ptr()))? };
        let raw = NonNull::new(raw).ok_or_else(|| Error::internal("server returned a null response"))?;
        Ok(Response { raw: Some(raw) })
    }

    /// A response of a decoupled model's stream, from its request's factory.
    pub(crate) fn from_factory(factory: &ResponseFactory) -> Result<Self> {
        let mut raw = ptr::null_mut();
        // SAFETY: a live factory; the new response is ours until sent.
        unsafe { check_server_error(sys::TRITONBACKEND_ResponseNewFromFactory(&mut raw, factory.ptr()))? };
        let raw = NonNull::new(raw).ok_or_else(|| Error::internal("server returned a null response"))?;
        Ok(Response { raw: Some(raw) })
    }

    fn ptr(&self) -> Result<*mut sys::TRITONBACKEND_Response> {
        self.raw.map(NonNull::as_ptr).ok_or_else(|| Error::internal("response already sent"))
    }

    /// A parameter the response carries to its client.
    pub(crate) fn set_int_parameter(&self, name: &std::ffi::CStr, value: i64) -> Result<()> {
        // SAFETY: a live response; the server copies the name.
        unsafe { check_server_error(sys::TRITONBACKEND_ResponseSetIntParameter(self.ptr()?, name.as_ptr(), value)) }
    }

    /// A parameter the response carries to its client.
    pub(crate) fn set_string_parameter(&self, name: &std::ffi::CStr, value: &str) -> Result<()> {
        let value = c_string(value);
        // SAFETY: a live response; the server copies the name and the value.
        unsafe {
            check_server_error(sys::TRITONBACKEND_ResponseSetStringParameter(
                self.ptr()?,
                name.as_ptr(),
                value.as_ptr(),
            ))
        }
    }

    /// Adds an output tensor and returns the buffer its data goes into. `preferred` is where we
    /// would like it; the buffer says where the server put it. Takes `&self`: each output has a
    /// buffer of its own, so buffers of several outputs may be held at once (a run writes them
    /// all); sending or dropping the response needs it whole, so no buffer outlives it.
    // The arguments of TRITONBACKEND_ResponseOutput and TRITONBACKEND_OutputBuffer, one for one.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn output_buffer(
        &self,
        name: &str,
        data_type: DataType,
        shape: &[i64],
        byte_size: usize,
        preferred: (MemoryType, i64),
    ) -> Result<OutputBuffer<'_>> {
        let cname = c_string(name);
        let dims = u32::try_from(shape.len()).map_err(|_| Error::invalid_arg("output rank too large"))?;
        let mut output = ptr::null_mut();
        // SAFETY: live response; `cname` and `shape` outlive the call, which copies them.
        unsafe {
            check_server_error(sys::TRITONBACKEND_ResponseOutput(
                self.ptr()?,
                &mut output,
                cname.as_ptr(),
                data_type_to_sys(data_type),
                shape.as_ptr(),
                dims,
            ))?
        };
        if output.is_null() {
            return Err(Error::internal(format!("server returned a null output for '{name}'")));
        }
        let mut buffer: *mut c_void = ptr::null_mut();
        let mut mem = preferred.0.to_sys();
        let mut device = preferred.1;
        // SAFETY: `output` is owned by the live response; the buffer it returns stays valid until
        // the response is sent or deleted, which the borrow of `self` prevents while it lasts.
        unsafe {
            check_server_error(sys::TRITONBACKEND_OutputBuffer(
                output,
                &mut buffer,
                byte_size as u64,
                &mut mem,
                &mut device,
            ))?
        };
        match MemoryType::from_sys(mem)? {
            MemoryType::Gpu => Ok(OutputBuffer::Device { device }),
            _ if byte_size == 0 => Ok(OutputBuffer::Host(&mut [])),
            _ if buffer.is_null() => Err(Error::internal(format!("server gave a null buffer for output '{name}'"))),
            // SAFETY: `byte_size` writable host bytes owned by the response, for the output just
            // added: no other buffer handed out overlaps them, and they live while `self` does.
            _ => Ok(OutputBuffer::Host(unsafe { std::slice::from_raw_parts_mut(buffer.cast::<u8>(), byte_size) })),
        }
    }

    /// Sends the response (with its outputs on `Ok`, as an error otherwise). Consumes it: a
    /// response is sent once.
    pub(crate) fn send(self, outcome: Result<()>) -> Result<()> {
        self.send_in_stream(true, outcome)
    }

    /// Sends one response of a stream; `last` marks it final (no more follow for its request).
    pub(crate) fn send_in_stream(mut self, last: bool, outcome: Result<()>) -> Result<()> {
        let raw = self.raw.take().ok_or_else(|| Error::internal("response already sent"))?;
        send_raw(raw, if last { sys::ONNXRS_RESPONSE_COMPLETE_FINAL } else { 0 }, outcome)
    }
}

fn send_raw(raw: NonNull<sys::TRITONBACKEND_Response>, flags: u32, outcome: Result<()>) -> Result<()> {
    let err = match &outcome {
        Ok(()) => None,
        Err(e) => Some(ServerError::new(e).ok_or_else(|| Error::internal("cannot allocate an error"))?),
    };
    let err_ptr = err.as_ref().map_or(ptr::null_mut(), ServerError::as_ptr);
    // SAFETY: we own the response and give it up here. The error stays ours (ResponseSend does
    // not take it) and is deleted when `err` drops after the call.
    let r = unsafe { check_server_error(sys::TRITONBACKEND_ResponseSend(raw.as_ptr(), flags, err_ptr)) };
    drop(err);
    r
}

impl Drop for Response {
    fn drop(&mut self) {
        if let Some(raw) = self.raw.take() {
            let e = Error::internal("onnxrs: the response was dropped before it was sent");
            if let Err(send_err) = send_raw(raw, sys::ONNXRS_RESPONSE_COMPLETE_FINAL, Err(e)) {
                log::error!("onnxrs: failed to send a fallback error response: {send_err}");
            }
        }
    }
}

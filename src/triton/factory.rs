//! TRITONBACKEND_ResponseFactory: made from a request, deleted on drop. A factory holds a
//! reference on the request's model, so the server cannot destroy the model while one lives.

use std::ptr::{self, NonNull};

use crate::error::{Error, Result};
use crate::sys;
use crate::triton::error::check_server_error;
use crate::triton::request::Request;

pub(crate) struct ResponseFactory(NonNull<sys::TRITONBACKEND_ResponseFactory>);

// SAFETY: the server's response factories may be used and deleted from any thread.
unsafe impl Send for ResponseFactory {}

impl ResponseFactory {
    pub(crate) fn new(request: Request<'_>) -> Result<Self> {
        let mut raw = ptr::null_mut();
        // SAFETY: a live request; on success we own the factory.
        unsafe { check_server_error(sys::TRITONBACKEND_ResponseFactoryNew(&mut raw, request.ptr()))? };
        NonNull::new(raw).map(ResponseFactory).ok_or_else(|| Error::internal("the server returned no response factory"))
    }

    pub(crate) fn ptr(&self) -> *mut sys::TRITONBACKEND_ResponseFactory {
        self.0.as_ptr()
    }

    /// Ends the request's stream without a response (its last response was sent without the
    /// final flag).
    pub(crate) fn send_final(&self) -> Result<()> {
        // SAFETY: a live factory.
        unsafe {
            check_server_error(sys::TRITONBACKEND_ResponseFactorySendFlags(
                self.ptr(),
                sys::ONNXRS_RESPONSE_COMPLETE_FINAL,
            ))
        }
    }

    /// Whether the client cancelled the request (or went away).
    pub(crate) fn is_cancelled(&self) -> Result<bool> {
        let mut cancelled = false;
        // SAFETY: a live factory; `cancelled` is written by the call.
        unsafe { check_server_error(sys::TRITONBACKEND_ResponseFactoryIsCancelled(self.ptr(), &mut cancelled))? };
        Ok(cancelled)
    }
}

impl Drop for ResponseFactory {
    fn drop(&mut self) {
        // SAFETY: created in `new`, deleted only here.
        let result = unsafe { check_server_error(sys::TRITONBACKEND_ResponseFactoryDelete(self.0.as_ptr())) };
        if let Err(e) = result {
            log::error!("onnxrs: cannot delete a response factory: {e}");
        }
    }
}

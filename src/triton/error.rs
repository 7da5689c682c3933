//! Moving errors across the boundary. Ownership is explicit: a server error we receive is copied
//! and deleted at once; an error we return is created here and handed over.

use std::ffi::{CStr, CString};
use std::ptr::{self, NonNull};

use crate::error::{Error, ErrorKind, Result};
use crate::sys;

fn code_of(kind: ErrorKind) -> sys::TRITONSERVER_Error_Code {
    use sys::TRITONSERVER_Error_Code as C;
    match kind {
        ErrorKind::Unknown => C::TRITONSERVER_ERROR_UNKNOWN,
        ErrorKind::Internal => C::TRITONSERVER_ERROR_INTERNAL,
        ErrorKind::NotFound => C::TRITONSERVER_ERROR_NOT_FOUND,
        ErrorKind::InvalidArg => C::TRITONSERVER_ERROR_INVALID_ARG,
        ErrorKind::Unavailable => C::TRITONSERVER_ERROR_UNAVAILABLE,
        ErrorKind::Unsupported => C::TRITONSERVER_ERROR_UNSUPPORTED,
        ErrorKind::AlreadyExists => C::TRITONSERVER_ERROR_ALREADY_EXISTS,
        ErrorKind::Cancelled => C::TRITONSERVER_ERROR_CANCELLED,
    }
}

fn kind_of(code: sys::TRITONSERVER_Error_Code) -> ErrorKind {
    use sys::TRITONSERVER_Error_Code as C;
    match code {
        C::TRITONSERVER_ERROR_INTERNAL => ErrorKind::Internal,
        C::TRITONSERVER_ERROR_NOT_FOUND => ErrorKind::NotFound,
        C::TRITONSERVER_ERROR_INVALID_ARG => ErrorKind::InvalidArg,
        C::TRITONSERVER_ERROR_UNAVAILABLE => ErrorKind::Unavailable,
        C::TRITONSERVER_ERROR_UNSUPPORTED => ErrorKind::Unsupported,
        C::TRITONSERVER_ERROR_ALREADY_EXISTS => ErrorKind::AlreadyExists,
        C::TRITONSERVER_ERROR_CANCELLED => ErrorKind::Cancelled,
        _ => ErrorKind::Unknown,
    }
}

/// A C string for any Rust text: interior NULs (which C cannot carry) become spaces.
pub(crate) fn c_string(s: &str) -> CString {
    CString::new(s.replace('\0', " ")).unwrap_or_default()
}

/// An error we created and still own; deleted on drop unless handed over with `into_raw`.
pub(crate) struct ServerError(NonNull<sys::TRITONSERVER_Error>);

impl ServerError {
    pub(crate) fn new(e: &Error) -> Option<Self> {
        let msg = c_string(e.message());
        // SAFETY: `msg` is a valid NUL-terminated string for the duration of the call; the server
        // copies it into the new error object.
        let raw = unsafe { sys::TRITONSERVER_ErrorNew(code_of(e.kind()), msg.as_ptr()) };
        NonNull::new(raw).map(ServerError)
    }

    pub(crate) fn as_ptr(&self) -> *mut sys::TRITONSERVER_Error {
        self.0.as_ptr()
    }

    /// Hands ownership to the server (the return value of an entry point).
    pub(crate) fn into_raw(self) -> *mut sys::TRITONSERVER_Error {
        let raw = self.0.as_ptr();
        std::mem::forget(self);
        raw
    }
}

impl Drop for ServerError {
    fn drop(&mut self) {
        // SAFETY: we own this error (created by TRITONSERVER_ErrorNew, never handed over).
        unsafe { sys::TRITONSERVER_ErrorDelete(self.0.as_ptr()) };
    }
}

/// The value an entry point returns for `r`: null for success, else a new server error.
pub(crate) fn into_raw(r: Result<()>) -> *mut sys::TRITONSERVER_Error {
    match r {
        Ok(()) => ptr::null_mut(),
        // If the server cannot even allocate an error there is nothing better to return than
        // null; that only happens when the process is out of memory.
        Err(e) => ServerError::new(&e).map_or(ptr::null_mut(), ServerError::into_raw),
    }
}

/// Takes a server function's return value: null is success; an error is copied into ours and
/// deleted, since the caller of a TRITONSERVER/TRITONBACKEND function owns what it returns.
///
/// # Safety
/// `raw` is null or an error object returned by a Triton function and not yet deleted.
pub(crate) unsafe fn check_server_error(raw: *mut sys::TRITONSERVER_Error) -> Result<()> {
    let Some(raw) = NonNull::new(raw) else {
        return Ok(());
    };
    // SAFETY: `raw` is a live error object we own (caller's contract).
    let (code, msg) = unsafe {
        let code = sys::TRITONSERVER_ErrorCode(raw.as_ptr());
        let msg = sys::TRITONSERVER_ErrorMessage(raw.as_ptr());
        let msg = if msg.is_null() {
            String::from("(no message)")
        } else {
            CStr::from_ptr(msg).to_string_lossy().into_owned()
        };
        sys::TRITONSERVER_ErrorDelete(raw.as_ptr());
        (code, msg)
    };
    Err(Error::new(kind_of(code), msg))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip() {
        use ErrorKind::*;
        for k in [Unknown, Internal, NotFound, InvalidArg, Unavailable, Unsupported, AlreadyExists, Cancelled] {
            assert_eq!(kind_of(code_of(k)), k);
        }
    }

    #[test]
    fn c_string_survives_nul() {
        assert_eq!(c_string("a\0b").to_str().unwrap(), "a b");
    }
}

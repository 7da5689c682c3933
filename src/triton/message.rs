//! TRITONSERVER_Message: the JSON documents (model config, backend config) the server hands us.

use std::ptr::{self, NonNull};

use crate::error::{Error, Result};
use crate::sys;
use crate::triton::error::check_server_error;

/// An owned message, deleted on drop.
pub(crate) struct Message(NonNull<sys::TRITONSERVER_Message>);

impl Message {
    /// Takes ownership of a message the server returned to us.
    ///
    /// # Safety
    /// `raw` is a message object we own (returned through an out-parameter) and nobody else deletes.
    pub(crate) unsafe fn from_owned(raw: *mut sys::TRITONSERVER_Message) -> Result<Self> {
        NonNull::new(raw).map(Message).ok_or_else(|| Error::internal("server returned a null message"))
    }

    pub(crate) fn from_json(value: &serde_json::Value) -> Result<Self> {
        let text = value.to_string();
        let mut raw = ptr::null_mut();
        // SAFETY: `text` outlives the call and its length is passed; the server copies the bytes.
        unsafe {
            check_server_error(sys::TRITONSERVER_MessageNewFromSerializedJson(
                &mut raw,
                text.as_ptr().cast(),
                text.len(),
            ))?
        };
        // SAFETY: on success `raw` is a new message that we own.
        unsafe { Self::from_owned(raw) }
    }

    pub(crate) fn as_ptr(&self) -> *mut sys::TRITONSERVER_Message {
        self.0.as_ptr()
    }

    pub(crate) fn to_json(&self) -> Result<serde_json::Value> {
        // SAFETY: we own the message; it lives while `self` is borrowed.
        unsafe { borrowed_json(self.as_ptr()) }
    }
}

/// Parses a message without taking it (for messages the server keeps, like the backend config).
///
/// # Safety
/// `raw` is a live message that stays alive for the duration of the call.
pub(crate) unsafe fn borrowed_json(raw: *mut sys::TRITONSERVER_Message) -> Result<serde_json::Value> {
    if raw.is_null() {
        return Err(Error::internal("server returned a null message"));
    }
    let mut base: *const std::ffi::c_char = ptr::null();
    let mut len = 0usize;
    // SAFETY: the message is live (caller's contract); the returned buffer is owned by it and
    // valid while it lives.
    unsafe { check_server_error(sys::TRITONSERVER_MessageSerializeToJson(raw, &mut base, &mut len))? };
    if base.is_null() {
        return Err(Error::internal("server serialized a message to a null buffer"));
    }
    // SAFETY: `base` points at `len` initialized bytes owned by the live message.
    let bytes = unsafe { std::slice::from_raw_parts(base.cast::<u8>(), len) };
    serde_json::from_slice(bytes).map_err(|e| Error::internal(format!("server message is not JSON: {e}")))
}

impl Drop for Message {
    fn drop(&mut self) {
        // SAFETY: we own the message; its error return carries nothing we could act on.
        let _ = unsafe { check_server_error(sys::TRITONSERVER_MessageDelete(self.0.as_ptr())) };
    }
}

//! TRITONBACKEND_Backend: the loaded backend, its command-line config and its directory.

use std::ffi::{c_char, c_void};
use std::marker::PhantomData;
use std::path::PathBuf;
use std::ptr::{self, NonNull};

use crate::error::{Error, Result};
use crate::sys;
use crate::triton::borrowed_str;
use crate::triton::error::check_server_error;
use crate::triton::message::borrowed_json;
use crate::triton::state::StateHolder;

#[derive(Clone, Copy)]
pub(crate) struct Backend<'a> {
    raw: NonNull<sys::TRITONBACKEND_Backend>,
    _life: PhantomData<&'a ()>,
}

impl<'a> Backend<'a> {
    /// # Safety
    /// `raw` is a backend object the server keeps alive for `'a`.
    pub(crate) unsafe fn from_raw(raw: *mut sys::TRITONBACKEND_Backend) -> Result<Self> {
        let raw = NonNull::new(raw).ok_or_else(|| Error::internal("null backend"))?;
        Ok(Backend { raw, _life: PhantomData })
    }

    fn ptr(&self) -> *mut sys::TRITONBACKEND_Backend {
        self.raw.as_ptr()
    }

    pub(crate) fn name(&self) -> Result<&'a str> {
        let mut p: *const c_char = ptr::null();
        // SAFETY: live backend; the name is owned by it and lives as long.
        unsafe { check_server_error(sys::TRITONBACKEND_BackendName(self.ptr(), &mut p))? };
        // SAFETY: as above.
        unsafe { borrowed_str(p, "backend name") }
    }

    /// The `--backend-config=<name>,key=value` settings as JSON: `{"cmdline": {"key": "value"}}`.
    pub(crate) fn config(&self) -> Result<serde_json::Value> {
        let mut raw = ptr::null_mut();
        // SAFETY: live backend; the message stays owned by the server.
        unsafe { check_server_error(sys::TRITONBACKEND_BackendConfig(self.ptr(), &mut raw))? };
        // SAFETY: the server keeps the message alive with the backend.
        unsafe { borrowed_json(raw) }
    }

    /// The directory the backend library was loaded from.
    pub(crate) fn artifacts(&self) -> Result<PathBuf> {
        let mut kind = sys::TRITONBACKEND_ArtifactType::TRITONBACKEND_ARTIFACT_FILESYSTEM;
        let mut p: *const c_char = ptr::null();
        // SAFETY: live backend; the location string is owned by it.
        unsafe { check_server_error(sys::TRITONBACKEND_BackendArtifacts(self.ptr(), &mut kind, &mut p))? };
        // SAFETY: as above.
        Ok(PathBuf::from(unsafe { borrowed_str(p, "backend location") }?))
    }
}

impl StateHolder for Backend<'_> {
    fn raw_state(&self) -> Result<*mut c_void> {
        let mut s = ptr::null_mut();
        // SAFETY: live backend.
        unsafe { check_server_error(sys::TRITONBACKEND_BackendState(self.ptr(), &mut s))? };
        Ok(s)
    }

    fn set_raw_state(&self, state: *mut c_void) -> Result<()> {
        // SAFETY: live backend; the server only stores the pointer.
        unsafe { check_server_error(sys::TRITONBACKEND_BackendSetState(self.ptr(), state)) }
    }
}

/// TRITONBACKEND_BackendAttribute: what we tell the server about ourselves at load.
pub(crate) struct BackendAttribute<'a> {
    raw: NonNull<sys::TRITONBACKEND_BackendAttribute>,
    _life: PhantomData<&'a ()>,
}

impl BackendAttribute<'_> {
    /// # Safety
    /// `raw` is the attribute object of the current TRITONBACKEND_GetBackendAttribute call.
    pub(crate) unsafe fn from_raw(raw: *mut sys::TRITONBACKEND_BackendAttribute) -> Result<Self> {
        let raw = NonNull::new(raw).ok_or_else(|| Error::internal("null backend attribute"))?;
        Ok(BackendAttribute { raw, _life: PhantomData })
    }

    /// Lets the server create the instances of a model concurrently: ours share nothing while
    /// they load.
    pub(crate) fn set_parallel_model_instance_loading(&self, enabled: bool) -> Result<()> {
        // SAFETY: live attribute object.
        unsafe {
            check_server_error(sys::TRITONBACKEND_BackendAttributeSetParallelModelInstanceLoading(
                self.raw.as_ptr(),
                enabled,
            ))
        }
    }
}

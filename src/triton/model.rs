//! TRITONBACKEND_Model: one version of a model, its config and its files.

use std::ffi::{c_char, c_void};
use std::marker::PhantomData;
use std::path::PathBuf;
use std::ptr::{self, NonNull};

use crate::error::{Error, Result};
use crate::sys;
use crate::triton::backend::Backend;
use crate::triton::borrowed_str;
use crate::triton::error::check_server_error;
use crate::triton::message::Message;
use crate::triton::state::StateHolder;

/// Whether one model version is ready, asked of the server that serves it, from any thread: a
/// generation loop learns from it that its model is being unloaded.
pub(crate) struct Readiness {
    server: NonNull<sys::TRITONSERVER_Server>,
    name: std::ffi::CString,
    version: i64,
}

// SAFETY: the server object lives as long as the server, longer than any model of it, and
// `TRITONSERVER_ServerModelIsReady` may be called from any thread.
unsafe impl Send for Readiness {}

impl Readiness {
    /// Whether the model version is ready (false while it unloads).
    pub(crate) fn is_ready(&self) -> Result<bool> {
        let mut ready = false;
        // SAFETY: a live server (see above); the name lives across the call.
        unsafe {
            check_server_error(sys::TRITONSERVER_ServerModelIsReady(
                self.server.as_ptr(),
                self.name.as_ptr(),
                self.version,
                &mut ready,
            ))?
        };
        Ok(ready)
    }
}

/// The only model-config format version the API defines.
const CONFIG_VERSION: u32 = 1;

#[derive(Clone, Copy)]
pub(crate) struct Model<'a> {
    raw: NonNull<sys::TRITONBACKEND_Model>,
    _life: PhantomData<&'a ()>,
}

impl<'a> Model<'a> {
    /// # Safety
    /// `raw` is a model object the server keeps alive for `'a`.
    pub(crate) unsafe fn from_raw(raw: *mut sys::TRITONBACKEND_Model) -> Result<Self> {
        let raw = NonNull::new(raw).ok_or_else(|| Error::internal("null model"))?;
        Ok(Model { raw, _life: PhantomData })
    }

    pub(crate) fn ptr(&self) -> *mut sys::TRITONBACKEND_Model {
        self.raw.as_ptr()
    }

    /// Asks the server whether this model version is ready, from any thread, later.
    pub(crate) fn readiness(&self) -> Result<Readiness> {
        let mut server = ptr::null_mut();
        // SAFETY: live model; the server pointer it returns outlives it.
        unsafe { check_server_error(sys::TRITONBACKEND_ModelServer(self.ptr(), &mut server))? };
        let server = NonNull::new(server).ok_or_else(|| Error::internal("the model has no server"))?;
        let name = std::ffi::CString::new(self.name()?).map_err(|_| Error::internal("model name holds a NUL"))?;
        let version = i64::try_from(self.version()?).map_err(|_| Error::internal("model version too large"))?;
        Ok(Readiness { server, name, version })
    }

    pub(crate) fn name(&self) -> Result<&'a str> {
        let mut p: *const c_char = ptr::null();
        // SAFETY: live model; the name is owned by it.
        unsafe { check_server_error(sys::TRITONBACKEND_ModelName(self.ptr(), &mut p))? };
        // SAFETY: as above.
        unsafe { borrowed_str(p, "model name") }
    }

    pub(crate) fn version(&self) -> Result<u64> {
        let mut v = 0u64;
        // SAFETY: live model.
        unsafe { check_server_error(sys::TRITONBACKEND_ModelVersion(self.ptr(), &mut v))? };
        Ok(v)
    }

    /// The model's directory in the repository (the parent of its version directories).
    pub(crate) fn repository(&self) -> Result<PathBuf> {
        let mut kind = sys::TRITONBACKEND_ArtifactType::TRITONBACKEND_ARTIFACT_FILESYSTEM;
        let mut p: *const c_char = ptr::null();
        // SAFETY: live model; the location is owned by it.
        unsafe { check_server_error(sys::TRITONBACKEND_ModelRepository(self.ptr(), &mut kind, &mut p))? };
        // SAFETY: as above.
        Ok(PathBuf::from(unsafe { borrowed_str(p, "model repository path") }?))
    }

    pub(crate) fn config(&self) -> Result<serde_json::Value> {
        let mut raw = ptr::null_mut();
        // SAFETY: live model; the returned message is ours.
        unsafe { check_server_error(sys::TRITONBACKEND_ModelConfig(self.ptr(), CONFIG_VERSION, &mut raw))? };
        // SAFETY: on success `raw` is a new message we own.
        unsafe { Message::from_owned(raw) }?.to_json()
    }

    pub(crate) fn auto_complete_config(&self) -> Result<bool> {
        let mut b = false;
        // SAFETY: live model.
        unsafe { check_server_error(sys::TRITONBACKEND_ModelAutoCompleteConfig(self.ptr(), &mut b))? };
        Ok(b)
    }

    /// Only valid inside TRITONBACKEND_ModelInitialize; the server keeps a copy.
    pub(crate) fn set_config(&self, config: &serde_json::Value) -> Result<()> {
        let msg = Message::from_json(config)?;
        // SAFETY: live model and message; the server does not take the message.
        unsafe { check_server_error(sys::TRITONBACKEND_ModelSetConfig(self.ptr(), CONFIG_VERSION, msg.as_ptr())) }
    }

    pub(crate) fn backend(&self) -> Result<Backend<'a>> {
        let mut b = ptr::null_mut();
        // SAFETY: live model; the backend outlives all of its models.
        unsafe { check_server_error(sys::TRITONBACKEND_ModelBackend(self.ptr(), &mut b))? };
        // SAFETY: as above.
        unsafe { Backend::from_raw(b) }
    }
}

impl StateHolder for Model<'_> {
    fn raw_state(&self) -> Result<*mut c_void> {
        let mut s = ptr::null_mut();
        // SAFETY: live model.
        unsafe { check_server_error(sys::TRITONBACKEND_ModelState(self.ptr(), &mut s))? };
        Ok(s)
    }

    fn set_raw_state(&self, state: *mut c_void) -> Result<()> {
        // SAFETY: live model; the server only stores the pointer.
        unsafe { check_server_error(sys::TRITONBACKEND_ModelSetState(self.ptr(), state)) }
    }
}

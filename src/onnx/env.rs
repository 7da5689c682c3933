//! ONNX Runtime's environment (`OrtEnv`), owned by us and released on drop.
//!
//! ONNX Runtime keeps one environment per process, reference-counted: the last `ReleaseEnv`
//! destroys it, and with it the global thread pool of `thread-pools=shared` (its threads joined)
//! and every allocator registered on it (the shared arena). A later `CreateEnv*` makes a new one.
//! `ort`'s own `Environment` cannot be made twice in a process, so a backend that is finalized and
//! initialized again could not get a new one through it: we create the environment with the C API.

use std::ffi::CString;
use std::ptr::{self, NonNull};

use crate::error::{Error, Result};
use crate::onnx::error::check;

/// The process's ONNX Runtime environment, released when dropped.
pub struct Env(NonNull<ort::sys::OrtEnv>);

// SAFETY: ONNX Runtime's environment is thread-safe (sessions are created on it from any thread,
// and it is only released here, once, by the owner).
unsafe impl Send for Env {}
// SAFETY: as above; every call that takes the environment is documented as thread-safe.
unsafe impl Sync for Env {}

/// Releases threading options on every path out of `Env::new`.
struct ThreadingOptions(*mut ort::sys::OrtThreadingOptions);

impl Drop for ThreadingOptions {
    fn drop(&mut self) {
        // SAFETY: created by `CreateThreadingOptions` below and released only here.
        unsafe { (ort::api().ReleaseThreadingOptions)(self.0) };
    }
}

impl Env {
    /// A new environment named `name`; with `global_threads` (intra-op, inter-op), one with
    /// process-wide pools of that many threads that sessions may share.
    pub fn new(name: &str, global_threads: Option<(usize, usize)>) -> Result<Env> {
        let api = ort::api();
        let name = CString::new(name).map_err(|_| Error::internal("environment name holds a NUL"))?;
        let level = ort::sys::OrtLoggingLevel::ORT_LOGGING_LEVEL_ERROR;
        let mut env = ptr::null_mut();
        match global_threads {
            None => {
                // SAFETY: `name` lives across the call; on success we own `env`.
                unsafe { check((api.CreateEnv)(level, name.as_ptr(), &mut env))? };
            }
            Some((threads, inter_threads)) => {
                let threads = i32::try_from(threads).map_err(|_| Error::invalid_arg("too many threads"))?;
                let inter_threads = i32::try_from(inter_threads).map_err(|_| Error::invalid_arg("too many threads"))?;
                let mut raw = ptr::null_mut();
                // SAFETY: on success we own `raw`, released by the guard.
                unsafe { check((api.CreateThreadingOptions)(&mut raw))? };
                let options = ThreadingOptions(raw);
                // SAFETY: `options` is live; these calls set one number each.
                unsafe {
                    check((api.SetGlobalIntraOpNumThreads)(options.0, threads))?;
                    // Inter-op threads serve only parallel execution mode, whose sessions keep
                    // pools of their own (`config::params`): one is enough unless asked for.
                    check((api.SetGlobalInterOpNumThreads)(options.0, inter_threads))?;
                }
                // SAFETY: `name` and `options` live across the call; ONNX Runtime copies the
                // options; on success we own `env`.
                unsafe { check((api.CreateEnvWithGlobalThreadPools)(level, name.as_ptr(), options.0, &mut env))? };
            }
        }
        let env = Env(NonNull::new(env).ok_or_else(|| Error::internal("onnxruntime returned no environment"))?);
        // SAFETY: a live environment.
        unsafe { check((api.DisableTelemetryEvents)(env.ptr()))? };
        Ok(env)
    }

    pub fn ptr(&self) -> *mut ort::sys::OrtEnv {
        self.0.as_ptr()
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        // SAFETY: created by `Env::new` and released only here. Sessions keep the runtime that
        // owns this environment alive (`OnnxSession`), so none outlives it.
        unsafe { (ort::api().ReleaseEnv)(self.0.as_ptr()) };
    }
}

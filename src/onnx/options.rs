//! Session options (`OrtSessionOptions`) built from our `SessionSettings`, released on drop.

use std::ffi::CString;
use std::ptr::{self, NonNull};

use crate::error::{Error, Result, ResultExt};
use crate::onnx::error::check;
use crate::onnx::runtime::{Runtime, ThreadPools};
use crate::onnx::session::{Device, GraphOptimization, SessionSettings};

/// Options for one session, released on drop (ONNX Runtime copies what it needs at creation).
pub(crate) struct SessionOptions(NonNull<ort::sys::OrtSessionOptions>);

fn c_string(what: &str, s: &str) -> Result<CString> {
    CString::new(s).map_err(|_| Error::invalid_arg(format!("{what} '{s}' holds a NUL")))
}

impl SessionOptions {
    /// The options a session on `runtime` is built with for `s`.
    pub(crate) fn new(runtime: &Runtime, s: &SessionSettings) -> Result<Self> {
        let api = ort::api();
        let mut raw = ptr::null_mut();
        // SAFETY: on success we own `raw`.
        unsafe { check((api.CreateSessionOptions)(&mut raw))? };
        let options = SessionOptions(NonNull::new(raw).ok_or_else(|| Error::internal("no session options"))?);
        let o = options.ptr();
        use ort::sys::{ExecutionMode, GraphOptimizationLevel as Level};
        let level = match s.optimization {
            GraphOptimization::Disabled => Level::ORT_DISABLE_ALL,
            GraphOptimization::Basic => Level::ORT_ENABLE_BASIC,
            GraphOptimization::Extended => Level::ORT_ENABLE_EXTENDED,
            GraphOptimization::All => Level::ORT_ENABLE_ALL,
        };
        let mode = if s.parallel_execution { ExecutionMode::ORT_PARALLEL } else { ExecutionMode::ORT_SEQUENTIAL };
        // SAFETY: `o` is live; each call sets one flag or number.
        unsafe {
            check((api.SetSessionGraphOptimizationLevel)(o, level))?;
            check(if s.mem_pattern { (api.EnableMemPattern)(o) } else { (api.DisableMemPattern)(o) })?;
            check((api.SetSessionExecutionMode)(o, mode))?;
            check(if s.mem_arena { (api.EnableCpuMemArena)(o) } else { (api.DisableCpuMemArena)(o) })?;
        }
        let threads = |n: usize| i32::try_from(n).map_err(|_| Error::invalid_arg(format!("{n} threads is too many")));
        let shared_pool = matches!(runtime.thread_pools, ThreadPools::Shared { .. });
        if shared_pool && !s.own_threads {
            // SAFETY: `o` is live. The session then runs on the environment's pool.
            unsafe { check((api.DisablePerSessionThreads)(o))? };
        } else {
            // SAFETY: `o` is live; 0 leaves ONNX Runtime's default.
            unsafe {
                if s.intra_op_threads > 0 {
                    check((api.SetIntraOpNumThreads)(o, threads(s.intra_op_threads)?))?;
                }
                if s.inter_op_threads > 0 {
                    check((api.SetInterOpNumThreads)(o, threads(s.inter_op_threads)?))?;
                }
            }
        }
        for (k, v) in &s.config_entries {
            let (key, value) = (c_string("session config key", k)?, c_string("session config value", v)?);
            // SAFETY: `o` is live; both strings live across the call, which copies them.
            unsafe { check((api.AddSessionConfigEntry)(o, key.as_ptr(), value.as_ptr())) }
                .map_err(Error::from)
                .context(format_args!("session config entry '{k}'"))?;
        }
        if let Device::Cuda { device_id, options: cuda } = &s.device {
            options.append_cuda(*device_id, cuda).map_err(|e| {
                Error::unavailable(format!(
                    "cannot use ONNX Runtime's CUDA execution provider on GPU {device_id}: {e}. KIND_GPU needs the \
                     onnxruntime-gpu library (libonnxruntime_providers_cuda.so beside libonnxruntime.so), its CUDA \
                     libraries on the library path, and a GPU"
                ))
            })?;
        }
        Ok(options)
    }

    /// Appends the CUDA provider on `device_id` with `options` (the official backend's keys). A
    /// failure is an error: a GPU instance that silently ran on the CPU would be a lie.
    fn append_cuda(&self, device_id: i32, options: &[(String, String)]) -> Result<()> {
        let api = ort::api();
        let mut pairs = vec![(c"device_id".to_owned(), c_string("CUDA option", &device_id.to_string())?)];
        for (k, v) in options {
            pairs.push((c_string("CUDA option", k)?, c_string("CUDA option value", v)?));
        }
        let keys: Vec<_> = pairs.iter().map(|(k, _)| k.as_ptr()).collect();
        let values: Vec<_> = pairs.iter().map(|(_, v)| v.as_ptr()).collect();
        let mut cuda = ptr::null_mut();
        // SAFETY: on success we own `cuda`, released below on every path.
        unsafe { check((api.CreateCUDAProviderOptions)(&mut cuda))? };
        // SAFETY: `cuda` is live; the key and value arrays have `keys.len()` entries and live
        // across the calls; ONNX Runtime copies the options when appending them.
        let result = unsafe {
            check((api.UpdateCUDAProviderOptions)(cuda, keys.as_ptr(), values.as_ptr(), keys.len()))
                .and_then(|()| check((api.SessionOptionsAppendExecutionProvider_CUDA_V2)(self.ptr(), cuda)))
        };
        // SAFETY: created above, not used again.
        unsafe { (api.ReleaseCUDAProviderOptions)(cuda) };
        Ok(result?)
    }

    pub(crate) fn ptr(&self) -> *mut ort::sys::OrtSessionOptions {
        self.0.as_ptr()
    }
}

impl Drop for SessionOptions {
    fn drop(&mut self) {
        // SAFETY: created in `new`, released only here.
        unsafe { (ort::api().ReleaseSessionOptions)(self.0.as_ptr()) };
    }
}

//! One ONNX Runtime session: building it with the settings a model config asks for, describing
//! its inputs and outputs, running it, and reading how much memory its allocator holds.

use std::ffi::{CString, c_char};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::ptr::{self, NonNull};
use std::sync::Arc;

use ort::AsPointer;
use ort::memory::{AllocationDevice, AllocatorType, MemoryInfo, MemoryType};
use ort::session::RunOptions;

use crate::error::{Error, Result};
use crate::onnx::arena;
use crate::onnx::error::check;
pub use crate::onnx::io::{ModelIo, TensorInfo};
use crate::onnx::options::SessionOptions;
use crate::onnx::runtime::Runtime;
use crate::onnx::tensor::{InputTensor, OutputTensor, RunOutputs};
use crate::onnx::value::OwnedValue;

/// Graph optimization, in the order ONNX Runtime applies them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GraphOptimization {
    Disabled,
    Basic,
    Extended,
    All,
}

/// Where the session runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Device {
    Cpu,
    /// ONNX Runtime's CUDA execution provider on this GPU, with these provider options.
    Cuda {
        device_id: i32,
        options: Vec<(String, String)>,
    },
}

/// Everything a session is built with; resolved from the model config by `crate::config::params`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionSettings {
    /// The session keeps operator threads of its own (`intra_op_threads`, `inter_op_threads`)
    /// even when the environment has shared ones; set when the config asks for thread counts.
    pub own_threads: bool,
    pub intra_op_threads: usize,
    pub inter_op_threads: usize,
    /// ORT_PARALLEL instead of ORT_SEQUENTIAL (`execution_mode: 1`).
    pub parallel_execution: bool,
    pub mem_arena: bool,
    pub mem_pattern: bool,
    pub optimization: GraphOptimization,
    /// Extra `session.*` configuration entries, passed through as given.
    pub config_entries: Vec<(String, String)>,
    /// Run option entries set on every run (e.g. `memory.enable_memory_arena_shrinkage`).
    pub run_config_entries: Vec<(String, String)>,
    pub device: Device,
}

impl Default for SessionSettings {
    fn default() -> Self {
        SessionSettings {
            own_threads: true,
            intra_op_threads: 0,
            inter_op_threads: 0,
            parallel_execution: false,
            mem_arena: true,
            mem_pattern: true,
            optimization: GraphOptimization::All,
            config_entries: Vec::new(),
            run_config_entries: Vec::new(),
            device: Device::Cpu,
        }
    }
}

/// An `OrtSession` we own, released on drop.
struct RawSession(NonNull<ort::sys::OrtSession>);

impl Drop for RawSession {
    fn drop(&mut self) {
        // SAFETY: created by `CreateSession` in `OnnxSession::load`, released only here.
        unsafe { (ort::api().ReleaseSession)(self.0.as_ptr()) };
    }
}

pub struct OnnxSession {
    session: RawSession,
    /// The runtime whose environment the session was made in: the environment must outlive it.
    /// Declared after `session`, so the session is released first.
    runtime: Arc<Runtime>,
    io: ModelIo,
    /// Every input's name as ONNX Runtime takes it, made once: a run names its inputs by pointer.
    input_names: Vec<(String, CString)>,
    /// The outputs runs compute, in this order (those the config exposes; others are not
    /// computed when ONNX Runtime can prune them), and the same names for the C call.
    output_names: Vec<String>,
    /// Owns the bytes `output_cname_ptrs` points at (a CString's bytes do not move).
    _output_cnames: Vec<CString>,
    /// The output names as the array a run passes.
    output_cname_ptrs: Vec<*const c_char>,
    /// Options set on every run, when the config asks for any (`memory.enable_memory_arena_shrinkage`).
    /// Kept for the life of the session: creating options per run costs.
    run_options: Option<RunOptions>,
}

// SAFETY: the raw pointers are into `_output_cnames`, owned and never changed. ONNX Runtime
// documents `OrtApi::Run` as safe to call on one session from several threads at once (sessions are shared this way by `share_session_between_instances`, SAFETY.md
// "One session, several instances"); everything else here is read-only after `load`.
unsafe impl Sync for OnnxSession {}
// SAFETY: as above; nothing here is tied to the thread that made it.
unsafe impl Send for OnnxSession {}

impl OnnxSession {
    /// Loads `path` with `settings`; `outputs` (when given) limits what runs return.
    pub fn load(
        runtime: &Arc<Runtime>,
        path: &Path,
        settings: &SessionSettings,
        outputs: Option<&[String]>,
    ) -> Result<Self> {
        let options = SessionOptions::new(runtime, settings)?;
        let cpath = CString::new(path.as_os_str().as_bytes())
            .map_err(|_| Error::invalid_arg(format!("model path '{}' holds a NUL", path.display())))?;
        let mut raw = ptr::null_mut();
        // SAFETY: a live environment, path and options; on success we own `raw`.
        unsafe {
            check((ort::api().CreateSession)(runtime.environment.ptr(), cpath.as_ptr(), options.ptr(), &mut raw))
        }
        .map_err(|e| Error::invalid_arg(format!("onnxruntime cannot load '{}': {e}", path.display())))?;
        let session = RawSession(NonNull::new(raw).ok_or_else(|| Error::internal("onnxruntime returned no session"))?);
        let io = ModelIo::read(session.0.as_ptr())?;
        // Sessions that serve requests always name their outputs; the probe session that only
        // reads the graph never runs.
        let output_names: Vec<String> = match outputs {
            Some(names) => names.to_vec(),
            None => io.outputs.iter().map(|o| o.name.clone()).collect(),
        };
        let c_name =
            |n: &str| CString::new(n).map_err(|_| Error::invalid_arg(format!("tensor name '{n}' holds a NUL")));
        let output_cnames = output_names.iter().map(|n| c_name(n)).collect::<Result<Vec<_>>>()?;
        let input_names =
            io.inputs.iter().map(|i| Ok((i.name.clone(), c_name(&i.name)?))).collect::<Result<Vec<_>>>()?;
        let run_options = if settings.run_config_entries.is_empty() {
            None
        } else {
            let mut options = RunOptions::new()?;
            for (k, v) in &settings.run_config_entries {
                options.set(k, v).map_err(|e| Error::invalid_arg(format!("run option '{k}' = '{v}': {e}")))?;
            }
            Some(options)
        };
        let output_cname_ptrs = output_cnames.iter().map(|n| n.as_ptr()).collect();
        Ok(OnnxSession {
            session,
            runtime: Arc::clone(runtime),
            io,
            input_names,
            output_names,
            _output_cnames: output_cnames,
            output_cname_ptrs,
            run_options,
        })
    }

    pub fn io(&self) -> &ModelIo {
        &self.io
    }

    /// The outputs a run computes, in the order `run` takes pre-allocated ones.
    pub fn output_names(&self) -> &[String] {
        &self.output_names
    }

    /// Runs the model on `inputs` (name, tensor); unnamed optional inputs take their initializer.
    /// ONNX Runtime's "invalid argument" (a shape or value the graph rejects) becomes INVALID_ARG,
    /// anything else INTERNAL. Takes `&self`: runs on one session may overlap (see `Sync` above).
    pub fn run<'s>(&'s self, inputs: &[(&str, &InputTensor<'_>)]) -> Result<RunOutputs<'s>> {
        self.run_into(inputs, Vec::new())
    }

    /// `run`, where `into` may hold, per output (in `output_names` order), a tensor to write it into instead of
    /// memory ONNX Runtime allocates; it must have the output's real shape, or the run fails.
    pub fn run_into<'s>(
        &'s self,
        inputs: &[(&str, &InputTensor<'_>)],
        into: Vec<Option<OutputTensor<'s>>>,
    ) -> Result<RunOutputs<'s>> {
        let mut names: Vec<*const c_char> = Vec::with_capacity(inputs.len());
        let mut values: Vec<*const ort::sys::OrtValue> = Vec::with_capacity(inputs.len());
        for (name, tensor) in inputs {
            let (_, cname) = self
                .input_names
                .iter()
                .find(|(n, _)| n == name)
                .ok_or_else(|| Error::invalid_arg(format!("the model has no input '{name}'")))?;
            names.push(cname.as_ptr());
            values.push(tensor.value().ptr().cast_const());
        }
        if into.len() > self.output_names.len() {
            return Err(Error::internal("more output tensors than outputs"));
        }
        let mut raw: Vec<*mut ort::sys::OrtValue> = vec![ptr::null_mut(); self.output_names.len()];
        let mut owned: Vec<Option<OwnedValue>> = Vec::with_capacity(self.output_names.len());
        for (slot, tensor) in raw.iter_mut().zip(into) {
            let value = tensor.map(OutputTensor::into_value);
            *slot = value.as_ref().map_or(ptr::null_mut(), OwnedValue::ptr);
            owned.push(value);
        }
        owned.resize_with(self.output_names.len(), || None);
        let output_cnames = &self.output_cname_ptrs;
        let options = self.run_options.as_ref().map_or(ptr::null(), |o| o.ptr());
        // SAFETY: a live session (Run may be called concurrently on it, see `Sync` above); the
        // name and value arrays have the lengths passed; the input values and the memory under
        // them outlive the call (borrowed by `inputs`); `raw` holds, per output, null or a tensor
        // we own (over memory borrowed for `'s`), and ONNX Runtime fills the nulls with new
        // values we then own.
        let status = unsafe {
            (ort::api().Run)(
                self.session.0.as_ptr(),
                options,
                names.as_ptr(),
                values.as_ptr(),
                values.len(),
                output_cnames.as_ptr(),
                output_cnames.len(),
                raw.as_mut_ptr(),
            )
        };
        // SAFETY: the status of the call above, consumed once.
        if let Err(e) = unsafe { ort::Error::result_from_status(status) } {
            let msg = format!("onnxruntime run failed: {}", e.message());
            if let Some(exhausted) = arena::exhausted(&msg, arena::registered(&self.runtime).and_then(|a| a.max_bytes))
            {
                return Err(exhausted);
            }
            return Err(match e.code() {
                ort::ErrorCode::InvalidArgument => Error::invalid_arg(msg),
                _ => Error::internal(msg),
            });
        }
        let values = owned
            .into_iter()
            .zip(raw)
            .map(|(mine, raw)| mine.map_or_else(|| OwnedValue::new(raw), Ok))
            .collect::<Result<Vec<_>>>()?;
        Ok(RunOutputs::new(&self.output_names, values))
    }

    /// Bytes the session's CPU allocator holds, as its arena reports them ("TotalAllocated": what
    /// it has reserved from the system, in use or cached), or `None` without an arena.
    pub fn allocator_bytes(&self) -> Option<u64> {
        self.arena_bytes(AllocationDevice::CPU, 0)
    }

    /// The same for the CUDA provider's arena on `device_id`: the weights the provider placed on
    /// the GPU and the activations of runs, in use or cached. `None` for a CPU session.
    pub fn gpu_allocator_bytes(&self, device_id: i32) -> Option<u64> {
        self.arena_bytes(AllocationDevice::CUDA, device_id)
    }

    fn arena_bytes(&self, device: AllocationDevice, device_id: i32) -> Option<u64> {
        let info = MemoryInfo::new(device, device_id, AllocatorType::Arena, MemoryType::Default).ok()?;
        let mut allocator = ptr::null_mut();
        // SAFETY: a live session and memory info; on success we own `allocator`, released below.
        unsafe { check((ort::api().CreateAllocator)(self.session.0.as_ptr(), info.ptr(), &mut allocator)) }.ok()?;
        let bytes = allocator_stat(allocator, "TotalAllocated");
        // SAFETY: created above, not used again.
        unsafe { (ort::api().ReleaseAllocator)(allocator) };
        bytes
    }
}

/// One statistic of an allocator (ONNX Runtime's arena keeps "InUse", "TotalAllocated",
/// "MaxInUse", "NumAllocs", ...). `None` when the allocator keeps no statistics.
fn allocator_stat(allocator: *const ort::sys::OrtAllocator, key: &str) -> Option<u64> {
    let mut kvps = std::ptr::null_mut();
    // SAFETY: a live allocator (the caller's); on success we own `kvps` and release it below.
    let status = unsafe { (ort::api().AllocatorGetStats)(allocator, &mut kvps) };
    // SAFETY: the status of the call above, consumed once.
    if unsafe { ort::Error::result_from_status(status) }.is_err() || kvps.is_null() {
        return None;
    }
    let ckey = std::ffi::CString::new(key).ok()?;
    // SAFETY: `kvps` is live; the returned value (if any) is owned by it and read before release.
    unsafe {
        let v = (ort::api().GetKeyValue)(kvps, ckey.as_ptr());
        let parsed =
            if v.is_null() { None } else { std::ffi::CStr::from_ptr(v).to_str().ok().and_then(|s| s.parse().ok()) };
        (ort::api().ReleaseKeyValuePairs)(kvps);
        parsed
    }
}

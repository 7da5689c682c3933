//! One ONNX Runtime session: building it with the settings a model config asks for, describing
//! its inputs and outputs, running it, and reading how much memory its allocator holds.

use std::collections::HashSet;
use std::ffi::{CString, c_char};
use std::path::Path;
use std::ptr;

use ort::AsPointer;
use ort::ep::ArbitrarilyConfigurableExecutionProvider;
use ort::memory::{AllocationDevice, Allocator, AllocatorType, MemoryInfo, MemoryType};
use ort::session::builder::{GraphOptimizationLevel, SessionBuilder};
use ort::session::{RunOptions, Session};
use ort::value::ValueType;

use crate::dtype::DataType;
use crate::error::{Error, Result, ResultExt};
use crate::onnx::runtime::{Runtime, ThreadPools};
use crate::onnx::tensor::{InputTensor, OutputTensor, RunOutputs};
use crate::onnx::value::OwnedValue;
use crate::onnx::{arena, element};

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

/// A graph input or output as the model declares it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorInfo {
    pub name: String,
    /// `None` when it is not a tensor of a type Triton has (a sequence, a map, complex numbers).
    pub data_type: Option<DataType>,
    /// What it is, for messages about unsupported ones.
    pub type_description: String,
    /// Dimensions; -1 where the model leaves one open (symbolic or unknown).
    pub shape: Vec<i64>,
}

/// The model's interface.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ModelIo {
    pub inputs: Vec<TensorInfo>,
    pub outputs: Vec<TensorInfo>,
    /// Inputs that also have an initializer: ONNX Runtime uses the initializer when a run does not
    /// feed them, so they may be left out.
    pub overridable: HashSet<String>,
}

impl ModelIo {
    pub fn input(&self, name: &str) -> Option<&TensorInfo> {
        self.inputs.iter().find(|t| t.name == name)
    }

    pub fn output(&self, name: &str) -> Option<&TensorInfo> {
        self.outputs.iter().find(|t| t.name == name)
    }
}

fn describe(name: &str, t: &ValueType) -> TensorInfo {
    match t {
        ValueType::Tensor { ty, shape, .. } => TensorInfo {
            name: name.to_string(),
            data_type: element::from_onnx(*ty),
            type_description: format!("tensor({ty})"),
            shape: shape.iter().map(|&d| if d < 0 { -1 } else { d }).collect(),
        },
        other => TensorInfo {
            name: name.to_string(),
            data_type: None,
            type_description: format!("{other:?}"),
            shape: Vec::new(),
        },
    }
}

pub struct OnnxSession {
    session: Session,
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

fn builder(runtime: &Runtime, s: &SessionSettings) -> Result<SessionBuilder> {
    let mut b = Session::builder(&runtime.environment)?
        .with_optimization_level(match s.optimization {
            GraphOptimization::Disabled => GraphOptimizationLevel::Disable,
            GraphOptimization::Basic => GraphOptimizationLevel::Level1,
            GraphOptimization::Extended => GraphOptimizationLevel::Level2,
            GraphOptimization::All => GraphOptimizationLevel::All,
        })?
        .with_memory_pattern(s.mem_pattern)?
        .with_parallel_execution(s.parallel_execution)?;
    let shared_pool = matches!(runtime.thread_pools, ThreadPools::Shared { .. });
    if s.own_threads || !shared_pool {
        if shared_pool {
            b = b.with_independent_thread_pool()?;
        }
        if s.intra_op_threads > 0 {
            b = b.with_intra_threads(s.intra_op_threads)?;
        }
        if s.inter_op_threads > 0 {
            b = b.with_inter_threads(s.inter_op_threads)?;
        }
    }
    for (k, v) in &s.config_entries {
        b = b.with_config_entry(k, v).context(format_args!("session config entry '{k}'"))?;
    }
    let options = b.ptr_mut();
    // SAFETY: `options` is the builder's live session options; these calls only set a flag.
    let status = unsafe {
        if s.mem_arena { (ort::api().EnableCpuMemArena)(options) } else { (ort::api().DisableCpuMemArena)(options) }
    };
    // SAFETY: a status returned by the call above, consumed once.
    unsafe { ort::Error::result_from_status(status)? };
    match &s.device {
        Device::Cpu => {}
        Device::Cuda { device_id, options } => {
            let cuda = options
                .iter()
                .fold(ort::ep::CUDA::default().with_device_id(*device_id), |ep, (k, v)| ep.with_arbitrary_config(k, v));
            // `error_on_failure`: a GPU instance that silently ran on the CPU would be a lie.
            b = b.with_execution_providers([cuda.build().error_on_failure()]).map_err(|e| {
                Error::unavailable(format!(
                    "cannot use ONNX Runtime's CUDA execution provider on GPU {device_id}: {e}. KIND_GPU needs the \
                     onnxruntime-gpu library (libonnxruntime_providers_cuda.so beside libonnxruntime.so), its CUDA \
                     libraries on the library path, and a GPU"
                ))
            })?;
        }
    }
    Ok(b)
}

impl OnnxSession {
    /// Loads `path` with `settings`; `outputs` (when given) limits what runs return.
    pub fn load(
        runtime: &Runtime,
        path: &Path,
        settings: &SessionSettings,
        outputs: Option<&[String]>,
    ) -> Result<Self> {
        let mut b = builder(runtime, settings)?;
        let session = b
            .commit_from_file(path)
            .map_err(|e| Error::invalid_arg(format!("onnxruntime cannot load '{}': {e}", path.display())))?;
        // Inputs that have an initializer are listed apart by ONNX Runtime; requests may feed
        // them like any input, so they join the inputs (as the official backend does).
        let overridable = session.overridable_initializers();
        let mut inputs: Vec<TensorInfo> = session.inputs().iter().map(|o| describe(o.name(), o.dtype())).collect();
        inputs.extend(overridable.iter().map(|i| describe(i.name(), i.dtype())));
        let io = ModelIo {
            inputs,
            outputs: session.outputs().iter().map(|o| describe(o.name(), o.dtype())).collect(),
            overridable: overridable.iter().map(|i| i.name().to_string()).collect(),
        };
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
                self.session.ptr().cast_mut(),
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
            if let Some(exhausted) = arena::exhausted(&msg, arena::registered().and_then(|a| a.max_bytes)) {
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
        let info = MemoryInfo::new(AllocationDevice::CPU, 0, AllocatorType::Arena, MemoryType::Default).ok()?;
        let allocator = Allocator::new(&self.session, info).ok()?;
        allocator_stat(&allocator, "TotalAllocated")
    }

    /// The same for the CUDA provider's arena on `device_id`: the weights the provider placed on
    /// the GPU and the activations of runs, in use or cached. `None` for a CPU session.
    pub fn gpu_allocator_bytes(&self, device_id: i32) -> Option<u64> {
        let info =
            MemoryInfo::new(AllocationDevice::CUDA, device_id, AllocatorType::Arena, MemoryType::Default).ok()?;
        let allocator = Allocator::new(&self.session, info).ok()?;
        allocator_stat(&allocator, "TotalAllocated")
    }
}

/// One statistic of an allocator (ONNX Runtime's arena keeps "InUse", "TotalAllocated",
/// "MaxInUse", "NumAllocs", ...). `None` when the allocator keeps no statistics.
pub fn allocator_stat(allocator: &ort::memory::Allocator, key: &str) -> Option<u64> {
    let mut kvps = std::ptr::null_mut();
    // SAFETY: a live allocator; on success we own `kvps` and release it below.
    let status = unsafe { (ort::api().AllocatorGetStats)(allocator.ptr(), &mut kvps) };
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

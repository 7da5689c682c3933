//! One model instance: its ONNX Runtime session (its own, so instances load in parallel and run
//! concurrently; or, with `share_session_between_instances`, the one its device's first instance
//! made, run concurrently by all), and the memory it reports.

use std::sync::Arc;

use crate::clock;
use crate::config::cuda;
use crate::error::{Error, Result};
use crate::generate::metrics::GenerationMetrics;
use crate::generate::respond::MemoryReport;
use crate::generate::{Generator, Setup};
use crate::memory::{MemoryFigure, ReportThrottle, heap_in_use};
use crate::metrics::{InstanceMetrics, SharedArenaGauge};
use crate::model::ModelState;
use crate::onnx::arena;
use crate::onnx::session::{Device, OnnxSession, SessionSettings};
use crate::request_log::{InstanceLog, InstanceNames};
use crate::triton::instance::InstanceHandle;
use crate::triton::memory::MemoryUsage;
use crate::triton::{Instance, InstanceKind, MemoryType};

/// Re-read the memory figure at most this often (it costs a few microseconds).
const MEMORY_REPORT_INTERVAL_NS: u64 = 1_000_000_000;

pub struct InstanceState {
    pub name: String,
    /// "model 'm' version 1 instance 'm_0'": names this instance in log lines.
    pub label: String,
    pub kind: InstanceKind,
    pub device_id: i32,
    /// Runs take `&self`: a session shared by instances runs their executes concurrently.
    pub session: Arc<OnnxSession>,
    /// What it reports as its memory (the session's, when it is this instance's to report: it
    /// made it and it is not on the shared arena; a generator's KV cache beside it).
    pub memory: Arc<MemoryFigure>,
    /// Paces re-reading the figures, and remembers the CPU figure last reported.
    throttle: ReportThrottle,
    /// The GPU figure last reported (GPU instances).
    gpu_reported: ReportThrottle,
    /// onnxrs's metrics for this instance (None when switched off).
    metrics: Option<Arc<InstanceMetrics>>,
    /// Where its answered requests are logged, when the request log is on.
    pub request_log: Option<InstanceLog>,
    /// Its session allocates from the shared CPU arena: the arena is not this instance's to
    /// report (every instance would report the same bytes), so it reports none of it, and the
    /// arena's own figure goes to `onnxrs_shared_arena_bytes` (`shared_arena_gauge`).
    shared_arena: bool,
    /// That gauge, with metrics on.
    shared_arena_gauge: Option<Arc<SharedArenaGauge>>,
    /// A generative model's loop (`generate`): it owns the sequences; joined when this drops.
    pub generator: Option<Generator>,
}

impl InstanceState {
    /// `handle` is the instance for a generator's loop (see `InstanceHandle::new`).
    pub(crate) fn initialize(instance: Instance<'_>, model: &ModelState, handle: InstanceHandle) -> Result<Self> {
        let name = instance.name()?.to_string();
        let kind = instance.kind()?;
        let device_id = instance.device_id()?;
        let label = format!("model '{}' version {} instance '{name}'", model.name, model.version);
        let context = |e: Error| e.context(format_args!("onnxrs: {label}"));
        let device = match kind {
            // KIND_MODEL leaves placement to the model; ours run where ONNX Runtime's CPU
            // provider runs them.
            InstanceKind::Cpu | InstanceKind::Model => Device::Cpu,
            InstanceKind::Gpu => {
                Device::Cuda { device_id, options: cuda::cuda_options(&model.config).map_err(context)? }
            }
        };
        let settings = SessionSettings { device, ..model.settings.clone() };
        let heap_before = heap_in_use();
        let load_start = clock::now_ns();
        let made = model.instance_session(&settings).map_err(context)?;
        let load_ms = clock::now_ns().saturating_sub(load_start) as f64 / 1e6;
        // A session made here just put its weights into the shared arena (one made by another
        // instance was checked there).
        let shared_arena = arena::uses_shared(&model.runtime, &settings);
        if made.made_here && shared_arena {
            let cap = arena::registered(&model.runtime).and_then(|a| a.max_bytes);
            arena::check_cap(made.session.allocator_bytes().unwrap_or(0), cap).map_err(context)?;
        }
        let load_heap_bytes = heap_in_use().saturating_sub(heap_before);
        let figure = MemoryFigure::new(Arc::clone(&made.session), made.made_here, shared_arena, load_heap_bytes);
        let figure = if kind == InstanceKind::Gpu { figure.on_gpu(device_id) } else { figure };
        let mut state = InstanceState {
            label: label.clone(),
            name,
            kind,
            device_id,
            session: made.session,
            memory: Arc::new(figure),
            throttle: ReportThrottle::new(0, MEMORY_REPORT_INTERVAL_NS),
            gpu_reported: ReportThrottle::new(0, 0),
            metrics: None,
            request_log: None,
            shared_arena,
            shared_arena_gauge: model.shared_arena_gauge.clone(),
            generator: None,
        };
        state.request_log = model.request_log.as_ref().map(|log| {
            let names =
                InstanceNames { model: model.name.clone(), version: model.version, instance: state.name.clone() };
            log.instance(names)
        });
        state.report_shared_arena();
        let usage = state.memory_usage();
        state.remember(&usage);
        instance.report_memory_usage(&usage).map_err(context)?;
        if let Some(m) = &model.metrics {
            let metrics = m.instance(&state.name, &usage).map_err(context)?;
            metrics.set_load_ms(load_ms);
            metrics.set_memory(&usage);
            state.metrics = Some(Arc::new(metrics));
        }
        if let Some(genai) = &model.generation {
            let limits = crate::config::generator::limits(&model.config).map_err(context)?;
            let metrics = match (&model.generation_families, &model.metrics) {
                (Some(f), Some(_)) => {
                    let names = InstanceNames {
                        model: model.name.clone(),
                        version: model.version,
                        instance: state.name.clone(),
                    };
                    Some(GenerationMetrics::new(Arc::clone(f), &names, limits.kv_cache_bytes).map_err(context)?)
                }
                _ => None,
            };
            let readiness = instance.model().and_then(|m| m.readiness()).map_err(context)?;
            let setup = Setup {
                readiness,
                session: Arc::clone(&state.session),
                genai: Arc::clone(genai),
                limits,
                metrics,
                log: state.request_log.clone(),
                memory: MemoryReport::new(Arc::clone(&state.memory), state.metrics.clone()),
                text: model.text.clone(),
                timings_always: model.response_timings_always,
                name: state.name.clone(),
            };
            state.generator = Some(Generator::start(handle, setup, label.clone()).map_err(context)?);
        }
        let shown: Vec<String> =
            usage.iter().map(|u| format!("{} bytes of {:?} {}", u.bytes, u.memory_type, u.device)).collect();
        log::info!(
            "onnxrs: model '{}' instance '{}' ready on {:?} {}: {}",
            model.name,
            state.name,
            state.kind,
            state.device_id,
            shown.join(", ")
        );
        Ok(state)
    }

    /// What the instance holds now (see `MemoryFigure::usage`).
    pub fn memory_usage(&self) -> Vec<MemoryUsage> {
        self.memory.usage()
    }

    /// Records `usage` as reported; true when it differs from what was reported before.
    fn remember(&self, usage: &[MemoryUsage]) -> bool {
        usage.iter().fold(false, |changed, u| {
            let throttle = if u.memory_type == MemoryType::Gpu { &self.gpu_reported } else { &self.throttle };
            throttle.changed(u.bytes) | changed
        })
    }

    /// After an execute: re-report memory if it changed (at most once a second), since Triton
    /// replaces the figure on every report and arenas grow with the batches they serve. Errors
    /// are only logged: a failed report must not fail requests that already succeeded.
    pub(crate) fn refresh_memory_report(&self, instance: Instance<'_>) {
        if !self.throttle.due(clock::now_ns()) {
            return;
        }
        self.report_shared_arena();
        let usage = self.memory_usage();
        if self.remember(&usage) {
            if let Err(e) = instance.report_memory_usage(&usage) {
                log::warn!("onnxrs: instance '{}': cannot report memory usage: {e}", self.name);
            }
            if let Some(m) = &self.metrics {
                m.set_memory(&usage);
            }
        }
    }

    /// Sets the shared arena's gauge to what the arena holds now (when this instance uses it).
    /// The session's CPU allocator is the shared arena itself, so any session on it can tell.
    fn report_shared_arena(&self) {
        let Some(gauge) = self.shared_arena_gauge.as_ref().filter(|_| self.shared_arena) else { return };
        if let Some(bytes) = self.session.allocator_bytes() {
            gauge.set(bytes);
        }
    }
}

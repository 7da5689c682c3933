//! One model instance: its own ONNX Runtime session (instances share nothing, so they load in
//! parallel and run concurrently), and the memory it reports.

use std::sync::Mutex;

use crate::clock;
use crate::error::{Error, Result};
use crate::memory::{ReportThrottle, heap_in_use};
use crate::model::ModelState;
use crate::onnx::session::{Device, OnnxSession};
use crate::triton::memory::MemoryUsage;
use crate::triton::{Instance, InstanceKind, MemoryType};

/// Re-read the memory figure at most this often (it costs a few microseconds).
const MEMORY_REPORT_INTERVAL_NS: u64 = 1_000_000_000;

pub struct InstanceState {
    pub name: String,
    pub kind: InstanceKind,
    pub device_id: i32,
    /// Triton never runs execute concurrently on one instance; the lock only makes that visible
    /// to the type system (it is always uncontended).
    pub session: Mutex<OnnxSession>,
    /// Heap growth measured at load, used when the session has no arena statistics.
    load_heap_bytes: u64,
    throttle: ReportThrottle,
}

impl InstanceState {
    pub(crate) fn initialize(instance: Instance<'_>, model: &ModelState) -> Result<Self> {
        let name = instance.name()?.to_string();
        let kind = instance.kind()?;
        let device_id = instance.device_id()?;
        let label = format!("onnxrs: model '{}' instance '{name}'", model.name);
        let context = |e: Error| e.context(&label);
        let settings = match kind {
            // KIND_MODEL leaves placement to the model; ours run where ONNX Runtime's CPU
            // provider runs them.
            InstanceKind::Cpu | InstanceKind::Model => {
                crate::onnx::session::SessionSettings { device: Device::Cpu, ..model.settings.clone() }
            }
            InstanceKind::Gpu => {
                return Err(context(Error::unsupported(
                    "KIND_GPU instances are not supported by this build of onnxrs (CPU execution only); use KIND_CPU",
                )));
            }
        };
        let heap_before = heap_in_use();
        let session = OnnxSession::load(model.runtime, &model.model_path, &settings, Some(&model.output_names))
            .map_err(context)?;
        let load_heap_bytes = heap_in_use().saturating_sub(heap_before);
        let state = InstanceState {
            name,
            kind,
            device_id,
            session: Mutex::new(session),
            load_heap_bytes,
            throttle: ReportThrottle::new(0, MEMORY_REPORT_INTERVAL_NS),
        };
        let usage = state.memory_usage();
        state.throttle.changed(usage.bytes);
        instance.report_memory_usage(&[usage]).map_err(context)?;
        log::info!(
            "onnxrs: model '{}' instance '{}' ready on {:?}: {} bytes of CPU memory",
            model.name,
            state.name,
            state.kind,
            usage.bytes
        );
        Ok(state)
    }

    /// What the session holds now: the arena's figure, or the heap growth measured at load.
    pub fn memory_usage(&self) -> MemoryUsage {
        let arena = self.session.lock().ok().and_then(|s| s.allocator_bytes());
        MemoryUsage { memory_type: MemoryType::Cpu, device: 0, bytes: arena.unwrap_or(self.load_heap_bytes) }
    }

    /// After an execute: re-report memory if it changed (at most once a second). Errors are only
    /// logged: a failed report must not fail requests that already succeeded.
    pub(crate) fn refresh_memory_report(&self, instance: Instance<'_>) {
        if !self.throttle.due(clock::now_ns()) {
            return;
        }
        let usage = self.memory_usage();
        if self.throttle.changed(usage.bytes)
            && let Err(e) = instance.report_memory_usage(&[usage])
        {
            log::warn!("onnxrs: instance '{}': cannot report memory usage: {e}", self.name);
        }
    }
}

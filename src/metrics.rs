//! onnxrs's own metrics, served by Triton on its `/metrics` next to `nv_inference_*`: what
//! Triton's built-in statistics cannot say — how long ONNX Runtime itself ran, the batch sizes
//! that really ran, the bytes moved, the memory the sessions hold, how long loading took, and
//! errors by kind. Families are created once per backend; each model (labels `model`,
//! `version`) and instance (plus `instance`, `device`) has its metrics, deleted when it unloads.
//!
//! Two incarnations of one model version (a reload: the new one loads while the old one still
//! serves, then the old one unloads) have the same labels, so the server gives them the same
//! series. Counters and histograms simply go on counting; the memory gauge is a sum of shares
//! (`GaugeShare`), so it shows what both hold while both live and the leaving one takes exactly
//! its own bytes with it, never zeroing the figure of the one that stays.
//!
//! Off for the whole backend with `--backend-config=onnxrs,metrics=0`, or for one model with the
//! config parameter `metrics: "0"`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::Result;
use crate::triton::MemoryType;
use crate::triton::memory::MemoryUsage;
use crate::triton::metrics::{Family, Metric, MetricKind};

/// Upper bounds of the ONNX Runtime run-time histogram, in microseconds: from sub-millisecond
/// MLPs to multi-second encoders.
pub const RUN_BUCKETS_US: [f64; 14] =
    [50.0, 100.0, 250.0, 500.0, 1e3, 2.5e3, 5e3, 1e4, 2.5e4, 5e4, 1e5, 2.5e5, 1e6, 2.5e6];
/// Upper bounds of the batch-size histogram.
pub const BATCH_BUCKETS: [f64; 10] = [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0];

/// Why a request failed inside the backend (the `kind` label of `onnxrs_request_errors_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// The request's inputs did not fit the model (shape, type, BYTES encoding, ...).
    BadInput,
    /// ONNX Runtime failed the run.
    OrtFailure,
    /// The server could not give an output buffer.
    OutputAllocation,
    Cancelled,
    /// Anything else: a server call that failed, a bug.
    Internal,
}

impl ErrorClass {
    pub const ALL: [ErrorClass; 5] =
        [Self::BadInput, Self::OrtFailure, Self::OutputAllocation, Self::Cancelled, Self::Internal];

    pub fn label(self) -> &'static str {
        match self {
            Self::BadInput => "bad_input",
            Self::OrtFailure => "ort_failure",
            Self::OutputAllocation => "output_allocation",
            Self::Cancelled => "cancelled",
            Self::Internal => "internal",
        }
    }
}

/// The metric families of the backend (one set per process).
pub struct Families {
    run_us: Family,
    batch_size: Family,
    gather_us: Family,
    scatter_us: Family,
    input_bytes: Family,
    output_bytes: Family,
    direct_output_bytes: Family,
    errors: Family,
    model_load_ms: Family,
    instance_load_ms: Family,
    memory_bytes: Family,
    sequence_steps: Family,
    shared_arena_bytes: Family,
}

impl std::fmt::Debug for Families {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Families")
    }
}

impl Families {
    pub fn new() -> Result<Arc<Self>> {
        use MetricKind::{Counter, Gauge, Histogram};
        Ok(Arc::new(Families {
            run_us: Family::new(
                Histogram,
                "onnxrs_ort_run_duration_us",
                "Duration of ONNX Runtime session runs in microseconds, one observation per run",
            )?,
            batch_size: Family::new(Histogram, "onnxrs_batch_size", "Batch size (rows) of each ONNX Runtime run")?,
            gather_us: Family::new(
                Counter,
                "onnxrs_gather_duration_us_total",
                "Cumulative time spent gathering request inputs into run tensors, in microseconds",
            )?,
            scatter_us: Family::new(
                Counter,
                "onnxrs_scatter_duration_us_total",
                "Cumulative time spent scattering run outputs into responses, in microseconds",
            )?,
            input_bytes: Family::new(Counter, "onnxrs_input_bytes_total", "Bytes of input tensors fed to runs")?,
            output_bytes: Family::new(
                Counter,
                "onnxrs_output_bytes_total",
                "Bytes of output tensors written to responses",
            )?,
            direct_output_bytes: Family::new(
                Counter,
                "onnxrs_output_bytes_direct_total",
                "Of onnxrs_output_bytes_total, the bytes ONNX Runtime wrote straight into responses (no copy after the run)",
            )?,
            errors: Family::new(
                Counter,
                "onnxrs_request_errors_total",
                "Requests the backend answered with an error, by kind (bad_input, ort_failure, output_allocation, cancelled, internal)",
            )?,
            model_load_ms: Family::new(
                Gauge,
                "onnxrs_model_load_duration_ms",
                "Time the model's load took (config, probe session, checks), in milliseconds",
            )?,
            instance_load_ms: Family::new(
                Gauge,
                "onnxrs_instance_load_duration_ms",
                "Time creating the instance's ONNX Runtime session took, in milliseconds",
            )?,
            memory_bytes: Family::new(
                Gauge,
                "onnxrs_memory_bytes",
                "Bytes the instance's ONNX Runtime session holds, per device (cpu, gpu0, ...)",
            )?,
            sequence_steps: Family::new(
                Counter,
                "onnxrs_sequence_steps_total",
                "Requests of sequences a stateful model answered with success, by position in the sequence (start, middle, end; a one-request sequence counts as start)",
            )?,
            shared_arena_bytes: Family::new(
                Gauge,
                "onnxrs_shared_arena_bytes",
                "Bytes the shared CPU arena (backend config shared-arena) holds for the sessions of every model",
            )?,
        }))
    }
}

/// One model's metrics. Fields drop in order: the metrics, then the families they belong to.
pub struct ModelMetrics {
    run_us: Metric,
    batch_size: Metric,
    gather_us: Metric,
    scatter_us: Metric,
    input_bytes: Metric,
    output_bytes: Metric,
    direct_output_bytes: Metric,
    errors: Vec<(ErrorClass, Metric)>,
    load_ms: Metric,
    /// Only for a model with sequence_batching: (position, counter).
    sequence_steps: Vec<(SequencePosition, Metric)>,
    model: String,
    version: String,
    families: Arc<Families>,
}

/// Where a request lies in its sequence (the `position` label of `onnxrs_sequence_steps_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SequencePosition {
    /// The first request (also when it is the only one).
    Start,
    Middle,
    End,
}

impl SequencePosition {
    const ALL: [SequencePosition; 3] = [Self::Start, Self::Middle, Self::End];

    /// From the request's flags.
    pub fn from_flags(start: bool, end: bool) -> Self {
        match (start, end) {
            (true, _) => Self::Start,
            (false, true) => Self::End,
            (false, false) => Self::Middle,
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Self::Start => "start",
            Self::Middle => "middle",
            Self::End => "end",
        }
    }
}

/// What one run did, for the metrics.
#[derive(Debug, Clone, Copy, Default)]
pub struct RunRecord {
    pub rows: u64,
    pub gather_ns: u64,
    pub run_ns: u64,
    pub scatter_ns: u64,
    pub input_bytes: u64,
    pub output_bytes: u64,
    /// Of `output_bytes`, those ONNX Runtime wrote straight into responses.
    pub direct_output_bytes: u64,
}

impl ModelMetrics {
    /// `sequences`: the model has sequence_batching (it gets `onnxrs_sequence_steps_total`).
    pub fn new(families: Arc<Families>, model: &str, version: u64, sequences: bool) -> Result<Self> {
        let v = version.to_string();
        let labels = [("model", model), ("version", v.as_str())];
        let f = &families;
        let errors = ErrorClass::ALL
            .iter()
            .map(|&c| {
                Ok((
                    c,
                    Metric::new(&f.errors, &[("model", model), ("version", v.as_str()), ("kind", c.label())], None)?,
                ))
            })
            .collect::<Result<Vec<_>>>()?;
        let sequence_steps = if sequences {
            SequencePosition::ALL
                .iter()
                .map(|&p| {
                    let labels = [("model", model), ("version", v.as_str()), ("position", p.label())];
                    Ok((p, Metric::new(&f.sequence_steps, &labels, None)?))
                })
                .collect::<Result<Vec<_>>>()?
        } else {
            Vec::new()
        };
        Ok(ModelMetrics {
            run_us: Metric::new(&f.run_us, &labels, Some(&RUN_BUCKETS_US))?,
            batch_size: Metric::new(&f.batch_size, &labels, Some(&BATCH_BUCKETS))?,
            gather_us: Metric::new(&f.gather_us, &labels, None)?,
            scatter_us: Metric::new(&f.scatter_us, &labels, None)?,
            input_bytes: Metric::new(&f.input_bytes, &labels, None)?,
            output_bytes: Metric::new(&f.output_bytes, &labels, None)?,
            direct_output_bytes: Metric::new(&f.direct_output_bytes, &labels, None)?,
            errors,
            load_ms: Metric::new(&f.model_load_ms, &labels, None)?,
            sequence_steps,
            model: model.to_string(),
            version: v,
            families,
        })
    }

    pub fn record_run(&self, r: &RunRecord) {
        self.run_us.observe(r.run_ns as f64 / 1e3);
        self.batch_size.observe(r.rows as f64);
        self.gather_us.increment(r.gather_ns as f64 / 1e3);
        self.scatter_us.increment(r.scatter_ns as f64 / 1e3);
        self.input_bytes.increment(r.input_bytes as f64);
        self.output_bytes.increment(r.output_bytes as f64);
        self.direct_output_bytes.increment(r.direct_output_bytes as f64);
    }

    pub fn record_error(&self, class: ErrorClass) {
        if let Some((_, m)) = self.errors.iter().find(|(c, _)| *c == class) {
            m.increment(1.0);
        }
    }

    pub fn record_sequence_step(&self, position: SequencePosition) {
        if let Some((_, m)) = self.sequence_steps.iter().find(|(p, _)| *p == position) {
            m.increment(1.0);
        }
    }

    pub fn set_load_ms(&self, ms: f64) {
        self.load_ms.set(ms);
    }

    /// The metrics of one instance of this model, with a memory gauge for each (type, device)
    /// of `usage` (what the instance reports at load; the devices do not change).
    pub fn instance(&self, instance: &str, usage: &[MemoryUsage]) -> Result<InstanceMetrics> {
        let base = [("model", self.model.as_str()), ("version", self.version.as_str()), ("instance", instance)];
        let memory = usage
            .iter()
            .map(|u| {
                let device = match u.memory_type {
                    MemoryType::Gpu => format!("gpu{}", u.device),
                    MemoryType::Cpu | MemoryType::CpuPinned => "cpu".to_string(),
                };
                let mut labels = base.to_vec();
                labels.push(("device", device.as_str()));
                let gauge = GaugeShare::new(Metric::new(&self.families.memory_bytes, &labels, None)?);
                Ok((u.memory_type, u.device, gauge))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(InstanceMetrics {
            load_ms: Metric::new(&self.families.instance_load_ms, &base, None)?,
            memory,
            _families: Arc::clone(&self.families),
        })
    }
}

/// The shared CPU arena's gauge: one series for the backend, created once (a second series with
/// the same labels would be the same one, deleted by whichever holder left first).
pub struct SharedArenaGauge {
    gauge: Metric,
    _families: Arc<Families>,
}

impl std::fmt::Debug for SharedArenaGauge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SharedArenaGauge")
    }
}

impl SharedArenaGauge {
    pub fn new(families: &Arc<Families>) -> Result<Arc<Self>> {
        let gauge = Metric::new(&families.shared_arena_bytes, &[], None)?;
        Ok(Arc::new(SharedArenaGauge { gauge, _families: Arc::clone(families) }))
    }

    pub fn set(&self, bytes: u64) {
        self.gauge.set(bytes as f64);
    }
}

/// One instance's metrics. Fields drop in order: the metrics, then the families.
pub struct InstanceMetrics {
    load_ms: Metric,
    memory: Vec<(MemoryType, i64, GaugeShare)>,
    _families: Arc<Families>,
}

impl InstanceMetrics {
    pub fn set_load_ms(&self, ms: f64) {
        self.load_ms.set(ms);
    }

    pub fn set_memory(&self, usage: &[MemoryUsage]) {
        for u in usage {
            if let Some((_, _, m)) = self.memory.iter().find(|(t, d, _)| *t == u.memory_type && *d == u.device) {
                m.set(u.bytes);
            }
        }
    }
}

/// This holder's share of a gauge that several holders may have at once (two incarnations of a
/// model during a reload): setting it moves the gauge by the change of this share, dropping it
/// takes the share back out. The gauge is thus the sum of the live holders' shares. Byte counts
/// below 2^53 add and subtract exactly in the gauge's f64.
struct GaugeShare {
    gauge: Metric,
    share: AtomicU64,
}

impl GaugeShare {
    fn new(gauge: Metric) -> Self {
        GaugeShare { gauge, share: AtomicU64::new(0) }
    }

    fn set(&self, bytes: u64) {
        let before = self.share.swap(bytes, Ordering::Relaxed);
        if before != bytes {
            self.gauge.increment(bytes as f64 - before as f64);
        }
    }
}

impl Drop for GaugeShare {
    fn drop(&mut self) {
        self.set(0);
    }
}

//! The LLM serving metrics, named after vLLM's (`vllm:` becomes `onnxrs_`) so the dashboards and
//! aggregators written for vLLM read them: per model and version, time to first token, time per
//! output token, end-to-end latency and queue time (histograms, seconds), prompt and generated
//! tokens and finished requests by reason (counters); per instance, the running and waiting
//! requests and the KV cache in use (gauges).

use std::sync::Arc;

use crate::clock;
use crate::error::Result;
use crate::generate::Entry;
use crate::generate::scheduler::Sequence;
use crate::request_log::InstanceNames;
use crate::triton::metrics::{Family, Metric, MetricKind};

/// Latency buckets (seconds), vLLM's for time to first token, fine at the low end.
const LATENCY_BUCKETS: [f64; 16] =
    [0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0];
/// Per-token buckets (seconds).
const TOKEN_BUCKETS: [f64; 14] =
    [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 1.0];
/// End-to-end buckets (seconds).
const E2E_BUCKETS: [f64; 13] = [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 40.0, 60.0];

/// The finish reasons counted by `onnxrs_request_success_total`.
pub const REASONS: [&str; 4] = ["stop", "length", "cancelled", "error"];

pub struct GenerationFamilies {
    ttft: Family,
    tpot: Family,
    e2e: Family,
    queue: Family,
    prompt_tokens: Family,
    generation_tokens: Family,
    success: Family,
    running: Family,
    waiting: Family,
    kv_usage: Family,
    kv_bytes: Family,
}

impl std::fmt::Debug for GenerationFamilies {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("GenerationFamilies")
    }
}

impl GenerationFamilies {
    pub fn new() -> Result<Arc<Self>> {
        use MetricKind::{Counter, Gauge, Histogram};
        Ok(Arc::new(GenerationFamilies {
            ttft: Family::new(
                Histogram,
                "onnxrs_time_to_first_token_seconds",
                "Time to first token: from the request's arrival at the backend to its first token sent",
            )?,
            tpot: Family::new(
                Histogram,
                "onnxrs_time_per_output_token_seconds",
                "Time per output token after the first: one observation per token",
            )?,
            e2e: Family::new(
                Histogram,
                "onnxrs_e2e_request_latency_seconds",
                "From the request's arrival at the backend to its last response",
            )?,
            queue: Family::new(
                Histogram,
                "onnxrs_request_queue_time_seconds",
                "Time a request waited for a place among the running sequences",
            )?,
            prompt_tokens: Family::new(
                Counter,
                "onnxrs_prompt_tokens_total",
                "Prompt tokens of the requests that ran",
            )?,
            generation_tokens: Family::new(Counter, "onnxrs_generation_tokens_total", "Tokens generated and sent")?,
            success: Family::new(
                Counter,
                "onnxrs_request_success_total",
                "Finished generation requests, by finished_reason (stop, length, cancelled, error)",
            )?,
            running: Family::new(Gauge, "onnxrs_num_requests_running", "Requests generating now")?,
            waiting: Family::new(Gauge, "onnxrs_num_requests_waiting", "Requests waiting for a place")?,
            kv_usage: Family::new(
                Gauge,
                "onnxrs_kv_cache_usage_ratio",
                "KV cache reserved by running requests, as a fraction of kv_cache_bytes (0 without a limit)",
            )?,
            kv_bytes: Family::new(
                Gauge,
                "onnxrs_kv_cache_bytes",
                "Bytes the running requests' KV cache holds now (a step's inputs and outputs, padded)",
            )?,
        }))
    }
}

/// One instance's metrics (histograms and counters shared by the model's instances: same labels).
pub struct GenerationMetrics {
    ttft: Metric,
    tpot: Metric,
    e2e: Metric,
    queue: Metric,
    prompt_tokens: Metric,
    generation_tokens: Metric,
    success: Vec<Metric>,
    running: Metric,
    waiting: Metric,
    kv_usage: Metric,
    kv_bytes: Metric,
    kv_limit: usize,
    /// Keeps the families alive as long as their metrics.
    _families: Arc<GenerationFamilies>,
}

impl GenerationMetrics {
    /// `names`: the model, version and instance; `kv_limit`: its `kv_cache_bytes` (0: none).
    pub fn new(families: Arc<GenerationFamilies>, names: &InstanceNames, kv_limit: usize) -> Result<Self> {
        let version = names.version.to_string();
        let model = names.model.as_str();
        let labels = [("model", model), ("version", version.as_str())];
        let own = [("model", model), ("version", version.as_str()), ("instance", names.instance.as_str())];
        let f = &families;
        Ok(GenerationMetrics {
            ttft: Metric::new(&f.ttft, &labels, Some(&LATENCY_BUCKETS))?,
            tpot: Metric::new(&f.tpot, &labels, Some(&TOKEN_BUCKETS))?,
            e2e: Metric::new(&f.e2e, &labels, Some(&E2E_BUCKETS))?,
            queue: Metric::new(&f.queue, &labels, Some(&LATENCY_BUCKETS))?,
            prompt_tokens: Metric::new(&f.prompt_tokens, &labels, None)?,
            generation_tokens: Metric::new(&f.generation_tokens, &labels, None)?,
            success: REASONS
                .iter()
                .map(|r| Metric::new(&f.success, &[labels[0], labels[1], ("finished_reason", r)], None))
                .collect::<Result<_>>()?,
            running: Metric::new(&f.running, &own, None)?,
            waiting: Metric::new(&f.waiting, &own, None)?,
            kv_usage: Metric::new(&f.kv_usage, &own, None)?,
            kv_bytes: Metric::new(&f.kv_bytes, &own, None)?,
            kv_limit,
            _families: families,
        })
    }

    pub fn generated(&self, tokens: usize) {
        self.generation_tokens.increment(tokens as f64);
    }

    /// A request that ended (`seq` when it ran): its latencies and its reason.
    pub(crate) fn finished(&self, entry: &Entry, seq: Option<&Sequence>, reason: &str) {
        if let Some(i) = REASONS.iter().position(|r| *r == reason) {
            self.success[i].increment(1.0);
        }
        let Some(seq) = seq else { return };
        let secs = |from: u64, to: u64| to.saturating_sub(from) as f64 / 1e9;
        self.prompt_tokens.increment(entry.prompt.len() as f64);
        self.queue.observe(secs(entry.queued_ns, seq.started_ns));
        self.e2e.observe(secs(entry.queued_ns, clock::now_ns()));
    }

    /// A request's first token, observed when it is sent (as vLLM does), not when the request
    /// ends: a long stream's time to first token is on the dashboard while it still runs.
    pub(crate) fn first_token(&self, entry: &Entry, at_ns: u64) {
        self.ttft.observe(at_ns.saturating_sub(entry.queued_ns) as f64 / 1e9);
    }

    /// The time from a sequence's previous token to its next.
    pub fn inter_token(&self, seconds: f64) {
        self.tpot.observe(seconds);
    }

    pub fn set_gauges(&self, load: &Load) {
        self.running.set(load.running as f64);
        self.waiting.set(load.waiting as f64);
        self.kv_bytes.set(load.held as f64);
        self.kv_usage.set(if self.kv_limit == 0 { 0.0 } else { load.reserved as f64 / self.kv_limit as f64 });
    }
}

/// An instance's load after a step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Load {
    pub running: usize,
    pub waiting: usize,
    /// KV cache bytes reserved for the running sequences (their longest lengths).
    pub reserved: usize,
    /// KV cache bytes they hold now.
    pub held: usize,
}

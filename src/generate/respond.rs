//! What generation tells the server and the client: a response per token (or one with every
//! token), the final flag, errors, and the statistics of requests, responses and steps, with the
//! LLM serving metrics (`metrics`).

use std::cell::Cell;
use std::sync::Arc;

use crate::clock;
use crate::config::generator::TEXT_OUTPUT;
use crate::dtype::DataType;
use crate::error::{Error, ErrorKind, Result};
use crate::generate::Entry;
use crate::generate::metrics::{GenerationMetrics, Load};
use crate::generate::scheduler::Sequence;
use crate::memory::MemoryFigure;
use crate::metrics::InstanceMetrics;
use crate::request_log::{Generation, InstanceLog, LoggedOutcome};
use crate::response_timings::{self, Figures};
use crate::triton::instance::{ResponseTimes, Timestamps};
use crate::triton::response::{OutputBuffer, Response};
use crate::triton::{Instance, MemoryType};

/// The output every response carries: the tokens it adds.
pub const OUTPUT_IDS: &str = "output_ids";

/// Why a sequence ended.
pub(crate) enum Finish {
    /// At an end-of-sequence token.
    Stop,
    /// At `max_tokens` or the context length.
    Length,
    Cancelled,
    Failed(Error),
}

impl Finish {
    pub fn reason(&self) -> &'static str {
        match self {
            Finish::Stop => "stop",
            Finish::Length => "length",
            Finish::Cancelled => "cancelled",
            Finish::Failed(_) => "error",
        }
    }
}

/// What one response carries: its tokens, their text (for requests that want it), and whether
/// it is the last of its stream.
pub struct Chunk<'a> {
    pub tokens: &'a [i64],
    pub text: Option<&'a str>,
    pub last: bool,
    /// When the stream's first response was sent; `None`: this is the first.
    pub first_response_ns: Option<u64>,
}

/// When a step's run began and ended, and how many sequences it ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StepTimes {
    pub start: u64,
    pub run_end: u64,
    pub size: usize,
}

/// Reports for one instance.
pub(crate) struct Reporter<'a> {
    pub instance: Instance<'a>,
    pub metrics: Option<&'a GenerationMetrics>,
    pub log: Option<&'a InstanceLog>,
    pub memory: &'a MemoryReport,
    pub label: &'a str,
    /// The instance's name ("m_0"), for responses that carry their timings.
    pub name: &'a str,
}

/// The instance's memory, re-reported as its KV cache grows and is given back.
pub struct MemoryReport {
    pub figure: Arc<MemoryFigure>,
    /// `onnxrs_memory_bytes`, with metrics on.
    pub metrics: Option<Arc<InstanceMetrics>>,
    /// The cache bytes last reported, and when.
    last: Cell<(u64, u64)>,
}

impl MemoryReport {
    pub fn new(figure: Arc<MemoryFigure>, metrics: Option<Arc<InstanceMetrics>>) -> Self {
        MemoryReport { figure, metrics, last: Cell::new((0, 0)) }
    }
}

/// How often a growing cache is re-reported at most (Triton replaces the figure on each report);
/// a cache given back entirely is reported at once.
const MEMORY_REPORT_NS: u64 = 100_000_000;

/// The request log's `error_kind` of a failed generation request.
pub(crate) fn error_kind(e: &Error) -> &'static str {
    match e.kind() {
        ErrorKind::Cancelled => "cancelled",
        ErrorKind::InvalidArg | ErrorKind::Unsupported => "bad_input",
        _ => "internal",
    }
}

impl Reporter<'_> {
    /// Sends `chunk` as one response of `entry`'s stream, and its response statistics over the
    /// step's `times`; returns when it was sent.
    pub fn tokens(&self, entry: &Entry, chunk: &Chunk<'_>, times: StepTimes) -> Result<u64> {
        let (result, end) = send_tokens(entry, chunk, entry.timings.then_some((times, self.name)));
        let (start, run_end) = (times.start, times.run_end);
        let times = ResponseTimes { start, output_start: run_end.max(start), end: end.max(run_end) };
        if let Err(e) = self.instance.report_response_statistics(&entry.factory, times, result.as_ref().err()) {
            log::warn!("onnxrs: {}: cannot report a response's statistics: {e}", self.label);
        }
        if let Some(m) = self.metrics {
            m.generated(chunk.tokens.len());
        }
        result.map(|()| end)
    }

    /// One ONNX Runtime run over `times.size` sequences (Triton's batch statistics).
    pub fn batch(&self, times: StepTimes) {
        let (start, run_end) = (times.start, times.run_end);
        let t = Timestamps { exec_start: start, compute_start: start, compute_end: run_end, exec_end: clock::now_ns() };
        if let Err(e) = self.instance.report_batch_statistics(times.size as u64, t) {
            log::warn!("onnxrs: {}: cannot report a step's statistics: {e}", self.label);
        }
    }

    /// A request refused before it ran (it never took a place): its error, the final flag, its
    /// statistics; then it is released.
    pub fn reject(&self, entry: Entry, e: Error) {
        answer_error(&entry, &e, self.label);
        self.request_statistics(&entry, false, Timestamps::default());
        let reason = if e.kind() == ErrorKind::Cancelled { "cancelled" } else { "error" };
        if let Some(m) = self.metrics {
            m.finished(&entry, None, reason);
        }
        if let Some(log) = self.log {
            let generation = Generation {
                prompt_tokens: entry.prompt.len(),
                generated_tokens: 0,
                ttft_ns: None,
                tpot_ns: None,
                finish_reason: reason,
            };
            let outcome = LoggedOutcome::Failure { kind: error_kind(&e), message: e.message().to_string() };
            log.record_generation(entry.request.view().id().unwrap_or(""), outcome, generation);
        }
    }

    /// A sequence that ended: what its client still needs (an error and the final flag), its
    /// statistics and metrics; then its request is released with it.
    pub fn finish(&self, seq: Sequence, finish: Finish) {
        match &finish {
            // The last response went out with the final flag.
            Finish::Stop | Finish::Length => {}
            Finish::Cancelled => answer_error(&seq.entry, &Error::cancelled("the request was cancelled"), self.label),
            Finish::Failed(e) => answer_error(&seq.entry, e, self.label),
        }
        let success = matches!(finish, Finish::Stop | Finish::Length);
        let now = clock::now_ns();
        let compute_end = seq.last_token_ns.max(seq.started_ns);
        let t = Timestamps {
            exec_start: seq.entry.queued_ns.min(seq.started_ns),
            compute_start: seq.started_ns,
            compute_end,
            exec_end: now.max(compute_end),
        };
        self.request_statistics(&seq.entry, success, t);
        if let Some(m) = self.metrics {
            m.finished(&seq.entry, Some(&seq), finish.reason());
        }
        if let Some(log) = self.log {
            let queued = seq.entry.queued_ns;
            let generation = Generation {
                prompt_tokens: seq.entry.prompt.len(),
                generated_tokens: seq.generated.len(),
                ttft_ns: seq.first_token_ns.map(|f| f.saturating_sub(queued)),
                tpot_ns: seq
                    .first_token_ns
                    .filter(|_| seq.generated.len() > 1)
                    .map(|first| seq.last_token_ns.saturating_sub(first) / (seq.generated.len() as u64 - 1)),
                finish_reason: finish.reason(),
            };
            let outcome = match &finish {
                Finish::Stop | Finish::Length => {
                    let Figures { input_ns, infer_ns, output_ns } = Figures::of(t);
                    LoggedOutcome::Success { input_ns, infer_ns, output_ns }
                }
                Finish::Cancelled => {
                    LoggedOutcome::Failure { kind: "cancelled", message: "the request was cancelled".into() }
                }
                Finish::Failed(e) => LoggedOutcome::Failure { kind: error_kind(e), message: e.message().to_string() },
            };
            log.record_generation(seq.entry.request.view().id().unwrap_or(""), outcome, generation);
        }
    }

    pub(crate) fn first_token(&self, entry: &Entry, at_ns: u64) {
        if let Some(m) = self.metrics {
            m.first_token(entry, at_ns);
        }
    }

    pub fn inter_token(&self, ns: u64) {
        if let Some(m) = self.metrics {
            m.inter_token(ns as f64 / 1e9);
        }
    }

    pub fn set_gauges(&self, load: &Load) {
        if let Some(m) = self.metrics {
            m.set_gauges(load);
        }
        let held = load.held as u64;
        let (reported, at) = self.memory.last.get();
        let now = clock::now_ns();
        if held != reported && (held == 0 || now.saturating_sub(at) >= MEMORY_REPORT_NS) {
            self.memory.last.set((held, now));
            self.memory.figure.set_extra_cpu(held);
            let usage = self.memory.figure.usage();
            if let Err(e) = self.instance.report_memory_usage(&usage) {
                log::warn!("onnxrs: {}: cannot report memory usage: {e}", self.label);
            }
            if let Some(m) = &self.memory.metrics {
                m.set_memory(&usage);
            }
        }
    }

    fn request_statistics(&self, entry: &Entry, success: bool, t: Timestamps) {
        if let Err(e) = self.instance.report_statistics(entry.request.view(), success, t) {
            log::warn!("onnxrs: {}: cannot report a request's statistics: {e}", self.label);
        }
    }
}

/// What a response of a request that asked for its timings carries: the response's own stages
/// as its response statistics count them (`end`: its outputs are written), and on the last the
/// request's time to its first response and in all.
fn response_figures(entry: &Entry, chunk: &Chunk<'_>, times: StepTimes, end: u64) -> (Figures, Option<(u64, u64)>) {
    let stages =
        Timestamps { exec_start: times.start, compute_start: times.start, compute_end: times.run_end, exec_end: end };
    let last = chunk.last.then(|| {
        let first = chunk.first_response_ns.unwrap_or(end);
        (first.saturating_sub(entry.queued_ns), end.saturating_sub(entry.queued_ns))
    });
    (Figures::of(stages), last)
}

/// Sends one response of the stream, with its timings when `timed` (the step's times and the
/// instance's name); returns the outcome and when its outputs were written (before the send).
fn send_tokens(entry: &Entry, chunk: &Chunk<'_>, timed: Option<(StepTimes, &str)>) -> (Result<()>, u64) {
    let response = match Response::from_factory(&entry.factory) {
        Ok(r) => r,
        Err(e) => return (Err(e), clock::now_ns()),
    };
    let bytes: Vec<u8> = chunk.tokens.iter().flat_map(|t| t.to_ne_bytes()).collect();
    let shape = [chunk.tokens.len() as i64];
    let written = write_output(&response, (OUTPUT_IDS, DataType::Int64, &shape), &bytes).and_then(|()| {
        let Some(text) = chunk.text else { return Ok(()) };
        let mut encoded = vec![0u8; crate::bytes::encoded_len([text.as_bytes()])];
        crate::bytes::encode_into(&mut encoded, [text.as_bytes()])?;
        write_output(&response, (TEXT_OUTPUT, DataType::Bytes, &[1]), &encoded)
    });
    let end = clock::now_ns();
    if written.is_ok()
        && let Some((times, instance)) = timed
    {
        let (figures, last) = response_figures(entry, chunk, times, end);
        response_timings::attach(&response, figures, Some(times.size), instance);
        if let Some((first, total)) = last {
            response_timings::attach_final(&response, first, total);
        }
    }
    (response.send_in_stream(chunk.last, written), end)
}

/// Adds one output (name, type, shape) holding `bytes` to `response`.
fn write_output(response: &Response, (name, data_type, shape): (&str, DataType, &[i64]), bytes: &[u8]) -> Result<()> {
    match response.output_buffer(name, data_type, shape, bytes.len(), (MemoryType::Cpu, 0))? {
        OutputBuffer::Host(buffer) => {
            buffer.copy_from_slice(bytes);
            Ok(())
        }
        OutputBuffer::Device { device } => {
            Err(Error::unsupported(format!("the server placed '{name}' in GPU {device} memory")))
        }
    }
}

/// An error response with the final flag; a failure to send it is logged (the stream cannot be
/// told anything else).
fn answer_error(entry: &Entry, e: &Error, label: &str) {
    let sent = Response::from_factory(&entry.factory).and_then(|r| r.send_in_stream(true, Err(e.clone())));
    if let Err(send) = sent {
        log::error!("onnxrs: {label}: cannot send an error response ({e}): {send}");
        if let Err(flag) = entry.factory.send_final() {
            log::error!("onnxrs: {label}: cannot end a stream: {flag}");
        }
    }
}

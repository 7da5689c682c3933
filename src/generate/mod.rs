//! Serving generative decoders (a folder with `genai_config.json`, as ONNX Runtime GenAI's model
//! builder writes it) on a decoupled model: each request streams its tokens back, one response
//! per token, while a loop per instance batches every running sequence into one ONNX Runtime run
//! per step (continuous batching) and admits new requests between steps.
//!
//! `execute` only checks each request (`validation`) and hands it to the instance's loop over a
//! channel, as one `Entry` that carries everything about it; the loop (`scheduler`) runs on a
//! thread of its own that owns every sequence's state (`kv`, `sampling`), runs the decoder
//! (`step`) and answers (`respond`, `metrics`). Finalizing the instance closes the channel and
//! joins the thread once the running requests are answered.

pub mod kv;
pub mod metrics;
pub(crate) mod respond;
pub mod sampling;
pub(crate) mod scheduler;
pub mod step;
pub mod text;
pub mod validation;

use std::sync::Arc;
use std::sync::mpsc::{self, Sender};
use std::thread::JoinHandle;

use crate::clock;
use crate::config::genai::GenaiConfig;
pub use crate::config::generator::Limits;
use crate::config::generator::TEXT_OUTPUT;
use crate::error::{Error, Result};
use crate::generate::metrics::GenerationMetrics;
use crate::generate::respond::{MemoryReport, Reporter};
use crate::generate::scheduler::Scheduler;
use crate::generate::step::Decoder;
use crate::generate::text::Text;
use crate::generate::validation::{Params, RawInput, TextRequest};
use crate::onnx::session::OnnxSession;
use crate::request_log::{InstanceLog, LoggedOutcome};
use crate::triton::factory::ResponseFactory;
use crate::triton::instance::{InstanceHandle, Timestamps};
use crate::triton::model::Readiness;
use crate::triton::request::InputBuffer;
use crate::triton::response::Response;
use crate::triton::{Instance, OwnedRequest};

/// One request on its way through generation: everything the loop needs about it.
pub(crate) struct Entry {
    /// Held until the request is answered: its statistics are reported on it, then it is released.
    pub request: OwnedRequest,
    /// Every response of the stream is made from it.
    pub factory: ResponseFactory,
    pub prompt: Vec<i64>,
    pub params: Params,
    /// When execute took it over.
    pub queued_ns: u64,
    /// Whether its responses carry their timings (`response_timings`).
    pub timings: bool,
}

/// What an instance's loop runs with.
pub struct Setup {
    /// Whether the model is still ready: an unload ends the running streams.
    pub(crate) readiness: Readiness,
    pub session: Arc<OnnxSession>,
    pub genai: Arc<GenaiConfig>,
    pub limits: Limits,
    pub metrics: Option<GenerationMetrics>,
    /// The request log, when it is on.
    pub log: Option<InstanceLog>,
    /// The instance's memory, which holds the KV cache too.
    pub memory: MemoryReport,
    /// The model's tokenizer, when it has one.
    pub text: Option<Arc<Text>>,
    /// The model's `response_timings: "always"`.
    pub timings_always: bool,
    /// The instance's name ("m_0").
    pub name: String,
}

/// One instance's generation loop.
pub struct Generator {
    sender: Option<Sender<Entry>>,
    thread: Option<JoinHandle<()>>,
    genai: Arc<GenaiConfig>,
    label: String,
    /// Where refused requests are logged (the loop logs the others).
    log: Option<InstanceLog>,
    text: Option<Arc<Text>>,
    timings_always: bool,
}

impl std::fmt::Debug for Generator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Generator")
    }
}

impl Generator {
    /// Starts the loop of `instance` with `setup`; `label` names the instance in log lines.
    pub(crate) fn start(instance: InstanceHandle, setup: Setup, label: String) -> Result<Self> {
        let Setup { readiness, session, genai, limits, metrics, log, memory, text, timings_always, name } = setup;
        let loop_text = text.clone();
        let refusals_log = log.clone();
        let (sender, receiver) = mpsc::channel::<Entry>();
        let (loop_genai, loop_label) = (Arc::clone(&genai), label.clone());
        let thread = std::thread::Builder::new()
            .name("onnxrs-generate".into())
            .spawn(move || {
                let decoder = Decoder::new(&session, &loop_genai);
                let reporter = Reporter {
                    instance: instance.get(),
                    metrics: metrics.as_ref(),
                    log: log.as_ref(),
                    memory: &memory,
                    label: &loop_label,
                    name: &name,
                };
                Scheduler::new(decoder, limits, reporter, loop_text).run(&receiver, &readiness);
            })
            .map_err(|e| Error::internal(format!("cannot start the generation thread: {e}")))?;
        Ok(Generator {
            sender: Some(sender),
            thread: Some(thread),
            genai,
            label,
            log: refusals_log,
            text,
            timings_always,
        })
    }

    /// Takes `requests` over: each is checked and queued, or answered with its error now.
    pub(crate) fn submit(&self, instance: Instance<'_>, requests: Vec<OwnedRequest>) {
        let queued_ns = clock::now_ns();
        for request in requests {
            match self.entry(request, queued_ns) {
                Ok(entry) => {
                    if let Some(Err(mpsc::SendError(entry))) = self.sender.as_ref().map(|s| s.send(entry)) {
                        let e = Error::unavailable("the generation loop has stopped");
                        self.refuse(instance, entry.request, &e);
                    }
                }
                Err((request, e)) => self.refuse(instance, request, &e),
            }
        }
    }

    fn entry(&self, request: OwnedRequest, queued_ns: u64) -> std::result::Result<Entry, (OwnedRequest, Error)> {
        let text = TextRequest { text: self.text.as_deref(), wants_text_output: wants_text_output(&request) };
        let checked = match read_inputs(&request).and_then(|inputs| validation::check(&inputs, &self.genai, &text)) {
            Ok(c) => c,
            Err(e) => return Err((request, e)),
        };
        let timings = match crate::response_timings::wanted(self.timings_always, request.view()) {
            Ok(t) => t,
            Err(e) => return Err((request, e)),
        };
        let factory = match ResponseFactory::new(request.view()) {
            Ok(f) => f,
            Err(e) => return Err((request, e)),
        };
        Ok(Entry { request, factory, prompt: checked.prompt, params: checked.params, queued_ns, timings })
    }
}

impl Drop for Generator {
    /// Closes the channel; the loop answers what it holds and ends; joined here.
    fn drop(&mut self) {
        drop(self.sender.take());
        if let Some(t) = self.thread.take()
            && t.join().is_err()
        {
            log::error!("onnxrs: {}: the generation loop panicked", self.label);
        }
    }
}

impl Generator {
    /// A request refused before it was queued: one error response with the final flag, a failed
    /// request statistic and a log line, then it is released.
    fn refuse(&self, instance: Instance<'_>, request: OwnedRequest, e: &Error) {
        let label = &self.label;
        let sent = Response::new(request.view()).and_then(|r| r.send(Err(e.clone())));
        if let Err(send) = sent {
            log::error!("onnxrs: {label}: cannot answer a refused request ({e}): {send}");
        }
        if let Err(s) = instance.report_statistics(request.view(), false, Timestamps::default()) {
            log::warn!("onnxrs: {label}: cannot report a request's statistics: {s}");
        }
        if let Some(log) = &self.log {
            let outcome = LoggedOutcome::Failure { kind: respond::error_kind(e), message: e.message().to_string() };
            log.record(request.view().id().unwrap_or(""), None, outcome);
        }
    }
}

/// Whether a request's responses should carry `text_output`: it named no outputs, or that one.
fn wants_text_output(request: &OwnedRequest) -> bool {
    let request = request.view();
    let count = request.output_count().unwrap_or(0);
    count == 0 || (0..count).any(|i| request.output_name(i).is_ok_and(|n| n == TEXT_OUTPUT))
}

/// A request's inputs, each as one run of bytes (from system memory).
fn read_inputs(request: &OwnedRequest) -> Result<Vec<RawInput<'_>>> {
    let request = request.view();
    if request.is_cancelled()? {
        return Err(Error::cancelled("the request was cancelled before it ran"));
    }
    (0..request.input_count()?)
        .map(|i| {
            let input = request.input(i)?;
            let p = input.properties()?;
            let mut bytes = Vec::new();
            for b in 0..p.buffer_count {
                match input.buffer(b)? {
                    InputBuffer::Host(part) => bytes.extend_from_slice(part),
                    InputBuffer::Device { device, .. } => {
                        return Err(Error::unsupported(format!(
                            "input '{}' is in GPU {device} memory; send it in the request or system shared memory",
                            p.name
                        )));
                    }
                }
            }
            Ok(RawInput { name: p.name, data_type: p.data_type, shape: p.shape, bytes })
        })
        .collect()
}

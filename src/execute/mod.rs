//! TRITONBACKEND_ModelInstanceExecute after its commit point: the backend owns the requests and
//! answers every one of them — a response (outputs or an error), one statistics record, and a
//! release — whatever happens, a panic included.
//!
//! Words: an *execution* is the requests of one execute call; a *run* is one ONNX Runtime call,
//! over the inputs of one or more requests laid end to end along the *batch* dimension.
//!
//! One request's way, one file per step:
//! - here: the commit point (`Execution`, one `RequestRecord` per request) and the loop;
//! - `read`: reading a request's inputs from the server and checking them;
//! - `run`: gathering a run's inputs, running ONNX Runtime, scattering the outputs, and running
//!   the requests of a failed run again one by one, so only the culprit gets the error;
//! - `respond`: writing one request's outputs into its response;
//! - `direct`: the outputs a run of one request writes straight into its response;
//! - `reporting`: one run's batch statistics, metrics and trace activities.

pub(crate) mod direct;
mod read;
mod reporting;
mod respond;
mod run;
mod sequence;

use std::mem;

use crate::clock;
use crate::config::model_config::ModelConfig;
use crate::error::{Error, Result};
use crate::inputs::CheckedRequest;
use crate::instance::InstanceState;
use crate::metrics::{ErrorClass, ModelMetrics, SequencePosition};
use crate::model::ModelState;
use crate::request_log::{InstanceLog, LoggedOutcome, RunSize};
use crate::response_timings::{self, Figures};
use crate::triton::instance::Timestamps;
use crate::triton::{Instance, InstanceKind, OwnedRequest, Request, Response};

/// An error and what kind of failure it is (for `onnxrs_request_errors_total`).
type Failure = (Error, ErrorClass);

trait Classify<T> {
    fn class(self, class: ErrorClass) -> std::result::Result<T, Failure>;
}

impl<T> Classify<T> for Result<T> {
    fn class(self, class: ErrorClass) -> std::result::Result<T, Failure> {
        self.map_err(|e| (e, class))
    }
}

/// What became of one request.
enum Outcome {
    /// Not decided yet.
    Pending,
    Succeeded(Timestamps),
    Failed(Error, ErrorClass),
    /// Its statistics are reported and its response sent: nothing more may happen to it.
    Answered,
}

/// One request of an execution and everything that happens to it on its way.
struct RequestRecord<'r> {
    request: Request<'r>,
    /// `None` when the server could not create one (the outcome then says why).
    response: Option<Response>,
    /// Its inputs, once read and checked; a record without them takes part in no run.
    checked: Option<CheckedRequest<'r>>,
    /// For a model with sequence_batching: where the request lies in its sequence.
    position: Option<SequencePosition>,
    /// The ONNX Runtime run it took part in (the last, when a fused run was retried alone).
    run: Option<RunSize>,
    /// Whether its response carries its timings (`response_timings`).
    timings: bool,
    outcome: Outcome,
}

impl<'r> RequestRecord<'r> {
    fn new(request: Request<'r>) -> Self {
        let (response, outcome) = match Response::new(request) {
            Ok(response) => (Some(response), Outcome::Pending),
            Err(e) => (None, Outcome::Failed(e, ErrorClass::Internal)),
        };
        RequestRecord { request, response, checked: None, position: None, run: None, timings: false, outcome }
    }

    fn checked(&self) -> Result<&CheckedRequest<'r>> {
        self.checked.as_ref().ok_or_else(|| Error::internal("onnxrs: a request in a run was not checked"))
    }

    /// Reports the request's statistics, then sends its response; once only. Statistics go first
    /// so that a client that reads /stats right after its response sees its own request counted.
    fn answer(&mut self, reporter: Reporter<'_>) {
        let Reporter { instance, metrics, label, name, request_log } = reporter;
        let (success, timestamps, result) = match mem::replace(&mut self.outcome, Outcome::Answered) {
            Outcome::Answered => return,
            Outcome::Succeeded(t) => {
                if let (Some(m), Some(position)) = (metrics, self.position) {
                    m.record_sequence_step(position);
                }
                (true, t, Ok(()))
            }
            Outcome::Failed(e, class) => {
                if let Some(m) = metrics {
                    m.record_error(class);
                }
                (false, Timestamps::default(), Err((e, class)))
            }
            Outcome::Pending => {
                if let Some(m) = metrics {
                    m.record_error(ErrorClass::Internal);
                }
                let e = Error::internal("onnxrs: the request was not executed");
                (false, Timestamps::default(), Err((e, ErrorClass::Internal)))
            }
        };
        let request = self.request;
        if let Err(e) = instance.report_statistics(request, success, timestamps) {
            log::error!("onnxrs: cannot report statistics for a request: {e}");
        }
        if let Some(log) = request_log {
            log.record(request.id().unwrap_or_default(), self.run, logged_outcome(timestamps, &result));
        }
        let result = result.map_err(|(e, _)| e);
        if let Err(e) = &result {
            log::debug!("onnxrs: {label}: request '{}' failed: {e}", request.id().unwrap_or_default());
        }
        match self.response.take() {
            Some(response) => {
                if self.timings && success {
                    let run_size = self.run.map(|r| r.requests);
                    response_timings::attach(&response, Figures::of(timestamps), run_size, name);
                }
                if let Err(e) = response.send(result) {
                    log::error!("onnxrs: cannot send a response: {e}");
                }
            }
            None => log::error!("onnxrs: a request has no response to carry its outcome"),
        }
    }

    /// Records `failure` as the outcome and answers at once.
    fn fail(&mut self, (error, class): Failure, reporter: Reporter<'_>) {
        self.outcome = Outcome::Failed(error, class);
        self.answer(reporter);
    }
}

/// What the request log says of an outcome: the stage times of the statistics just reported,
/// or the error.
fn logged_outcome(t: Timestamps, result: &std::result::Result<(), Failure>) -> LoggedOutcome {
    match result {
        Ok(()) => {
            // The same stages the statistics and the response's timings have.
            let Figures { input_ns, infer_ns, output_ns } = Figures::of(t);
            LoggedOutcome::Success { input_ns, infer_ns, output_ns }
        }
        Err((e, class)) => LoggedOutcome::Failure { kind: class.label(), message: e.message().to_string() },
    }
}

/// Where a request's outcome goes: Triton's statistics, onnxrs's metrics, the log, the request
/// log.
#[derive(Clone, Copy)]
struct Reporter<'i> {
    instance: Instance<'i>,
    metrics: Option<&'i ModelMetrics>,
    /// "model 'm' version 1 instance 'm_0'", for log lines.
    label: &'i str,
    /// The instance's name ("m_0"), for the responses that carry their timings.
    name: &'i str,
    request_log: Option<&'i InstanceLog>,
}

/// What every step of one execution shares.
struct ExecutionScope<'a> {
    config: &'a ModelConfig,
    /// The outputs a run of one request writes straight into its response (none on a GPU).
    direct: &'a [direct::DirectOutput],
    reporter: Reporter<'a>,
    /// When the execute call began: the start of every request's statistics.
    exec_start: u64,
    /// The model's `response_timings: "always"`.
    timings_always: bool,
    /// Rows of the null requests Triton put in this execution's batch (Direct sequence
    /// batching), answered without a run: the next run's batch statistic counts them, so
    /// `batch_stats` shows the batch as Triton formed it (`sequence::answer_null_request`).
    null_rows: std::cell::Cell<u64>,
}

/// The commit-point type: one record per request of the execution. Dropping it answers every
/// request not answered yet (as an internal error): nothing is left unanswered, even when a
/// panic unwinds through `execute`. The records borrow their requests, which the caller
/// releases after this is dropped.
struct Execution<'r> {
    reporter: Reporter<'r>,
    records: Vec<RequestRecord<'r>>,
}

impl Drop for Execution<'_> {
    fn drop(&mut self) {
        for record in &mut self.records {
            record.answer(self.reporter);
        }
    }
}

/// Answers all `requests`. Never fails: every error becomes the answer of the request it
/// concerns.
pub(crate) fn execute(instance: Instance<'_>, model: &ModelState, state: &InstanceState, requests: Vec<OwnedRequest>) {
    let exec_start = clock::now_ns();
    let reporter = Reporter {
        instance,
        metrics: model.metrics.as_ref(),
        label: &state.label,
        name: &state.name,
        request_log: state.request_log.as_ref(),
    };
    // `requests` is a parameter, so it outlives `execution` even while a panic unwinds: every
    // request is answered (by `execution`'s drop) before it is released (by its own).
    let mut execution =
        Execution { reporter, records: requests.iter().map(|r| RequestRecord::new(r.view())).collect() };
    // A GPU instance's outputs come back through ONNX Runtime's own copy to the host.
    let direct: &[direct::DirectOutput] = if state.kind == InstanceKind::Gpu { &[] } else { &model.direct_outputs };
    let scope = ExecutionScope {
        config: &model.config,
        direct,
        reporter,
        exec_start,
        timings_always: model.response_timings_always,
        null_rows: Default::default(),
    };

    for record in &mut execution.records {
        read::read(&scope, record);
    }
    let runs = run::plan(&mut execution.records, model.config.max_batch_size);
    for mut records in runs {
        run::run_and_answer(&scope, &state.session, &mut records);
    }
    drop(execution);
    drop(requests);
    state.refresh_memory_report(instance);
}

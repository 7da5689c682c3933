//! TRITONBACKEND_ModelInstanceExecute after its commit point: the backend owns the requests and
//! answers every one of them — a response (outputs or an error), one statistics record, and a
//! release — whatever happens, a panic included.
//!
//! The flow for one call: read and check each request's inputs (a bad one is answered with its
//! error at once); group the good ones into runs (`crate::batch::plan`); for each run, gather the
//! inputs, run ONNX Runtime once, scatter the outputs back, report one batch statistic and answer
//! the run's requests. When a fused run fails, its requests are run again one by one, so only the
//! request that makes ONNX Runtime fail gets the error.

use std::mem;

use crate::batch::{self, Gathered};
use crate::bytes;
use crate::clock;
use crate::config::model_config::TensorConfig;
use crate::error::{Error, ErrorKind, Result};
use crate::inputs::{self, CheckedRequest, Payload, RawInput};
use crate::instance::InstanceState;
use crate::metrics::{ErrorClass, ModelMetrics, RunRecord};
use crate::model::ModelState;
use crate::onnx::session::OnnxSession;
use crate::onnx::tensor::{self, InputTensor, OutputData, OutputView, RunOutputs};
use crate::triton::instance::Timestamps;
use crate::triton::request::InputBuffer;
use crate::triton::response::OutputBuffer;
use crate::triton::{Instance, MemoryType, OwnedRequest, Request, Response};

/// What became of one request.
enum Outcome {
    Pending,
    Succeeded(Timestamps),
    Failed(Error, ErrorClass),
}

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

/// A request that could not be read: cancelled, refused (its inputs), or a server call failed.
fn read_failure_class(e: &Error) -> ErrorClass {
    match e.kind() {
        ErrorKind::Cancelled => ErrorClass::Cancelled,
        ErrorKind::InvalidArg | ErrorKind::Unsupported => ErrorClass::BadInput,
        _ => ErrorClass::Internal,
    }
}

/// The answer being built for one request.
struct Slot {
    response: Option<Response>,
    outcome: Outcome,
    finished: bool,
}

/// Where a request's outcome goes: Triton's statistics, onnxrs's metrics, the log.
#[derive(Clone, Copy)]
struct Reporter<'i> {
    instance: Instance<'i>,
    metrics: Option<&'i ModelMetrics>,
    /// "model 'm' version 1 instance 'm_0'", for log lines.
    label: &'i str,
}

/// The requests of one execute and their answers. Dropping it finishes every request that is
/// not finished yet (as an internal error), then releases them all: nothing is left unanswered
/// or unreleased, even when a panic unwinds through `execute`.
struct Batch<'i> {
    reporter: Reporter<'i>,
    /// Declared before `requests`' release: `Drop` below answers them first.
    slots: Vec<Slot>,
    requests: Vec<OwnedRequest>,
}

impl Drop for Batch<'_> {
    fn drop(&mut self) {
        for (slot, request) in self.slots.iter_mut().zip(&self.requests) {
            finish(self.reporter, request.view(), slot);
        }
        // `requests` drops after this, releasing each request to the server.
    }
}

/// Reports the request's statistics, then sends its response. Statistics go first so that a
/// client that reads /stats right after its response sees its own request counted.
fn finish(reporter: Reporter<'_>, request: Request<'_>, slot: &mut Slot) {
    let Reporter { instance, metrics, label } = reporter;
    if mem::replace(&mut slot.finished, true) {
        return;
    }
    let (success, timestamps, result) = match mem::replace(&mut slot.outcome, Outcome::Pending) {
        Outcome::Succeeded(t) => (true, t, Ok(())),
        Outcome::Failed(e, class) => {
            if let Some(m) = metrics {
                m.record_error(class);
            }
            (false, Timestamps::default(), Err(e))
        }
        Outcome::Pending => {
            if let Some(m) = metrics {
                m.record_error(ErrorClass::Internal);
            }
            (false, Timestamps::default(), Err(Error::internal("onnxrs: the request was not executed")))
        }
    };
    if let Err(e) = instance.report_statistics(request, success, timestamps) {
        log::error!("onnxrs: cannot report statistics for a request: {e}");
    }
    if let Err(e) = &result {
        log::debug!("onnxrs: {label}: request '{}' failed: {e}", request.id().unwrap_or_default());
    }
    match slot.response.take() {
        Some(response) => {
            if let Err(e) = response.send(result) {
                log::error!("onnxrs: cannot send a response: {e}");
            }
        }
        None => log::error!("onnxrs: a request has no response to carry its outcome"),
    }
}

/// What every run of one execute needs.
struct Ctx<'a> {
    model: &'a ModelState,
    /// The instance, and where outcomes go.
    reporter: Reporter<'a>,
    exec_start: u64,
}

/// Answers all `requests`. Never fails: every error becomes the answer of the request it
/// concerns.
pub(crate) fn execute(instance: Instance<'_>, model: &ModelState, state: &InstanceState, requests: Vec<OwnedRequest>) {
    let exec_start = clock::now_ns();
    let slots = requests
        .iter()
        .map(|r| {
            let (response, outcome) = match Response::new(r.view()) {
                Ok(resp) => (Some(resp), Outcome::Pending),
                Err(e) => (None, Outcome::Failed(e, ErrorClass::Internal)),
            };
            Slot { response, outcome, finished: false }
        })
        .collect();
    let reporter = Reporter { instance, metrics: model.metrics.as_ref(), label: &state.label };
    let mut batch = Batch { reporter, slots, requests };
    let ctx = Ctx { model, reporter, exec_start };
    let Batch { slots, requests, .. } = &mut batch;

    let mut checked: Vec<(usize, CheckedRequest<'_>)> = Vec::with_capacity(requests.len());
    for (i, request) in requests.iter().enumerate() {
        if slots[i].response.is_none() {
            finish(reporter, request.view(), &mut slots[i]);
            continue;
        }
        match read_request(&ctx, request.view()) {
            Ok(c) => checked.push((i, c)),
            Err(e) => {
                let class = read_failure_class(&e);
                slots[i].outcome = Outcome::Failed(e, class);
                finish(reporter, request.view(), &mut slots[i]);
            }
        }
    }

    let plan_input: Vec<(usize, &batch::Signature)> = checked.iter().map(|(_, c)| (c.rows, &c.signature)).collect();
    let groups = batch::plan(&plan_input, model.config.max_batch_size);
    match state.session.lock() {
        Ok(mut session) => {
            for group in &groups {
                run_group(&ctx, &mut session, slots, requests, &checked, group);
            }
        }
        Err(_) => {
            for (i, _) in &checked {
                slots[*i].outcome = Outcome::Failed(
                    Error::internal("onnxrs: the instance's session is unusable after a panic"),
                    ErrorClass::Internal,
                );
            }
        }
    }
    drop(checked);
    drop(batch);
    state.refresh_memory_report(instance);
}

/// Reads a request's inputs from the server and checks them against the config.
fn read_request<'r>(ctx: &Ctx<'_>, request: Request<'r>) -> Result<CheckedRequest<'r>> {
    if request.is_cancelled()? {
        return Err(Error::cancelled("the request was cancelled before it ran"));
    }
    let count = request.input_count()?;
    let mut raw = Vec::with_capacity(count as usize);
    for index in 0..count {
        let input = request.input(index)?;
        let p = input.properties()?;
        let mut parts = Vec::with_capacity(p.buffer_count as usize);
        for b in 0..p.buffer_count {
            match input.buffer(b)? {
                InputBuffer::Host(bytes) => parts.push(bytes),
                InputBuffer::Device { len, device } => {
                    return Err(Error::unsupported(format!(
                        "input '{}' is in memory of GPU {device} ({len} bytes); onnxrs reads inputs from system \
                         memory (send it in the request or in system shared memory)",
                        p.name
                    )));
                }
            }
        }
        raw.push(RawInput { name: p.name, data_type: p.data_type, shape: p.shape, parts });
    }
    inputs::check_request(&ctx.model.config, raw)
}

/// A run's input, laid out for ONNX Runtime.
enum Prepared<'a> {
    Fixed { name: &'a str, shape: Vec<i64>, data: Gathered<'a>, tc: &'a TensorConfig },
    Strings { name: &'a str, tensor: InputTensor<'static>, bytes: u64 },
}

fn prepare<'a>(
    ctx: &Ctx<'a>,
    checked: &'a [(usize, CheckedRequest<'a>)],
    group: &[usize],
) -> Result<Vec<Prepared<'a>>> {
    let config = &ctx.model.config;
    let first = &checked[group[0]].1;
    let rows: usize = group.iter().map(|&g| checked[g].1.rows).sum();
    let mut prepared = Vec::with_capacity(first.signature.inputs.len());
    for (k, (config_index, tail)) in first.signature.inputs.iter().enumerate() {
        let tc = &config.inputs[*config_index];
        let mut shape = Vec::with_capacity(tail.len() + 1);
        if config.batching() {
            shape.push(rows as i64);
        }
        shape.extend_from_slice(tail);
        let payloads = group.iter().map(|&g| &checked[g].1.inputs[k].payload);
        match tc.data_type.byte_size() {
            Some(size) => {
                let parts: Vec<&[u8]> = payloads
                    .flat_map(|p| match p {
                        Payload::Fixed(parts) => parts.as_slice(),
                        Payload::Strings { .. } => &[],
                    })
                    .copied()
                    .collect();
                prepared.push(Prepared::Fixed { name: &tc.name, shape, data: batch::gather(&parts, size)?, tc });
            }
            None => {
                let elements: Vec<&[u8]> = payloads.flat_map(Payload::strings).collect();
                let tensor = tensor::from_strings(&shape, &elements)?;
                let bytes = elements.iter().map(|e| e.len() as u64).sum();
                prepared.push(Prepared::Strings { name: &tc.name, tensor, bytes });
            }
        }
    }
    Ok(prepared)
}

/// A run that happened: when it computed, and each request's outcome of the scatter.
struct Ran {
    compute_start: u64,
    compute_end: u64,
    /// Per request: the output bytes written, or why it failed.
    results: Vec<std::result::Result<u64, Failure>>,
    /// Bytes of the input tensors the run read.
    input_bytes: u64,
}

/// Gathers the group's inputs, runs ONNX Runtime once and writes each request's outputs into
/// its response. An error means no output was written for anyone.
fn run_once(
    ctx: &Ctx<'_>,
    session: &mut OnnxSession,
    slots: &mut [Slot],
    requests: &[OwnedRequest],
    checked: &[(usize, CheckedRequest<'_>)],
    group: &[usize],
) -> std::result::Result<Ran, Failure> {
    let prepared = prepare(ctx, checked, group).class(ErrorClass::Internal)?;
    let mut fixed = Vec::with_capacity(prepared.len());
    let mut input_bytes = 0u64;
    for p in &prepared {
        match p {
            Prepared::Fixed { name, shape, data, tc } => {
                input_bytes += data.bytes().len() as u64;
                fixed.push((*name, tensor::from_bytes(tc.data_type, shape, data.bytes()).class(ErrorClass::Internal)?));
            }
            Prepared::Strings { bytes, .. } => input_bytes += *bytes,
        }
    }
    let feeds: Vec<(&str, &InputTensor<'_>)> = fixed
        .iter()
        .map(|(n, t)| (*n, t))
        .chain(prepared.iter().filter_map(|p| match p {
            Prepared::Strings { name, tensor, .. } => Some((*name, tensor)),
            Prepared::Fixed { .. } => None,
        }))
        .collect();

    // On a GPU instance the run returns its outputs in host memory, so it has waited for the
    // device work and the copy back: compute_end covers the device time, not just the launches.
    let compute_start = clock::now_ns();
    let outputs = session.run(&feeds).class(ErrorClass::OrtFailure)?;
    let compute_end = clock::now_ns();

    let rows: Vec<usize> = group.iter().map(|&g| checked[g].1.rows).collect();
    let views = read_outputs(ctx, &outputs);
    let results = group
        .iter()
        .enumerate()
        .map(|(pos, &g)| {
            let i = checked[g].0;
            match (&views, slots[i].response.as_mut()) {
                (Ok(views), Some(response)) => respond(ctx, views, &rows, pos, requests[i].view(), response),
                (Err(e), _) => Err((e.clone(), ErrorClass::Internal)),
                (_, None) => Err((Error::internal("no response"), ErrorClass::Internal)),
            }
        })
        .collect();
    Ok(Ran { compute_start, compute_end, results, input_bytes })
}

/// Runs one group of compatible requests as one ONNX Runtime call and answers them.
fn run_group(
    ctx: &Ctx<'_>,
    session: &mut OnnxSession,
    slots: &mut [Slot],
    requests: &[OwnedRequest],
    checked: &[(usize, CheckedRequest<'_>)],
    group: &[usize],
) {
    let group_start = clock::now_ns();
    let ran = match run_once(ctx, session, slots, requests, checked, group) {
        Ok(ran) => ran,
        Err((e, _)) if group.len() > 1 => {
            // Which request made the fused run fail is unknown: run each alone so only the
            // culprits fail and the others still get their outputs.
            log::debug!("onnxrs: a batch of {} requests failed ({e}); running them one by one", group.len());
            for &g in group {
                run_group(ctx, session, slots, requests, checked, &[g]);
            }
            return;
        }
        Err(failure) => Ran { compute_start: 0, compute_end: 0, results: vec![Err(failure)], input_bytes: 0 },
    };
    let exec_end = clock::now_ns();
    // A run happened (the group did not fail before ONNX Runtime returned): one batch statistic,
    // one metrics record, and the trace activities of its requests.
    if ran.compute_start != 0 {
        let rows: u64 = group.iter().map(|&g| checked[g].1.rows as u64).sum();
        let t = Timestamps {
            exec_start: group_start,
            compute_start: ran.compute_start,
            compute_end: ran.compute_end,
            exec_end,
        };
        if let Err(e) = ctx.reporter.instance.report_batch_statistics(rows, t) {
            log::error!("onnxrs: cannot report batch statistics: {e}");
        }
        if let Some(m) = ctx.reporter.metrics {
            m.record_run(&RunRecord {
                rows,
                gather_ns: ran.compute_start.saturating_sub(group_start),
                run_ns: ran.compute_end.saturating_sub(ran.compute_start),
                scatter_ns: exec_end.saturating_sub(ran.compute_end),
                input_bytes: ran.input_bytes,
                output_bytes: ran.results.iter().filter_map(|r| r.as_ref().ok()).sum(),
            });
        }
        // The backend's own steps, in the trace of each traced request (Triton's trace file or
        // OpenTelemetry export shows them next to its own activities).
        let activities = [
            (group_start, c"ONNXRS_GATHER_START"),
            (ran.compute_start, c"ONNXRS_ORT_RUN_START"),
            (ran.compute_end, c"ONNXRS_ORT_RUN_END"),
            (exec_end, c"ONNXRS_SCATTER_END"),
        ];
        for &g in group {
            requests[checked[g].0].view().report_trace_activities(&activities);
        }
    }
    let request_times = Timestamps {
        exec_start: ctx.exec_start,
        compute_start: ran.compute_start,
        compute_end: ran.compute_end,
        exec_end,
    };
    for (&g, r) in group.iter().zip(ran.results) {
        let i = checked[g].0;
        slots[i].outcome = match r {
            Ok(_) => Outcome::Succeeded(request_times),
            Err((e, class)) => Outcome::Failed(e, class),
        };
        finish(ctx.reporter, requests[i].view(), &mut slots[i]);
    }
}

/// Views of the outputs the config exposes, with their config entries.
fn read_outputs<'o>(ctx: &Ctx<'o>, outputs: &'o RunOutputs<'_>) -> Result<Vec<(&'o TensorConfig, OutputView<'o>)>> {
    ctx.model
        .config
        .outputs
        .iter()
        .map(|tc| {
            let view = outputs.read(&tc.name)?;
            if view.data_type != tc.data_type {
                return Err(Error::internal(format!(
                    "output '{}' is {} but the config says {}",
                    tc.name, view.data_type, tc.data_type
                )));
            }
            Ok((tc, view))
        })
        .collect()
}

/// Writes the outputs request `pos` of the group asked for into its response.
fn respond(
    ctx: &Ctx<'_>,
    views: &[(&TensorConfig, OutputView<'_>)],
    rows: &[usize],
    pos: usize,
    request: Request<'_>,
    response: &mut Response,
) -> std::result::Result<u64, Failure> {
    let mut written = 0u64;
    let batching = ctx.model.config.batching();
    for index in 0..request.output_count().class(ErrorClass::Internal)? {
        let name = request.output_name(index).class(ErrorClass::Internal)?;
        let (tc, view) = views
            .iter()
            .find(|(tc, _)| tc.name == name)
            .ok_or_else(|| Error::invalid_arg(format!("requested output '{name}' is not an output of this model")))
            .class(ErrorClass::BadInput)?;
        // The request's rows of the output, and the shape it gets back.
        let (first, tail) = match (batching, view.shape.split_first()) {
            (true, Some((&n, tail))) => (n, tail),
            (true, None) => {
                return Err((Error::internal(format!("output '{name}' has no batch dimension")), ErrorClass::Internal));
            }
            (false, _) => (1, &view.shape[..]),
        };
        let row_len: usize = tail.iter().map(|&d| d.max(0) as usize).product();
        let range = if batching {
            let total = usize::try_from(first)
                .map_err(|_| Error::internal("negative batch dimension"))
                .class(ErrorClass::Internal)?;
            batch::split_rows(total, row_len, rows).class(ErrorClass::Internal)?[pos].clone()
        } else {
            0..row_len
        };
        // A configured reshape is Triton's to undo (it maps the shape reported here to `dims`);
        // a bound scalar is ours.
        let out_tail = if tc.scalar { tc.dims.clone() } else { tail.to_vec() };
        let mut shape = Vec::with_capacity(out_tail.len() + 1);
        if batching {
            shape.push(rows[pos] as i64);
        }
        shape.extend_from_slice(&out_tail);
        match &view.data {
            OutputData::Fixed(data) => {
                let size = tc.data_type.byte_size().unwrap_or(1);
                let bytes = data
                    .get(range.start * size..range.end * size)
                    .ok_or_else(|| Error::internal(format!("output '{name}' is shorter than its shape")))
                    .class(ErrorClass::Internal)?;
                let buffer = response
                    .output_buffer(name, tc.data_type, &shape, bytes.len(), (MemoryType::Cpu, 0))
                    .class(ErrorClass::OutputAllocation)?;
                host(buffer, name).class(ErrorClass::OutputAllocation)?.copy_from_slice(bytes);
                written += bytes.len() as u64;
            }
            OutputData::Strings(strings) => {
                let elements = range
                    .map(|e| {
                        strings
                            .get(e)
                            .ok_or_else(|| Error::internal(format!("output '{name}' is shorter than its shape")))
                    })
                    .collect::<Result<Vec<&[u8]>>>()
                    .class(ErrorClass::Internal)?;
                let len = bytes::encoded_len(elements.iter().copied());
                let buffer = response
                    .output_buffer(name, tc.data_type, &shape, len, (MemoryType::Cpu, 0))
                    .class(ErrorClass::OutputAllocation)?;
                bytes::encode_into(host(buffer, name).class(ErrorClass::OutputAllocation)?, elements.iter().copied())
                    .class(ErrorClass::Internal)?;
                written += len as u64;
            }
        }
    }
    Ok(written)
}

fn host<'b>(buffer: OutputBuffer<'b>, name: &str) -> Result<&'b mut [u8]> {
    match buffer {
        OutputBuffer::Host(b) => Ok(b),
        OutputBuffer::Device { device } => Err(Error::unsupported(format!(
            "the server placed output '{name}' in memory of GPU {device}; this instance writes outputs from the CPU"
        ))),
    }
}

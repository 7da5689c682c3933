//! A run: the requests of an execution that fit together run as one ONNX Runtime call. Their
//! inputs are gathered end to end along the batch dimension, the session runs once, and each
//! request's rows of the outputs are written into its response. When the fused run fails, its
//! requests run again one by one, so only the request that makes ONNX Runtime fail gets the error.

use super::respond::{RowShare, Scatter};
use super::{Classify, ExecutionScope, Failure, Outcome, RequestRecord, direct, reporting, respond, sequence};
use crate::batch::{self, Gathered, Signature};
use crate::clock;
use crate::config::model_config::ModelConfig;
use crate::dtype::DataType;
use crate::error::{Error, ErrorKind, Result};
use crate::inputs::{CheckedRequest, Payload};
use crate::metrics::ErrorClass;
use crate::onnx::session::OnnxSession;
use crate::onnx::tensor::{self, InputTensor};
use crate::triton::instance::Timestamps;

/// Groups the records whose inputs were checked into runs (`crate::batch::plan`): each run is
/// the list of records it fuses, in arrival order.
pub(super) fn plan<'x, 'r>(
    records: &'x mut [RequestRecord<'r>],
    max_batch_size: usize,
) -> Vec<Vec<&'x mut RequestRecord<'r>>> {
    let ready: Vec<&'x mut RequestRecord<'r>> = records.iter_mut().filter(|r| r.checked.is_some()).collect();
    let groups = {
        let shapes: Vec<(usize, &Signature)> =
            ready.iter().filter_map(|r| r.checked.as_ref()).map(|c| (c.rows, &c.signature)).collect();
        batch::plan(&shapes, max_batch_size)
    };
    // Each record is in exactly one group: hand it over to that group's run.
    let mut ready: Vec<Option<&'x mut RequestRecord<'r>>> = ready.into_iter().map(Some).collect();
    groups.iter().map(|group| group.iter().filter_map(|&i| ready.get_mut(i).and_then(Option::take)).collect()).collect()
}

/// Runs the records' requests as one ONNX Runtime call (or one by one, when that fails) and
/// answers them.
pub(super) fn run_and_answer(
    scope: &ExecutionScope<'_>,
    session: &OnnxSession,
    records: &mut [&mut RequestRecord<'_>],
) {
    let run_start = clock::now_ns();
    let run = match run_once(scope, session, records) {
        Ok(run) => run,
        Err((e, _)) if records.len() > 1 => {
            // Which request made the fused run fail is unknown: run each alone so only the
            // culprits fail and the others still get their outputs.
            log::debug!("onnxrs: a run of {} requests failed ({e}); running them one by one", records.len());
            for record in records.iter_mut() {
                run_and_answer(scope, session, std::slice::from_mut(record));
            }
            return;
        }
        Err(failure) => {
            // No run happened: no batch statistic, only the request's own failure.
            if let Some(record) = records.first_mut() {
                record.fail(failure, scope.reporter);
            }
            return;
        }
    };
    let exec_end = clock::now_ns();
    let figures = reporting::RunFigures {
        rows: run.rows,
        // The execution's null requests go with its first run.
        null_rows: scope.null_rows.take(),
        times: Timestamps {
            exec_start: run_start,
            compute_start: run.compute_start,
            compute_end: run.compute_end,
            exec_end,
        },
        input_bytes: run.input_bytes,
        output_bytes: run.written.iter().filter_map(|r| r.as_ref().ok()).sum(),
        direct_output_bytes: run.direct_bytes,
    };
    reporting::report_run(scope.reporter, records, &figures);
    let request_times = Timestamps { exec_start: scope.exec_start, ..figures.times };
    for (record, written) in records.iter_mut().zip(run.written) {
        match written {
            Ok(_) => record.outcome = Outcome::Succeeded(request_times),
            Err(failure) => record.outcome = Outcome::Failed(failure.0, failure.1),
        }
        record.answer(scope.reporter);
    }
}

/// A run that happened: when ONNX Runtime computed, and what it moved.
struct CompletedRun {
    /// Rows along the batch dimension, all requests together.
    rows: u64,
    compute_start: u64,
    compute_end: u64,
    /// Bytes of the input tensors the run read.
    input_bytes: u64,
    /// Per record, in order: the output bytes written into its response, or why that failed.
    written: Vec<std::result::Result<u64, Failure>>,
    /// Of those, the bytes ONNX Runtime wrote straight into the response (`direct`).
    direct_bytes: u64,
}

/// Gathers the records' inputs, runs ONNX Runtime once and writes each request's outputs into
/// its response. An error means ONNX Runtime returned nothing, and no output was written.
fn run_once(
    scope: &ExecutionScope<'_>,
    session: &OnnxSession,
    records: &mut [&mut RequestRecord<'_>],
) -> std::result::Result<CompletedRun, Failure> {
    // The inputs borrow the records; the block ends that borrow before the responses are written.
    let (outputs, rows, scatters, input_bytes, direct, compute_start, compute_end) = {
        let checked = records.iter().map(|r| r.checked()).collect::<Result<Vec<_>>>().class(ErrorClass::Internal)?;
        let rows: Vec<usize> = checked.iter().map(|c| c.rows).collect();
        let scatters: Vec<Scatter<'_>> = respond::scatters(scope.config, &checked).class(ErrorClass::BadInput)?;
        let inputs = gather_inputs(scope.config, &checked).class(ErrorClass::Internal)?;
        let mut fixed = Vec::with_capacity(inputs.len());
        let mut input_bytes = 0u64;
        for input in &inputs {
            match input {
                RunInput::Fixed { name, shape, data, data_type } => {
                    input_bytes += data.bytes().len() as u64;
                    let tensor = tensor::from_bytes(*data_type, shape, data.bytes()).class(ErrorClass::Internal)?;
                    fixed.push((*name, tensor));
                }
                RunInput::Strings { bytes, .. } => input_bytes += *bytes,
            }
        }
        let feeds: Vec<(&str, &InputTensor<'_>)> = fixed
            .iter()
            .map(|(n, t)| (*n, t))
            .chain(inputs.iter().filter_map(|input| match input {
                RunInput::Strings { name, tensor, .. } => Some((*name, tensor)),
                RunInput::Fixed { .. } => None,
            }))
            .collect();
        // A run of one request writes the outputs whose shape is known straight into its response.
        let direct::Prepared { into, written: direct } = match (&*records, rows.as_slice()) {
            ([record], [own_rows]) if !scope.direct.is_empty() => {
                let response = record.response.as_ref().ok_or_else(|| Error::internal("no response"));
                let batch_rows = scope.config.batching().then_some(*own_rows);
                direct::prepare(
                    scope.direct,
                    (record.request, response.class(ErrorClass::Internal)?),
                    batch_rows,
                    session,
                )
                .class(ErrorClass::OutputAllocation)?
            }
            _ => direct::Prepared::default(),
        };
        // On a GPU instance the run returns its outputs in host memory, so it has waited for the
        // device work and the copy back: compute_end covers the device time, not just the launches.
        let compute_start = clock::now_ns();
        let outputs = session.run_into(&feeds, into).class(ErrorClass::OrtFailure)?;
        let compute_end = clock::now_ns();
        (outputs, rows, scatters, input_bytes, direct, compute_start, compute_end)
    };

    let views = respond::read_outputs(scope.config, &outputs);
    if let Ok(views) = &views {
        // Before any response gets an output: when the outputs do not split between the
        // requests, the caller runs them again one by one.
        let share = RowShare { rows: &rows, position: 0, scatters: &scatters, direct: &[] };
        respond::check_split(scope.config, views, &share).map_err(|e| {
            let class = if e.kind() == ErrorKind::InvalidArg { ErrorClass::BadInput } else { ErrorClass::Internal };
            (e, class)
        })?;
    }
    let written: Vec<std::result::Result<u64, Failure>> = records
        .iter()
        .enumerate()
        .map(|(position, record)| {
            let views = views.as_ref().map_err(|e| (e.clone(), ErrorClass::Internal))?;
            let share = || RowShare { rows: &rows, position, scatters: &scatters, direct: &direct };
            let written = respond::write_outputs(scope.config, views, share(), record)?;
            sequence::write_states(scope.config, &outputs, share(), record)?;
            Ok(written)
        })
        .collect();
    drop(views);
    drop(outputs);
    // Counted only for a request that got its outputs (a run with direct outputs has one).
    let answered = written.iter().all(|w| w.is_ok());
    let direct_bytes = if answered { direct.iter().map(|(_, bytes)| bytes).sum() } else { 0 };
    Ok(CompletedRun {
        rows: rows.iter().map(|&r| r as u64).sum(),
        compute_start,
        compute_end,
        input_bytes,
        written,
        direct_bytes,
    })
}

/// One input of a run, laid out for ONNX Runtime.
enum RunInput<'a> {
    Fixed { name: &'a str, shape: Vec<i64>, data: Gathered<'a>, data_type: DataType },
    Strings { name: &'a str, tensor: InputTensor<'static>, bytes: u64 },
}

/// Lays the requests' inputs end to end, one tensor per input of the model.
fn gather_inputs<'a>(config: &'a ModelConfig, requests: &[&'a CheckedRequest<'a>]) -> Result<Vec<RunInput<'a>>> {
    let Some(first) = requests.first() else { return Ok(Vec::new()) };
    let rows: usize = requests.iter().map(|r| r.rows).sum();
    let mut inputs = Vec::with_capacity(first.signature.inputs.len());
    for (k, (config_index, tail)) in first.signature.inputs.iter().enumerate() {
        let input_config = &config.inputs[*config_index];
        let mut shape = Vec::with_capacity(tail.len() + 1);
        if input_config.ragged {
            // The requests' elements end to end, whatever their shapes.
            let dims = requests.iter().map(|r| (r.rows, r.inputs[k].dims.as_slice()));
            shape.push(dims.map(|(rows, dims)| rows as i64 * dims.iter().product::<i64>()).sum());
        } else {
            if config.batching() {
                shape.push(rows as i64);
            }
            shape.extend_from_slice(tail);
        }
        let payloads = requests.iter().map(|r| &r.inputs[k].payload);
        let name = input_config.name.as_str();
        match input_config.data_type.byte_size() {
            Some(size) => {
                let parts: Vec<&[u8]> = payloads
                    .flat_map(|p| match p {
                        Payload::Fixed(parts) => parts.as_slice(),
                        Payload::Strings { .. } => &[],
                    })
                    .copied()
                    .collect();
                let data = batch::gather(&parts, size)?;
                inputs.push(RunInput::Fixed { name, shape, data, data_type: input_config.data_type });
            }
            None => {
                let elements: Vec<&[u8]> = payloads.flat_map(Payload::strings).collect();
                let tensor = tensor::from_strings(&shape, &elements)?;
                let bytes = elements.iter().map(|e| e.len() as u64).sum();
                inputs.push(RunInput::Strings { name, tensor, bytes });
            }
        }
    }
    for b in &config.batch_inputs {
        let items = requests
            .iter()
            .map(|r| {
                let entry = format!("batch_input '{}'", b.target_name);
                Ok((r.rows, r.source_dims(config, &b.source_input, &entry)?))
            })
            .collect::<Result<Vec<_>>>()?;
        let (shape, values) = batch::batch_input(b.kind, &items);
        let data = batch::batch_input_bytes(&values, b.data_type)?;
        inputs.push(RunInput::Fixed { name: b.target_name.as_str(), shape, data, data_type: b.data_type });
    }
    Ok(inputs)
}

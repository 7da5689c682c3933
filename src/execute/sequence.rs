//! What a step of a sequence adds to a request's way. Its control and state inputs are read and
//! gathered like any input (`config::sequence` gives them config entries; Triton puts them on
//! each request); after the run, each request's rows of every state output are handed back to
//! the server as its sequence's new state (`TRITONBACKEND_StateUpdate`), so the next request of
//! that sequence carries them as its state input. The state lives in the server, not here.
//! Null requests (Direct's padding) are answered without a run.

use super::respond::{RowShare, own_elements};
use super::{Classify, ExecutionScope, Failure, Outcome, RequestRecord};
use crate::bytes;
use crate::clock;
use crate::config::model_config::ModelConfig;
use crate::error::Error;
use crate::metrics::{ErrorClass, SequencePosition};
use crate::onnx::tensor::{OutputData, RunOutputs};
use crate::triton::Request;
use crate::triton::instance::Timestamps;
use crate::triton::sequence_state::{StateTensor, update_state};

/// Whether the request is a null request: one Triton adds to fill an empty slot below a busy one
/// in a Direct batch. It has no correlation id (a client's request of a sequence always has
/// one), its inputs are uninitialized memory, and nobody reads its response.
pub(super) fn is_null_request(config: &ModelConfig, request: Request<'_>) -> bool {
    config.sequence_batching && matches!(request.has_correlation_id(), Ok(false))
}

/// Answers a null request without running it. An ONNX model keeps nothing from run to run (its
/// state is Triton's, per sequence), so the slot a row sits in means nothing to it, and running
/// the garbage could only fail the run of the real requests beside it. Its rows still count in
/// the batch statistic of the run beside it (as the official backend, which runs them, reports
/// them): `batch_stats` is the batch Triton formed. Triton keeps no request statistics for it.
pub(super) fn answer_null_request(scope: &ExecutionScope<'_>, record: &mut RequestRecord<'_>) {
    scope.null_rows.set(scope.null_rows.get() + null_rows(scope.config, record.request));
    let now = clock::now_ns();
    let times = Timestamps { exec_start: scope.exec_start, compute_start: now, compute_end: now, exec_end: now };
    record.outcome = Outcome::Succeeded(times);
    record.answer(scope.reporter);
}

/// A null request's rows: the batch dimension of its first input (Triton copies it from a real
/// request's), 1 for a model without batching or when it cannot be read.
fn null_rows(config: &ModelConfig, request: Request<'_>) -> u64 {
    if !config.batching() {
        return 1;
    }
    let first = request.input(0).and_then(|i| i.properties());
    first.ok().and_then(|p| p.shape.first().copied()).and_then(|d| u64::try_from(d).ok()).unwrap_or(1)
}

/// Where the request lies in its sequence, for a model with sequence_batching.
pub(super) fn position(config: &ModelConfig, request: Request<'_>) -> Option<SequencePosition> {
    if !config.sequence_batching {
        return None;
    }
    match request.sequence_flags() {
        Ok((start, end)) => Some(SequencePosition::from_flags(start, end)),
        Err(e) => {
            log::warn!("onnxrs: cannot read where a request lies in its sequence: {e}");
            None
        }
    }
}

/// Hands the record's rows of every state output to the server as its sequence's new state.
pub(super) fn write_states(
    config: &ModelConfig,
    outputs: &RunOutputs<'_>,
    share: RowShare<'_>,
    record: &RequestRecord<'_>,
) -> std::result::Result<(), Failure> {
    let batching = config.batching();
    for state in &config.sequence.states {
        let name = state.output_name.as_str();
        let view = outputs.read(name).class(ErrorClass::Internal)?;
        if view.data_type != state.data_type {
            return Err(Error::internal(format!(
                "state output '{name}' is {} but the config says {}",
                view.data_type, state.data_type
            )))
            .class(ErrorClass::Internal);
        }
        let (range, tail) = own_elements(batching, name, &view.shape, &share).class(ErrorClass::Internal)?;
        let mut shape = Vec::with_capacity(tail.len() + 1);
        if batching {
            shape.push(share.rows.get(share.position).copied().unwrap_or(0) as i64);
        }
        shape.extend_from_slice(tail);
        let short = || Error::internal(format!("state output '{name}' is shorter than its shape"));
        let encoded;
        let data: &[u8] = match &view.data {
            OutputData::Fixed(data) => {
                let size = state.data_type.byte_size().unwrap_or(1);
                data.get(range.start * size..range.end * size).ok_or_else(short).class(ErrorClass::Internal)?
            }
            OutputData::Strings(strings) => {
                let elements = range
                    .map(|e| strings.get(e).ok_or_else(short))
                    .collect::<crate::error::Result<Vec<&[u8]>>>()
                    .class(ErrorClass::Internal)?;
                let mut out = vec![0u8; bytes::encoded_len(elements.iter().copied())];
                bytes::encode_into(&mut out, elements.iter().copied()).class(ErrorClass::Internal)?;
                encoded = out;
                &encoded
            }
        };
        let tensor = StateTensor { name, data_type: state.data_type, shape: &shape, bytes: data };
        update_state(record.request, &tensor)
            .map_err(|e| e.context(format_args!("state '{name}'")))
            .class(ErrorClass::Internal)?;
    }
    Ok(())
}

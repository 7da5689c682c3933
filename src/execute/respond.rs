//! Writing one request's outputs into its response: the rows of each output it asked for, with
//! the shape it gets back.

use std::ops::Range;

use super::{Classify, Failure, RequestRecord};
use crate::batch;
use crate::bytes;
use crate::config::model_config::{ModelConfig, TensorConfig};
use crate::error::{Error, Result};
use crate::metrics::ErrorClass;
use crate::onnx::tensor::{OutputData, OutputView, RunOutputs};
use crate::triton::MemoryType;
use crate::triton::response::OutputBuffer;

/// Which rows of a run's outputs belong to one request.
pub(super) struct RowShare<'a> {
    /// The rows of every request of the run, in order.
    pub(super) rows: &'a [usize],
    /// The request's position among them.
    pub(super) position: usize,
}

/// Views of the outputs the config exposes, with their config entries.
pub(super) fn read_outputs<'o>(
    config: &'o ModelConfig,
    outputs: &'o RunOutputs<'_>,
) -> Result<Vec<(&'o TensorConfig, OutputView<'o>)>> {
    config
        .outputs
        .iter()
        .map(|output_config| {
            let view = outputs.read(&output_config.name)?;
            if view.data_type != output_config.data_type {
                return Err(Error::internal(format!(
                    "output '{}' is {} but the config says {}",
                    output_config.name, view.data_type, output_config.data_type
                )));
            }
            Ok((output_config, view))
        })
        .collect()
}

/// Writes the outputs the record's request asked for into its response; returns the bytes
/// written.
pub(super) fn write_outputs(
    config: &ModelConfig,
    views: &[(&TensorConfig, OutputView<'_>)],
    share: RowShare<'_>,
    record: &mut RequestRecord<'_>,
) -> std::result::Result<u64, Failure> {
    let request = record.request;
    let response =
        record.response.as_mut().ok_or_else(|| Error::internal("no response")).class(ErrorClass::Internal)?;
    let own_rows = share
        .rows
        .get(share.position)
        .copied()
        .ok_or_else(|| Error::internal("a request outside its run"))
        .class(ErrorClass::Internal)?;
    let mut written = 0u64;
    let batching = config.batching();
    for index in 0..request.output_count().class(ErrorClass::Internal)? {
        let name = request.output_name(index).class(ErrorClass::Internal)?;
        let (output_config, view) = views
            .iter()
            .find(|(output_config, _)| output_config.name == name)
            .ok_or_else(|| Error::invalid_arg(format!("requested output '{name}' is not an output of this model")))
            .class(ErrorClass::BadInput)?;
        // The request's rows of the output, and the shape it gets back.
        let (range, tail) = own_elements(batching, name, &view.shape, &share).class(ErrorClass::Internal)?;
        // A configured reshape is Triton's to undo (it maps the shape reported here to `dims`);
        // a bound scalar is ours.
        let out_tail = if output_config.scalar { output_config.dims.clone() } else { tail.to_vec() };
        let mut shape = Vec::with_capacity(out_tail.len() + 1);
        if batching {
            shape.push(own_rows as i64);
        }
        shape.extend_from_slice(&out_tail);
        let data_type = output_config.data_type;
        match &view.data {
            OutputData::Fixed(data) => {
                let size = data_type.byte_size().unwrap_or(1);
                let bytes = data
                    .get(range.start * size..range.end * size)
                    .ok_or_else(|| Error::internal(format!("output '{name}' is shorter than its shape")))
                    .class(ErrorClass::Internal)?;
                let buffer = response
                    .output_buffer(name, data_type, &shape, bytes.len(), (MemoryType::Cpu, 0))
                    .class(ErrorClass::OutputAllocation)?;
                host_bytes(buffer, name).class(ErrorClass::OutputAllocation)?.copy_from_slice(bytes);
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
                    .output_buffer(name, data_type, &shape, len, (MemoryType::Cpu, 0))
                    .class(ErrorClass::OutputAllocation)?;
                let host = host_bytes(buffer, name).class(ErrorClass::OutputAllocation)?;
                bytes::encode_into(host, elements.iter().copied()).class(ErrorClass::Internal)?;
                written += len as u64;
            }
        }
    }
    Ok(written)
}

/// The elements of an output of shape `shape` that belong to the request of `share`, and the
/// output's shape without the batch dimension.
pub(super) fn own_elements<'s>(
    batching: bool,
    name: &str,
    shape: &'s [i64],
    share: &RowShare<'_>,
) -> Result<(Range<usize>, &'s [i64])> {
    let (first, tail) = match (batching, shape.split_first()) {
        (true, Some((&n, tail))) => (n, tail),
        (true, None) => return Err(Error::internal(format!("output '{name}' has no batch dimension"))),
        (false, _) => (1, shape),
    };
    let row_len: usize = tail.iter().map(|&d| d.max(0) as usize).product();
    if !batching {
        return Ok((0..row_len, tail));
    }
    let total = usize::try_from(first).map_err(|_| Error::internal("negative batch dimension"))?;
    let ranges = batch::split_rows(total, row_len, share.rows)?;
    let range = ranges.get(share.position).cloned().ok_or_else(|| Error::internal("a request outside its run"))?;
    Ok((range, tail))
}

/// The buffer as bytes the CPU can write, or why it is not.
fn host_bytes<'b>(buffer: OutputBuffer<'b>, name: &str) -> Result<&'b mut [u8]> {
    match buffer {
        OutputBuffer::Host(b) => Ok(b),
        OutputBuffer::Device { device } => Err(Error::unsupported(format!(
            "the server placed output '{name}' in memory of GPU {device}; this instance writes outputs from the CPU"
        ))),
    }
}

//! Writing one request's outputs into its response: the rows of each output it asked for, with
//! the shape it gets back; for an output under `batch_output`, its elements, with the shape of
//! its source input.

use std::ops::Range;

use super::{Classify, Failure, RequestRecord};
use crate::batch;
use crate::bytes;
use crate::config::model_config::{ModelConfig, TensorConfig};
use crate::error::{Error, ErrorKind, Result};
use crate::inputs::CheckedRequest;
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
    /// The run's `batch_output`s: these outputs are scattered by element counts, not rows.
    pub(super) scatters: &'a [Scatter<'a>],
    /// Outputs the run wrote straight into this request's response (`direct`), with their bytes.
    pub(super) direct: &'a [(String, u64)],
}

impl RowShare<'_> {
    fn scatter(&self, name: &str) -> Option<&Scatter<'_>> {
        self.scatters.iter().find(|s| s.output == name)
    }
}

/// A `batch_output` of one run: the shape each request gets back, in run order.
pub(super) struct Scatter<'c> {
    pub(super) output: &'c str,
    pub(super) shapes: Vec<Vec<i64>>,
}

impl Scatter<'_> {
    /// The elements of an output of `total` elements that belong to the request at `position`,
    /// and its shape.
    fn share(&self, total: usize, position: usize) -> Result<(Range<usize>, &[i64])> {
        let counts: Vec<usize> = self.shapes.iter().map(|s| batch::element_count(s)).collect();
        let ranges = batch::split_elements(total, &counts)
            .map_err(|e| e.context(format_args!("batch_output '{}'", self.output)))?;
        match (ranges.get(position), self.shapes.get(position)) {
            (Some(range), Some(shape)) => Ok((range.clone(), shape)),
            _ => Err(Error::internal("a request outside its run")),
        }
    }
}

/// The shape each request of a run gets back of each `batch_output`.
pub(super) fn scatters<'c>(config: &'c ModelConfig, requests: &[&CheckedRequest<'_>]) -> Result<Vec<Scatter<'c>>> {
    config
        .batch_outputs
        .iter()
        .map(|b| {
            let output = config
                .output(&b.target_name)
                .ok_or_else(|| Error::internal(format!("batch_output '{}' is not an output", b.target_name)))?;
            let dims: Vec<i64> = std::iter::once(-1).chain(output.dims.iter().copied()).collect();
            let shapes = requests
                .iter()
                .map(|r| {
                    let entry = format!("batch_output '{}'", b.target_name);
                    let source = r.source_dims(config, &b.source_input, &entry)?;
                    let full: Vec<i64> = std::iter::once(r.rows as i64).chain(source.iter().copied()).collect();
                    batch::scatter_shape(&dims, &full)
                        .map_err(|e| e.context(format_args!("batch_output '{}'", b.target_name)))
                })
                .collect::<Result<Vec<_>>>()?;
            Ok(Scatter { output: b.target_name.as_str(), shapes })
        })
        .collect()
}

/// Checks that every output can be split between the requests of the run before any is
/// written: a run whose outputs do not fit its requests then runs again one request at a time,
/// and only the request that does not fit fails.
pub(super) fn check_split(
    config: &ModelConfig,
    views: &[(&TensorConfig, OutputView<'_>)],
    share: &RowShare<'_>,
) -> Result<()> {
    for (output_config, view) in views {
        let name = output_config.name.as_str();
        if let Some(scatter) = share.scatter(name) {
            scatter.share(batch::element_count(&view.shape), share.position)?;
            continue;
        }
        let Err(e) = own_elements(config.batching(), name, &view.shape, share) else { continue };
        let ragged = config.inputs.iter().any(|i| i.ragged);
        if ragged && share.rows.iter().any(|&r| r > 1) && e.kind() == ErrorKind::Internal {
            // A request of several rows to a ragged model whose output has one row per request:
            // the request is the cause, and says what to do.
            return Err(Error::invalid_arg(format!(
                "output '{name}': {}. A ragged model's outputs not under batch_output are split back by rows: \
                 send one row per request, or scatter the output with batch_output",
                e.message()
            )));
        }
        return Err(e.context(format_args!("output '{name}'")));
    }
    Ok(())
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
    record: &RequestRecord<'_>,
) -> std::result::Result<u64, Failure> {
    let request = record.request;
    let response =
        record.response.as_ref().ok_or_else(|| Error::internal("no response")).class(ErrorClass::Internal)?;
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
        if let Some((_, bytes)) = share.direct.iter().find(|(n, _)| n == name) {
            written += bytes;
            continue;
        }
        let (output_config, view) = views
            .iter()
            .find(|(output_config, _)| output_config.name == name)
            .ok_or_else(|| Error::invalid_arg(format!("requested output '{name}' is not an output of this model")))
            .class(ErrorClass::BadInput)?;
        // The request's rows (or scattered elements) of the output, and the shape it gets back.
        let (range, shape) = match share.scatter(name) {
            Some(scatter) => {
                let (range, shape) =
                    scatter.share(batch::element_count(&view.shape), share.position).class(ErrorClass::Internal)?;
                (range, shape.to_vec())
            }
            None => {
                let (range, tail) = own_elements(batching, name, &view.shape, &share).class(ErrorClass::Internal)?;
                // A configured reshape is Triton's to undo (it maps the shape reported here to
                // `dims`); a bound scalar is ours.
                let out_tail = if output_config.scalar { output_config.dims.clone() } else { tail.to_vec() };
                let mut shape = Vec::with_capacity(out_tail.len() + 1);
                if batching {
                    shape.push(own_rows as i64);
                }
                shape.extend_from_slice(&out_tail);
                (range, shape)
            }
        };
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
pub(super) fn host_bytes<'b>(buffer: OutputBuffer<'b>, name: &str) -> Result<&'b mut [u8]> {
    match buffer {
        OutputBuffer::Host(b) => Ok(b),
        OutputBuffer::Device { device } => Err(Error::unsupported(format!(
            "the server placed output '{name}' in memory of GPU {device}; this instance writes outputs from the CPU"
        ))),
    }
}

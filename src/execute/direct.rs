//! Outputs written by ONNX Runtime straight into the response: when a run serves one request and
//! an output's shape is known before the run, the response's buffer is allocated first and the
//! run writes the output there, so nothing is copied after it (the other path copies each
//! request's rows out of ONNX Runtime's memory). A run of several requests cannot: each request
//! has a buffer of its own, and ONNX Runtime writes one tensor.
//!
//! Which outputs qualify is decided once, at load (`eligible`): a fixed-size type, and a shape
//! the config and the graph both fix (the batch dimension aside, which is the request's rows).
//! Everything else — BYTES, data-dependent or symbolic dimensions, a configured `reshape`, a
//! bound scalar, a `batch_output`, a sequence's state — takes the copying path.

use super::respond;
use crate::batch;
use crate::config::model_config::ModelConfig;
use crate::dtype::DataType;
use crate::error::{Error, Result};
use crate::onnx::session::{ModelIo, OnnxSession};
use crate::onnx::tensor::{self, OutputTensor};
use crate::triton::response::Response;
use crate::triton::{MemoryType, Request};

/// An output whose shape is known before the run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DirectOutput {
    pub(crate) name: String,
    pub(crate) data_type: DataType,
    /// Its dimensions after the batch dimension (all of them, for a model that does not batch).
    pub(crate) tail: Vec<i64>,
}

/// The outputs of `config` that runs of one request may write straight into the response.
pub(crate) fn eligible(config: &ModelConfig, io: &ModelIo) -> Vec<DirectOutput> {
    // Ragged inputs make the batch dimension a count of elements, not of the request's rows.
    if config.inputs.iter().any(|i| i.ragged) {
        return Vec::new();
    }
    let batching = config.batching();
    config
        .outputs
        .iter()
        .filter(|o| o.data_type.byte_size().is_some() && o.reshape.is_none() && !o.scalar)
        .filter(|o| o.dims.iter().all(|&d| d >= 0))
        .filter(|o| config.batch_output(&o.name).is_none())
        .filter(|o| !config.sequence.states.iter().any(|s| s.output_name == o.name))
        .filter(|o| {
            // The graph must fix the same dimensions: a symbolic one may depend on the data.
            let Some(graph) = io.output(&o.name) else { return false };
            let graph_tail = match (batching, graph.shape.split_first()) {
                (true, Some((_, tail))) => tail,
                (true, None) => return false,
                (false, _) => graph.shape.as_slice(),
            };
            graph.data_type == Some(o.data_type) && graph_tail == o.dims.as_slice()
        })
        .map(|o| DirectOutput { name: o.name.clone(), data_type: o.data_type, tail: o.dims.clone() })
        .collect()
}

/// The outputs of a run of one request that ONNX Runtime writes into its response.
#[derive(Default)]
pub(super) struct Prepared<'r> {
    /// Per session output (in the session's order): the tensor to write it into, if any.
    pub(super) into: Vec<Option<OutputTensor<'r>>>,
    /// The names of those outputs and their bytes.
    pub(super) written: Vec<(String, u64)>,
}

/// For a run of the one request `request` with `rows` rows: allocates in `response` the outputs
/// it asked for that are in `direct`, and the tensors over them the run writes into.
pub(super) fn prepare<'r>(
    direct: &[DirectOutput],
    (request, response): (Request<'_>, &'r Response),
    rows: Option<usize>,
    session: &OnnxSession,
) -> Result<Prepared<'r>> {
    let mut into: Vec<Option<OutputTensor<'r>>> = Vec::new();
    let mut written = Vec::new();
    if direct.is_empty() {
        return Ok(Prepared { into, written });
    }
    for index in 0..request.output_count()? {
        let name = request.output_name(index)?;
        let Some(output) = direct.iter().find(|d| d.name == name) else { continue };
        let Some(slot) = session.output_names().iter().position(|n| n == name) else { continue };
        let shape: Vec<i64> = rows.map(|r| r as i64).into_iter().chain(output.tail.iter().copied()).collect();
        let size = output.data_type.byte_size().unwrap_or(1);
        let bytes =
            batch::element_count(&shape).checked_mul(size).ok_or_else(|| Error::invalid_arg("output too large"))?;
        let buffer = response.output_buffer(name, output.data_type, &shape, bytes, (MemoryType::Cpu, 0))?;
        let buffer = respond::host_bytes(buffer, name)?;
        if into.len() <= slot {
            into.resize_with(slot + 1, || None);
        }
        into[slot] = Some(tensor::output_into(output.data_type, &shape, buffer)?);
        written.push((name.to_string(), bytes as u64));
    }
    Ok(Prepared { into, written })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::onnx::session::TensorInfo;
    use serde_json::json;

    fn info(name: &str, dt: DataType, shape: &[i64]) -> TensorInfo {
        TensorInfo { name: name.into(), data_type: Some(dt), type_description: String::new(), shape: shape.to_vec() }
    }

    fn io(outputs: Vec<TensorInfo>) -> ModelIo {
        ModelIo { inputs: vec![info("X", DataType::Fp32, &[-1, 4])], outputs, overridable: Default::default() }
    }

    fn config(max_batch_size: i64, outputs: serde_json::Value) -> ModelConfig {
        ModelConfig::parse(&json!({
            "name": "m", "max_batch_size": max_batch_size,
            "input": [{"name": "X", "data_type": "TYPE_FP32", "dims": [4]}],
            "output": outputs,
        }))
        .unwrap()
    }

    fn names(v: &[DirectOutput]) -> Vec<&str> {
        v.iter().map(|d| d.name.as_str()).collect()
    }

    #[test]
    fn static_fixed_size_outputs_qualify() {
        let c = config(
            8,
            json!([
                {"name": "Y", "data_type": "TYPE_FP32", "dims": [4, 2]},
                {"name": "S", "data_type": "TYPE_STRING", "dims": [1]},
                {"name": "D", "data_type": "TYPE_INT64", "dims": [-1]},
                {"name": "Sym", "data_type": "TYPE_FP32", "dims": [3]},
                {"name": "R", "data_type": "TYPE_FP32", "dims": [6], "reshape": {"shape": [2, 3]}},
            ]),
        );
        let io = io(vec![
            info("Y", DataType::Fp32, &[-1, 4, 2]),
            info("S", DataType::Bytes, &[-1, 1]),
            info("D", DataType::Int64, &[-1, -1]),
            // The config fixes 3 but the graph leaves it symbolic: it may depend on the data.
            info("Sym", DataType::Fp32, &[-1, -1]),
            info("R", DataType::Fp32, &[-1, 2, 3]),
        ]);
        let direct = eligible(&c, &io);
        assert_eq!(names(&direct), ["Y"]);
        assert_eq!(direct[0].tail, [4, 2]);
    }

    #[test]
    fn a_model_that_does_not_batch_needs_the_whole_shape_fixed() {
        let c = config(0, json!([{"name": "Y", "data_type": "TYPE_FP32", "dims": [2, 4]}]));
        assert_eq!(names(&eligible(&c, &io(vec![info("Y", DataType::Fp32, &[2, 4])]))), ["Y"]);
        assert!(eligible(&c, &io(vec![info("Y", DataType::Fp32, &[-1, 4])])).is_empty());
        // A type the graph disagrees with is left to the copying path and its error.
        assert!(eligible(&c, &io(vec![info("Y", DataType::Fp16, &[2, 4])])).is_empty());
    }
}

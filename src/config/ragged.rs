//! Ragged batching in the model config: `batch_input`, the tensors the backend computes for a
//! run from its requests' shapes (element counts, their running sums, item shapes) and feeds to
//! the model beside a ragged input (`allow_ragged_batch`), which is laid end to end as one 1-D
//! tensor. Semantics as Triton's backends define them (see README, "Ragged batching"). And
//! `batch_output`: outputs scattered back to each request with the shape of its ragged input.

use serde_json::Value;

use crate::config::model_config::ModelConfig;
use crate::dtype::DataType;
use crate::error::{Error, Result};

/// What a batch input holds, for a run of requests r (in order) and its source input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BatchInputKind {
    /// [requests]: each request's element count.
    ElementCount,
    /// [requests]: the running sum of the element counts.
    AccumulatedElementCount,
    /// [requests + 1]: 0, then the running sum.
    AccumulatedElementCountWithZero,
    /// [the largest element count]: only the shape says something (the data is zeros).
    MaxElementCountAsShape,
    /// [rows, rank - 1]: each batch item's shape without the batch dimension.
    ItemShape,
    /// [rows * (rank - 1)]: the same, flattened.
    ItemShapeFlatten,
}

impl BatchInputKind {
    fn from_config_name(kind: &str) -> Option<Self> {
        Some(match kind {
            "BATCH_ELEMENT_COUNT" => Self::ElementCount,
            "BATCH_ACCUMULATED_ELEMENT_COUNT" => Self::AccumulatedElementCount,
            "BATCH_ACCUMULATED_ELEMENT_COUNT_WITH_ZERO" => Self::AccumulatedElementCountWithZero,
            "BATCH_MAX_ELEMENT_COUNT_AS_SHAPE" => Self::MaxElementCountAsShape,
            "BATCH_ITEM_SHAPE" => Self::ItemShape,
            "BATCH_ITEM_SHAPE_FLATTEN" => Self::ItemShapeFlatten,
            _ => return None,
        })
    }

    /// The rank of the tensor the model gets.
    pub fn rank(self) -> usize {
        if self == Self::ItemShape { 2 } else { 1 }
    }
}

/// One `batch_input` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchInput {
    pub kind: BatchInputKind,
    /// The model input it feeds.
    pub target_name: String,
    /// TYPE_FP32 or TYPE_INT32.
    pub data_type: DataType,
    /// The config input whose shapes it describes.
    pub source_input: String,
}

fn first_name(v: &Value, key: &str) -> Option<String> {
    match v.get(key)? {
        Value::String(s) => Some(s.clone()),
        Value::Array(a) => a.first()?.as_str().map(str::to_string),
        _ => None,
    }
}

/// Parses `batch_input` (absent: none).
pub fn batch_inputs(config: &Value) -> Result<Vec<BatchInput>> {
    let list = match config.get("batch_input") {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Array(a)) => a,
        Some(_) => return Err(Error::invalid_arg("model config 'batch_input' is not a list")),
    };
    list.iter()
        .map(|b| {
            let target_name = first_name(b, "target_name")
                .ok_or_else(|| Error::invalid_arg("a batch_input in the model config has no target_name"))?;
            let bad = |what: String| Error::invalid_arg(format!("batch_input '{target_name}': {what}"));
            let kind_name = b.get("kind").and_then(Value::as_str).unwrap_or("BATCH_ELEMENT_COUNT");
            let kind = BatchInputKind::from_config_name(kind_name)
                .ok_or_else(|| bad(format!("kind {kind_name} is not supported")))?;
            let dt = b.get("data_type").and_then(Value::as_str).unwrap_or("TYPE_INVALID");
            let data_type = match DataType::from_config_name(dt) {
                Some(t @ (DataType::Fp32 | DataType::Int32)) => t,
                _ => return Err(bad(format!("data_type must be TYPE_FP32 or TYPE_INT32, not {dt}"))),
            };
            let source_input = first_name(b, "source_input").ok_or_else(|| bad("no source_input".into()))?;
            Ok(BatchInput { kind, target_name: target_name.clone(), data_type, source_input })
        })
        .collect()
}

/// One output named by a `batch_output` entry (an entry naming several outputs gives one each).
/// Its only kind, `BATCH_SCATTER_WITH_INPUT_SHAPE`: each request gets its share of the output's
/// elements, with the shape of the config's `dims` (after the batch dimension) in which every -1
/// is the request's `source_input` dimension at the same place (the batch dimension included).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchOutput {
    /// The output that is scattered.
    pub target_name: String,
    /// The config input whose shape each request's share takes.
    pub source_input: String,
}

/// Parses `batch_output` (absent: none). The kind defaults to the only one there is.
pub fn batch_outputs(config: &Value) -> Result<Vec<BatchOutput>> {
    let list = match config.get("batch_output") {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Array(a)) => a,
        Some(_) => return Err(Error::invalid_arg("model config 'batch_output' is not a list")),
    };
    let mut out = Vec::new();
    for b in list {
        let targets: Vec<String> = match b.get("target_name") {
            Some(Value::String(s)) => vec![s.clone()],
            Some(Value::Array(a)) => a.iter().filter_map(Value::as_str).map(str::to_string).collect(),
            _ => Vec::new(),
        };
        let label = targets.join("', '");
        if targets.is_empty() {
            return Err(Error::invalid_arg("a batch_output in the model config has no target_name"));
        }
        let kind = b.get("kind").and_then(Value::as_str).unwrap_or("BATCH_SCATTER_WITH_INPUT_SHAPE");
        if kind != "BATCH_SCATTER_WITH_INPUT_SHAPE" {
            return Err(Error::invalid_arg(format!(
                "batch_output '{label}': kind {kind} is not supported (only BATCH_SCATTER_WITH_INPUT_SHAPE)"
            )));
        }
        let source_input = first_name(b, "source_input")
            .ok_or_else(|| Error::invalid_arg(format!("batch_output '{label}': no source_input")))?;
        out.extend(
            targets.into_iter().map(|target_name| BatchOutput { target_name, source_input: source_input.clone() }),
        );
    }
    Ok(out)
}

/// Each `batch_output` scatters an output of the config, by an input of the config whose rank
/// covers every -1 of the output's dims, in a model that batches.
pub fn check_batch_outputs(config: &ModelConfig) -> Result<()> {
    for b in &config.batch_outputs {
        let name = &b.target_name;
        let fail =
            |what: String| Err(Error::invalid_arg(format!("model '{}': batch_output '{name}' {what}", config.name)));
        if !config.batching() {
            return fail("needs a model that batches (max_batch_size > 0)".into());
        }
        let Some(output) = config.output(name) else {
            return fail("is not an output of the config".into());
        };
        let Some(input) = config.input(&b.source_input) else {
            return fail(format!("has source_input '{}', which is not an input of the config", b.source_input));
        };
        if output.reshape.is_some() {
            return fail("has a reshape, which a scattered output cannot have".into());
        }
        if let Some(i) = output.dims.iter().position(|&d| d == -1).filter(|&i| i >= input.dims.len()) {
            return fail(format!(
                "has -1 at dimension {i} of its dims {:?}, beyond the dims {:?} of source_input '{}'",
                output.dims, input.dims, b.source_input
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parses_every_kind_and_names_the_bad_one() {
        let kinds = [
            ("BATCH_ELEMENT_COUNT", BatchInputKind::ElementCount),
            ("BATCH_ACCUMULATED_ELEMENT_COUNT", BatchInputKind::AccumulatedElementCount),
            ("BATCH_ACCUMULATED_ELEMENT_COUNT_WITH_ZERO", BatchInputKind::AccumulatedElementCountWithZero),
            ("BATCH_MAX_ELEMENT_COUNT_AS_SHAPE", BatchInputKind::MaxElementCountAsShape),
            ("BATCH_ITEM_SHAPE", BatchInputKind::ItemShape),
            ("BATCH_ITEM_SHAPE_FLATTEN", BatchInputKind::ItemShapeFlatten),
        ];
        for (name, kind) in kinds {
            let c = json!({"batch_input": [{"kind": name, "target_name": ["T"], "data_type": "TYPE_INT32",
                                            "source_input": ["X"]}]});
            let b = batch_inputs(&c).unwrap();
            assert_eq!(
                b,
                [BatchInput { kind, target_name: "T".into(), data_type: DataType::Int32, source_input: "X".into() }]
            );
        }
        let c = json!({"batch_input": [{"kind": "BATCH_ELEMENT_COUNT", "target_name": ["T"], "data_type": "TYPE_INT64",
                                        "source_input": ["X"]}]});
        assert!(batch_inputs(&c).unwrap_err().message().contains("batch_input 'T': data_type"));
        assert!(batch_inputs(&json!({})).unwrap().is_empty());
    }

    #[test]
    fn batch_outputs_parse_and_are_checked() {
        let c = json!({"batch_output": [{"kind": "BATCH_SCATTER_WITH_INPUT_SHAPE", "target_name": ["A", "B"],
                                         "source_input": ["X"]}]});
        let b = batch_outputs(&c).unwrap();
        let one = |t: &str| BatchOutput { target_name: t.into(), source_input: "X".into() };
        assert_eq!(b, [one("A"), one("B")]);
        assert!(batch_outputs(&json!({})).unwrap().is_empty());
        let c = json!({"batch_output": [{"kind": "BATCH_GATHER", "target_name": ["A"], "source_input": ["X"]}]});
        assert!(batch_outputs(&c).unwrap_err().message().contains("batch_output 'A': kind BATCH_GATHER"));

        let model = |out: &str, src: &str, dims: serde_json::Value| {
            ModelConfig::parse(&json!({"name": "m", "max_batch_size": 4,
                "input": [{"name": "X", "data_type": "TYPE_FP32", "dims": [-1], "allow_ragged_batch": true}],
                "output": [{"name": "Y", "data_type": "TYPE_FP32", "dims": dims}],
                "batch_output": [{"target_name": [out], "source_input": [src]}]}))
            .unwrap()
        };
        check_batch_outputs(&model("Y", "X", json!([-1]))).unwrap();
        let e = check_batch_outputs(&model("Z", "X", json!([-1]))).unwrap_err();
        assert!(e.message().contains("batch_output 'Z' is not an output of the config"), "{e}");
        let e = check_batch_outputs(&model("Y", "W", json!([-1]))).unwrap_err();
        assert!(e.message().contains("batch_output 'Y' has source_input 'W', which is not an input"), "{e}");
        let e = check_batch_outputs(&model("Y", "X", json!([2, -1]))).unwrap_err();
        assert!(e.message().contains("has -1 at dimension 1 of its dims [2, -1]"), "{e}");
    }
}

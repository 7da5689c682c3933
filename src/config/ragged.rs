//! Ragged batching in the model config: `batch_input`, the tensors the backend computes for a
//! run from its requests' shapes (element counts, their running sums, item shapes) and feeds to
//! the model beside a ragged input (`allow_ragged_batch`), which is laid end to end as one 1-D
//! tensor. Semantics as Triton's backends define them (see README, "Ragged batching").

use serde_json::Value;

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
}

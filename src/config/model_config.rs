//! The parts of Triton's model configuration (`config.pbtxt`, received as JSON) that the backend
//! acts on, parsed into types. The JSON is protobuf's mapping, so 64-bit integers may arrive as
//! strings ("dims": ["16"]); both spellings are accepted.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::config::ragged::{self, BatchInput, BatchOutput};
use crate::config::sequence::Sequence;
use crate::dtype::DataType;
use crate::error::{Error, Result};

/// The model file Triton and the official backend look for when a config names none.
pub const DEFAULT_MODEL_FILENAME: &str = "model.onnx";

/// One `input` or `output` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorConfig {
    pub name: String,
    pub data_type: DataType,
    /// Dimensions without the batch dimension; -1 for any size.
    pub dims: Vec<i64>,
    /// `reshape { shape }`: the shape the model sees instead of `dims` (inputs), or the shape the
    /// model produces that is presented as `dims` (outputs). Triton applies it itself, on both
    /// sides: the backend sees and reports the reshaped shape.
    pub reshape: Option<Vec<i64>>,
    /// An input the client may leave out.
    pub optional: bool,
    /// An ONNX scalar in a model that does not batch, carried by Triton as all-ones `dims`
    /// (see `check::bind_scalars`): the backend, not Triton, turns it into rank 0 and back.
    pub scalar: bool,
    /// `allow_ragged_batch`: requests' shapes may differ; a run lays this input's elements end to
    /// end as one 1-D tensor.
    pub ragged: bool,
    /// Where the entry comes from: `input`/`output`, or `sequence_batching` (control and state
    /// inputs, which Triton adds to each request of a sequence).
    pub role: Role,
}

/// Where a tensor's config entry comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// `input` or `output`.
    Config,
    /// A `sequence_batching.control_input`.
    Control,
    /// The input of a `sequence_batching.state`.
    State,
}

impl Role {
    /// How an error names a tensor of this role ("control input 'START'").
    pub fn prefix(self) -> &'static str {
        match self {
            Role::Config => "",
            Role::Control => "control ",
            Role::State => "state ",
        }
    }
}

impl TensorConfig {
    /// The shape (without batch) tensors have between Triton and the backend: the reshape if
    /// there is one, else the dims.
    pub fn wire_dims(&self) -> &[i64] {
        self.reshape.as_deref().unwrap_or(&self.dims)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct ModelConfig {
    pub name: String,
    /// 0: the model takes whole tensors and Triton does not batch; N > 0: the model's first
    /// dimension is the batch, at most N.
    pub max_batch_size: usize,
    pub inputs: Vec<TensorConfig>,
    pub outputs: Vec<TensorConfig>,
    /// The model file inside the version directory; `model.onnx` unless set.
    pub default_model_filename: String,
    /// `parameters { key: "k" value: { string_value: "v" } }`.
    pub parameters: BTreeMap<String, String>,
    /// `optimization { graph { level } }`, when set.
    pub graph_level: Option<i64>,
    /// `optimization { execution_accelerators { gpu_execution_accelerator [ { name parameters } ] } }`:
    /// (name, parameters) in order.
    pub gpu_accelerators: Vec<(String, BTreeMap<String, String>)>,
    /// `optimization { cuda { graphs: true } }`.
    pub cuda_graphs: bool,
    pub dynamic_batching: bool,
    pub sequence_batching: bool,
    /// `sequence_batching`'s control inputs and state. Their inputs join `inputs` only through
    /// `add_implicit_inputs`, after auto-complete has seen the config as written.
    pub sequence: Sequence,
    /// `batch_input`: tensors computed per run from the requests' shapes.
    pub batch_inputs: Vec<BatchInput>,
    /// `batch_output`: outputs scattered back with the shapes of a (ragged) input.
    pub batch_outputs: Vec<BatchOutput>,
}

pub(crate) fn as_i64(v: &Value) -> Option<i64> {
    match v {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.parse().ok(),
        _ => None,
    }
}

pub(crate) fn dims_of(v: Option<&Value>, what: &str) -> Result<Vec<i64>> {
    let Some(v) = v else { return Ok(Vec::new()) };
    let arr = v.as_array().ok_or_else(|| Error::invalid_arg(format!("{what} is not a list")))?;
    arr.iter()
        .map(|d| {
            as_i64(d)
                .filter(|&d| d >= -1)
                .ok_or_else(|| Error::invalid_arg(format!("{what} has an invalid dimension {d}")))
        })
        .collect()
}

fn tensor(v: &Value, kind: &str) -> Result<TensorConfig> {
    let name = v
        .get("name")
        .and_then(Value::as_str)
        .ok_or_else(|| Error::invalid_arg(format!("an {kind} in the model config has no name")))?
        .to_string();
    let dt = v.get("data_type").and_then(Value::as_str).unwrap_or("TYPE_INVALID");
    let data_type = DataType::from_config_name(dt)
        .ok_or_else(|| Error::invalid_arg(format!("{kind} '{name}': data_type {dt} is not supported")))?;
    let dims = dims_of(v.get("dims"), &format!("{kind} '{name}' dims"))?;
    let reshape = match v.get("reshape") {
        Some(r) if r.is_object() => Some(dims_of(r.get("shape"), &format!("{kind} '{name}' reshape"))?),
        _ => None,
    };
    let optional = v.get("optional").and_then(Value::as_bool).unwrap_or(false);
    let ragged = v.get("allow_ragged_batch").and_then(Value::as_bool).unwrap_or(false);
    Ok(TensorConfig { name, data_type, dims, reshape, optional, scalar: false, ragged, role: Role::Config })
}

fn tensors(config: &Value, key: &str, kind: &str) -> Result<Vec<TensorConfig>> {
    match config.get(key) {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(a)) => a.iter().map(|t| tensor(t, kind)).collect(),
        Some(_) => Err(Error::invalid_arg(format!("model config '{key}' is not a list"))),
    }
}

fn parameters(config: &Value) -> BTreeMap<String, String> {
    let Some(Value::Object(map)) = config.get("parameters") else {
        return BTreeMap::new();
    };
    map.iter()
        .filter_map(|(k, v)| {
            let s = v.get("string_value").and_then(Value::as_str).or_else(|| v.as_str())?;
            Some((k.clone(), s.to_string()))
        })
        .collect()
}

impl ModelConfig {
    pub fn parse(config: &Value) -> Result<Self> {
        // Triton hands over an object; anything else would read as an empty config, and
        // auto-complete, which writes into it, could not.
        if !config.is_object() {
            let kind = match config {
                Value::Array(_) => "a list",
                Value::String(_) => "a string",
                Value::Null => "null",
                _ => "a scalar",
            };
            return Err(Error::invalid_arg(format!("the model config is not a JSON object (it is {kind})")));
        }
        let name = config.get("name").and_then(Value::as_str).unwrap_or_default().to_string();
        let max_batch_size = config.get("max_batch_size").and_then(as_i64).unwrap_or(0);
        let max_batch_size = usize::try_from(max_batch_size)
            .map_err(|_| Error::invalid_arg(format!("max_batch_size {max_batch_size} is negative")))?;
        let default_model_filename = config
            .get("default_model_filename")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .unwrap_or(DEFAULT_MODEL_FILENAME)
            .to_string();
        let graph_level = config.pointer("/optimization/graph/level").and_then(as_i64);
        let gpu_accelerators = match config.pointer("/optimization/execution_accelerators/gpu_execution_accelerator") {
            Some(Value::Array(list)) => list
                .iter()
                .map(|a| {
                    let name = a.get("name").and_then(Value::as_str).unwrap_or_default().to_string();
                    let params = match a.get("parameters") {
                        Some(Value::Object(m)) => {
                            m.iter().filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string()))).collect()
                        }
                        _ => BTreeMap::new(),
                    };
                    (name, params)
                })
                .collect(),
            _ => Vec::new(),
        };
        let cuda_graphs = config.pointer("/optimization/cuda/graphs").and_then(Value::as_bool).unwrap_or(false);
        Ok(ModelConfig {
            name,
            max_batch_size,
            inputs: tensors(config, "input", "input")?,
            outputs: tensors(config, "output", "output")?,
            default_model_filename,
            parameters: parameters(config),
            graph_level,
            gpu_accelerators,
            cuda_graphs,
            dynamic_batching: config.get("dynamic_batching").is_some_and(Value::is_object),
            sequence_batching: config.get("sequence_batching").is_some_and(Value::is_object),
            sequence: Sequence::parse(config)?,
            batch_inputs: ragged::batch_inputs(config)?,
            batch_outputs: ragged::batch_outputs(config)?,
        })
    }

    pub fn input(&self, name: &str) -> Option<&TensorConfig> {
        self.inputs.iter().find(|t| t.name == name)
    }

    pub fn output(&self, name: &str) -> Option<&TensorConfig> {
        self.outputs.iter().find(|t| t.name == name)
    }

    /// Adds the control and state inputs to `inputs`, so requests' control and state tensors are
    /// read and checked like any input. A name that is also under `input` fails.
    pub fn add_implicit_inputs(&mut self) -> Result<()> {
        for implicit in self.sequence.implicit_inputs() {
            if self.input(&implicit.name).is_some() {
                return Err(Error::invalid_arg(format!(
                    "model '{}': {}input '{}' of sequence_batching is also listed under 'input'",
                    self.name,
                    implicit.role.prefix(),
                    implicit.name
                )));
            }
            self.inputs.push(implicit);
        }
        Ok(())
    }

    /// The `batch_output` that scatters output `name`, if one does.
    pub fn batch_output(&self, name: &str) -> Option<&BatchOutput> {
        self.batch_outputs.iter().find(|b| b.target_name == name)
    }

    pub fn batching(&self) -> bool {
        self.max_batch_size > 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parses_triton_json_with_string_int64s() {
        let c = json!({
            "name": "m", "max_batch_size": 8,
            "input": [{"name": "X", "data_type": "TYPE_FP32", "dims": ["16"], "optional": true,
                       "reshape": {"shape": []}}],
            "output": [{"name": "Y", "data_type": "TYPE_STRING", "dims": [-1, 4]}],
            "parameters": {"intra_op_thread_count": {"string_value": "2"}},
            "optimization": {"graph": {"level": "1"}},
            "dynamic_batching": {}
        });
        let m = ModelConfig::parse(&c).unwrap();
        assert_eq!(m.max_batch_size, 8);
        assert_eq!(m.inputs[0].dims, vec![16]);
        assert_eq!(m.inputs[0].reshape, Some(vec![]));
        assert!(m.inputs[0].optional);
        assert_eq!(m.outputs[0].data_type, DataType::Bytes);
        assert_eq!(m.outputs[0].dims, vec![-1, 4]);
        assert_eq!(m.parameters["intra_op_thread_count"], "2");
        assert_eq!(m.graph_level, Some(1));
        assert_eq!(m.default_model_filename, "model.onnx");
        assert!(m.dynamic_batching && !m.sequence_batching);
    }

    #[test]
    fn rejects_bad_types_and_dims_naming_the_tensor() {
        let c = json!({"input": [{"name": "X", "data_type": "TYPE_COMPLEX", "dims": [1]}]});
        assert!(ModelConfig::parse(&c).unwrap_err().message().contains("input 'X'"));
        let c = json!({"output": [{"name": "Y", "data_type": "TYPE_FP32", "dims": [-2]}]});
        assert!(ModelConfig::parse(&c).unwrap_err().message().contains("output 'Y' dims"));
        let c = json!({"max_batch_size": -1});
        assert!(ModelConfig::parse(&c).is_err());
    }
}

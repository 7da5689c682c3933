//! `sequence_batching` of the model config: the control inputs Triton adds to every request of a
//! sequence (START, END, READY, CORRID) and the implicit state (an input the server supplies,
//! an output the backend hands back to it). Both are model inputs the config does not list under
//! `input`: `implicit_inputs` gives them config entries, so a request's control and state tensors
//! are read and checked like any input.

use serde_json::Value;

use crate::config::model_config::{Role, TensorConfig};
use crate::dtype::DataType;
use crate::error::{Error, Result};

/// What a control input tells the model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ControlKind {
    Start,
    End,
    Ready,
    CorrId,
}

impl ControlKind {
    fn from_config_name(kind: &str) -> Option<Self> {
        match kind {
            "CONTROL_SEQUENCE_START" => Some(Self::Start),
            "CONTROL_SEQUENCE_END" => Some(Self::End),
            "CONTROL_SEQUENCE_READY" => Some(Self::Ready),
            "CONTROL_SEQUENCE_CORRID" => Some(Self::CorrId),
            _ => None,
        }
    }
}

/// One `control_input`: the model input that carries one control.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControlInput {
    pub name: String,
    pub kind: ControlKind,
    pub data_type: DataType,
}

/// One `state` entry: the model reads it from `input_name` and writes it to `output_name`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateConfig {
    pub input_name: String,
    pub output_name: String,
    pub data_type: DataType,
    /// Without the batch dimension; -1 for a size that may change from step to step.
    pub dims: Vec<i64>,
}

/// `sequence_batching`, the parts the backend acts on.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Sequence {
    pub controls: Vec<ControlInput>,
    pub states: Vec<StateConfig>,
}

fn list<'v>(v: &'v Value, key: &str) -> Result<&'v [Value]> {
    match v.get(key) {
        None | Some(Value::Null) => Ok(&[]),
        Some(Value::Array(a)) => Ok(a),
        Some(_) => Err(Error::invalid_arg(format!("sequence_batching '{key}' is not a list"))),
    }
}

fn non_empty(v: &Value, key: &str) -> bool {
    v.get(key).and_then(Value::as_array).is_some_and(|a| !a.is_empty())
}

/// The tensor type of one `control` entry: the `*_false_true` pair that is set, or `data_type`.
fn control_type(name: &str, kind: ControlKind, control: &Value) -> Result<DataType> {
    let bad = |what: String| Error::invalid_arg(format!("sequence_batching control input '{name}': {what}"));
    if kind == ControlKind::CorrId {
        let dt = control.get("data_type").and_then(Value::as_str).unwrap_or("TYPE_INVALID");
        return match DataType::from_config_name(dt) {
            Some(t @ (DataType::Uint64 | DataType::Int64 | DataType::Uint32 | DataType::Int32 | DataType::Bytes)) => {
                Ok(t)
            }
            _ => Err(bad(format!(
                "CONTROL_SEQUENCE_CORRID needs data_type TYPE_UINT64, TYPE_INT64, TYPE_UINT32, TYPE_INT32 or TYPE_STRING, not {dt}"
            ))),
        };
    }
    let set: Vec<DataType> = [
        ("int32_false_true", DataType::Int32),
        ("fp32_false_true", DataType::Fp32),
        ("bool_false_true", DataType::Bool),
    ]
    .into_iter()
    .filter(|(key, _)| non_empty(control, key))
    .map(|(_, t)| t)
    .collect();
    match set.as_slice() {
        [t] => Ok(*t),
        _ => Err(bad("needs exactly one of int32_false_true, fp32_false_true, bool_false_true".into())),
    }
}

impl Sequence {
    /// Parses `sequence_batching` (absent: no controls, no state).
    pub fn parse(config: &Value) -> Result<Self> {
        let Some(sb) = config.get("sequence_batching").filter(|v| v.is_object()) else {
            return Ok(Sequence::default());
        };
        let mut controls = Vec::new();
        for input in list(sb, "control_input")? {
            let name = input.get("name").and_then(Value::as_str).unwrap_or_default().to_string();
            for control in list(input, "control")? {
                let kind_name = control.get("kind").and_then(Value::as_str).unwrap_or("CONTROL_SEQUENCE_START");
                let kind = ControlKind::from_config_name(kind_name).ok_or_else(|| {
                    Error::unsupported(format!(
                        "sequence_batching control input '{name}': kind {kind_name} is not supported"
                    ))
                })?;
                let data_type = control_type(&name, kind, control)?;
                controls.push(ControlInput { name: name.clone(), kind, data_type });
            }
        }
        let mut states = Vec::new();
        for state in list(sb, "state")? {
            let field = |key: &str| state.get(key).and_then(Value::as_str).unwrap_or_default().to_string();
            let (input_name, output_name) = (field("input_name"), field("output_name"));
            let dt = state.get("data_type").and_then(Value::as_str).unwrap_or("TYPE_INVALID");
            let data_type = DataType::from_config_name(dt).ok_or_else(|| {
                Error::invalid_arg(format!("sequence_batching state '{input_name}': data_type {dt} is not supported"))
            })?;
            let dims = super::model_config::dims_of(
                state.get("dims"),
                &format!("sequence_batching state '{input_name}' dims"),
            )?;
            states.push(StateConfig { input_name, output_name, data_type, dims });
        }
        Ok(Sequence { controls, states })
    }

    /// The config entries of the model inputs Triton adds to each request of a sequence: one per
    /// control input (shape [1] besides the batch), one per state input.
    pub fn implicit_inputs(&self) -> Vec<TensorConfig> {
        let entry = |name: &str, data_type, dims: Vec<i64>, role| TensorConfig {
            name: name.to_string(),
            data_type,
            dims,
            reshape: None,
            optional: false,
            scalar: false,
            ragged: false,
            role,
        };
        let mut inputs: Vec<TensorConfig> = Vec::new();
        for c in &self.controls {
            if !inputs.iter().any(|i| i.name == c.name) {
                inputs.push(entry(&c.name, c.data_type, vec![1], Role::Control));
            }
        }
        for s in &self.states {
            inputs.push(entry(&s.input_name, s.data_type, s.dims.clone(), Role::State));
        }
        inputs
    }

    /// Whether `name` is a control or state input (left out of an auto-completed `input`).
    pub fn is_implicit_input(&self, name: &str) -> bool {
        self.controls.iter().any(|c| c.name == name) || self.states.iter().any(|s| s.input_name == name)
    }

    pub fn is_state_output(&self, name: &str) -> bool {
        self.states.iter().any(|s| s.output_name == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parses_every_control_kind_and_state() {
        let c = json!({"sequence_batching": {
            "control_input": [
                {"name": "START", "control": [{"kind": "CONTROL_SEQUENCE_START", "int32_false_true": [0, 1]}]},
                {"name": "END", "control": [{"kind": "CONTROL_SEQUENCE_END", "fp32_false_true": [0, 1]}]},
                {"name": "READY", "control": [{"kind": "CONTROL_SEQUENCE_READY", "bool_false_true": [false, true]}]},
                {"name": "CORRID", "control": [{"kind": "CONTROL_SEQUENCE_CORRID", "data_type": "TYPE_STRING"}]}
            ],
            "state": [{"input_name": "S_IN", "output_name": "S_OUT", "data_type": "TYPE_FP32", "dims": ["-1"]}]
        }});
        let s = Sequence::parse(&c).unwrap();
        let kinds: Vec<_> = s.controls.iter().map(|c| (c.name.as_str(), c.kind, c.data_type)).collect();
        assert_eq!(
            kinds,
            [
                ("START", ControlKind::Start, DataType::Int32),
                ("END", ControlKind::End, DataType::Fp32),
                ("READY", ControlKind::Ready, DataType::Bool),
                ("CORRID", ControlKind::CorrId, DataType::Bytes)
            ]
        );
        assert_eq!(s.states[0].dims, vec![-1]);
        let inputs = s.implicit_inputs();
        assert_eq!(
            inputs.iter().map(|i| i.name.as_str()).collect::<Vec<_>>(),
            ["START", "END", "READY", "CORRID", "S_IN"]
        );
        assert_eq!(inputs[0].dims, vec![1]);
        assert_eq!(inputs[4].role, Role::State);
        assert!(s.is_implicit_input("S_IN") && s.is_state_output("S_OUT") && !s.is_implicit_input("S_OUT"));
    }

    #[test]
    fn bad_controls_name_the_input() {
        for (control, want) in [
            (json!({"kind": "CONTROL_SEQUENCE_CORRID", "data_type": "TYPE_FP32"}), "needs data_type"),
            (json!({"kind": "CONTROL_SEQUENCE_START"}), "exactly one of"),
            (json!({"kind": "CONTROL_SEQUENCE_NOPE"}), "not supported"),
        ] {
            let c = json!({"sequence_batching": {"control_input": [{"name": "C", "control": [control]}]}});
            let e = Sequence::parse(&c).unwrap_err();
            assert!(e.message().contains("control input 'C'") && e.message().contains(want), "{e}");
        }
        assert_eq!(Sequence::parse(&json!({})).unwrap(), Sequence::default());
    }
}

//! Checking a model config against the ONNX model it serves. A config that contradicts the model
//! fails the load with a message naming the tensor, instead of failing every request later.

use crate::config::model_config::{ModelConfig, Role, TensorConfig};
use crate::error::{Error, Result};
use crate::onnx::session::{ModelIo, TensorInfo};

fn names(ts: &[TensorInfo]) -> String {
    ts.iter().map(|t| t.name.as_str()).collect::<Vec<_>>().join(", ")
}

/// A shape as the official backend prints it: `[-1,16]`.
fn shape_string(shape: &[i64]) -> String {
    format!("[{}]", shape.iter().map(i64::to_string).collect::<Vec<_>>().join(","))
}

/// The official backend's facts about a tensor the config names and the model has not, in its
/// words (its messages, `ValidateInputs` and `CheckAllowedModelInput`, say the counts and the
/// allowed names), so a person or a script looking for either finds them.
fn official_not_found(kind: &str, name: &str, counts: (usize, usize), model: &[TensorInfo]) -> String {
    let mut allowed: Vec<&str> = model.iter().map(|t| t.name.as_str()).collect();
    allowed.sort_unstable();
    format!(
        "configuration expects {} {kind}s, model provides {}; unexpected inference {kind} '{name}', allowed {kind}s are: {}",
        counts.0,
        counts.1,
        allowed.join(", ")
    )
}

/// The shape the model sees for a config entry: [-1 for the batch,] reshape or dims.
fn config_shape(config: &ModelConfig, tensor_config: &TensorConfig) -> Vec<i64> {
    if tensor_config.ragged {
        // The requests' elements end to end: one dimension, no batch dimension.
        return vec![-1];
    }
    let mut shape = Vec::new();
    if config.batching() {
        shape.push(-1);
    }
    if !tensor_config.scalar {
        shape.extend_from_slice(tensor_config.wire_dims());
    }
    shape
}

/// The tensors of one kind on both sides: the config's count (as the official backend counts
/// them) and the model's.
struct Side<'a> {
    kind: &'a str,
    model: &'a [TensorInfo],
    counts: (usize, usize),
}

fn check_tensor(config: &ModelConfig, side: &Side<'_>, tensor_config: &TensorConfig) -> Result<()> {
    let (kind, model) = (side.kind, side.model);
    let name = &tensor_config.name;
    // "input", or "control input" / "state input" for those of sequence_batching.
    let label = format!("{}{kind}", tensor_config.role.prefix());
    let m = model.iter().find(|t| &t.name == name).ok_or_else(|| {
        Error::invalid_arg(format!(
            "model '{}': {label} '{name}' in the config is not an {kind} of the ONNX model (its {kind}s: {}) ({})",
            config.name,
            names(model),
            official_not_found(kind, name, side.counts, model)
        ))
    })?;
    let Some(model_type) = m.data_type else {
        return Err(Error::unsupported(format!(
            "model '{}': {label} '{name}' is a {} in the ONNX model, which Triton cannot carry",
            config.name, m.type_description
        )));
    };
    if model_type != tensor_config.data_type {
        return Err(Error::invalid_arg(format!(
            "model '{}': {label} '{name}' is {} in the config but {} ({}) in the ONNX model \
             (configuration expects datatype {} for {kind} '{name}', model provides {})",
            config.name,
            tensor_config.data_type.config_name(),
            model_type.config_name(),
            m.type_description,
            tensor_config.data_type.config_name(),
            model_type.config_name()
        )));
    }
    if kind == "output" && config.batch_output(name).is_some() {
        // Scattered by element counts (config/ragged.rs): any shape of the right total will do.
        return Ok(());
    }
    if config.batching() && m.shape.first().is_some_and(|&d| d != -1) {
        return Err(Error::invalid_arg(format!(
            "model '{}': max_batch_size is {} but {label} '{name}' has the fixed first dimension {:?} in the ONNX model \
             (shape {:?}); use max_batch_size: 0 or a model with a dynamic batch dimension",
            config.name, config.max_batch_size, m.shape[0], m.shape
        )));
    }
    let want = config_shape(config, tensor_config);
    let fits = want.len() == m.shape.len() && want.iter().zip(&m.shape).all(|(&c, &d)| c == -1 || d == -1 || c == d);
    if !fits {
        let shown = if tensor_config.reshape.is_some() { "reshape" } else { "dims" };
        // The official backend's words for the same facts (`CompareDimsSupported`).
        let official = if config.batching() {
            format!(
                "an initial batch dimension because max_batch_size > 0 followed by the explicit tensor shape, \
                 making complete shape {}",
                shape_string(&want)
            )
        } else {
            format!("shape {}", shape_string(&want))
        };
        return Err(Error::invalid_arg(format!(
            "model '{}': {label} '{name}' has {shown} {:?} in the config{}, but shape {:?} in the ONNX model \
             (model '{}', tensor '{name}': the model expects {} dimensions (shape {}) but the model configuration \
             specifies {} dimensions ({official}))",
            config.name,
            tensor_config.reshape.as_deref().unwrap_or(&tensor_config.dims),
            if config.batching() { " (plus the batch dimension)" } else { "" },
            m.shape,
            config.name,
            m.shape.len(),
            shape_string(&m.shape),
            want.len()
        )));
    }
    Ok(())
}

/// Gives ONNX scalars (rank 0) of a model that does not batch the implicit reshape the official
/// backend applies: Triton has no rank-0 tensors and refuses an empty `reshape` when
/// max_batch_size is 0, so such a tensor is written `dims: [1]` (any all-ones dims) and travels to
/// and from ONNX Runtime as a scalar. Batching models say `reshape: { shape: [] }` themselves.
pub fn bind_scalars(config: &mut ModelConfig, io: &ModelIo) {
    if config.batching() {
        return;
    }
    let bind = |tcs: &mut [TensorConfig], model: &[TensorInfo]| {
        for tensor_config in tcs
            .iter_mut()
            .filter(|tensor_config| tensor_config.reshape.is_none() && tensor_config.dims.iter().all(|&d| d == 1))
        {
            tensor_config.scalar =
                model.iter().any(|m| m.name == tensor_config.name && m.shape.is_empty() && m.data_type.is_some());
        }
    };
    bind(&mut config.inputs, &io.inputs);
    bind(&mut config.outputs, &io.outputs);
}

/// Checks every input and output of `config` against `io`, and that every model input the
/// config leaves out has a default (an initializer).
pub fn check_against_graph(config: &ModelConfig, io: &ModelIo) -> Result<()> {
    if config.outputs.is_empty() {
        return Err(Error::invalid_arg(format!("model '{}': the config lists no outputs", config.name)));
    }
    // First: a batch_output naming no output would otherwise surface as that output's shape.
    crate::config::ragged::check_batch_outputs(config)?;
    // Counted as the official backend counts them: the config's inputs with its batch inputs
    // (sequence controls and states are among `inputs`), against the model's.
    let inputs = Side {
        kind: "input",
        model: &io.inputs,
        counts: (config.inputs.len() + config.batch_inputs.len(), io.inputs.len()),
    };
    let outputs = Side { kind: "output", model: &io.outputs, counts: (config.outputs.len(), io.outputs.len()) };
    for tensor_config in &config.inputs {
        check_tensor(config, &inputs, tensor_config)?;
    }
    for tensor_config in &config.outputs {
        check_tensor(config, &outputs, tensor_config)?;
    }
    for state in &config.sequence.states {
        let output = TensorConfig {
            name: state.output_name.clone(),
            data_type: state.data_type,
            dims: state.dims.clone(),
            reshape: None,
            optional: false,
            scalar: false,
            ragged: false,
            role: Role::State,
        };
        check_tensor(config, &outputs, &output)?;
    }
    check_batch_inputs(config, io)?;
    for m in &io.inputs {
        let batch_input = config.batch_inputs.iter().any(|b| b.target_name == m.name);
        if config.input(&m.name).is_none() && !batch_input && !io.overridable.contains(&m.name) {
            return Err(Error::invalid_arg(format!(
                "model '{}': the ONNX model's input '{}' is missing from the config (and has no default value) \
                 (unable to load model '{}', configuration expects {} inputs, model provides {})",
                config.name, m.name, config.name, inputs.counts.0, inputs.counts.1
            )));
        }
    }
    Ok(())
}

/// Each `batch_input` feeds an ONNX input of its type and rank, from an input of the config, in a
/// model that batches.
fn check_batch_inputs(config: &ModelConfig, io: &ModelIo) -> Result<()> {
    for b in &config.batch_inputs {
        let name = &b.target_name;
        let fail =
            |what: String| Err(Error::invalid_arg(format!("model '{}': batch_input '{name}' {what}", config.name)));
        if !config.batching() {
            return fail("needs a model that batches (max_batch_size > 0)".into());
        }
        if config.input(&b.source_input).is_none() {
            return fail(format!("has source_input '{}', which is not an input of the config", b.source_input));
        }
        let Some(m) = io.inputs.iter().find(|m| &m.name == name) else {
            return fail(format!("is not an input of the ONNX model (its inputs: {})", names(&io.inputs)));
        };
        if m.data_type != Some(b.data_type) {
            return fail(format!(
                "is {} in the config but {} in the ONNX model",
                b.data_type.config_name(),
                m.type_description
            ));
        }
        if m.shape.len() != b.kind.rank() {
            return fail(format!("{:?} needs rank {}, the ONNX model has shape {:?}", b.kind, b.kind.rank(), m.shape));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dtype::DataType;
    use serde_json::json;

    fn info(name: &str, dt: DataType, shape: &[i64]) -> TensorInfo {
        TensorInfo { name: name.into(), data_type: Some(dt), type_description: String::new(), shape: shape.to_vec() }
    }

    fn io() -> ModelIo {
        ModelIo {
            inputs: vec![info("X", DataType::Fp32, &[-1, 16]), info("B", DataType::Fp32, &[16])],
            outputs: vec![info("Y", DataType::Fp32, &[-1, 4])],
            overridable: ["B".to_string()].into(),
        }
    }

    fn cfg(v: serde_json::Value) -> ModelConfig {
        ModelConfig::parse(&v).unwrap()
    }

    #[test]
    fn scalars_of_a_model_that_does_not_batch_are_bound() {
        let io = ModelIo {
            inputs: vec![info("S", DataType::Fp32, &[])],
            outputs: vec![info("Y", DataType::Fp32, &[])],
            overridable: Default::default(),
        };
        let mut c = cfg(json!({"name": "m",
            "input": [{"name": "S", "data_type": "TYPE_FP32", "dims": [1]}],
            "output": [{"name": "Y", "data_type": "TYPE_FP32", "dims": [1, 1]}]}));
        assert!(check_against_graph(&c, &io).is_err(), "without the binding [1] is not a scalar");
        bind_scalars(&mut c, &io);
        assert!(c.inputs[0].scalar && c.outputs[0].scalar);
        check_against_graph(&c, &io).unwrap();
        let mut c = cfg(json!({"name": "m",
            "input": [{"name": "S", "data_type": "TYPE_FP32", "dims": [2]}],
            "output": [{"name": "Y", "data_type": "TYPE_FP32", "dims": [1]}]}));
        bind_scalars(&mut c, &io);
        assert!(!c.inputs[0].scalar, "[2] is not a scalar");
        assert!(check_against_graph(&c, &io).is_err());
    }

    #[test]
    fn a_matching_config_passes() {
        let c = cfg(json!({"name": "m", "max_batch_size": 8,
            "input": [{"name": "X", "data_type": "TYPE_FP32", "dims": [16]}],
            "output": [{"name": "Y", "data_type": "TYPE_FP32", "dims": [-1]}]}));
        check_against_graph(&c, &io()).unwrap();
    }

    #[test]
    fn contradictions_name_the_tensor() {
        let cases = [
            (
                json!({"name": "m", "max_batch_size": 8,
                "input": [{"name": "Z", "data_type": "TYPE_FP32", "dims": [16]}],
                "output": [{"name": "Y", "data_type": "TYPE_FP32", "dims": [4]}]}),
                "input 'Z' in the config is not an input",
            ),
            (
                json!({"name": "m", "max_batch_size": 8,
                "input": [{"name": "X", "data_type": "TYPE_FP64", "dims": [16]}],
                "output": [{"name": "Y", "data_type": "TYPE_FP32", "dims": [4]}]}),
                "input 'X' is TYPE_FP64 in the config but TYPE_FP32",
            ),
            (
                json!({"name": "m", "max_batch_size": 8,
                "input": [{"name": "X", "data_type": "TYPE_FP32", "dims": [15]}],
                "output": [{"name": "Y", "data_type": "TYPE_FP32", "dims": [4]}]}),
                "input 'X' has dims [15]",
            ),
            (
                json!({"name": "m", "max_batch_size": 0,
                "input": [{"name": "X", "data_type": "TYPE_FP32", "dims": [16]}],
                "output": [{"name": "Y", "data_type": "TYPE_FP32", "dims": [-1, 4]}]}),
                "input 'X' has dims [16] in the config, but shape [-1, 16]",
            ),
            (
                json!({"name": "m", "max_batch_size": 8,
                "input": [{"name": "B", "data_type": "TYPE_FP32", "dims": []}],
                "output": [{"name": "Y", "data_type": "TYPE_FP32", "dims": [4]}]}),
                "input 'B' has the fixed first dimension",
            ),
            (
                json!({"name": "m", "max_batch_size": 8,
                "input": [{"name": "B", "data_type": "TYPE_FP32", "dims": [16]}],
                "output": [{"name": "Y", "data_type": "TYPE_FP32", "dims": [4]}]}),
                "input 'B' has the fixed first dimension",
            ),
            (
                json!({"name": "m", "max_batch_size": 8,
                "input": [{"name": "X", "data_type": "TYPE_FP32", "dims": [16]}]}),
                "lists no outputs",
            ),
        ];
        for (c, want) in cases {
            let e = check_against_graph(&cfg(c), &io()).unwrap_err();
            assert!(e.message().contains(want), "got '{e}', want '{want}'");
        }
    }

    #[test]
    fn a_required_model_input_missing_from_the_config_fails() {
        let mut io = io();
        io.overridable.clear();
        let c = cfg(json!({"name": "m", "max_batch_size": 8,
            "input": [{"name": "X", "data_type": "TYPE_FP32", "dims": [16]}],
            "output": [{"name": "Y", "data_type": "TYPE_FP32", "dims": [4]}]}));
        assert!(check_against_graph(&c, &io).unwrap_err().message().contains("input 'B' is missing from the config"));
    }

    #[test]
    fn ragged_and_batch_inputs_are_checked_against_the_graph() {
        let io = |acc: DataType, ragged_shape: &[i64]| ModelIo {
            inputs: vec![info("X", DataType::Fp32, ragged_shape), info("ACC", acc, &[-1])],
            outputs: vec![info("Y", DataType::Fp32, &[-1, 1])],
            overridable: Default::default(),
        };
        let c = cfg(json!({"name": "m", "max_batch_size": 4,
            "input": [{"name": "X", "data_type": "TYPE_FP32", "dims": [-1], "allow_ragged_batch": true}],
            "output": [{"name": "Y", "data_type": "TYPE_FP32", "dims": [1]}],
            "batch_input": [{"kind": "BATCH_ACCUMULATED_ELEMENT_COUNT", "target_name": ["ACC"],
                             "data_type": "TYPE_INT32", "source_input": ["X"]}]}));
        check_against_graph(&c, &io(DataType::Int32, &[-1])).unwrap();
        let e = check_against_graph(&c, &io(DataType::Fp32, &[-1])).unwrap_err();
        assert!(e.message().contains("batch_input 'ACC' is TYPE_INT32 in the config"), "{e}");
        let e = check_against_graph(&c, &io(DataType::Int32, &[-1, 3])).unwrap_err();
        assert!(e.message().contains("input 'X' has dims [-1] in the config"), "{e}");
    }

    #[test]
    fn control_and_state_inputs_are_checked_against_the_graph() {
        let io = |start: DataType, state_shape: &[i64]| ModelIo {
            inputs: vec![
                info("X", DataType::Fp32, &[-1, 1]),
                info("START", start, &[-1, 1]),
                info("S_IN", DataType::Fp32, state_shape),
            ],
            outputs: vec![info("Y", DataType::Fp32, &[-1, 1]), info("S_OUT", DataType::Fp32, state_shape)],
            overridable: Default::default(),
        };
        let mut c = cfg(json!({"name": "m", "max_batch_size": 4,
            "input": [{"name": "X", "data_type": "TYPE_FP32", "dims": [1]}],
            "output": [{"name": "Y", "data_type": "TYPE_FP32", "dims": [1]}],
            "sequence_batching": {
                "control_input": [{"name": "START", "control": [{"kind": "CONTROL_SEQUENCE_START", "int32_false_true": [0, 1]}]}],
                "state": [{"input_name": "S_IN", "output_name": "S_OUT", "data_type": "TYPE_FP32", "dims": [2]}]}}));
        let e = check_against_graph(&c, &io(DataType::Int32, &[-1, 2])).unwrap_err();
        assert!(e.message().contains("input 'START' is missing from the config"), "{e}");
        c.add_implicit_inputs().unwrap();
        check_against_graph(&c, &io(DataType::Int32, &[-1, 2])).unwrap();
        let e = check_against_graph(&c, &io(DataType::Fp32, &[-1, 2])).unwrap_err();
        assert!(e.message().contains("control input 'START' is TYPE_INT32 in the config but TYPE_FP32"), "{e}");
        let e = check_against_graph(&c, &io(DataType::Int32, &[-1, 3])).unwrap_err();
        assert!(e.message().contains("state input 'S_IN' has dims [2]"), "{e}");
        assert!(c.add_implicit_inputs().unwrap_err().message().contains("also listed under 'input'"));
    }
}

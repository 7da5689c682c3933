//! Completing a model config from the ONNX model, as the official backend does when the server
//! runs with auto-complete on (its default): missing inputs and outputs are filled from the
//! graph, and a model whose every tensor has a dynamic first dimension gets batching.

use serde_json::{Value, json};

use crate::config::model_config::{DEFAULT_MODEL_FILENAME, ModelConfig, as_i64};
use crate::error::{Error, Result};
use crate::onnx::session::{ModelIo, TensorInfo};

/// Whether every graph input and output has a dynamic first dimension (rank >= 1).
pub fn supports_batching(io: &ModelIo) -> bool {
    io.inputs.iter().chain(&io.outputs).all(|t| t.shape.first() == Some(&-1))
}

fn entry(t: &TensorInfo, batching: bool, optional: bool) -> Option<Value> {
    let dt = t.data_type?;
    // With batching, the dims are the shape after the batch dimension (`complete` has refused a
    // scalar, which has none, by then).
    let dims: &[i64] = if batching { t.shape.get(1..).unwrap_or_default() } else { &t.shape };
    let mut e = json!({ "name": t.name, "data_type": dt.config_name() });
    if dims.is_empty() {
        // Triton has no rank-0 tensors: a scalar travels as [1]. A batching model says so with
        // an empty reshape; Triton refuses one without batching, where `check::bind_scalars`
        // supplies it (as the official backend does).
        e["dims"] = json!([1]);
        if batching {
            e["reshape"] = json!({ "shape": [] });
        }
    } else {
        e["dims"] = json!(dims);
    }
    if optional {
        e["optional"] = json!(true);
    }
    Some(e)
}

/// A config that asks for batching cannot be completed from a graph tensor of rank 0: it has no
/// batch dimension. `fill`: the graph's tensors of the kind to be filled.
fn refuse_scalars(config: &ModelConfig, fill: &[TensorInfo], kind: &str) -> Result<()> {
    match fill.iter().find(|t| t.data_type.is_some() && t.shape.is_empty()) {
        None => Ok(()),
        Some(t) => Err(Error::invalid_arg(format!(
            "model '{}': max_batch_size is {} but {kind} '{}' is a scalar in the ONNX model, with no batch dimension; \
             use max_batch_size: 0, or list the model's inputs and outputs in the config",
            config.name, config.max_batch_size, t.name
        ))),
    }
}

/// Fills what `config` leaves out; returns the completed JSON, or `None` when nothing changed.
/// `default_max_batch_size` is what a batch-capable model gets when the config sets no
/// max_batch_size (the official backend's `default-max-batch-size`, 4 unless configured).
pub fn complete(config: &Value, io: &ModelIo, default_max_batch_size: usize) -> Result<Option<Value>> {
    let parsed = ModelConfig::parse(config)?;
    let mut out = config.clone();
    let mut changed = false;
    let has_max_batch = config.get("max_batch_size").and_then(as_i64).is_some_and(|n| n != 0);
    let mut batching = parsed.batching();
    if !has_max_batch
        && parsed.inputs.is_empty()
        && parsed.outputs.is_empty()
        && default_max_batch_size > 0
        && supports_batching(io)
    {
        out["max_batch_size"] = json!(default_max_batch_size);
        batching = true;
        changed = true;
        let scheduled = ["dynamic_batching", "sequence_batching", "ensemble_scheduling"]
            .iter()
            .any(|k| config.get(*k).is_some_and(|v| !v.is_null()));
        // As the official backend: a batch of one needs no scheduler to form it.
        if !scheduled && default_max_batch_size > 1 {
            out["dynamic_batching"] = json!({});
        }
    }
    // The file Triton serves when the config names none (Triton fills it for the official
    // backend's name; under ours the completed config says it too).
    if config.get("default_model_filename").and_then(Value::as_str).is_none_or(str::is_empty) {
        out["default_model_filename"] = json!(DEFAULT_MODEL_FILENAME);
        changed = true;
    }
    if batching && parsed.inputs.is_empty() {
        refuse_scalars(&parsed, &io.inputs, "input")?;
    }
    if batching && parsed.outputs.is_empty() {
        refuse_scalars(&parsed, &io.outputs, "output")?;
    }
    if parsed.inputs.is_empty() {
        // Control and state inputs come from sequence_batching: Triton adds them to each request;
        // batch inputs are computed by the backend for each run.
        let inputs: Vec<Value> = io
            .inputs
            .iter()
            .filter(|t| !parsed.sequence.is_implicit_input(&t.name))
            .filter(|t| !parsed.batch_inputs.iter().any(|b| b.target_name == t.name))
            .filter_map(|t| entry(t, batching, io.overridable.contains(&t.name)))
            .collect();
        out["input"] = Value::Array(inputs);
        changed = true;
    }
    if parsed.outputs.is_empty() {
        let outputs: Vec<Value> = io
            .outputs
            .iter()
            .filter(|t| !parsed.sequence.is_state_output(&t.name))
            .filter_map(|t| entry(t, batching, false))
            .collect();
        out["output"] = Value::Array(outputs);
        changed = true;
    }
    Ok(changed.then_some(out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dtype::DataType;

    fn info(name: &str, dt: DataType, shape: &[i64]) -> TensorInfo {
        TensorInfo { name: name.into(), data_type: Some(dt), type_description: String::new(), shape: shape.to_vec() }
    }

    #[test]
    fn batch_capable_model_gets_batching_and_tensors() {
        let io = ModelIo {
            inputs: vec![info("X", DataType::Fp32, &[-1, 16]), info("T", DataType::Bytes, &[-1])],
            outputs: vec![info("Y", DataType::Int64, &[-1, -1, 4])],
            overridable: Default::default(),
        };
        let c = complete(&json!({"name": "m", "backend": "onnxrs"}), &io, 4).unwrap().unwrap();
        assert_eq!(c["max_batch_size"], json!(4));
        assert_eq!(c["dynamic_batching"], json!({}));
        assert_eq!(c["input"][0], json!({"name": "X", "data_type": "TYPE_FP32", "dims": [16]}));
        assert_eq!(
            c["input"][1],
            json!({"name": "T", "data_type": "TYPE_STRING", "dims": [1], "reshape": {"shape": []}})
        );
        assert_eq!(c["output"][0], json!({"name": "Y", "data_type": "TYPE_INT64", "dims": [-1, 4]}));
        // What we write must parse back and pass our own check.
        crate::config::check::check_against_graph(&ModelConfig::parse(&c).unwrap(), &io).unwrap();
    }

    #[test]
    fn fixed_first_dim_scalars_and_initializer_inputs() {
        let io = ModelIo {
            inputs: vec![info("S", DataType::Fp32, &[]), info("B", DataType::Fp32, &[4])],
            outputs: vec![info("Y", DataType::Fp32, &[2, 4])],
            overridable: ["B".to_string()].into(),
        };
        let c = complete(&json!({"name": "m"}), &io, 4).unwrap().unwrap();
        assert!(c.get("max_batch_size").is_none() && c.get("dynamic_batching").is_none());
        assert_eq!(c["input"][0], json!({"name": "S", "data_type": "TYPE_FP32", "dims": [1]}));
        assert_eq!(c["input"][1], json!({"name": "B", "data_type": "TYPE_FP32", "dims": [4], "optional": true}));
        assert_eq!(c["output"][0]["dims"], json!([2, 4]));
        let mut parsed = ModelConfig::parse(&c).unwrap();
        crate::config::check::bind_scalars(&mut parsed, &io);
        crate::config::check::check_against_graph(&parsed, &io).unwrap();
    }

    /// Found by fuzz/fuzz_targets/model_config.rs: a config that is JSON but not an object parsed
    /// as an empty config, and auto-complete then panicked indexing into it. Triton always hands
    /// over an object, so the server could not send one; the guard would have turned the panic
    /// into a failed load. Now both refuse it by name.
    #[test]
    fn a_config_that_is_not_an_object_is_refused() {
        let io = ModelIo {
            inputs: vec![info("X", DataType::Fp32, &[-1])],
            outputs: vec![info("Y", DataType::Fp32, &[-1])],
            overridable: Default::default(),
        };
        for config in [json!(""), json!("output"), json!([]), json!(null), json!(4)] {
            let e = complete(&config, &io, 4).unwrap_err();
            assert!(e.message().contains("not a JSON object"), "{config}: {e}");
            assert!(ModelConfig::parse(&config).is_err(), "{config}");
        }
    }

    /// Found by fuzz/fuzz_targets/model_config.rs: a config that asks for batching
    /// (max_batch_size > 0) and leaves its tensors to auto-complete, for a model with a scalar
    /// (rank-0) input or output, panicked taking the scalar's "dimensions after the batch". A
    /// user could write that config; the load failed with a panic message. Now it fails with one
    /// that names the tensor and the fix.
    #[test]
    fn batching_asked_for_a_model_with_a_scalar() {
        let io = ModelIo {
            inputs: vec![info("X", DataType::Fp32, &[-1, 2]), info("S", DataType::Fp32, &[])],
            outputs: vec![info("Y", DataType::Fp32, &[-1])],
            overridable: Default::default(),
        };
        let e = complete(&json!({"name": "m", "max_batch_size": 8}), &io, 4).unwrap_err();
        assert!(e.message().contains("input 'S'") && e.message().contains("max_batch_size"), "{e}");
        let io = ModelIo {
            inputs: vec![info("X", DataType::Fp32, &[-1])],
            outputs: vec![info("T", DataType::Int64, &[])],
            overridable: Default::default(),
        };
        let e = complete(&json!({"name": "m", "max_batch_size": "880"}), &io, 0).unwrap_err();
        assert!(e.message().contains("output 'T'"), "{e}");
    }

    #[test]
    fn control_and_state_tensors_are_left_out() {
        let io = ModelIo {
            inputs: vec![
                info("X", DataType::Fp32, &[-1, 2]),
                info("START", DataType::Int32, &[-1, 1]),
                info("S_IN", DataType::Fp32, &[-1, 2]),
            ],
            outputs: vec![info("Y", DataType::Fp32, &[-1, 2]), info("S_OUT", DataType::Fp32, &[-1, 2])],
            overridable: Default::default(),
        };
        let c = json!({"name": "m", "max_batch_size": 4, "sequence_batching": {
            "control_input": [{"name": "START", "control": [{"kind": "CONTROL_SEQUENCE_START", "int32_false_true": [0, 1]}]}],
            "state": [{"input_name": "S_IN", "output_name": "S_OUT", "data_type": "TYPE_FP32", "dims": [2]}]}});
        let c = complete(&c, &io, 4).unwrap().unwrap();
        assert_eq!(c["input"], json!([{"name": "X", "data_type": "TYPE_FP32", "dims": [2]}]));
        assert_eq!(c["output"], json!([{"name": "Y", "data_type": "TYPE_FP32", "dims": [2]}]));
        let mut parsed = ModelConfig::parse(&c).unwrap();
        parsed.add_implicit_inputs().unwrap();
        crate::config::check::check_against_graph(&parsed, &io).unwrap();
    }

    #[test]
    fn a_complete_config_is_left_alone_but_for_the_model_file() {
        let io = ModelIo {
            inputs: vec![info("X", DataType::Fp32, &[-1])],
            outputs: vec![info("Y", DataType::Fp32, &[-1])],
            overridable: Default::default(),
        };
        let mut c = json!({"name": "m", "max_batch_size": 0,
            "input": [{"name": "X", "data_type": "TYPE_FP32", "dims": [-1]}],
            "output": [{"name": "Y", "data_type": "TYPE_FP32", "dims": [-1]}]});
        let mut want = c.clone();
        want["default_model_filename"] = json!("model.onnx");
        assert_eq!(complete(&c, &io, 4).unwrap(), Some(want));
        c["default_model_filename"] = json!("other.onnx");
        assert_eq!(complete(&c, &io, 4).unwrap(), None);
    }

    #[test]
    fn a_batch_of_one_gets_no_dynamic_batching() {
        let io = ModelIo {
            inputs: vec![info("X", DataType::Fp32, &[-1, 2])],
            outputs: vec![info("Y", DataType::Fp32, &[-1, 2])],
            overridable: Default::default(),
        };
        let c = complete(&json!({"name": "m"}), &io, 1).unwrap().unwrap();
        assert_eq!((c["max_batch_size"].clone(), c.get("dynamic_batching")), (json!(1), None));
        assert_eq!(c["default_model_filename"], json!("model.onnx"));
    }
}

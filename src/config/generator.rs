//! The model config of a generator (a model version with `genai_config.json`): what auto-complete
//! gives it, and what it must say. The decoder graph's own inputs and outputs are not the
//! model's: requests carry a prompt and settings, responses carry tokens (`crate::generate`).

use serde_json::{Value, json};

use crate::config::genai::{DecoderNames, GenaiConfig};
use crate::config::model_config::ModelConfig;
use crate::dtype::DataType;
use crate::error::{Error, Result};
use crate::onnx::session::ModelIo;

/// The inputs a generator takes: (name, type, required). Each is `[1]` but the prompt (`[-1]`).
/// `input_ids` is required unless the model has a tokenizer (then `text_input` may stand for it).
pub const INPUTS: [(&str, DataType, bool); 8] = [
    ("input_ids", DataType::Int64, true),
    ("max_tokens", DataType::Int32, false),
    ("temperature", DataType::Fp32, false),
    ("top_k", DataType::Int32, false),
    ("top_p", DataType::Fp32, false),
    ("seed", DataType::Uint64, false),
    ("ignore_eos", DataType::Bool, false),
    ("stream", DataType::Bool, false),
];

/// The output every response carries.
pub const OUTPUT: &str = "output_ids";

/// With a tokenizer: the prompt as text (BYTES `[1]`), and each response's text.
pub const TEXT_INPUT: &str = "text_input";
pub const TEXT_OUTPUT: &str = "text_output";

/// Model parameters of generators.
pub const MAX_SEQUENCES: &str = "max_sequences";
pub const KV_CACHE_BYTES: &str = "kv_cache_bytes";

/// How much an instance runs at once (model parameters `max_sequences`, `kv_cache_bytes`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub max_sequences: usize,
    /// 0: no limit.
    pub kv_cache_bytes: usize,
}

/// Sequences an instance runs at once unless `max_sequences` says otherwise.
const DEFAULT_MAX_SEQUENCES: usize = 16;

/// The config with the generator's inputs and outputs, when it names none (else `None`: a
/// config that names them is checked, not rewritten). With `text` (the model has a tokenizer),
/// `text_input` and `text_output` too, and the prompt may come as either.
pub fn complete(config: &Value, text: bool) -> Option<Value> {
    let empty = |k: &str| config.get(k).and_then(Value::as_array).is_none_or(Vec::is_empty);
    if !(empty("input") && empty("output")) {
        return None;
    }
    let mut out = config.clone();
    let mut inputs: Vec<Value> = INPUTS
        .iter()
        .map(|(name, dt, required)| {
            let dims = if *name == "input_ids" { json!([-1]) } else { json!([1]) };
            json!({"name": name, "data_type": dt.config_name(), "dims": dims, "optional": !required || text})
        })
        .collect();
    let mut outputs = vec![json!({"name": OUTPUT, "data_type": "TYPE_INT64", "dims": [-1]})];
    if text {
        inputs.insert(1, json!({"name": TEXT_INPUT, "data_type": "TYPE_STRING", "dims": [1], "optional": true}));
        outputs.push(json!({"name": TEXT_OUTPUT, "data_type": "TYPE_STRING", "dims": [1]}));
    }
    out["input"] = Value::Array(inputs);
    out["output"] = Value::Array(outputs);
    out["max_batch_size"] = json!(0);
    Some(out)
}

/// Whether the config asks for a decoupled model (responses streamed apart from requests).
pub fn decoupled(config: &Value) -> bool {
    config.get("model_transaction_policy").and_then(|p| p.get("decoupled")).and_then(Value::as_bool).unwrap_or(false)
}

/// Checks a generator's config (`json` as the server holds it, `config` parsed; `text`: the
/// model has a tokenizer) and the decoder graph against `genai_config.json`.
pub fn check(json: &Value, config: &ModelConfig, (genai, text): (&GenaiConfig, bool), io: &ModelIo) -> Result<()> {
    if !decoupled(json) {
        return Err(Error::invalid_arg(
            "a generative model (genai_config.json) streams its tokens: its config needs \
             model_transaction_policy { decoupled: true }",
        ));
    }
    if config.max_batch_size != 0 {
        return Err(Error::invalid_arg(format!(
            "a generative model batches its sequences itself: max_batch_size must be 0, got {}",
            config.max_batch_size
        )));
    }
    for input in &config.inputs {
        if input.name == TEXT_INPUT {
            if !text {
                return Err(Error::invalid_arg(format!(
                    "input '{TEXT_INPUT}' needs the model's tokenizer: put tokenizer.json beside model.onnx"
                )));
            }
            if input.data_type != DataType::Bytes {
                return Err(Error::invalid_arg(format!("input '{TEXT_INPUT}' must be TYPE_STRING")));
            }
            continue;
        }
        let Some((_, dt, _)) = INPUTS.iter().find(|(n, _, _)| *n == input.name) else {
            let known: Vec<&str> = INPUTS.iter().map(|(n, _, _)| *n).collect();
            return Err(Error::invalid_arg(format!(
                "input '{}' is not one a generative model takes ({})",
                input.name,
                known.join(", ")
            )));
        };
        if input.data_type != *dt {
            return Err(Error::invalid_arg(format!(
                "input '{}' must be {}, the config says {}",
                input.name,
                dt.config_name(),
                input.data_type.config_name()
            )));
        }
    }
    if !config.inputs.iter().any(|i| i.name == "input_ids" || i.name == TEXT_INPUT) {
        return Err(Error::invalid_arg(
            "a generative model's config needs the input 'input_ids' (TYPE_INT64, dims [-1]) or, with a tokenizer, \
             'text_input' (TYPE_STRING, dims [1])",
        ));
    }
    let ids_out = config.outputs.iter().any(|o| o.name == OUTPUT && o.data_type == DataType::Int64);
    let text_out = config.outputs.iter().find(|o| o.name == TEXT_OUTPUT);
    let others = config.outputs.iter().filter(|o| o.name != OUTPUT && o.name != TEXT_OUTPUT).count();
    if !ids_out || others > 0 || text_out.is_some_and(|o| !text || o.data_type != DataType::Bytes) {
        return Err(Error::invalid_arg(format!(
            "a generative model's outputs are '{OUTPUT}' (TYPE_INT64, dims [-1]) and, with a tokenizer \
             (tokenizer.json beside model.onnx), '{TEXT_OUTPUT}' (TYPE_STRING, dims [1])"
        )));
    }
    check_graph(genai, io)
}

/// The decoder graph has the inputs and outputs `genai_config.json` names, of the types the
/// generation loop feeds and reads.
fn check_graph(genai: &GenaiConfig, io: &ModelIo) -> Result<()> {
    let n = &genai.names;
    let expect = |name: &str, input: bool, dt: DataType| -> Result<()> {
        let found = if input { io.input(name) } else { io.output(name) };
        let what = if input { "input" } else { "output" };
        match found {
            None => Err(Error::invalid_arg(format!(
                "genai_config.json names the decoder {what} '{name}'; the ONNX model has none"
            ))),
            Some(t) if t.data_type != Some(dt) => Err(Error::unsupported(format!(
                "decoder {what} '{name}' is {}; onnxrs generates with {} here",
                t.type_description,
                dt.config_name()
            ))),
            Some(_) => Ok(()),
        }
    };
    expect(&n.input_ids, true, DataType::Int64)?;
    for optional in [&n.attention_mask, &n.position_ids].into_iter().flatten() {
        expect(optional, true, DataType::Int64)?;
    }
    expect(&n.logits, false, DataType::Fp32)?;
    for layer in 0..genai.num_layers {
        for (pattern, input) in
            [(&n.past_key, true), (&n.past_value, true), (&n.present_key, false), (&n.present_value, false)]
        {
            expect(&DecoderNames::layer(pattern, layer), input, DataType::Fp32)?;
        }
    }
    Ok(())
}

/// The decoder outputs runs compute.
pub fn output_names(genai: &GenaiConfig) -> Vec<String> {
    let n = &genai.names;
    let mut out = vec![n.logits.clone()];
    for layer in 0..genai.num_layers {
        out.push(DecoderNames::layer(&n.present_key, layer));
        out.push(DecoderNames::layer(&n.present_value, layer));
    }
    out
}

/// `max_sequences` and `kv_cache_bytes` from the model's parameters.
pub fn limits(config: &ModelConfig) -> Result<Limits> {
    let count = |key: &str, default: usize, min: usize| -> Result<usize> {
        match config.parameters.get(key) {
            None => Ok(default),
            Some(v) => v.trim().parse::<usize>().ok().filter(|&n| n >= min).ok_or_else(|| {
                Error::invalid_arg(format!("parameter {key} must be a whole number of at least {min}, got '{v}'"))
            }),
        }
    };
    Ok(Limits {
        max_sequences: count(MAX_SEQUENCES, DEFAULT_MAX_SEQUENCES, 1)?,
        kv_cache_bytes: count(KV_CACHE_BYTES, 0, 0)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn completes_an_empty_config_and_requires_decoupled() {
        let bare = json!({"name": "g", "backend": "onnxrs"});
        let done = complete(&bare, false).unwrap();
        assert_eq!(done["input"].as_array().unwrap().len(), INPUTS.len());
        assert_eq!(
            done["input"][0],
            json!({"name": "input_ids", "data_type": "TYPE_INT64", "dims": [-1], "optional": false})
        );
        assert_eq!(done["output"][0]["name"], "output_ids");
        assert!(complete(&done, false).is_none(), "a config with inputs is left as written");
        let text = complete(&bare, true).unwrap();
        assert_eq!(text["input"][1]["name"], TEXT_INPUT);
        assert_eq!(text["input"][0]["optional"], true, "the prompt may come as text");
        assert_eq!(text["output"][1], json!({"name": TEXT_OUTPUT, "data_type": "TYPE_STRING", "dims": [1]}));
        assert!(!decoupled(&done));
        assert!(decoupled(&json!({"model_transaction_policy": {"decoupled": true}})));
    }

    #[test]
    fn limits_from_parameters() {
        let mut c = ModelConfig::parse(&json!({"name": "g"})).unwrap();
        assert_eq!(limits(&c).unwrap(), Limits { max_sequences: 16, kv_cache_bytes: 0 });
        c.parameters.insert(MAX_SEQUENCES.into(), "4".into());
        c.parameters.insert(KV_CACHE_BYTES.into(), "1048576".into());
        assert_eq!(limits(&c).unwrap(), Limits { max_sequences: 4, kv_cache_bytes: 1 << 20 });
        c.parameters.insert(MAX_SEQUENCES.into(), "0".into());
        assert!(limits(&c).unwrap_err().message().contains("max_sequences must be a whole number of at least 1"));
    }
}

//! A generative model's `genai_config.json`, as ONNX Runtime GenAI's model builder writes it: the
//! decoder's input and output names, the KV cache's shape, the special tokens and the default
//! search settings. Pure: parsed from the file's text, tested without a model.

use serde_json::Value;

use crate::error::{Error, Result};

/// The file that makes a model version a generator.
pub const FILE_NAME: &str = "genai_config.json";

#[derive(Debug, Clone, PartialEq)]
pub struct GenaiConfig {
    pub vocab_size: usize,
    pub context_length: usize,
    pub bos_token_id: Option<i64>,
    /// Generation stops at any of these.
    pub eos_token_ids: Vec<i64>,
    pub pad_token_id: i64,
    pub num_layers: usize,
    pub num_kv_heads: usize,
    pub head_size: usize,
    pub names: DecoderNames,
    pub search: SearchDefaults,
}

/// The decoder graph's names (per-layer ones with `%d` for the layer).
#[derive(Debug, Clone, PartialEq)]
pub struct DecoderNames {
    pub input_ids: String,
    pub attention_mask: Option<String>,
    pub position_ids: Option<String>,
    pub past_key: String,
    pub past_value: String,
    pub logits: String,
    pub present_key: String,
    pub present_value: String,
}

/// The `search` section: what a request gets for what it leaves unset.
#[derive(Debug, Clone, PartialEq)]
pub struct SearchDefaults {
    /// Prompt and generated tokens together.
    pub max_length: usize,
    pub do_sample: bool,
    pub temperature: f32,
    pub top_k: usize,
    pub top_p: f32,
}

impl DecoderNames {
    /// A per-layer name for `layer`.
    pub fn layer(pattern: &str, layer: usize) -> String {
        pattern.replace("%d", &layer.to_string())
    }
}

impl GenaiConfig {
    pub fn parse(text: &str) -> Result<Self> {
        let v: Value = serde_json::from_str(text)
            .map_err(|e| Error::invalid_arg(format!("{FILE_NAME} is not valid JSON: {e}")))?;
        let model = v.get("model").ok_or_else(|| missing("model"))?;
        let decoder = model.get("decoder").ok_or_else(|| missing("model.decoder"))?;
        let count = |parent: &Value, key: &str, path: &str| -> Result<usize> {
            parent
                .get(key)
                .and_then(Value::as_u64)
                .and_then(|n| usize::try_from(n).ok())
                .filter(|&n| n > 0)
                .ok_or_else(|| Error::invalid_arg(format!("{FILE_NAME}: {path}.{key} must be a positive number")))
        };
        let inputs = decoder.get("inputs").ok_or_else(|| missing("model.decoder.inputs"))?;
        let outputs = decoder.get("outputs").ok_or_else(|| missing("model.decoder.outputs"))?;
        let name = |parent: &Value, key: &str, default: Option<&str>, path: &str| -> Result<String> {
            match parent.get(key).and_then(Value::as_str).or(default) {
                Some(n) => Ok(n.to_string()),
                None => Err(missing(&format!("{path}.{key}"))),
            }
        };
        let optional = |key: &str| inputs.get(key).and_then(Value::as_str).map(str::to_string);
        let names = DecoderNames {
            input_ids: name(inputs, "input_ids", Some("input_ids"), "model.decoder.inputs")?,
            attention_mask: optional("attention_mask"),
            position_ids: optional("position_ids"),
            past_key: name(inputs, "past_key_names", None, "model.decoder.inputs")?,
            past_value: name(inputs, "past_value_names", None, "model.decoder.inputs")?,
            logits: name(outputs, "logits", Some("logits"), "model.decoder.outputs")?,
            present_key: name(outputs, "present_key_names", None, "model.decoder.outputs")?,
            present_value: name(outputs, "present_value_names", None, "model.decoder.outputs")?,
        };
        for pattern in [&names.past_key, &names.past_value, &names.present_key, &names.present_value] {
            if !pattern.contains("%d") {
                return Err(Error::invalid_arg(format!(
                    "{FILE_NAME}: the per-layer name '{pattern}' has no %d for the layer number"
                )));
            }
        }
        let context_length = count(model, "context_length", "model")?;
        let token = |key: &str| model.get(key).and_then(Value::as_i64);
        let eos_token_ids = match model.get("eos_token_id") {
            Some(Value::Array(a)) => a.iter().filter_map(Value::as_i64).collect(),
            Some(v) => v.as_i64().into_iter().collect(),
            None => Vec::new(),
        };
        let search = v.get("search");
        let s_num = |key: &str| search.and_then(|s| s.get(key)).and_then(Value::as_f64);
        let search = SearchDefaults {
            max_length: s_num("max_length").map_or(context_length, |n| (n as usize).clamp(1, context_length)),
            do_sample: search.and_then(|s| s.get("do_sample")).and_then(Value::as_bool).unwrap_or(false),
            temperature: s_num("temperature").map_or(1.0, |t| t as f32),
            top_k: s_num("top_k").map_or(0, |k| k.max(0.0) as usize),
            top_p: s_num("top_p").map_or(1.0, |p| p as f32),
        };
        Ok(GenaiConfig {
            vocab_size: count(model, "vocab_size", "model")?,
            context_length,
            bos_token_id: token("bos_token_id"),
            pad_token_id: token("pad_token_id").or_else(|| eos_token_ids.first().copied()).unwrap_or(0),
            eos_token_ids,
            num_layers: count(decoder, "num_hidden_layers", "model.decoder")?,
            num_kv_heads: count(decoder, "num_key_value_heads", "model.decoder")?,
            head_size: count(decoder, "head_size", "model.decoder")?,
            names,
            search,
        })
    }

    /// Bytes of KV cache one token of one sequence takes (keys and values, every layer, FP32).
    pub fn kv_bytes_per_token(&self) -> usize {
        2 * self.num_layers * self.num_kv_heads * self.head_size * std::mem::size_of::<f32>()
    }
}

fn missing(what: &str) -> Error {
    Error::invalid_arg(format!("{FILE_NAME} has no {what}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const BUILDER: &str = r#"{
      "model": {
        "bos_token_id": 1, "context_length": 64, "eos_token_id": [2, 5], "pad_token_id": 0,
        "type": "llama", "vocab_size": 64,
        "decoder": {
          "filename": "model.onnx", "head_size": 8, "hidden_size": 32, "num_attention_heads": 4,
          "num_hidden_layers": 2, "num_key_value_heads": 2,
          "inputs": {"input_ids": "input_ids", "attention_mask": "attention_mask",
                     "position_ids": "position_ids",
                     "past_key_names": "past_key_values.%d.key", "past_value_names": "past_key_values.%d.value"},
          "outputs": {"logits": "logits", "present_key_names": "present.%d.key",
                      "present_value_names": "present.%d.value"}
        }
      },
      "search": {"max_length": 32, "do_sample": false, "temperature": 0.7, "top_k": 50, "top_p": 0.9}
    }"#;

    #[test]
    fn reads_what_the_model_builder_writes() {
        let c = GenaiConfig::parse(BUILDER).unwrap();
        assert_eq!((c.vocab_size, c.context_length, c.num_layers, c.num_kv_heads, c.head_size), (64, 64, 2, 2, 8));
        assert_eq!((c.bos_token_id, c.eos_token_ids.clone(), c.pad_token_id), (Some(1), vec![2, 5], 0));
        assert_eq!(DecoderNames::layer(&c.names.past_key, 1), "past_key_values.1.key");
        assert_eq!(c.names.attention_mask.as_deref(), Some("attention_mask"));
        assert_eq!(
            c.search,
            SearchDefaults { max_length: 32, do_sample: false, temperature: 0.7, top_k: 50, top_p: 0.9 }
        );
        assert_eq!(c.kv_bytes_per_token(), 2 * 2 * 2 * 8 * 4);
    }

    #[test]
    fn names_what_is_missing() {
        let e = GenaiConfig::parse("{}").unwrap_err();
        assert!(e.message().contains("has no model"), "{e}");
        let no_layers = BUILDER.replace("\"num_hidden_layers\": 2,", "");
        let e = GenaiConfig::parse(&no_layers).unwrap_err();
        assert!(e.message().contains("model.decoder.num_hidden_layers"), "{e}");
        let no_pattern = BUILDER.replace("present.%d.key", "present.key");
        assert!(GenaiConfig::parse(&no_pattern).unwrap_err().message().contains("no %d"));
        assert!(GenaiConfig::parse("not json").unwrap_err().message().contains("not valid JSON"));
    }
}

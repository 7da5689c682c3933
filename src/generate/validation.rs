//! Everything about a generation request that can be checked is checked here, before it is
//! queued: its prompt, its sampling settings and its limits. A request that fails gets its error
//! at once and never takes a place in the queue.

use crate::config::genai::GenaiConfig;
use crate::config::generator::TEXT_INPUT;
use crate::dtype::DataType;
use crate::error::{Error, Result};
use crate::generate::text::Text;

/// One input as the request carries it.
pub struct RawInput<'a> {
    pub name: &'a str,
    pub data_type: Option<DataType>,
    pub shape: &'a [i64],
    pub bytes: Vec<u8>,
}

/// How one request is to be generated.
#[derive(Debug, Clone, PartialEq)]
pub struct Params {
    /// New tokens at most.
    pub max_tokens: usize,
    /// 0 for greedy.
    pub temperature: f32,
    /// 0 for no limit.
    pub top_k: usize,
    pub top_p: f32,
    pub seed: Option<u64>,
    pub ignore_eos: bool,
    /// One response per token (true), or one with every token at the end.
    pub stream: bool,
    /// Responses carry `text_output` too (the model has a tokenizer and the request did not
    /// name outputs without it).
    pub text_output: bool,
}

/// A request ready to queue: its prompt and settings.
#[derive(Debug, Clone, PartialEq)]
pub struct Checked {
    pub prompt: Vec<i64>,
    pub params: Params,
}

fn input<'i, 'a>(inputs: &'i [RawInput<'a>], name: &str) -> Option<&'i RawInput<'a>> {
    inputs.iter().find(|i| i.name == name)
}

/// The one element of a `[1]` input of `data_type`, as its bytes.
fn scalar<'i>(inputs: &'i [RawInput<'_>], name: &str, data_type: DataType) -> Result<Option<&'i [u8]>> {
    let Some(i) = input(inputs, name) else { return Ok(None) };
    if i.data_type != Some(data_type) {
        return Err(Error::invalid_arg(format!(
            "input '{name}' must be {}, got {}",
            data_type.config_name(),
            i.data_type.map_or("an unknown type", DataType::config_name)
        )));
    }
    let size = data_type.byte_size().unwrap_or(1);
    if i.bytes.len() != size {
        return Err(Error::invalid_arg(format!("input '{name}' must hold one element, shape {:?} given", i.shape)));
    }
    Ok(Some(&i.bytes))
}

fn i32_of(b: &[u8]) -> i32 {
    i32::from_ne_bytes([b[0], b[1], b[2], b[3]])
}

fn f32_of(b: &[u8]) -> f32 {
    f32::from_ne_bytes([b[0], b[1], b[2], b[3]])
}

/// What a request asks of a model's text: its tokenizer, and whether the request's responses
/// should carry `text_output` (it named no outputs, or named that one).
pub struct TextRequest<'t> {
    pub text: Option<&'t Text>,
    pub wants_text_output: bool,
}

/// Checks a request's inputs against the model: the prompt from `input_ids` (or, with a
/// tokenizer, `text_input`), the settings from the optional inputs or else the model's `search`
/// defaults.
pub fn check(inputs: &[RawInput<'_>], genai: &GenaiConfig, text: &TextRequest<'_>) -> Result<Checked> {
    let prompt: Vec<i64> = match (input(inputs, "input_ids"), input(inputs, TEXT_INPUT), text.text) {
        (Some(_), Some(_), _) => {
            return Err(Error::invalid_arg("give the prompt as 'input_ids' or as 'text_input', not both"));
        }
        (None, Some(t), Some(tokenizer)) => {
            let elements = crate::bytes::decode(&t.bytes, 1)
                .map_err(|e| Error::invalid_arg(format!("input '{TEXT_INPUT}' must hold one string: {e}")))?;
            let prompt = std::str::from_utf8(elements[0])
                .map_err(|_| Error::invalid_arg(format!("input '{TEXT_INPUT}' is not UTF-8 text")))?;
            tokenizer.encode(prompt)?
        }
        (None, Some(_), None) => {
            return Err(Error::invalid_arg(format!("this model has no tokenizer: '{TEXT_INPUT}' cannot be read")));
        }
        (None, None, _) => return Err(Error::invalid_arg("the request has no input 'input_ids'")),
        (Some(ids), None, _) => {
            if ids.data_type != Some(DataType::Int64) {
                return Err(Error::invalid_arg(format!(
                    "input 'input_ids' must be TYPE_INT64, got {}",
                    ids.data_type.map_or("an unknown type", DataType::config_name)
                )));
            }
            ids.bytes
                .chunks_exact(8)
                .map(|c| i64::from_ne_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]))
                .collect()
        }
    };
    check_prompt(&prompt, genai)?;
    let s = &genai.search;
    let room = genai.context_length - prompt.len();
    let default_max = s.max_length.saturating_sub(prompt.len()).max(1).min(room);
    let max_tokens = match scalar(inputs, "max_tokens", DataType::Int32)? {
        None => default_max,
        Some(b) => match i32_of(b) {
            n if n <= 0 => return Err(Error::invalid_arg(format!("max_tokens must be at least 1, got {n}"))),
            n => (n as usize).min(room),
        },
    };
    let temperature = match scalar(inputs, "temperature", DataType::Fp32)? {
        None if s.do_sample => s.temperature,
        None => 0.0,
        Some(b) => f32_of(b),
    };
    if !(temperature.is_finite() && temperature >= 0.0) {
        return Err(Error::invalid_arg(format!("temperature must be 0 or more, got {temperature}")));
    }
    // The search section's sampling settings are defaults only where it samples (`do_sample`);
    // a greedy model's top_k (ORT GenAI writes 1) must not turn a request's sampling off.
    let top_k = match scalar(inputs, "top_k", DataType::Int32)? {
        None if s.do_sample => s.top_k,
        None => 0,
        Some(b) => match i32_of(b) {
            n if n < 0 => return Err(Error::invalid_arg(format!("top_k must be 0 (no limit) or more, got {n}"))),
            n => n as usize,
        },
    };
    let top_p = scalar(inputs, "top_p", DataType::Fp32)?.map_or(if s.do_sample { s.top_p } else { 1.0 }, f32_of);
    if !(top_p > 0.0 && top_p <= 1.0) {
        return Err(Error::invalid_arg(format!("top_p must be in (0, 1], got {top_p}")));
    }
    let seed = scalar(inputs, "seed", DataType::Uint64)?
        .map(|b| u64::from_ne_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]));
    let flag = |name: &str, default: bool| -> Result<bool> {
        Ok(scalar(inputs, name, DataType::Bool)?.map_or(default, |b| b[0] != 0))
    };
    let params = Params {
        max_tokens,
        temperature,
        top_k,
        top_p,
        seed,
        ignore_eos: flag("ignore_eos", false)?,
        stream: flag("stream", true)?,
        text_output: text.text.is_some() && text.wants_text_output,
    };
    Ok(Checked { prompt, params })
}

/// A prompt the model can take: not empty, every id in the vocabulary, room for one new token.
pub fn check_prompt(prompt: &[i64], genai: &GenaiConfig) -> Result<()> {
    if prompt.is_empty() {
        return Err(Error::invalid_arg("the prompt is empty: input_ids needs at least one token"));
    }
    if let Some((at, id)) = prompt.iter().enumerate().find(|(_, id)| **id < 0 || **id as usize >= genai.vocab_size) {
        return Err(Error::invalid_arg(format!(
            "input_ids[{at}] = {id} is not a token of this model (vocabulary of {})",
            genai.vocab_size
        )));
    }
    if prompt.len() >= genai.context_length {
        return Err(Error::invalid_arg(format!(
            "the prompt has {} tokens; the model's context holds {} (prompt and generated tokens together)",
            prompt.len(),
            genai.context_length
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::genai::{DecoderNames, SearchDefaults};

    const NO_TEXT: TextRequest<'static> = TextRequest { text: None, wants_text_output: false };

    fn genai() -> GenaiConfig {
        GenaiConfig {
            vocab_size: 64,
            context_length: 16,
            bos_token_id: Some(1),
            eos_token_ids: vec![2],
            pad_token_id: 0,
            num_layers: 2,
            num_kv_heads: 2,
            head_size: 8,
            names: DecoderNames {
                input_ids: "input_ids".into(),
                attention_mask: None,
                position_ids: None,
                past_key: "k.%d".into(),
                past_value: "v.%d".into(),
                logits: "logits".into(),
                present_key: "pk.%d".into(),
                present_value: "pv.%d".into(),
            },
            search: SearchDefaults { max_length: 12, do_sample: false, temperature: 1.0, top_k: 0, top_p: 1.0 },
        }
    }

    fn ids(v: &[i64]) -> RawInput<'static> {
        RawInput {
            name: "input_ids",
            data_type: Some(DataType::Int64),
            shape: &[],
            bytes: v.iter().flat_map(|x| x.to_ne_bytes()).collect(),
        }
    }

    fn int32(name: &'static str, v: i32) -> RawInput<'static> {
        RawInput { name, data_type: Some(DataType::Int32), shape: &[1], bytes: v.to_ne_bytes().to_vec() }
    }

    #[test]
    fn defaults_come_from_the_search_section() {
        let c = check(&[ids(&[5, 6, 7])], &genai(), &NO_TEXT).unwrap();
        assert_eq!(c.prompt, vec![5, 6, 7]);
        assert_eq!(c.params.max_tokens, 9, "max_length 12 less the prompt");
        assert_eq!((c.params.temperature, c.params.stream, c.params.ignore_eos), (0.0, true, false));
        let c = check(&[ids(&[5; 10]), int32("max_tokens", 100)], &genai(), &NO_TEXT).unwrap();
        assert_eq!(c.params.max_tokens, 6, "the context's room");
    }

    #[test]
    fn bad_requests_are_named() {
        let g = genai();
        let msg = |inputs: &[RawInput<'_>]| check(inputs, &g, &NO_TEXT).unwrap_err().message().to_string();
        assert!(msg(&[ids(&[])]).contains("prompt is empty"));
        assert!(msg(&[ids(&[3, 64])]).contains("input_ids[1] = 64"));
        assert!(msg(&[ids(&[3; 16])]).contains("context holds 16"));
        assert!(msg(&[ids(&[3]), int32("max_tokens", 0)]).contains("max_tokens must be at least 1"));
        assert!(msg(&[ids(&[3]), int32("top_k", -1)]).contains("top_k"));
        let wrong = RawInput { name: "input_ids", data_type: Some(DataType::Int32), shape: &[1], bytes: vec![0; 4] };
        assert!(msg(&[wrong]).contains("must be TYPE_INT64"));
        let two = RawInput { name: "max_tokens", data_type: Some(DataType::Int32), shape: &[2], bytes: vec![0; 8] };
        assert!(msg(&[ids(&[3]), two]).contains("one element"));
        assert!(msg(&[]).contains("no input 'input_ids'"));
    }
}

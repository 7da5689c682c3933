//! One ONNX Runtime run of the decoder over a step's sequences: a prefill (one sequence, its
//! whole prompt) or a decode step (every running sequence, one token each). Inputs are laid out
//! from the sequences' caches (`kv`), the new positions are appended to them, and each
//! sequence's last row of logits comes back.

use crate::config::genai::{DecoderNames, GenaiConfig};
use crate::dtype::DataType;
use crate::error::{Error, Result};
use crate::generate::kv::{self, KvCache, KvShape, Slot, Span};
use crate::onnx::session::OnnxSession;
use crate::onnx::tensor::{self, InputTensor, OutputData};

/// What a step runs on: the session and the model's names and cache shape.
pub struct Decoder<'a> {
    pub session: &'a OnnxSession,
    pub genai: &'a GenaiConfig,
    pub shape: KvShape,
}

fn i64_bytes(v: &[i64]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_ne_bytes()).collect()
}

impl Decoder<'_> {
    /// Runs `new[b]` (all of one length) after each cache `caches[b]`; appends the new positions
    /// to the caches and returns each sequence's logits for its last new position.
    pub fn step(&self, caches: &mut [&mut KvCache], new: &[&[i64]]) -> Result<Vec<Vec<f32>>> {
        let batch = caches.len();
        let width = new.first().map_or(0, |n| n.len());
        if batch == 0 || width == 0 || new.len() != batch || new.iter().any(|n| n.len() != width) {
            return Err(Error::internal("a step needs one equally long run of new tokens per sequence"));
        }
        let names: &DecoderNames = &self.genai.names;
        let lens: Vec<usize> = caches.iter().map(|c| c.len()).collect();
        let past = lens.iter().copied().max().unwrap_or(0);
        let (b, w, p) = (batch as i64, width as i64, past as i64);
        let ids = i64_bytes(&new.concat());
        let mask = i64_bytes(&kv::attention_mask(&lens, past, width));
        let positions: Vec<i64> = lens.iter().flat_map(|&l| (l..l + width).map(|x| x as i64)).collect();
        let positions = i64_bytes(&positions);
        let past_shape = [b, self.shape.heads as i64, p, (self.shape.row_bytes / 4) as i64];
        let views: Vec<&KvCache> = caches.iter().map(|c| &**c).collect();
        let mut pasts: Vec<(String, Vec<u8>)> = Vec::with_capacity(self.shape.layers * 2);
        for layer in 0..self.shape.layers {
            for (pattern, value) in [(&names.past_key, false), (&names.past_value, true)] {
                let bytes = kv::past_input(&views, self.shape, Slot { layer, value }, past);
                pasts.push((DecoderNames::layer(pattern, layer), bytes));
            }
        }
        let mut owned: Vec<(&str, InputTensor<'_>)> = Vec::with_capacity(pasts.len() + 3);
        owned.push((&names.input_ids, tensor::from_bytes(DataType::Int64, &[b, w], &ids)?));
        if let Some(n) = &names.attention_mask {
            owned.push((n, tensor::from_bytes(DataType::Int64, &[b, p + w], &mask)?));
        }
        if let Some(n) = &names.position_ids {
            owned.push((n, tensor::from_bytes(DataType::Int64, &[b, w], &positions)?));
        }
        for (name, bytes) in &pasts {
            owned.push((name, tensor::from_bytes(DataType::Fp32, &past_shape, bytes)?));
        }
        let inputs: Vec<(&str, &InputTensor<'_>)> = owned.iter().map(|(n, t)| (*n, t)).collect();
        let outputs = self.session.run(&inputs)?;
        for layer in 0..self.shape.layers {
            for (pattern, value) in [(&names.present_key, false), (&names.present_value, true)] {
                let name = DecoderNames::layer(pattern, layer);
                let view = outputs.read(&name)?;
                let OutputData::Fixed(bytes) = view.data else {
                    return Err(Error::internal(format!("output '{name}' is not a tensor of numbers")));
                };
                if !kv::take_present(caches, Slot { layer, value }, bytes, Span { past, new: width }) {
                    return Err(Error::internal(format!(
                        "output '{name}' has shape {:?}; expected [{batch}, {}, {}, {}]",
                        view.shape,
                        self.shape.heads,
                        past + width,
                        self.shape.row_bytes / 4
                    )));
                }
            }
        }
        kv::advance(caches, width);
        let logits = outputs.read(&names.logits)?;
        let OutputData::Fixed(bytes) = logits.data else {
            return Err(Error::internal("the logits are not a tensor of numbers"));
        };
        let vocab = self.genai.vocab_size;
        if logits.data_type != DataType::Fp32 || bytes.len() != batch * width * vocab * 4 {
            return Err(Error::internal(format!(
                "logits of type {} and shape {:?}; expected TYPE_FP32 [{batch}, {width}, {vocab}]",
                logits.data_type.config_name(),
                logits.shape
            )));
        }
        let row = vocab * 4;
        Ok((0..batch)
            .map(|s| {
                let at = (s * width + width - 1) * row;
                bytes[at..at + row].chunks_exact(4).map(|c| f32::from_ne_bytes([c[0], c[1], c[2], c[3]])).collect()
            })
            .collect())
    }
}

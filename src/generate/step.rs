//! One ONNX Runtime run of the decoder: a prefill (one sequence, its whole prompt, from an empty
//! cache) or a decode step (every running sequence of the batch, one token each). The `present`
//! outputs are written straight into the cache's buffers (`kv`); each sequence's last row of
//! logits comes back.

use crate::config::genai::{DecoderNames, GenaiConfig};
use crate::dtype::DataType;
use crate::error::{Error, Result};
use crate::generate::kv::{KvBatch, KvShape, OwnCache, Slot};
use crate::onnx::session::OnnxSession;
use crate::onnx::tensor::{self, InputTensor, OutputData, OutputTensor};

/// What a step runs on: the session, the model's names and its cache shape.
pub struct Decoder<'a> {
    pub session: &'a OnnxSession,
    pub genai: &'a GenaiConfig,
    pub shape: KvShape,
    /// Per cache slot (`Slot::all` order): the `past` input's name, and the place of the
    /// `present` output among the session's outputs.
    past_names: Vec<String>,
    present_at: Vec<(String, Option<usize>)>,
}

/// One run's inputs beside the cache: `rows` sequences of `new` tokens each after `past`
/// positions, with the cache tensors to read and to write.
struct StepIo<'b> {
    ids: &'b [i64],
    rows: usize,
    past: usize,
    new: usize,
    mask: Vec<i64>,
    positions: Vec<i64>,
    pasts: Vec<&'b [u8]>,
    presents: Vec<&'b mut [u8]>,
}

fn i64_bytes(v: &[i64]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_ne_bytes()).collect()
}

impl<'a> Decoder<'a> {
    pub fn new(session: &'a OnnxSession, genai: &'a GenaiConfig) -> Self {
        let shape = KvShape { layers: genai.num_layers, heads: genai.num_kv_heads, row_bytes: genai.head_size * 4 };
        let names = &genai.names;
        let pick =
            |slot: Slot, key: &str, value: &str| DecoderNames::layer(if slot.value { value } else { key }, slot.layer);
        let past_names = Slot::all(shape).map(|s| pick(s, &names.past_key, &names.past_value)).collect();
        let present_at = Slot::all(shape)
            .map(|s| {
                let name = pick(s, &names.present_key, &names.present_value);
                let at = session.output_names().iter().position(|n| *n == name);
                (name, at)
            })
            .collect();
        Decoder { session, genai, shape, past_names, present_at }
    }

    /// A prompt's prefill: its cache, and the logits of its last position.
    pub fn prefill(&self, prompt: &[i64]) -> Result<(OwnCache, Vec<f32>)> {
        let n = prompt.len();
        let mut cache = OwnCache::new(self.shape, n);
        let io = StepIo {
            ids: prompt,
            rows: 1,
            past: 0,
            new: n,
            mask: vec![1; n],
            positions: (0..n as i64).collect(),
            pasts: vec![&[]; self.shape.slots()],
            presents: cache.buffers().collect(),
        };
        let logits = self.run(io)?.pop().unwrap_or_default();
        Ok((cache, logits))
    }

    /// One token for every sequence of `batch` (`tokens[r]` for row r): its cache grows by one
    /// position; each row's logits come back.
    pub fn decode(&self, batch: &mut KvBatch, tokens: &[i64]) -> Result<Vec<Vec<f32>>> {
        if tokens.len() != batch.rows() || tokens.is_empty() {
            return Err(Error::internal("a decode step needs one token per sequence of its batch"));
        }
        let (mask, positions, past) = (batch.attention_mask(1), batch.positions(1), batch.width());
        let (pasts, presents) = batch.io(1);
        let io = StepIo { ids: tokens, rows: tokens.len(), past, new: 1, mask, positions, pasts, presents };
        let logits = self.run(io)?;
        batch.advance(1);
        Ok(logits)
    }

    fn run(&self, io: StepIo<'_>) -> Result<Vec<Vec<f32>>> {
        let names: &DecoderNames = &self.genai.names;
        let StepIo { ids, rows, past, new, mask, positions, pasts, presents } = io;
        let (b, w, p) = (rows as i64, new as i64, past as i64);
        let head = (self.shape.row_bytes / 4) as i64;
        let heads = self.shape.heads as i64;
        let (ids, mask, positions) = (i64_bytes(ids), i64_bytes(&mask), i64_bytes(&positions));
        let mut owned: Vec<(&str, InputTensor<'_>)> = Vec::with_capacity(pasts.len() + 3);
        owned.push((&names.input_ids, tensor::from_bytes(DataType::Int64, &[b, w], &ids)?));
        if let Some(n) = &names.attention_mask {
            owned.push((n, tensor::from_bytes(DataType::Int64, &[b, p + w], &mask)?));
        }
        if let Some(n) = &names.position_ids {
            owned.push((n, tensor::from_bytes(DataType::Int64, &[b, w], &positions)?));
        }
        for (name, bytes) in self.past_names.iter().zip(pasts) {
            owned.push((name, tensor::from_bytes(DataType::Fp32, &[b, heads, p, head], bytes)?));
        }
        let inputs: Vec<(&str, &InputTensor<'_>)> = owned.iter().map(|(n, t)| (*n, t)).collect();
        let mut into: Vec<Option<OutputTensor<'_>>> = Vec::new();
        into.resize_with(self.session.output_names().len(), || None);
        for ((name, at), buffer) in self.present_at.iter().zip(presents) {
            let slot = at
                .and_then(|at| into.get_mut(at))
                .ok_or_else(|| Error::internal(format!("the model has no output '{name}'")))?;
            *slot = Some(tensor::output_into(DataType::Fp32, &[b, heads, p + w, head], buffer)?);
        }
        let outputs = self.session.run_into(&inputs, into)?;
        let logits = outputs.read(&names.logits)?;
        let OutputData::Fixed(bytes) = logits.data else {
            return Err(Error::internal("the logits are not a tensor of numbers"));
        };
        let vocab = self.genai.vocab_size;
        if logits.data_type != DataType::Fp32 || bytes.len() != rows * new * vocab * 4 {
            return Err(Error::internal(format!(
                "logits of type {} and shape {:?}; expected TYPE_FP32 [{rows}, {new}, {vocab}]",
                logits.data_type.config_name(),
                logits.shape
            )));
        }
        let row = vocab * 4;
        Ok((0..rows)
            .map(|s| {
                let at = (s * new + new - 1) * row;
                bytes[at..at + row].chunks_exact(4).map(|c| f32::from_ne_bytes([c[0], c[1], c[2], c[3]])).collect()
            })
            .collect())
    }
}

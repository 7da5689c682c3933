//! Text in and out of a generative model whose folder has `tokenizer.json` (Hugging Face's
//! format, as ONNX Runtime GenAI's folders ship it): a request's `text_input` becomes its prompt,
//! and its tokens come back as `text_output` too, decoded incrementally so that a character is
//! never split across responses.

use std::path::Path;

use tokenizers::Tokenizer;

use crate::error::{Error, Result};

/// The file that gives a generator text inputs and outputs.
pub const FILE_NAME: &str = "tokenizer.json";

/// A model's tokenizer.
pub struct Text {
    tokenizer: Tokenizer,
}

impl std::fmt::Debug for Text {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Text")
    }
}

impl Text {
    pub fn load(path: &Path) -> Result<Self> {
        let tokenizer = Tokenizer::from_file(path)
            .map_err(|e| Error::invalid_arg(format!("cannot read the tokenizer '{}': {e}", path.display())))?;
        Ok(Text { tokenizer })
    }

    /// The token ids of `text`, with the special tokens the tokenizer adds (a BOS, for most).
    pub fn encode(&self, text: &str) -> Result<Vec<i64>> {
        let encoding = self
            .tokenizer
            .encode(text, true)
            .map_err(|e| Error::invalid_arg(format!("cannot tokenize text_input: {e}")))?;
        Ok(encoding.get_ids().iter().map(|&id| i64::from(id)).collect())
    }

    /// The text of `ids`, special tokens left out.
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        self.tokenizer.decode(ids, true).map_err(|e| Error::internal(format!("cannot decode tokens: {e}")))
    }
}

/// One sequence's text, handed out in pieces: each piece ends where the text decoded so far is
/// complete (a token that ends inside a character, or that a later token may still change, is
/// held back until it is not).
#[derive(Debug, Default)]
pub struct Detokenizer {
    ids: Vec<u32>,
    /// The pieces so far cover the text of `ids[..read]`; `ids[prefix..read]` is decoded again
    /// with the new tokens, since a token's text can depend on the one before it.
    prefix: usize,
    read: usize,
}

impl Detokenizer {
    /// The new complete text after `id` (possibly empty).
    pub fn push(&mut self, text: &Text, id: i64) -> Result<String> {
        let id = u32::try_from(id).map_err(|_| Error::internal(format!("token id {id} out of range")))?;
        self.ids.push(id);
        let before = text.decode(&self.ids[self.prefix..self.read])?;
        let after = text.decode(&self.ids[self.prefix..])?;
        if after.len() > before.len() && !after.ends_with('\u{FFFD}') && after.starts_with(&before) {
            let piece = after[before.len()..].to_string();
            self.prefix = self.read;
            self.read = self.ids.len();
            return Ok(piece);
        }
        Ok(String::new())
    }

    /// Whatever is held back, at the end of the sequence.
    pub fn flush(&mut self, text: &Text) -> Result<String> {
        let before = text.decode(&self.ids[self.prefix..self.read])?;
        let after = text.decode(&self.ids[self.prefix..])?;
        self.prefix = self.ids.len();
        self.read = self.ids.len();
        Ok(after.strip_prefix(&before).map_or(after.clone(), str::to_string))
    }
}

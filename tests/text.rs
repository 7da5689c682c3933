//! A generative model's text, against the test models' tokenizer.json (a byte-level BPE made by
//! tests/models/decoder_models.py): a character made of several tokens is handed out whole, once
//! its last byte came. Needs `ONNXRS_TEST_MODELS` (set by ci/test.sh).
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::path::PathBuf;

use triton_onnxrs::generate::text::{Detokenizer, Text};

fn tokenizer() -> Text {
    let models = std::env::var("ONNXRS_TEST_MODELS").expect("ONNXRS_TEST_MODELS is not set: run `bash ci/test.sh`");
    Text::load(&PathBuf::from(models).join("decoder_text/1/tokenizer.json")).expect("the test tokenizer")
}

#[test]
fn characters_split_across_tokens_come_out_whole() {
    let text = tokenizer();
    // "é" is the bytes C3 A9: one token ("Ã©") or two ("Ã", "©"); "€" is E2 82 AC.
    let ids = |s: &str| text.encode(s).unwrap();
    assert_eq!(ids("é"), vec![1, 33], "<s> then one token");
    assert_eq!(ids("€"), vec![1, 49, 20], "<s> then two tokens");
    let mut d = Detokenizer::default();
    assert_eq!(d.push(&text, 22).unwrap(), "", "the first byte of é alone is held back");
    assert_eq!(d.push(&text, 19).unwrap(), "é");
    assert_eq!(d.push(&text, 49).unwrap(), "", "two of the three bytes of €");
    assert_eq!(d.push(&text, 20).unwrap(), "€");
    assert_eq!(d.push(&text, 28).unwrap(), "the");
    assert_eq!(d.push(&text, 2).unwrap(), "", "</s> has no text");
    assert_eq!(d.flush(&text).unwrap(), "");
    // A byte that never completes is given out at the end, as the whole text has it.
    let mut d = Detokenizer::default();
    assert_eq!(d.push(&text, 22).unwrap(), "");
    assert_eq!(d.flush(&text).unwrap(), "\u{FFFD}");
}

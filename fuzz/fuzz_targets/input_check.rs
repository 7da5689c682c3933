//! Checking a request's inputs against the model config (`src/inputs.rs`). The config is random
//! (tensors, types, dims with -1, reshapes, optional inputs, batching or not) and parsed from the
//! JSON Triton would hand over; the request is mostly a valid one for it with one mutation (a
//! name, a type, a dimension, the data's length, an input left out or added), its data cut into
//! parts as the server may hold it.
//!
//! Invariants, on every execution:
//! - accepted exactly when a reference check written here from the rules says the request is
//!   valid (so nothing valid is refused, and nothing invalid slips through);
//! - what is accepted is what a run needs: rows within max_batch_size, inputs in config order
//!   with the shape the model sees, every required input present, fixed-size data exactly the
//!   size of its shape and unchanged, BYTES elements that re-encode to the request's bytes.
#![no_main]

use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;
use serde_json::json;
use triton_onnxrs::bytes;
use triton_onnxrs::config::model_config::ModelConfig;
use triton_onnxrs::dtype::{self, DataType};
use triton_onnxrs::inputs::{self, Payload, RawInput};

const NAMES: [&str; 5] = ["A", "B", "C", "D", "E"];

#[derive(Debug, Arbitrary)]
struct TensorSpec {
    name: u8,
    data_type: u8,
    dims: Vec<i8>,
    reshape: Option<Vec<i8>>,
    optional: bool,
}

#[derive(Debug, Arbitrary)]
enum Mutation {
    None,
    Name(u8),
    DataType(Option<u8>),
    Dim(u8, i64),
    Truncate(u16),
    Extend(Vec<u8>),
    Replace(Vec<u8>),
    LeaveOut,
    Twice,
}

#[derive(Debug, Arbitrary)]
struct Input {
    max_batch: u8,
    tensors: Vec<TensorSpec>,
    rows: u8,
    /// Sizes for the -1 dimensions, in turn.
    sizes: Vec<u8>,
    /// Element lengths of BYTES data, in turn.
    lengths: Vec<u8>,
    mutations: Vec<(u8, Mutation)>,
    cuts: Vec<u16>,
    /// Give every input, optional ones included (else leave the optional ones out).
    all: bool,
}

fn dim(d: i8) -> i64 {
    (d as i64).clamp(-1, 4)
}

/// The wire dims of each config input: what a request's shape (after the batch) must match.
fn wire(t: &triton_onnxrs::config::model_config::TensorConfig) -> &[i64] {
    t.wire_dims()
}

fn element_count(shape: &[i64]) -> Option<usize> {
    shape.iter().try_fold(1usize, |n, &d| n.checked_mul(usize::try_from(d).ok()?))
}

/// The rules, spelled out independently of `inputs.rs`.
fn valid(config: &ModelConfig, raw: &[RawInput<'_>]) -> bool {
    let mut seen = vec![false; config.inputs.len()];
    let mut rows = None;
    for input in raw {
        // Triton names inputs uniquely; a config naming two inputs alike matches the first.
        let Some(index) = config.inputs.iter().position(|t| t.name == input.name) else { return false };
        if std::mem::replace(&mut seen[index], true) {
            return false;
        }
        let t = &config.inputs[index];
        if input.data_type != Some(t.data_type) {
            return false;
        }
        let tail = if config.batching() {
            match input.shape.split_first() {
                Some((&r, tail)) if r >= 1 && r as u64 <= config.max_batch_size as u64 => {
                    if rows.is_some_and(|p| p != r) {
                        return false;
                    }
                    rows = Some(r);
                    tail
                }
                _ => return false,
            }
        } else {
            rows = Some(1);
            input.shape
        };
        let dims = wire(t);
        if tail.len() != dims.len() || tail.iter().zip(dims).any(|(&s, &d)| s < 0 || (d != -1 && s != d)) {
            return false;
        }
        let Some(count) = element_count(input.shape) else { return false };
        let data: Vec<u8> = input.parts.concat();
        let ok = match t.data_type.byte_size() {
            Some(size) => count.checked_mul(size) == Some(data.len()),
            None => bytes_valid(&data, count),
        };
        if !ok {
            return false;
        }
    }
    rows.is_some() && config.inputs.iter().zip(&seen).all(|(t, &s)| s || t.optional)
}

fn bytes_valid(mut data: &[u8], count: usize) -> bool {
    for _ in 0..count {
        let Some(prefix) = data.get(..4) else { return false };
        let len = u32::from_le_bytes([prefix[0], prefix[1], prefix[2], prefix[3]]) as usize;
        let Some(rest) = data.get(4 + len..) else { return false };
        data = rest;
    }
    data.is_empty()
}

fuzz_target!(|input: Input| {
    let tensors: Vec<&TensorSpec> = input.tensors.iter().take(4).collect();
    let entry = |t: &TensorSpec| {
        let mut e = json!({
            "name": NAMES[t.name as usize % 4],
            "data_type": dtype::ALL[t.data_type as usize % dtype::ALL.len()].config_name(),
            "dims": t.dims.iter().take(3).map(|&d| dim(d)).collect::<Vec<_>>(),
        });
        if let Some(r) = &t.reshape {
            e["reshape"] = json!({"shape": r.iter().take(3).map(|&d| dim(d)).collect::<Vec<_>>()});
        }
        if t.optional {
            e["optional"] = json!(true);
        }
        e
    };
    let config = ModelConfig::parse(&json!({
        "name": "fuzz",
        "max_batch_size": input.max_batch % 9,
        "input": tensors.iter().map(|t| entry(t)).collect::<Vec<_>>(),
        "output": [{"name": "Y", "data_type": "TYPE_FP32", "dims": [-1]}],
    }))
    .expect("a config of valid entries parses");

    // A valid request: every (or every required) input, -1 dims given sizes, data of the size the
    // shape needs.
    let rows = 1 + input.rows as i64 % config.max_batch_size.max(1) as i64;
    let mut sizes = input.sizes.iter().cycle();
    let mut lengths = input.lengths.iter().cycle();
    struct Owned {
        name: &'static str,
        data_type: Option<DataType>,
        shape: Vec<i64>,
        data: Vec<u8>,
    }
    let mut request: Vec<Owned> = Vec::new();
    for (index, t) in config.inputs.iter().enumerate() {
        if (t.optional && !input.all) || config.inputs[..index].iter().any(|u| u.name == t.name) {
            continue;
        }
        let mut shape: Vec<i64> = if config.batching() { vec![rows] } else { vec![] };
        shape.extend(wire(t).iter().map(|&d| if d == -1 { sizes.next().map_or(1, |&s| s as i64 % 4) } else { d }));
        let count = element_count(&shape).unwrap_or(0);
        let data = match t.data_type.byte_size() {
            Some(size) => (0..count * size).map(|b| b as u8).collect(),
            None => {
                let elements: Vec<Vec<u8>> =
                    (0..count).map(|e| vec![e as u8; lengths.next().map_or(0, |&l| l as usize % 6)]).collect();
                let mut out = vec![0u8; bytes::encoded_len(elements.iter().map(Vec::as_slice))];
                bytes::encode_into(&mut out, elements.iter().map(Vec::as_slice)).unwrap();
                out
            }
        };
        let name = NAMES.iter().find(|n| **n == t.name).copied().unwrap();
        request.push(Owned { name, data_type: Some(t.data_type), shape, data });
    }
    for (which, mutation) in input.mutations.iter().take(3) {
        if request.is_empty() {
            break;
        }
        let k = *which as usize % request.len();
        let r = &mut request[k];
        match mutation {
            Mutation::None => {}
            Mutation::Name(n) => r.name = NAMES[*n as usize % NAMES.len()],
            Mutation::DataType(d) => r.data_type = d.map(|d| dtype::ALL[d as usize % dtype::ALL.len()]),
            Mutation::Dim(at, value) => {
                if !r.shape.is_empty() {
                    let at = *at as usize % r.shape.len();
                    r.shape[at] = *value;
                }
            }
            Mutation::Truncate(n) => {
                let keep = *n as usize % (r.data.len() + 1);
                r.data.truncate(keep);
            }
            Mutation::Extend(more) => r.data.extend_from_slice(more),
            Mutation::Replace(data) => r.data = data.clone(),
            Mutation::LeaveOut => {
                request.remove(k);
            }
            Mutation::Twice => {
                let twin = Owned { name: r.name, data_type: r.data_type, shape: r.shape.clone(), data: r.data.clone() };
                request.push(twin);
            }
        }
    }
    let mut cuts = input.cuts.iter();
    let raw: Vec<RawInput<'_>> = request
        .iter()
        .map(|r| {
            let cut = cuts.next().map_or(r.data.len(), |&c| c as usize % (r.data.len() + 1));
            RawInput {
                name: r.name,
                data_type: r.data_type,
                shape: &r.shape,
                parts: if cut == r.data.len() { vec![&r.data[..]] } else { vec![&r.data[..cut], &r.data[cut..]] },
            }
        })
        .collect();

    let expected = valid(&config, &raw);
    let result = inputs::check_request(&config, raw.clone());
    match result {
        Err(e) => assert!(!expected, "a valid request was refused: {e}"),
        Ok(checked) => {
            assert!(expected, "an invalid request was accepted: {raw:?}");
            if config.batching() {
                assert!((1..=config.max_batch_size).contains(&checked.rows));
            } else {
                assert_eq!(checked.rows, 1);
            }
            assert_eq!(checked.inputs.len(), checked.signature.inputs.len());
            assert!(checked.inputs.windows(2).all(|w| w[0].config_index < w[1].config_index), "config order");
            for (index, t) in config.inputs.iter().enumerate() {
                let present = checked.inputs.iter().any(|i| i.config_index == index);
                let named = raw.iter().any(|r| r.name == t.name);
                let first = config.inputs.iter().position(|u| u.name == t.name) == Some(index);
                assert_eq!(present, named && first);
            }
            for (c, (index, tail)) in checked.inputs.iter().zip(&checked.signature.inputs) {
                assert_eq!(c.config_index, *index);
                let t = &config.inputs[*index];
                let r = raw.iter().find(|r| r.name == t.name).unwrap();
                let own_tail = if config.batching() { &r.shape[1..] } else { r.shape };
                assert_eq!(&tail[..], own_tail, "the signature is the shape after the batch dimension");
                let count = element_count(r.shape).unwrap();
                let data = r.parts.concat();
                match (&c.payload, t.data_type.byte_size()) {
                    (Payload::Fixed(parts), Some(size)) => {
                        assert_eq!(parts.concat(), data);
                        assert_eq!(data.len(), count * size);
                    }
                    (payload @ Payload::Strings { .. }, None) => {
                        let strings = payload.strings();
                        assert_eq!(strings.len(), count);
                        let mut again = vec![0u8; bytes::encoded_len(strings.iter().copied())];
                        bytes::encode_into(&mut again, strings.iter().copied()).unwrap();
                        assert_eq!(again, data);
                    }
                    (payload, _) => panic!("payload {payload:?} for a {} input", t.data_type),
                }
            }
        }
    }
});

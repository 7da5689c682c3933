//! Checking one request's inputs against the model config, and turning them into what a run
//! needs: the rows it contributes, each input's shape as the model sees it, and its data.
//!
//! Triton already rejects unknown inputs, wrong types and shapes that contradict the config
//! before a request reaches us; these checks repeat what a run relies on, so a request that
//! slips through (or a server that checks less) gets a clear error instead of a bad run.

use std::borrow::Cow;
use std::ops::Range;

use crate::batch::{Signature, contiguous};
use crate::config::model_config::{ModelConfig, Role, TensorConfig};
use crate::dtype::DataType;
use crate::error::{Error, Result};

/// An input as the request declares it.
#[derive(Debug, Clone)]
pub struct RawInput<'a> {
    pub name: &'a str,
    /// `None`: a type the server knows and we do not.
    pub data_type: Option<DataType>,
    pub shape: &'a [i64],
    /// The data, in the pieces the server holds it in.
    pub parts: Vec<&'a [u8]>,
}

/// An input's data, checked.
#[derive(Debug)]
pub enum Payload<'a> {
    /// Fixed-size elements: the request's buffers, exactly the size the shape says.
    Fixed(Vec<&'a [u8]>),
    /// BYTES elements: where each element lies in the (joined) request data.
    Strings { data: Cow<'a, [u8]>, elements: Vec<Range<usize>> },
}

impl Payload<'_> {
    /// The string elements, for a BYTES input.
    pub fn strings(&self) -> Vec<&[u8]> {
        match self {
            Payload::Fixed(_) => Vec::new(),
            Payload::Strings { data, elements } => elements.iter().map(|r| &data[r.clone()]).collect(),
        }
    }
}

#[derive(Debug)]
pub struct CheckedInput<'a> {
    /// Index of the input in the model config.
    pub config_index: usize,
    pub payload: Payload<'a>,
    /// Its shape as the model sees it, without the batch dimension.
    pub dims: Vec<i64>,
}

/// A request ready to be batched.
#[derive(Debug)]
pub struct CheckedRequest<'a> {
    /// Rows along the batch dimension (1 for a model without batching: it runs alone).
    pub rows: usize,
    /// In config order; absent optional inputs are left out.
    pub inputs: Vec<CheckedInput<'a>>,
    pub signature: Signature,
}

impl CheckedRequest<'_> {
    /// The shape (without the batch dimension) of the request's input `name`: the source input of
    /// a ragged `batch_input` or `batch_output`, which `entry` ("batch_input 'X'") names in the error.
    pub fn source_dims(&self, config: &ModelConfig, name: &str, entry: &str) -> Result<&[i64]> {
        self.inputs
            .iter()
            .find(|i| config.inputs.get(i.config_index).is_some_and(|c| c.name == name))
            .map(|i| i.dims.as_slice())
            .ok_or_else(|| Error::invalid_arg(format!("{entry}: the request has no input '{name}'")))
    }
}

fn element_count(shape: &[i64]) -> Option<usize> {
    shape.iter().try_fold(1usize, |n, &d| n.checked_mul(usize::try_from(d).ok()?))
}

/// Whether `shape` fits `dims`, where -1 in `dims` allows any size.
fn matches_dims(shape: &[i64], dims: &[i64]) -> bool {
    shape.len() == dims.len() && shape.iter().zip(dims).all(|(&s, &d)| d == -1 || s == d)
}

/// Checks one input against its config entry; returns the rows it declares and the shape the
/// model sees without the batch dimension.
fn check_shape(config: &ModelConfig, input_config: &TensorConfig, shape: &[i64]) -> Result<(usize, Vec<i64>)> {
    let name = &input_config.name;
    let (rows, tail) = if config.batching() {
        let Some((&rows, tail)) = shape.split_first() else {
            return Err(Error::invalid_arg(format!(
                "input '{name}' has shape [] but the model batches: expected {}",
                expected_text(config, input_config.wire_dims())
            )));
        };
        let rows = usize::try_from(rows).ok().filter(|&r| r >= 1 && r <= config.max_batch_size).ok_or_else(|| {
            Error::invalid_arg(format!(
                "input '{name}' has batch size {rows}; the model accepts 1 to {}",
                config.max_batch_size
            ))
        })?;
        (rows, tail)
    } else {
        (1, shape)
    };
    // Triton has already applied a configured reshape: the shape here is the model's.
    if tail.iter().any(|&d| d < 0) || !matches_dims(tail, input_config.wire_dims()) {
        return Err(Error::invalid_arg(format!(
            "input '{name}' has shape {}, expected {}",
            dims_text(shape),
            expected_text(config, input_config.wire_dims())
        )));
    }
    Ok((rows, if input_config.scalar { Vec::new() } else { tail.to_vec() }))
}

/// "[batch,-1,2]" for a batching model, "[-1,2]" otherwise.
fn expected_text(config: &ModelConfig, dims: &[i64]) -> String {
    let inner = dims_text(dims);
    if config.batching() { format!("[batch{}{}", if dims.is_empty() { "" } else { "," }, &inner[1..]) } else { inner }
}

fn dims_text(dims: &[i64]) -> String {
    let parts: Vec<String> = dims.iter().map(i64::to_string).collect();
    format!("[{}]", parts.join(","))
}

fn check_payload<'a>(input_config: &TensorConfig, shape: &[i64], parts: Vec<&'a [u8]>) -> Result<Payload<'a>> {
    let name = &input_config.name;
    let count = element_count(shape)
        .ok_or_else(|| Error::invalid_arg(format!("input '{name}': shape {} is too large", dims_text(shape))))?;
    let got: usize = parts.iter().map(|p| p.len()).sum();
    match input_config.data_type.byte_size() {
        Some(size) => {
            let expected = count.checked_mul(size).ok_or_else(|| {
                Error::invalid_arg(format!("input '{name}': shape {} is too large", dims_text(shape)))
            })?;
            if got != expected {
                return Err(Error::invalid_arg(format!(
                    "input '{name}': shape {} of {} needs {expected} bytes, the request holds {got}",
                    dims_text(shape),
                    input_config.data_type
                )));
            }
            Ok(Payload::Fixed(parts))
        }
        None => {
            let data = contiguous(&parts);
            // A control input's buffer is the server's own, padded after its element.
            let decoded = match input_config.role {
                Role::Control => crate::bytes::decode_leading(&data, count).map(|(elements, _padding)| elements),
                Role::Config | Role::State => crate::bytes::decode(&data, count),
            };
            let elements = decoded
                .map_err(|e| e.context(format_args!("input '{name}'")))?
                .into_iter()
                .map(|e| {
                    let start = e.as_ptr() as usize - data.as_ptr() as usize;
                    start..start + e.len()
                })
                .collect();
            Ok(Payload::Strings { data, elements })
        }
    }
}

/// Checks all inputs of one request.
pub fn check_request<'a>(config: &ModelConfig, inputs: Vec<RawInput<'a>>) -> Result<CheckedRequest<'a>> {
    let mut found: Vec<Option<(RawInput<'a>, usize)>> = (0..config.inputs.len()).map(|_| None).collect();
    for input in inputs {
        let index = config.inputs.iter().position(|t| t.name == input.name).ok_or_else(|| {
            Error::invalid_arg(format!("unexpected input '{}' for model '{}'", input.name, config.name))
        })?;
        if found[index].is_some() {
            return Err(Error::invalid_arg(format!("input '{}' is given twice", input.name)));
        }
        found[index] = Some((input, index));
    }
    let mut rows: Option<usize> = None;
    let mut checked = Vec::with_capacity(found.len());
    let mut signature = Signature { inputs: Vec::with_capacity(found.len()) };
    for (index, slot) in found.into_iter().enumerate() {
        let input_config = &config.inputs[index];
        let Some((input, _)) = slot else {
            if input_config.optional {
                continue;
            }
            return Err(Error::invalid_arg(format!(
                "missing required input '{}' for model '{}'",
                input_config.name, config.name
            )));
        };
        match input.data_type {
            Some(dt) if dt == input_config.data_type => {}
            Some(dt) => {
                return Err(Error::invalid_arg(format!(
                    "input '{}' has data type {dt}, the model expects {}",
                    input_config.name, input_config.data_type
                )));
            }
            None => {
                return Err(Error::invalid_arg(format!("input '{}' has an unsupported data type", input_config.name)));
            }
        }
        let (r, model_tail) = check_shape(config, input_config, input.shape)?;
        if let Some(prev) = rows.filter(|&p| p != r) {
            return Err(Error::invalid_arg(format!(
                "input '{}' has batch size {r}, other inputs of the request have {prev}",
                input_config.name
            )));
        }
        rows = Some(r);
        let payload = check_payload(input_config, input.shape, input.parts)?;
        // A ragged input's shape may differ between the requests of a run: not in the signature.
        signature.inputs.push((index, if input_config.ragged { Vec::new() } else { model_tail.clone() }));
        checked.push(CheckedInput { config_index: index, payload, dims: model_tail });
    }
    let rows = rows.ok_or_else(|| Error::invalid_arg(format!("request for model '{}' has no inputs", config.name)))?;
    Ok(CheckedRequest { rows, inputs: checked, signature })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn config(batch: usize) -> ModelConfig {
        ModelConfig::parse(&json!({
            "name": "m", "max_batch_size": batch,
            "input": [
                {"name": "X", "data_type": "TYPE_FP32", "dims": [-1, 2]},
                {"name": "S", "data_type": "TYPE_STRING", "dims": [2]},
                {"name": "O", "data_type": "TYPE_INT64", "dims": [1], "reshape": {"shape": []}, "optional": true}
            ]
        }))
        .unwrap()
    }

    fn strings(elements: &[&[u8]]) -> Vec<u8> {
        let mut out = vec![0u8; crate::bytes::encoded_len(elements.iter().copied())];
        crate::bytes::encode_into(&mut out, elements.iter().copied()).unwrap();
        out
    }

    #[test]
    fn a_good_batched_request() {
        let x = [0u8; 2 * 3 * 2 * 4];
        let s = strings(&[b"a", b"bc", b"", b"d"]);
        let c = config(4);
        let r = check_request(
            &c,
            vec![
                RawInput { name: "S", data_type: Some(DataType::Bytes), shape: &[2, 2], parts: vec![&s[..5], &s[5..]] },
                RawInput { name: "X", data_type: Some(DataType::Fp32), shape: &[2, 3, 2], parts: vec![&x] },
            ],
        )
        .unwrap();
        assert_eq!(r.rows, 2);
        assert_eq!(r.signature.inputs, vec![(0, vec![3, 2]), (1, vec![2])]);
        assert_eq!(r.inputs[1].payload.strings(), vec![&b"a"[..], b"bc", b"", b"d"]);
    }

    #[test]
    fn errors_name_the_tensor_and_the_problem() {
        let c = config(4);
        let x = [0u8; 16];
        let ok_s = strings(&[b"a", b"b"]);
        let s_input =
            || RawInput { name: "S", data_type: Some(DataType::Bytes), shape: &[1, 2], parts: vec![&ok_s[..]] };
        let cases: Vec<(Vec<RawInput>, &str)> = vec![
            (
                vec![
                    RawInput { name: "X", data_type: Some(DataType::Fp64), shape: &[1, 2, 2], parts: vec![&x] },
                    s_input(),
                ],
                "input 'X' has data type FP64, the model expects FP32",
            ),
            (
                vec![
                    RawInput { name: "X", data_type: Some(DataType::Fp32), shape: &[1, 2, 3], parts: vec![&x] },
                    s_input(),
                ],
                "input 'X' has shape [1,2,3], expected [batch,-1,2]",
            ),
            (
                vec![
                    RawInput { name: "X", data_type: Some(DataType::Fp32), shape: &[9, 2, 2], parts: vec![&x] },
                    s_input(),
                ],
                "batch size 9; the model accepts 1 to 4",
            ),
            (
                vec![
                    RawInput { name: "X", data_type: Some(DataType::Fp32), shape: &[1, 3, 2], parts: vec![&x] },
                    s_input(),
                ],
                "input 'X': shape [1,3,2] of FP32 needs 24 bytes, the request holds 16",
            ),
            (vec![s_input()], "missing required input 'X'"),
            (
                vec![RawInput { name: "Z", data_type: Some(DataType::Fp32), shape: &[1], parts: vec![] }],
                "unexpected input 'Z'",
            ),
            (
                vec![
                    RawInput { name: "X", data_type: Some(DataType::Fp32), shape: &[1, 2, 2], parts: vec![&x] },
                    RawInput { name: "S", data_type: Some(DataType::Bytes), shape: &[1, 2], parts: vec![&ok_s[..3]] },
                ],
                "input 'S': BYTES element 0 of 2",
            ),
            (
                vec![
                    RawInput { name: "X", data_type: Some(DataType::Fp32), shape: &[1, 2, 2], parts: vec![&x] },
                    RawInput { name: "S", data_type: Some(DataType::Bytes), shape: &[2, 2], parts: vec![&ok_s[..]] },
                ],
                "batch size 2, other inputs of the request have 1",
            ),
        ];
        for (inputs, want) in cases {
            let e = check_request(&c, inputs).unwrap_err();
            assert!(e.message().contains(want), "got '{e}', want '{want}'");
        }
    }

    #[test]
    fn reshape_and_optional() {
        let c = config(0);
        let x = [0u8; 8];
        let o = [0u8; 8];
        let s = strings(&[b"a", b"b"]);
        let base = || {
            vec![
                RawInput { name: "X", data_type: Some(DataType::Fp32), shape: &[1, 2], parts: vec![&x] },
                RawInput { name: "S", data_type: Some(DataType::Bytes), shape: &[2], parts: vec![&s[..]] },
            ]
        };
        let r = check_request(&c, base()).unwrap();
        assert_eq!(r.signature.inputs.len(), 2, "absent optional input left out");
        let mut with_o = base();
        // Triton applies the reshape before the backend sees the input: it arrives as [].
        with_o.push(RawInput { name: "O", data_type: Some(DataType::Int64), shape: &[], parts: vec![&o] });
        let r = check_request(&c, with_o).unwrap();
        assert_eq!(r.signature.inputs[2], (2, vec![]));
    }
}

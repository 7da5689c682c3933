//! The model config as Triton hands it over (config.pbtxt as JSON: `src/config/model_config.rs`)
//! and auto-complete from the ONNX graph (`src/config/autocomplete.rs`), then the check against
//! the graph (`src/config/check.rs`). The JSON text is fuzzed as bytes (fuzz/dicts/model_config.dict
//! gives libFuzzer the config's words); the graph's inputs and outputs are random.
//!
//! Invariants, on every execution:
//! - parsing never panics, and what it accepts is sane: dims and reshapes >= -1, the entries
//!   of the JSON lists in order, max_batch_size as written; the parsed config written back to
//!   JSON parses to the same config;
//! - auto-complete fails exactly when parsing does; what it writes parses, keeps every entry
//!   the config had, fills only from the graph's tensors, and completing it again changes nothing;
//! - a config auto-complete filled entirely from a graph it can describe passes our own check
//!   against that graph (the model loads).
#![no_main]

use std::collections::HashSet;

use libfuzzer_sys::arbitrary::{self, Arbitrary, Unstructured};
use libfuzzer_sys::fuzz_target;
use serde_json::{Value, json};
use triton_onnxrs::config::autocomplete;
use triton_onnxrs::config::check;
use triton_onnxrs::config::model_config::{ModelConfig, TensorConfig};
use triton_onnxrs::dtype;
use triton_onnxrs::onnx::session::{ModelIo, TensorInfo};

#[derive(Debug, Arbitrary)]
struct GraphTensor {
    /// A data type Triton has, or (None) a sequence or map.
    data_type: Option<u8>,
    shape: Vec<i8>,
    /// For an input: it has an initializer (may be left out).
    overridable: bool,
}

#[derive(Debug)]
struct Input {
    inputs: Vec<GraphTensor>,
    outputs: Vec<GraphTensor>,
    default_max_batch_size: u8,
    json: Vec<u8>,
}

impl<'a> Arbitrary<'a> for Input {
    fn arbitrary(u: &mut Unstructured<'a>) -> arbitrary::Result<Self> {
        let rest = u.bytes(u.len())?;
        Self::arbitrary_take_rest(Unstructured::new(rest))
    }
    // The JSON text last and as the rest of the data, so libFuzzer's mutations (and its
    // dictionary) work on it directly.
    fn arbitrary_take_rest(mut u: Unstructured<'a>) -> arbitrary::Result<Self> {
        let n = u.int_in_range(0..=3)?;
        let inputs = (0..n).map(|_| u.arbitrary()).collect::<arbitrary::Result<_>>()?;
        let n = u.int_in_range(0..=3)?;
        let outputs = (0..n).map(|_| u.arbitrary()).collect::<arbitrary::Result<_>>()?;
        Ok(Input { inputs, outputs, default_max_batch_size: u.arbitrary()?, json: u.take_rest().to_vec() })
    }
}

fn graph(tensors: &[GraphTensor], prefix: &str) -> Vec<TensorInfo> {
    tensors
        .iter()
        .enumerate()
        .map(|(i, t)| TensorInfo {
            name: format!("{prefix}{i}"),
            data_type: t.data_type.map(|d| dtype::ALL[d as usize % dtype::ALL.len()]),
            type_description: "fuzz".into(),
            shape: t.shape.iter().take(4).map(|&d| (d as i64).clamp(-1, 4)).collect(),
        })
        .collect()
}

fn entry_json(t: &TensorConfig) -> Value {
    let mut e = json!({"name": t.name, "data_type": t.data_type.config_name(), "dims": t.dims, "optional": t.optional});
    if let Some(r) = &t.reshape {
        e["reshape"] = json!({"shape": r});
    }
    e
}

/// The parsed config written back in Triton's JSON form.
fn to_json(c: &ModelConfig) -> Value {
    let mut v = json!({
        "name": c.name,
        "max_batch_size": c.max_batch_size,
        "input": c.inputs.iter().map(entry_json).collect::<Vec<_>>(),
        "output": c.outputs.iter().map(entry_json).collect::<Vec<_>>(),
        "default_model_filename": c.default_model_filename,
        "parameters": c.parameters.iter().map(|(k, v)| (k.clone(), json!({"string_value": v}))).collect::<serde_json::Map<_, _>>(),
        "optimization": {
            "cuda": {"graphs": c.cuda_graphs},
            "execution_accelerators": {"gpu_execution_accelerator": c.gpu_accelerators.iter()
                .map(|(name, p)| json!({"name": name, "parameters": p})).collect::<Vec<_>>()},
        },
    });
    if let Some(level) = c.graph_level {
        v["optimization"]["graph"] = json!({"level": level});
    }
    if c.dynamic_batching {
        v["dynamic_batching"] = json!({});
    }
    if c.sequence_batching {
        v["sequence_batching"] = json!({});
    }
    v
}

fn check_parsed(v: &Value, c: &ModelConfig) {
    for t in c.inputs.iter().chain(&c.outputs) {
        assert!(t.dims.iter().chain(t.reshape.iter().flatten()).all(|&d| d >= -1), "{t:?}");
        assert!(!t.scalar, "only bind_scalars makes a scalar");
    }
    for (key, list) in [("input", &c.inputs), ("output", &c.outputs)] {
        let names: Vec<&str> = list.iter().map(|t| t.name.as_str()).collect();
        let written: Vec<&str> = match v.get(key) {
            Some(Value::Array(a)) => a.iter().filter_map(|t| t.get("name")?.as_str()).collect(),
            _ => Vec::new(),
        };
        assert_eq!(names, written, "{key} entries in order");
    }
    let written = match v.get("max_batch_size") {
        Some(Value::Number(n)) => n.as_i64(),
        Some(Value::String(s)) => s.parse().ok(),
        _ => None,
    };
    assert_eq!(c.max_batch_size as i64, written.unwrap_or(0));
    assert!(!c.default_model_filename.is_empty());
    assert_eq!(ModelConfig::parse(&to_json(c)).as_ref().ok(), Some(c), "written back, it parses the same");
}

fuzz_target!(|input: Input| {
    let Ok(v) = serde_json::from_slice::<Value>(&input.json) else { return };
    let parsed = ModelConfig::parse(&v);
    if let Ok(c) = &parsed {
        check_parsed(&v, c);
    }

    let io = ModelIo {
        inputs: graph(&input.inputs, "in"),
        outputs: graph(&input.outputs, "out"),
        overridable: input
            .inputs
            .iter()
            .enumerate()
            .filter(|(_, t)| t.overridable)
            .map(|(i, _)| format!("in{i}"))
            .collect::<HashSet<_>>(),
    };
    let default_max_batch_size = input.default_max_batch_size as usize % 9;
    let completed = autocomplete::complete(&v, &io, default_max_batch_size);
    let Ok(before) = parsed else {
        assert!(completed.is_err(), "auto-complete of a config that does not parse");
        return;
    };
    // Besides a config that does not parse, auto-complete refuses one thing: to fill a batching
    // config from a graph tensor with no batch dimension (a scalar).
    let scalar = |fill: bool, tensors: &[TensorInfo]| {
        fill && tensors.iter().any(|t| t.data_type.is_some() && t.shape.is_empty())
    };
    let refusable = before.batching()
        && (scalar(before.inputs.is_empty(), &io.inputs) || scalar(before.outputs.is_empty(), &io.outputs));
    match &completed {
        Err(e) => assert!(refusable && e.message().contains("is a scalar"), "auto-complete refused for no reason: {e}"),
        Ok(_) => assert!(!refusable, "auto-complete filled a batching config from a scalar"),
    }
    let Ok(Some(out)) = completed else { return };
    let after = ModelConfig::parse(&out).expect("what auto-complete writes parses");
    check_parsed(&out, &after);
    for (kept, was) in [(&after.inputs, &before.inputs), (&after.outputs, &before.outputs)] {
        if !was.is_empty() {
            assert_eq!(kept, was, "entries the config had are kept as they were");
        }
    }
    let known: HashSet<&str> = io.inputs.iter().chain(&io.outputs).map(|t| t.name.as_str()).collect();
    if before.inputs.is_empty() {
        assert!(after.inputs.iter().all(|t| t.name.starts_with("in") && known.contains(t.name.as_str())));
    }
    if before.outputs.is_empty() {
        assert!(after.outputs.iter().all(|t| t.name.starts_with("out") && known.contains(t.name.as_str())));
    }
    if !after.inputs.is_empty() && !after.outputs.is_empty() {
        assert_eq!(autocomplete::complete(&out, &io, default_max_batch_size).unwrap(), None, "a fixed point");
    }
    // Filled entirely from a graph whose tensors all have Triton types: the model must load,
    // unless the config asked for batching the graph cannot do (the check says so, by name).
    let describable = io.inputs.iter().chain(&io.outputs).all(|t| t.data_type.is_some());
    let batch_ok = !after.batching() || autocomplete::supports_batching(&io);
    if before.inputs.is_empty() && before.outputs.is_empty() && !io.outputs.is_empty() && describable && batch_ok {
        let mut config = after;
        check::bind_scalars(&mut config, &io);
        if let Err(e) = check::check_against_graph(&config, &io) {
            panic!("auto-completed config fails the check: {e}\nconfig: {out}\ngraph: {io:?}");
        }
    }
});

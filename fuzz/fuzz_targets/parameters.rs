//! Settings from the two places a user writes them: `--backend-config=onnxrs,key=value`
//! (`BackendConfig::parse` in `src/backend.rs`, the JSON the server hands over) and a
//! model config's `parameters` and `optimization` (`src/config/params.rs`: session settings, CUDA
//! provider options, the metrics switch). Keys are the known ones or random; values are random
//! text, numbers at the edges of their types, or spellings of 0/1.
//!
//! Invariants, on every execution:
//! - each call succeeds exactly when every key it reads holds a value in that key's domain, as a
//!   reference written here from the README's tables says;
//! - what succeeds carries exactly those values: defaults where a key is absent, `session.*`
//!   entries passed through unchanged, CUDA options without `device_id` (the instance's), each
//!   key once, accelerator parameters winning over plain ones.
#![no_main]

use std::collections::BTreeMap;

use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;
use serde_json::{Value, json};
use triton_onnxrs::backend::BackendConfig;
use triton_onnxrs::config::model_config::ModelConfig;
use triton_onnxrs::config::{cuda, params};
use triton_onnxrs::cpu::available_cpus;
use triton_onnxrs::onnx::runtime::ThreadPools;
use triton_onnxrs::onnx::session::GraphOptimization;

const KEYS: [&str; 27] = [
    "memory.enable_memory_arena_shrinkage",
    "memory.enable_arena_shrinkage",
    "intra_op_thread_count",
    "inter_op_thread_count",
    "execution_mode",
    "enable_mem_arena",
    "enable_mem_pattern",
    "session.intra_op.allow_spinning",
    "session.use_env_allocators",
    "cudnn_conv_algo_search",
    "gpu_mem_limit",
    "arena_extend_strategy",
    "do_copy_in_default_stream",
    "metrics",
    "device_id",
    "default-max-batch-size",
    "ort-library",
    "enable_cuda_graph",
    "share_session_between_instances",
    "thread-pools",
    "enable-global-threadpool",
    "request-log",
    "request-log-sample",
    "request_log_sample",
    "memory.shared_arena",
    "shared-arena",
    "shared-arena-max-bytes",
];

const VALUES: [&str; 26] = [
    "cpu:0",
    " GPU:1 ; cpu:0;",
    "tpu:0",
    "cpu:x",
    "0",
    "1",
    "2",
    "3",
    "-1",
    " 1 ",
    "true",
    "FALSE",
    "True ",
    "",
    "yes",
    "01",
    "+1",
    "4294967296",
    "9223372036854775807",
    "9223372036854775808",
    "18446744073709551615",
    "18446744073709551616",
    "1.5",
    "\u{a0}1",
    "shared",
    " per-session",
];

#[derive(Debug, Arbitrary)]
enum Key {
    Known(u8),
    Other(String),
}

#[derive(Debug, Arbitrary)]
enum Text {
    Known(u8),
    Number(i64),
    Other(String),
}

/// How a model parameter's value is written in the JSON.
#[derive(Debug, Arbitrary)]
enum Param {
    /// `{"string_value": "..."}`, protobuf's form.
    StringValue(Text),
    /// A bare string.
    Bare(Text),
    /// Something that is not a string value at all (ignored).
    Number(i64),
}

#[derive(Debug, Arbitrary)]
struct Input {
    backend: Vec<(Key, Text)>,
    /// A value in the backend config that is not a string (Triton's are; ignored).
    backend_number: Option<(Key, i64)>,
    parameters: Vec<(Key, Param)>,
    graph_level: Option<i64>,
    cuda_graphs: bool,
    accelerators: Vec<(u8, Vec<(Key, Text)>)>,
    default_threads: u8,
}

fn key(k: &Key) -> String {
    match k {
        Key::Known(i) => KEYS[*i as usize % KEYS.len()].to_string(),
        Key::Other(s) => s.clone(),
    }
}

fn text(t: &Text) -> String {
    match t {
        Text::Known(i) => VALUES[*i as usize % VALUES.len()].to_string(),
        Text::Number(n) => n.to_string(),
        Text::Other(s) => s.clone(),
    }
}

/// The domains, spelled out.
/// The parameters onnxrs documents (README): others are warned about, unknown memory.* refused.
const DOCUMENTED: [&str; 14] = [
    "intra_op_thread_count",
    "inter_op_thread_count",
    "execution_mode",
    "enable_mem_arena",
    "enable_mem_pattern",
    "memory.enable_memory_arena_shrinkage",
    "memory.shared_arena",
    "cudnn_conv_algo_search",
    "gpu_mem_limit",
    "arena_extend_strategy",
    "do_copy_in_default_stream",
    "metrics",
    "share_session_between_instances",
    "request_log_sample",
];

/// `cpu:0;gpu:1` device lists, as ONNX Runtime's shrinkage run option takes them.
fn devices(v: &str) -> Option<String> {
    let mut out = Vec::new();
    for d in v.split(';').map(str::trim).filter(|d| !d.is_empty()) {
        let (kind, id) = d.split_once(':')?;
        let id: u32 = id.trim().parse().ok()?;
        let kind = kind.trim().to_ascii_lowercase();
        if kind != "cpu" && kind != "gpu" {
            return None;
        }
        out.push(format!("{kind}:{id}"));
    }
    (!out.is_empty()).then(|| out.join(";"))
}

fn flag(v: &str) -> Option<bool> {
    match v.trim().to_ascii_lowercase().as_str() {
        "1" | "true" => Some(true),
        "0" | "false" => Some(false),
        _ => None,
    }
}
/// A share of requests: a number from 0 to 1.
fn share(v: &str) -> Option<f64> {
    v.trim().parse::<f64>().ok().filter(|r| (0.0..=1.0).contains(r))
}
fn int(v: &str) -> Option<i64> {
    v.trim().parse().ok()
}
fn count(v: &str) -> Option<usize> {
    int(v).and_then(|n| usize::try_from(n).ok())
}

/// A key's value if present: Ok(None) absent, Ok(Some) valid, Err(()) present and invalid.
fn read<T>(map: &BTreeMap<String, String>, k: &str, domain: impl Fn(&str) -> Option<T>) -> Result<Option<T>, ()> {
    map.get(k).map(|v| domain(v).ok_or(())).transpose()
}

fn backend(input: &Input) {
    let mut cmdline = serde_json::Map::new();
    for (k, v) in &input.backend {
        cmdline.insert(key(k), Value::String(text(v)));
    }
    if let Some((k, n)) = &input.backend_number {
        cmdline.insert(key(k), json!(n));
    }
    let strings: BTreeMap<String, String> =
        cmdline.iter().filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string()))).collect();
    let state = BackendConfig::parse(&json!({ "cmdline": cmdline }));
    let max_batch = read(&strings, "default-max-batch-size", |v| v.trim().parse::<usize>().ok());
    let metrics = read(&strings, "metrics", flag);
    let pools = read(&strings, "thread-pools", |v| match v.trim() {
        "shared" => Some(false),
        "per-session" => Some(true),
        _ => None,
    });
    // The official backend's keys: a flag that must not contradict thread-pools, and counts.
    let official = read(&strings, "enable-global-threadpool", flag);
    let count = |k: &str| read(&strings, k, |v| v.trim().parse::<usize>().ok());
    let (intra, inter) = (count("intra_op_thread_count"), count("inter_op_thread_count"));
    let pools = match (pools, official, intra, inter) {
        (Ok(Some(per_session)), Ok(Some(global)), Ok(_), Ok(_)) if per_session == global => Err(()),
        (Ok(p), Ok(o), Ok(intra), Ok(inter)) => Ok((p.or(o.map(|global| !global)), intra, inter)),
        _ => Err(()),
    };
    // Refused when either is invalid: the two are checked together below.
    let metrics = metrics.and_then(|m| pools.map(|_| m)).map_err(|_| ());
    let sample = read(&strings, "request-log-sample", share);
    // The shared arena: a flag and a positive cap; a cap turns it on, and a cap with the flag off
    // is a contradiction.
    let shared = read(&strings, "shared-arena", flag);
    let cap = read(&strings, "shared-arena-max-bytes", |v| v.trim().parse::<u64>().ok().filter(|&n| n > 0));
    let arena = match (shared, cap) {
        (Ok(Some(false)), Ok(Some(_))) => Err(()),
        (Ok(on), Ok(cap)) => Ok((on == Some(true) || cap.is_some()).then_some(cap)),
        _ => Err(()),
    };
    // Refused when either is invalid: the two are checked together below.
    let sample = sample.and_then(|s| arena.map(|a| (s, a)));
    match (state, max_batch, metrics, sample) {
        (Ok(s), Ok(max_batch), Ok(metrics), Ok((sample, arena))) => {
            assert_eq!(s.default_max_batch_size, max_batch.unwrap_or(4));
            assert_eq!(s.metrics_on, metrics.unwrap_or(true));
            let Ok((per_session, intra, inter)) = pools else { unreachable!("refused above") };
            match s.thread_pools {
                ThreadPools::Shared { threads, inter_threads } => {
                    assert_ne!(per_session, Some(true), "per-session only when asked for");
                    assert_eq!(threads, intra.filter(|&n| n > 0).unwrap_or_else(available_cpus));
                    assert_eq!(inter_threads, inter.filter(|&n| n > 0).unwrap_or(1));
                }
                ThreadPools::PerSession => assert_eq!(per_session, Some(true), "per-session only when asked for"),
            }
            assert_eq!(s.shared_arena.map(|a| a.max_bytes), arena);
            let library = strings.get("ort-library").filter(|l| !l.is_empty());
            assert_eq!(s.ort_library.as_deref(), library.map(std::path::Path::new));
            // The request log: a path that is not blank turns it on (the file is opened later,
            // by the backend's state, not by parsing).
            let log = strings.get("request-log").map(|p| p.trim()).filter(|p| !p.is_empty());
            assert_eq!(s.request_log.as_ref().map(|r| r.path.as_path()), log.map(std::path::Path::new));
            if let Some(r) = &s.request_log {
                assert_eq!(r.sample, sample.unwrap_or(1.0));
            }
        }
        (Err(e), m, f, r) => {
            assert!(m.is_err() || f.is_err() || r.is_err(), "backend config refused for no reason: {e}")
        }
        (Ok(_), m, f, r) => {
            panic!("backend config accepted with an invalid value ({m:?}, {f:?}, {r:?}): {strings:?}")
        }
    }
}

fn model(input: &Input) {
    let mut parameters = serde_json::Map::new();
    for (k, p) in &input.parameters {
        let v = match p {
            Param::StringValue(t) => json!({ "string_value": text(t) }),
            Param::Bare(t) => json!(text(t)),
            Param::Number(n) => json!(n),
        };
        parameters.insert(key(k), v);
    }
    let accelerators: Vec<Value> = input
        .accelerators
        .iter()
        .take(3)
        .map(|(name, p)| {
            let name = ["cuda", "tensorrt", "openvino", ""][*name as usize % 4];
            let p: serde_json::Map<String, Value> = p.iter().map(|(k, v)| (key(k), json!(text(v)))).collect();
            json!({ "name": name, "parameters": p })
        })
        .collect();
    let mut optimization = json!({
        "cuda": { "graphs": input.cuda_graphs },
        "execution_accelerators": { "gpu_execution_accelerator": accelerators },
    });
    if let Some(level) = input.graph_level {
        optimization["graph"] = json!({ "level": level });
    }
    let config =
        ModelConfig::parse(&json!({ "name": "m", "parameters": parameters, "optimization": optimization })).unwrap();
    let p = &config.parameters;
    // What the config parser kept: string values only, as written.
    for (k, v) in &parameters {
        let s = v.get("string_value").and_then(Value::as_str).or_else(|| v.as_str());
        assert_eq!(p.get(k).map(String::as_str), s);
    }

    let default_threads = 1 + input.default_threads as usize % 16;
    let intra = read(p, "intra_op_thread_count", count);
    let intra_named = intra.as_ref().is_ok_and(|n| n.is_some_and(|n| n > 0));
    let inter = read(p, "inter_op_thread_count", count);
    let mode = read(p, "execution_mode", |v| int(v).filter(|m| *m == 0 || *m == 1));
    let level = match config.graph_level {
        None | Some(0) => Ok(GraphOptimization::All),
        Some(-1) => Ok(GraphOptimization::Basic),
        Some(1) => Ok(GraphOptimization::Extended),
        Some(2) => Ok(GraphOptimization::Disabled),
        Some(_) => Err(()),
    };
    let arena = read(p, "enable_mem_arena", flag);
    let pattern = read(p, "enable_mem_pattern", flag);
    let shrink = read(p, params::ARENA_SHRINKAGE, devices);
    match params::session_settings(&config, default_threads) {
        Ok(s) => {
            let intra = intra.unwrap().filter(|&n| n > 0).unwrap_or(default_threads);
            assert_eq!(s.intra_op_threads, intra);
            assert!(s.intra_op_threads >= 1);
            // Thread counts (or parallel mode) in the config: a pool of the session's own.
            let own =
                p.contains_key("inter_op_thread_count") || intra_named || mode.as_ref().is_ok_and(|m| *m == Some(1));
            assert_eq!(s.own_threads, own);
            assert_eq!(s.inter_op_threads, inter.unwrap().unwrap_or(0));
            assert_eq!(s.parallel_execution, mode.unwrap() == Some(1));
            assert_eq!(s.optimization, level.unwrap());
            assert_eq!(s.mem_arena, arena.unwrap().unwrap_or(true));
            assert_eq!(s.mem_pattern, pattern.unwrap().unwrap_or(true));
            let session: Vec<(String, String)> =
                p.iter().filter(|(k, _)| k.starts_with("session.")).map(|(k, v)| (k.clone(), v.clone())).collect();
            assert_eq!(s.config_entries, session, "session.* entries pass through unchanged");
            let run: Vec<(String, String)> =
                shrink.unwrap().map(|d| (params::ARENA_SHRINKAGE.to_string(), d)).into_iter().collect();
            assert_eq!(s.run_config_entries, run);
        }
        Err(e) => assert!(
            intra.is_err()
                || inter.is_err()
                || mode.is_err()
                || level.is_err()
                || arena.is_err()
                || pattern.is_err()
                || shrink.is_err(),
            "session settings refused for no reason: {e}"
        ),
    }
    let unknown: Vec<String> =
        p.keys().filter(|k| !k.starts_with("session.") && !DOCUMENTED.contains(&k.as_str())).cloned().collect();
    match params::unknown_parameters(&config) {
        Ok(named) => {
            assert_eq!(named, unknown, "every unknown key, and only those, is named");
            assert!(!named.iter().any(|k| k.starts_with("memory.")), "an unknown memory key passed: {named:?}");
        }
        Err(e) => assert!(unknown.iter().any(|k| k.starts_with("memory.")), "refused for no reason: {e}"),
    }

    let choice = |k: &str, n: i64| read(p, k, |v| int(v).filter(|i| (0..n).contains(i)));
    let search = choice("cudnn_conv_algo_search", 3);
    let limit = read(p, "gpu_mem_limit", |v| v.trim().parse::<u64>().ok());
    let strategy = choice("arena_extend_strategy", 2);
    let copy = read(p, "do_copy_in_default_stream", flag);
    let unknown_accelerator = config.gpu_accelerators.iter().any(|(name, _)| name != "cuda");
    match cuda::cuda_options(&config) {
        Ok(options) => {
            assert!(!unknown_accelerator);
            assert!(options.windows(2).all(|w| w[0].0 < w[1].0), "each key once");
            assert!(options.iter().all(|(k, _)| k != "device_id"), "the instance sets device_id");
            let got: BTreeMap<&str, &str> = options.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            let overridden = |k: &str| config.gpu_accelerators.iter().any(|(_, p)| p.contains_key(k));
            let search = ["EXHAUSTIVE", "HEURISTIC", "DEFAULT"][search.unwrap().unwrap_or(0) as usize];
            let limit = limit.unwrap().map_or(usize::MAX.to_string(), |l| l.to_string());
            let strategy = ["kNextPowerOfTwo", "kSameAsRequested"][strategy.unwrap().unwrap_or(0) as usize];
            let copy = if copy.unwrap().unwrap_or(true) { "1" } else { "0" };
            for (k, want) in [
                ("cudnn_conv_algo_search", search),
                ("gpu_mem_limit", &limit),
                ("arena_extend_strategy", strategy),
                ("do_copy_in_default_stream", copy),
            ] {
                assert!(got.contains_key(k), "{k} is always set");
                if !overridden(k) {
                    assert_eq!(got[k], want, "{k}");
                }
            }
            if config.cuda_graphs && !overridden("enable_cuda_graph") {
                assert_eq!(got.get("enable_cuda_graph"), Some(&"1"));
            }
            for (_, p) in &config.gpu_accelerators {
                for (k, v) in p.iter().filter(|(k, _)| *k != "device_id") {
                    // The last accelerator entry that names a key wins.
                    let last = config.gpu_accelerators.iter().rev().find_map(|(_, p)| p.get(k)).unwrap();
                    assert_eq!(got[k.as_str()], last, "{k}: {v}");
                }
            }
        }
        Err(e) => assert!(
            search.is_err() || limit.is_err() || strategy.is_err() || copy.is_err() || unknown_accelerator,
            "CUDA options refused for no reason: {e}"
        ),
    }

    match (params::metrics_enabled(&config), read(p, "metrics", flag)) {
        (Ok(on), Ok(want)) => assert_eq!(on, want.unwrap_or(true)),
        (Err(_), Err(())) => {}
        (got, want) => panic!("metrics_enabled = {got:?}, the domain says {want:?}"),
    }
    match (params::share_session(&config), read(p, params::SHARE_SESSION, flag)) {
        (Ok(on), Ok(want)) => assert_eq!(on, want.unwrap_or(false)),
        (Err(_), Err(())) => {}
        (got, want) => panic!("share_session = {got:?}, the domain says {want:?}"),
    }
    match (params::request_log_sample(&config), read(p, "request_log_sample", share)) {
        (Ok(got), Ok(want)) => assert_eq!(got, want),
        (Err(_), Err(())) => {}
        (got, want) => panic!("request_log_sample = {got:?}, the domain says {want:?}"),
    }
}

fuzz_target!(|input: Input| {
    backend(&input);
    model(&input);
});

//! Session settings from a model config, with the keys the official ONNX Runtime backend reads, so
//! a config written for `platform: "onnxruntime_onnx"` works unchanged here:
//!
//! | key | values | default |
//! | --- | --- | --- |
//! | `intra_op_thread_count` | threads for one operator (the session then has pools of its own) | the backend's shared pool, as many threads as CPUs this process may use (cgroup quota aware); with `thread-pools=per-session`, a pool that size per session |
//! | `inter_op_thread_count` | threads across operators (parallel mode; a pool of its own) | ONNX Runtime's default |
//! | `execution_mode` | 0 sequential, 1 parallel | 0 |
//! | `enable_mem_arena` | 0 / 1 | 1 |
//! | `enable_mem_pattern` | 0 / 1 | 1 |
//! | `session.<key>` | any ONNX Runtime session config entry, passed through | — |
//! | `memory.enable_memory_arena_shrinkage` | devices whose arena gives back its free memory after every run: `cpu:0`, `gpu:0`, `cpu:0;gpu:1` (an ONNX Runtime run option) | off |
//! | `share_session_between_instances` | `true`/`1`: the instances on one device run one session (one copy of the weights) | off |
//! | `memory.shared_arena` | 0 / 1: whether the model's sessions allocate from the shared CPU arena (`--backend-config=onnxrs,shared-arena=1`) | 1 when the backend has one |
//! | `optimization { graph { level } }` | -1 basic, 0 all, 1 extended, 2 none (as the official backend) | all |
//!
//! And onnxrs's own: `metrics` (0 turns its metrics off for the model) and `request_log_sample`
//! (the model's share of successful requests in the request log, 0 to 1).

//!
//! The CUDA execution provider's options are in `config::cuda`.
use std::collections::BTreeMap;

/// The run option that makes the named devices' arenas free what they hold after each run.
pub const ARENA_SHRINKAGE: &str = "memory.enable_memory_arena_shrinkage";

/// Whether the model's sessions use the backend's shared CPU arena (`onnx::arena`).
pub const SHARED_ARENA: &str = "memory.shared_arena";

/// Every parameter onnxrs reads. Others are named in a warning at load (the official backend
/// ignores them silently, so a misspelt key would change nothing without anyone knowing); an
/// unknown `memory.*` key fails the load, since memory settings that do nothing are the ones an
/// operator counts on most.
const KNOWN: [&str; 17] = [
    "intra_op_thread_count",
    "inter_op_thread_count",
    "execution_mode",
    "enable_mem_arena",
    "enable_mem_pattern",
    ARENA_SHRINKAGE,
    SHARED_ARENA,
    "cudnn_conv_algo_search",
    "gpu_mem_limit",
    "arena_extend_strategy",
    "do_copy_in_default_stream",
    "metrics",
    SHARE_SESSION,
    "request_log_sample",
    crate::response_timings::MODEL_PARAMETER,
    super::generator::MAX_SEQUENCES,
    super::generator::KV_CACHE_BYTES,
];

/// The key users of the official backend's pull requests for one session per model write.
pub const SHARE_SESSION: &str = "share_session_between_instances";

/// `share_session_between_instances`: whether the instances on one device use one session.
pub fn share_session(config: &ModelConfig) -> Result<bool> {
    bool_param(&config.parameters, SHARE_SESSION, false)
}

use crate::config::model_config::ModelConfig;
use crate::error::{Error, Result};
use crate::onnx::arena::USE_ENV_ALLOCATORS;
use crate::onnx::session::{GraphOptimization, SessionSettings};

pub(super) fn int_param(params: &BTreeMap<String, String>, key: &str) -> Result<Option<i64>> {
    params
        .get(key)
        .map(|v| {
            v.trim()
                .parse::<i64>()
                .map_err(|_| Error::invalid_arg(format!("parameter '{key}' must be an integer, got '{v}'")))
        })
        .transpose()
}

/// A 0/1 (or false/true) setting; `what` names it in the error ("parameter 'x'").
pub fn parse_flag(what: &str, value: &str) -> Result<bool> {
    match value.trim().to_ascii_lowercase().as_str() {
        "1" | "true" => Ok(true),
        "0" | "false" => Ok(false),
        v => Err(Error::invalid_arg(format!("{what} must be 0 or 1, got '{v}'"))),
    }
}

pub(super) fn bool_param(params: &BTreeMap<String, String>, key: &str, default: bool) -> Result<bool> {
    params.get(key).map_or(Ok(default), |v| parse_flag(&format!("parameter '{key}'"), v))
}

fn count_param(params: &BTreeMap<String, String>, key: &str) -> Result<Option<usize>> {
    int_param(params, key)?
        .map(|n| usize::try_from(n).map_err(|_| Error::invalid_arg(format!("parameter '{key}' must be >= 0, got {n}"))))
        .transpose()
}

/// The settings for `config`; `default_threads` is used when the config names no intra-op count
/// (or names 0, which for ONNX Runtime would mean "one per core of the host").
pub fn session_settings(config: &ModelConfig, default_threads: usize) -> Result<SessionSettings> {
    let p = &config.parameters;
    let intra_param = count_param(p, "intra_op_thread_count")?.filter(|&n| n > 0);
    let inter_param = count_param(p, "inter_op_thread_count")?;
    let intra = intra_param.unwrap_or(default_threads);
    let inter = inter_param.unwrap_or(0);
    let parallel_execution = match int_param(p, "execution_mode")? {
        None | Some(0) => false,
        Some(1) => true,
        Some(n) => {
            return Err(Error::invalid_arg(format!("parameter 'execution_mode' must be 0 or 1, got {n}")));
        }
    };
    let optimization = match config.graph_level {
        None | Some(0) => GraphOptimization::All,
        Some(-1) => GraphOptimization::Basic,
        Some(1) => GraphOptimization::Extended,
        Some(2) => GraphOptimization::Disabled,
        Some(n) => {
            return Err(Error::invalid_arg(format!(
                "optimization.graph.level {n} is not supported (use -1 basic, 0 all, 1 extended, 2 none)"
            )));
        }
    };
    let config_entries =
        p.iter().filter(|(k, _)| k.starts_with("session.")).map(|(k, v)| (k.clone(), v.clone())).collect();
    let run_config_entries = match p.get(ARENA_SHRINKAGE) {
        Some(v) => vec![(ARENA_SHRINKAGE.to_string(), shrinkage_devices(v)?)],
        None => Vec::new(),
    };
    Ok(SessionSettings {
        // A config that sets thread counts (or parallel execution, which needs an inter-op pool
        // of its own) gets what it asks for; the others use the backend's shared pool, if any.
        own_threads: intra_param.is_some() || inter_param.is_some() || parallel_execution,
        intra_op_threads: intra,
        inter_op_threads: inter,
        parallel_execution,
        mem_arena: bool_param(p, "enable_mem_arena", true)?,
        mem_pattern: bool_param(p, "enable_mem_pattern", true)?,
        optimization,
        config_entries,
        run_config_entries,
        ..SessionSettings::default()
    })
}

/// Makes `settings` allocate from the shared CPU arena when the backend has one (`backend_has`)
/// and the model does not opt out (`memory.shared_arena: 0`) or turn its arena off
/// (`enable_mem_arena: 0`, which keeps its sessions off every arena). Asking for the shared arena
/// where there is none refuses the load rather than silently using a private one.
pub fn apply_shared_arena(settings: &mut SessionSettings, config: &ModelConfig, backend_has: bool) -> Result<()> {
    let wanted = config.parameters.get(SHARED_ARENA).map(|v| parse_flag(&format!("parameter '{SHARED_ARENA}'"), v));
    let use_it = match wanted.transpose()? {
        None => backend_has && settings.mem_arena,
        Some(false) => false,
        Some(true) if !backend_has => {
            return Err(Error::invalid_arg(format!(
                "parameter '{SHARED_ARENA}' asks for the shared CPU arena, but the backend has none: start the \
                 server with --backend-config={},shared-arena=1",
                crate::backend::name()
            )));
        }
        Some(true) if !settings.mem_arena => {
            return Err(Error::invalid_arg(format!(
                "parameter '{SHARED_ARENA}' asks for the shared CPU arena, but 'enable_mem_arena' is 0"
            )));
        }
        Some(true) => true,
    };
    if use_it {
        settings.config_entries.retain(|(k, _)| k != USE_ENV_ALLOCATORS);
        settings.config_entries.push((USE_ENV_ALLOCATORS.to_string(), "1".to_string()));
    }
    Ok(())
}

/// Checks `cpu:0;gpu:1`-style device lists (what ONNX Runtime's run option accepts) and returns
/// the list as ONNX Runtime wants it.
fn shrinkage_devices(value: &str) -> Result<String> {
    let bad = || {
        Error::invalid_arg(format!(
            "parameter '{ARENA_SHRINKAGE}' must list devices as 'cpu:0' or 'gpu:N', separated by ';', got '{value}'"
        ))
    };
    let devices: Vec<String> = value
        .split(';')
        .map(str::trim)
        .filter(|d| !d.is_empty())
        .map(|d| {
            let (kind, id) = d.split_once(':').ok_or_else(bad)?;
            let id: u32 = id.trim().parse().map_err(|_| bad())?;
            match kind.trim().to_ascii_lowercase().as_str() {
                k @ ("cpu" | "gpu") => Ok(format!("{k}:{id}")),
                _ => Err(bad()),
            }
        })
        .collect::<Result<_>>()?;
    if devices.is_empty() {
        return Err(bad());
    }
    Ok(devices.join(";"))
}

/// The parameters onnxrs does not know: an unknown `memory.*` key is an error; the others are
/// returned for a warning. `session.*` keys are ONNX Runtime's own and pass through.
pub fn unknown_parameters(config: &ModelConfig) -> Result<Vec<String>> {
    let unknown: Vec<String> = config
        .parameters
        .keys()
        .filter(|k| !k.starts_with("session.") && !KNOWN.contains(&k.as_str()))
        .cloned()
        .collect();
    if let Some(k) = unknown.iter().find(|k| k.starts_with("memory.")) {
        return Err(Error::invalid_arg(format!(
            "parameter '{k}' is not a memory setting onnxrs knows (it knows '{ARENA_SHRINKAGE}' and '{SHARED_ARENA}'); \
             it would change nothing, so the load is refused"
        )));
    }
    Ok(unknown)
}

/// The model parameter `metrics` ("0" turns onnxrs's metrics off for this model).
pub fn metrics_enabled(config: &ModelConfig) -> Result<bool> {
    bool_param(&config.parameters, "metrics", true)
}

/// The model parameter `request_log_sample`: the share of the model's successful requests the
/// request log keeps (`None`: the backend's `request-log-sample`).
pub fn request_log_sample(config: &ModelConfig) -> Result<Option<f64>> {
    let what = "parameter 'request_log_sample'";
    config.parameters.get("request_log_sample").map(|v| crate::request_log::parse_share(what, v)).transpose()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn arena_shrinkage_and_unknown_keys() {
        let s = session_settings(&cfg(json!({ARENA_SHRINKAGE: {"string_value": " CPU:0 ; gpu:1"}}), None), 2).unwrap();
        assert_eq!(s.run_config_entries, vec![(ARENA_SHRINKAGE.to_string(), "cpu:0;gpu:1".to_string())]);
        assert!(session_settings(&cfg(json!({}), None), 2).unwrap().run_config_entries.is_empty());
        for bad in ["", "cpu", "cpu:x", "tpu:0", ";"] {
            let e = session_settings(&cfg(json!({ARENA_SHRINKAGE: {"string_value": bad}}), None), 2).unwrap_err();
            assert!(e.message().contains("must list devices"), "{bad}: {e}");
        }
        let c = cfg(
            json!({"intra_op_thread_count": {"string_value": "1"}, "session.x": {"string_value": "1"},
                           "TRITON_SOMETHING": {"string_value": "1"}, "intra_op_threads": {"string_value": "1"}}),
            None,
        );
        assert_eq!(
            unknown_parameters(&c).unwrap(),
            vec!["TRITON_SOMETHING".to_string(), "intra_op_threads".to_string()]
        );
        let e = unknown_parameters(&cfg(json!({"memory.enable_arena_shrinkage": {"string_value": "cpu:0"}}), None))
            .unwrap_err();
        assert!(e.message().contains("'memory.enable_arena_shrinkage' is not a memory setting"), "{e}");
    }

    #[test]
    fn shared_arena_is_opt_out_per_model() {
        let entry = (USE_ENV_ALLOCATORS.to_string(), "1".to_string());
        let apply = |params: serde_json::Value, backend_has: bool| {
            let c = cfg(params, None);
            let mut s = session_settings(&c, 1)?;
            apply_shared_arena(&mut s, &c, backend_has).map(|()| s.config_entries.contains(&entry))
        };
        assert!(apply(json!({}), true).unwrap());
        assert!(!apply(json!({}), false).unwrap());
        assert!(!apply(json!({SHARED_ARENA: {"string_value": "0"}}), true).unwrap());
        assert!(apply(json!({SHARED_ARENA: {"string_value": "1"}}), true).unwrap());
        // A model without an arena stays off the shared one, and cannot ask for it.
        assert!(!apply(json!({"enable_mem_arena": {"string_value": "0"}}), true).unwrap());
        let e = apply(json!({"enable_mem_arena": {"string_value": "0"}, SHARED_ARENA: {"string_value": "1"}}), true)
            .unwrap_err();
        assert!(e.message().contains("'enable_mem_arena' is 0"), "{e}");
        let e = apply(json!({SHARED_ARENA: {"string_value": "1"}}), false).unwrap_err();
        assert!(e.message().contains("--backend-config=onnxrs,shared-arena=1"), "{e}");
        let e = apply(json!({SHARED_ARENA: {"string_value": "on"}}), true).unwrap_err();
        assert!(e.message().contains("'memory.shared_arena' must be 0 or 1"), "{e}");
        assert!(unknown_parameters(&cfg(json!({SHARED_ARENA: {"string_value": "1"}}), None)).unwrap().is_empty());
    }

    fn cfg(params: serde_json::Value, level: Option<i64>) -> ModelConfig {
        let mut c = json!({"name": "m", "parameters": params});
        if let Some(l) = level {
            c["optimization"] = json!({"graph": {"level": l}});
        }
        ModelConfig::parse(&c).unwrap()
    }

    #[test]
    fn defaults() {
        let s = session_settings(&cfg(json!({}), None), 3).unwrap();
        assert_eq!(s.intra_op_threads, 3);
        assert_eq!(s.inter_op_threads, 0);
        assert!(!s.parallel_execution && s.mem_arena && s.mem_pattern);
        assert_eq!(s.optimization, GraphOptimization::All);
    }

    #[test]
    fn official_keys() {
        let p = json!({
            "intra_op_thread_count": {"string_value": "1"},
            "inter_op_thread_count": {"string_value": "2"},
            "execution_mode": {"string_value": "1"},
            "enable_mem_arena": {"string_value": "0"},
            "enable_mem_pattern": {"string_value": "0"},
            "session.intra_op.allow_spinning": {"string_value": "0"},
            "unrelated": {"string_value": "x"}
        });
        let s = session_settings(&cfg(p, Some(-1)), 3).unwrap();
        assert_eq!((s.intra_op_threads, s.inter_op_threads), (1, 2));
        assert!(s.parallel_execution && !s.mem_arena && !s.mem_pattern);
        assert_eq!(s.optimization, GraphOptimization::Basic);
        assert_eq!(s.config_entries, vec![("session.intra_op.allow_spinning".into(), "0".into())]);
        assert_eq!(session_settings(&cfg(json!({}), Some(1)), 1).unwrap().optimization, GraphOptimization::Extended);
        assert_eq!(session_settings(&cfg(json!({}), Some(2)), 1).unwrap().optimization, GraphOptimization::Disabled);
        assert!(session_settings(&cfg(json!({}), Some(3)), 1).is_err());
    }

    #[test]
    fn bad_values_name_the_key() {
        for (k, v, want) in [
            ("intra_op_thread_count", "two", "'intra_op_thread_count' must be an integer"),
            ("intra_op_thread_count", "-1", "must be >= 0"),
            ("execution_mode", "2", "'execution_mode' must be 0 or 1"),
            ("enable_mem_arena", "yes", "'enable_mem_arena' must be 0 or 1"),
        ] {
            let e = session_settings(&cfg(json!({ k: {"string_value": v} }), None), 1).unwrap_err();
            assert!(e.message().contains(want), "{e}");
        }
        assert!(session_settings(&cfg(json!({}), Some(7)), 1).is_err());
    }
}

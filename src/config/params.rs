//! Session settings from a model config, with the keys the official ONNX Runtime backend reads, so
//! a config written for `platform: "onnxruntime_onnx"` works unchanged here:
//!
//! | key | values | default |
//! | --- | --- | --- |
//! | `intra_op_thread_count` | threads for one operator | CPUs this process may use (cgroup quota aware) |
//! | `inter_op_thread_count` | threads across operators (parallel mode) | ONNX Runtime's default |
//! | `execution_mode` | 0 sequential, 1 parallel | 0 |
//! | `enable_mem_arena` | 0 / 1 | 1 |
//! | `enable_mem_pattern` | 0 / 1 | 1 |
//! | `session.<key>` | any ONNX Runtime session config entry, passed through | — |
//! | `optimization { graph { level } }` | -1 basic, 0 all, 1 extended, 2 none (as the official backend) | all |

use std::collections::BTreeMap;

use crate::config::model_config::ModelConfig;
use crate::error::{Error, Result};
use crate::onnx::session::{GraphOptimization, SessionSettings};

fn int_param(params: &BTreeMap<String, String>, key: &str) -> Result<Option<i64>> {
    params
        .get(key)
        .map(|v| {
            v.trim()
                .parse::<i64>()
                .map_err(|_| Error::invalid_arg(format!("parameter '{key}' must be an integer, got '{v}'")))
        })
        .transpose()
}

fn bool_param(params: &BTreeMap<String, String>, key: &str, default: bool) -> Result<bool> {
    match params.get(key).map(|v| v.trim().to_ascii_lowercase()) {
        None => Ok(default),
        Some(v) if v == "1" || v == "true" => Ok(true),
        Some(v) if v == "0" || v == "false" => Ok(false),
        Some(v) => Err(Error::invalid_arg(format!("parameter '{key}' must be 0 or 1, got '{v}'"))),
    }
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
    let intra = count_param(p, "intra_op_thread_count")?.filter(|&n| n > 0).unwrap_or(default_threads);
    let inter = count_param(p, "inter_op_thread_count")?.unwrap_or(0);
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
    Ok(SessionSettings {
        intra_op_threads: intra,
        inter_op_threads: inter,
        parallel_execution,
        mem_arena: bool_param(p, "enable_mem_arena", true)?,
        mem_pattern: bool_param(p, "enable_mem_pattern", true)?,
        optimization,
        config_entries,
        ..SessionSettings::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

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

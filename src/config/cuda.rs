//! The CUDA execution provider's options for KIND_GPU instances, with the official ONNX Runtime
//! backend's keys and defaults:
//!
//! | key | values | default |
//! | --- | --- | --- |
//! | `cudnn_conv_algo_search` | 0 exhaustive, 1 heuristic, 2 default | 0 |
//! | `gpu_mem_limit` | bytes the CUDA arena may hold | no limit |
//! | `arena_extend_strategy` | 0 next power of two, 1 same as requested | 0 |
//! | `do_copy_in_default_stream` | 0 / 1 | 1 |
//! | `optimization { cuda { graphs: true } }` | capture the run as a CUDA graph (`enable_cuda_graph`) | off |
//! | `gpu_execution_accelerator [ { name: "cuda" parameters {...} } ]` | any CUDA provider option, passed through | — |

use std::collections::BTreeMap;

use crate::config::model_config::ModelConfig;
use crate::config::params::{bool_param, int_param};
use crate::error::{Error, Result};

/// The CUDA execution provider's options for `config` (device id excluded: the instance sets it).
/// Keys and defaults follow the official backend; `gpu_execution_accelerator` entries named
/// "cuda" pass any further provider option through, and win over the plain parameters.
pub fn cuda_options(config: &ModelConfig) -> Result<Vec<(String, String)>> {
    let p = &config.parameters;
    let choice =
        |key: &str, names: &[&str]| -> Result<String> {
            let i = int_param(p, key)?.unwrap_or(0);
            usize::try_from(i).ok().and_then(|i| names.get(i)).map(|s| s.to_string()).ok_or_else(|| {
                Error::invalid_arg(format!("parameter '{key}' must be 0 to {}, got {i}", names.len() - 1))
            })
        };
    let mut options = BTreeMap::new();
    options.insert(
        "cudnn_conv_algo_search".to_string(),
        choice("cudnn_conv_algo_search", &["EXHAUSTIVE", "HEURISTIC", "DEFAULT"])?,
    );
    options.insert(
        "gpu_mem_limit".to_string(),
        match p.get("gpu_mem_limit") {
            Some(v) => v
                .trim()
                .parse::<u64>()
                .map_err(|_| Error::invalid_arg(format!("parameter 'gpu_mem_limit' must be a byte count, got '{v}'")))?
                .to_string(),
            None => usize::MAX.to_string(),
        },
    );
    options.insert(
        "arena_extend_strategy".to_string(),
        choice("arena_extend_strategy", &["kNextPowerOfTwo", "kSameAsRequested"])?,
    );
    options.insert(
        "do_copy_in_default_stream".to_string(),
        if bool_param(p, "do_copy_in_default_stream", true)? { "1" } else { "0" }.to_string(),
    );
    if config.cuda_graphs {
        options.insert("enable_cuda_graph".to_string(), "1".to_string());
    }
    for (name, params) in &config.gpu_accelerators {
        match name.as_str() {
            "cuda" => options.extend(params.iter().map(|(k, v)| (k.clone(), v.clone()))),
            "tensorrt" => {
                return Err(Error::unsupported(
                    "gpu_execution_accelerator 'tensorrt' is not supported by onnxrs (the CUDA provider is)",
                ));
            }
            other => {
                return Err(Error::invalid_arg(format!(
                    "unknown gpu_execution_accelerator '{other}' (onnxrs knows 'cuda')"
                )));
            }
        }
    }
    options.remove("device_id");
    Ok(options.into_iter().collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn cfg(params: serde_json::Value) -> ModelConfig {
        ModelConfig::parse(&json!({"name": "m", "parameters": params})).unwrap()
    }

    #[test]
    fn cuda_options_follow_the_official_keys_and_defaults() {
        let opts = |c: &ModelConfig| cuda_options(c).unwrap().into_iter().collect::<BTreeMap<_, _>>();
        let d = opts(&cfg(json!({})));
        assert_eq!(d["cudnn_conv_algo_search"], "EXHAUSTIVE");
        assert_eq!(d["arena_extend_strategy"], "kNextPowerOfTwo");
        assert_eq!(d["do_copy_in_default_stream"], "1");
        assert_eq!(d["gpu_mem_limit"], usize::MAX.to_string());
        assert!(!d.contains_key("enable_cuda_graph"));

        let mut c = cfg(
            json!({"cudnn_conv_algo_search": {"string_value": "1"}, "gpu_mem_limit": {"string_value": "1073741824"},
                   "arena_extend_strategy": {"string_value": "1"}, "do_copy_in_default_stream": {"string_value": "0"}}),
        );
        c.cuda_graphs = true;
        c.gpu_accelerators = vec![(
            "cuda".into(),
            [("use_tf32".to_string(), "0".to_string()), ("device_id".to_string(), "7".to_string())].into(),
        )];
        let o = opts(&c);
        assert_eq!(o["cudnn_conv_algo_search"], "HEURISTIC");
        assert_eq!(o["gpu_mem_limit"], "1073741824");
        assert_eq!(o["arena_extend_strategy"], "kSameAsRequested");
        assert_eq!(o["do_copy_in_default_stream"], "0");
        assert_eq!(o["enable_cuda_graph"], "1");
        assert_eq!(o["use_tf32"], "0");
        assert!(!o.contains_key("device_id"), "the instance group decides the device");

        for (k, v, want) in [
            ("cudnn_conv_algo_search", "3", "'cudnn_conv_algo_search' must be 0 to 2"),
            ("arena_extend_strategy", "-1", "'arena_extend_strategy' must be 0 to 1"),
            ("gpu_mem_limit", "lots", "'gpu_mem_limit' must be a byte count"),
        ] {
            let e = cuda_options(&cfg(json!({ k: {"string_value": v} }))).unwrap_err();
            assert!(e.message().contains(want), "{e}");
        }
        let mut c = cfg(json!({}));
        c.gpu_accelerators = vec![("tensorrt".into(), BTreeMap::new())];
        assert!(cuda_options(&c).unwrap_err().message().contains("tensorrt"));
    }
}

//! The backend-wide state: settings from `--backend-config=onnxrs,...` and the ONNX Runtime
//! library, loaded the first time a model needs it.

use std::path::PathBuf;
use std::sync::Arc;

use crate::config::params::parse_flag;
use crate::error::{Error, Result};
use crate::generate::metrics::GenerationFamilies;
use crate::handover::Handover;
use crate::hold::Holds;
use crate::metrics::{Families, SharedArenaGauge};
use crate::onnx::runtime::{self, Runtime, ThreadPools};
use crate::request_log::{RequestLog, RequestLogSettings};

/// The name the server loaded this library as: `onnxrs`, or `onnxruntime` when it is installed as
/// the official backend's drop-in (`backends/onnxruntime/libtriton_onnxruntime.so`). Set once, at
/// the backend's initialize; nothing else in the code assumes a name.
static NAME: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// The backend's name as the server knows it: what `--backend-config=<name>,...` takes and what
/// messages that name a setting say. `onnxrs` until the server has initialized the backend.
pub fn name() -> &'static str {
    NAME.get().map_or("onnxrs", String::as_str)
}

/// Records the name the server initialized the backend with (the first one: a library file is
/// loaded under one name).
pub fn set_name(name: &str) {
    if NAME.set(name.to_string()).is_err() && NAME.get().is_some_and(|n| n != name) {
        log::warn!("onnxrs: initialized as '{name}' after '{}'; messages keep the first name", self::name());
    }
}

/// The official backend's default for `default-max-batch-size`.
const DEFAULT_MAX_BATCH_SIZE: usize = 4;

#[derive(Debug)]
pub struct BackendState {
    /// `ort-library=PATH`: the ONNX Runtime library to load.
    pub ort_library: Option<PathBuf>,
    /// Where libtriton_onnxrs.so was loaded from: the default place for the ONNX Runtime library.
    pub backend_dir: Option<PathBuf>,
    /// `default-max-batch-size=N`: what auto-complete gives a batch-capable model (0 disables).
    pub default_max_batch_size: usize,
    /// onnxrs's metric families; `None` with `metrics=0` or when the server has no metrics.
    pub metrics: Option<Arc<Families>>,
    /// `metrics=0` turns them off for every model.
    pub metrics_on: bool,
    /// Orders an unloading incarnation's exit after its successor's start (see `handover`).
    pub handover: Handover,
    /// `thread-pools=shared|per-session`: where sessions' operator threads come from.
    pub thread_pools: ThreadPools,
    /// `request-log=PATH`: the open request log, shared by every model (see `request_log`).
    pub request_log: Option<Arc<RequestLog>>,
    /// `shared-arena=1` / `shared-arena-max-bytes=N`: one CPU arena for every session, and its cap.
    pub shared_arena: Option<SharedArenaConfig>,
    /// Its gauge, with metrics on (it holds the families, so it is deleted before them).
    pub shared_arena_gauge: Option<Arc<SharedArenaGauge>>,
    /// The model references held across execute's return, and their reaper (see `hold`).
    pub holds: Arc<Holds>,
    /// The LLM serving metrics' families (`generate::metrics`), with metrics on.
    pub generation_families: Option<Arc<GenerationFamilies>>,
}

/// The shared CPU arena asked for (`onnx::arena`): its cap, if any.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SharedArenaConfig {
    pub max_bytes: Option<u64>,
}

/// The settings of `--backend-config=onnxrs,key=value`: pure, apart from the state that holds
/// them, so they can be tested and fuzzed without a server.
#[derive(Debug, Clone, PartialEq)]
pub struct BackendConfig {
    /// `ort-library=PATH`.
    pub ort_library: Option<PathBuf>,
    /// `default-max-batch-size=N` (4 unless set).
    pub default_max_batch_size: usize,
    /// `metrics=0|1` (on unless set).
    pub metrics_on: bool,
    /// `thread-pools=shared|per-session` (shared unless set: one pool of as many threads as the
    /// process has CPUs, for every session whose config names no thread counts).
    pub thread_pools: ThreadPools,
    /// `request-log=PATH` and `request-log-sample=R`.
    pub request_log: Option<RequestLogSettings>,
    /// `shared-arena=0|1` (off unless set), `shared-arena-max-bytes=N` (a cap; turns it on).
    pub shared_arena: Option<SharedArenaConfig>,
}

impl BackendConfig {
    /// From the backend config JSON the server hands over (`{"cmdline": {"key": "value"}}`).
    pub fn parse(config: &serde_json::Value) -> Result<Self> {
        let cmdline = config.get("cmdline");
        let get = |k: &str| cmdline.and_then(|c| c.get(k)).and_then(serde_json::Value::as_str);
        let default_max_batch_size = match get("default-max-batch-size") {
            None => DEFAULT_MAX_BATCH_SIZE,
            Some(v) => config_number("default-max-batch-size", v, "a count")?,
        };
        let metrics_on = get("metrics").map_or(Ok(true), |v| parse_flag("backend config metrics", v))?;
        let thread_pools = thread_pools(&get)?;
        let shared_arena = shared_arena(get("shared-arena"), get("shared-arena-max-bytes"))?;
        Ok(BackendConfig {
            ort_library: get("ort-library").filter(|s| !s.is_empty()).map(PathBuf::from),
            default_max_batch_size,
            metrics_on,
            thread_pools,
            request_log: RequestLogSettings::parse(get("request-log"), get("request-log-sample"))?,
            shared_arena,
        })
    }
}

/// Where sessions' operator threads come from: our `thread-pools=shared|per-session`, or the
/// official backend's keys, so its `--backend-config` lines work unchanged:
/// `enable-global-threadpool=1|0` (shared or per-session), `intra_op_thread_count=N` and
/// `inter_op_thread_count=N` (the shared pools' sizes; 0 or unset: as many intra-op threads as
/// the process has CPUs, one inter-op thread). A `thread-pools` and an
/// `enable-global-threadpool` that contradict each other are refused.
fn thread_pools<'a>(get: &impl Fn(&str) -> Option<&'a str>) -> Result<ThreadPools> {
    let ours = match get("thread-pools").map(str::trim) {
        None => None,
        Some("shared") => Some(true),
        Some("per-session") => Some(false),
        Some(v) => {
            return Err(Error::invalid_arg(format!(
                "backend config thread-pools must be 'shared' or 'per-session', got '{v}'"
            )));
        }
    };
    let official = get("enable-global-threadpool")
        .map(|v| parse_flag("backend config enable-global-threadpool", v))
        .transpose()?;
    let shared = match (ours, official) {
        (Some(a), Some(b)) if a != b => {
            return Err(Error::invalid_arg(format!(
                "backend config thread-pools={} contradicts enable-global-threadpool={}; give one of them",
                if a { "shared" } else { "per-session" },
                u8::from(b)
            )));
        }
        (a, b) => a.or(b).unwrap_or(true),
    };
    let count = |key: &str| -> Result<Option<usize>> {
        let n = get(key).map(|v| config_number::<usize>(key, v, "a thread count")).transpose()?;
        Ok(n.filter(|&n| n > 0))
    };
    let (intra, inter) = (count("intra_op_thread_count")?, count("inter_op_thread_count")?);
    Ok(if shared {
        ThreadPools::Shared {
            threads: intra.unwrap_or_else(crate::cpu::available_cpus),
            inter_threads: inter.unwrap_or(1),
        }
    } else {
        ThreadPools::PerSession
    })
}

/// The number a backend-config `key` gives as `value` (trimmed), or an error naming the key and
/// `what` it must be.
fn config_number<T: std::str::FromStr>(key: &str, value: &str, what: &str) -> Result<T> {
    value.trim().parse().map_err(|_| Error::invalid_arg(format!("backend config {key} must be {what}, got '{value}'")))
}

/// `shared-arena` and `shared-arena-max-bytes`: a cap alone turns the shared arena on; a cap with
/// `shared-arena=0` is a contradiction, refused rather than guessed.
fn shared_arena(flag: Option<&str>, max_bytes: Option<&str>) -> Result<Option<SharedArenaConfig>> {
    let on = flag.map(|v| parse_flag("backend config shared-arena", v)).transpose()?;
    let what = "a positive byte count";
    let max_bytes = max_bytes
        .map(|v| match config_number::<u64>("shared-arena-max-bytes", v, what)? {
            0 => Err(Error::invalid_arg(format!("backend config shared-arena-max-bytes must be {what}, got '{v}'"))),
            n => Ok(n),
        })
        .transpose()?;
    match (on, max_bytes) {
        (Some(false), Some(_)) => Err(Error::invalid_arg(
            "backend config shared-arena-max-bytes caps the shared arena, but shared-arena=0 turns it off",
        )),
        (Some(true), _) | (None, Some(_)) => Ok(Some(SharedArenaConfig { max_bytes })),
        (Some(false) | None, None) => Ok(None),
    }
}

impl BackendState {
    /// From the backend config JSON the server hands over (see `BackendConfig::parse`).
    pub fn from_config(config: &serde_json::Value, backend_dir: Option<PathBuf>) -> Result<Self> {
        let BackendConfig { ort_library, default_max_batch_size, metrics_on, thread_pools, request_log, shared_arena } =
            BackendConfig::parse(config)?;
        let request_log = request_log.as_ref().map(RequestLog::open).transpose()?;
        let holds = Holds::start().map_err(|e| Error::internal(format!("cannot start the hold reaper: {e}")))?;
        Ok(BackendState {
            holds: Arc::new(holds),
            generation_families: None,
            ort_library,
            backend_dir,
            default_max_batch_size,
            metrics: None,
            metrics_on,
            handover: Handover::default(),
            thread_pools,
            request_log,
            shared_arena,
            shared_arena_gauge: None,
        })
    }

    /// Creates the metric families, unless switched off. A server without metrics (or one that
    /// refuses them) leaves the backend working without: it is logged, not fatal.
    pub fn enable_metrics(&mut self) {
        if !self.metrics_on {
            return;
        }
        match Families::new() {
            Ok(f) => self.metrics = Some(f),
            Err(e) => log::warn!("onnxrs: backend metrics are off: {e}"),
        }
        match GenerationFamilies::new() {
            Ok(f) => self.generation_families = Some(f),
            Err(e) => log::warn!("onnxrs: generation metrics are off: {e}"),
        }
        if let (Some(_), Some(f)) = (self.shared_arena, &self.metrics) {
            match SharedArenaGauge::new(f) {
                Ok(g) => self.shared_arena_gauge = Some(g),
                Err(e) => log::warn!("onnxrs: no onnxrs_shared_arena_bytes gauge: {e}"),
            }
        }
    }

    /// The loaded ONNX Runtime, loading it on first use; the error says where we looked.
    pub fn runtime(&self) -> Result<Arc<Runtime>> {
        if let Some(rt) = runtime::get() {
            return Ok(rt);
        }
        let path = runtime::resolve_library(self.ort_library.as_deref(), self.backend_dir.as_deref())?;
        let rt = runtime::init_with(&path, self.thread_pools)?;
        if rt.thread_pools != self.thread_pools {
            log::warn!("onnxrs: ONNX Runtime is already running with {:?} thread pools", rt.thread_pools);
        }
        Ok(rt)
    }

    /// The runtime, with the shared CPU arena registered on it first when one is configured
    /// (before any session that would use it exists).
    pub fn runtime_with_arena(&self) -> Result<Arc<Runtime>> {
        let rt = self.runtime()?;
        if let Some(a) = self.shared_arena {
            crate::onnx::arena::register(&rt, a.max_bytes)?;
        }
        Ok(rt)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn reads_cmdline_settings() {
        let s = BackendState::from_config(
            &json!({"cmdline": {"ort-library": "/x/libonnxruntime.so", "default-max-batch-size": "16"}}),
            None,
        )
        .unwrap();
        assert_eq!(s.ort_library, Some(PathBuf::from("/x/libonnxruntime.so")));
        assert_eq!(s.default_max_batch_size, 16);
        let s = BackendState::from_config(&json!({}), None).unwrap();
        assert_eq!((s.ort_library, s.default_max_batch_size), (None, 4));
        assert!(BackendState::from_config(&json!({"cmdline": {"default-max-batch-size": "x"}}), None).is_err());
        assert!(!BackendState::from_config(&json!({"cmdline": {"metrics": "0"}}), None).unwrap().metrics_on);
        assert!(BackendState::from_config(&json!({}), None).unwrap().metrics_on);
        let e = BackendState::from_config(&json!({"cmdline": {"metrics": "maybe"}}), None).unwrap_err();
        assert!(e.message().contains("backend config metrics must be 0 or 1"), "{e}");
        let pools = |v: &str| BackendState::from_config(&json!({"cmdline": {"thread-pools": v}}), None);
        assert_eq!(pools("per-session").unwrap().thread_pools, ThreadPools::PerSession);
        assert!(
            matches!(pools("shared").unwrap().thread_pools, ThreadPools::Shared { threads, inter_threads: 1 } if threads >= 1)
        );
        assert!(matches!(
            BackendState::from_config(&json!({}), None).unwrap().thread_pools,
            ThreadPools::Shared { .. }
        ));
        assert!(pools("global").unwrap_err().message().contains("'shared' or 'per-session'"));
        // The official backend's keys.
        let official = |c: serde_json::Value| BackendConfig::parse(&json!({ "cmdline": c })).map(|b| b.thread_pools);
        assert_eq!(official(json!({"enable-global-threadpool": "0"})).unwrap(), ThreadPools::PerSession);
        assert_eq!(
            official(
                json!({"enable-global-threadpool": "1", "intra_op_thread_count": "3", "inter_op_thread_count": "2"})
            )
            .unwrap(),
            ThreadPools::Shared { threads: 3, inter_threads: 2 }
        );
        assert!(matches!(
            official(json!({"intra_op_thread_count": "0"})).unwrap(),
            ThreadPools::Shared { threads, inter_threads: 1 } if threads == crate::cpu::available_cpus()
        ));
        // Per-session pools have no shared sizes: the counts are accepted and have no effect, as
        // with the official backend when its global pool is off.
        assert_eq!(
            official(json!({"enable-global-threadpool": "0", "intra_op_thread_count": "3"})).unwrap(),
            ThreadPools::PerSession
        );
        assert_eq!(
            official(json!({"thread-pools": "shared", "enable-global-threadpool": "1"})).unwrap(),
            ThreadPools::Shared { threads: crate::cpu::available_cpus(), inter_threads: 1 }
        );
        let e = official(json!({"thread-pools": "shared", "enable-global-threadpool": "0"})).unwrap_err();
        assert!(e.message().contains("thread-pools=shared contradicts enable-global-threadpool=0"), "{e}");
        let e = official(json!({"intra_op_thread_count": "many"})).unwrap_err();
        assert!(e.message().contains("intra_op_thread_count must be a thread count, got 'many'"), "{e}");
    }

    #[test]
    fn shared_arena_settings() {
        let parse = |c: serde_json::Value| BackendConfig::parse(&json!({ "cmdline": c })).map(|b| b.shared_arena);
        assert_eq!(parse(json!({})).unwrap(), None);
        assert_eq!(parse(json!({"shared-arena": "0"})).unwrap(), None);
        assert_eq!(parse(json!({"shared-arena": "1"})).unwrap(), Some(SharedArenaConfig { max_bytes: None }));
        let capped = Some(SharedArenaConfig { max_bytes: Some(1 << 20) });
        assert_eq!(parse(json!({"shared-arena-max-bytes": " 1048576"})).unwrap(), capped);
        assert_eq!(parse(json!({"shared-arena": "true", "shared-arena-max-bytes": "1048576"})).unwrap(), capped);
        for (c, want) in [
            (json!({"shared-arena": "yes"}), "shared-arena must be 0 or 1"),
            (json!({"shared-arena-max-bytes": "0"}), "must be a positive byte count, got '0'"),
            (json!({"shared-arena-max-bytes": "1G"}), "must be a positive byte count, got '1G'"),
            (json!({"shared-arena": "0", "shared-arena-max-bytes": "1024"}), "shared-arena=0 turns it off"),
        ] {
            let e = parse(c.clone()).unwrap_err();
            assert!(e.message().contains(want), "{c}: {e}");
        }
    }
}

//! Loading the ONNX Runtime library and its one process-wide environment.
//!
//! `ort` is built with `load-dynamic`: nothing links libonnxruntime, we `dlopen` the file the user
//! names (`--backend-config=onnxrs,ort-library=PATH`) or the one installed beside our own library.
//! ONNX Runtime allows one environment per process, so it is created once and kept until the
//! library is unloaded.

use std::path::{Path, PathBuf};

use once_cell::sync::OnceCell;
use ort::environment::Environment;

use crate::error::{Error, Result};

/// The library file names we look for in a directory, most specific first.
const LIBRARY_NAME: &str = "libonnxruntime.so";

static RUNTIME: OnceCell<Runtime> = OnceCell::new();

/// The loaded library and its environment.
pub struct Runtime {
    pub library: PathBuf,
    pub version: String,
    pub environment: Environment,
    /// How the environment's sessions get their threads.
    pub thread_pools: ThreadPools,
}

/// Where sessions' operator threads come from (`--backend-config=onnxrs,thread-pools=...`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ThreadPools {
    /// One intra-op pool of `threads` threads for the whole process, used by every session that
    /// does not ask for thread counts of its own. Several models and instances then never start
    /// more operator threads than the process has CPUs; each session's own pool would spin
    /// `threads` threads of its own (N sessions × CPUs).
    Shared { threads: usize },
    /// Every session has pools of its own (ONNX Runtime's and the official backend's way).
    PerSession,
}

/// Picks the library file: the explicit path if given (it must exist), else `libonnxruntime.so`
/// or the highest `libonnxruntime.so.X.Y.Z` in `dir`.
pub fn resolve_library(explicit: Option<&Path>, dir: Option<&Path>) -> Result<PathBuf> {
    if let Some(p) = explicit {
        return if p.is_file() {
            Ok(p.to_path_buf())
        } else {
            Err(Error::not_found(format!("ort-library '{}' does not exist or is not a file", p.display())))
        };
    }
    let searched = dir.map_or_else(|| "(unknown)".to_string(), |d| d.display().to_string());
    let not_found = || {
        Error::not_found(format!(
            "ONNX Runtime library not found: no {LIBRARY_NAME}* in the backend directory {searched}; \
             install it beside libtriton_onnxrs.so or pass --backend-config=onnxrs,ort-library=/path/to/libonnxruntime.so"
        ))
    };
    let dir = dir.ok_or_else(not_found)?;
    let exact = dir.join(LIBRARY_NAME);
    if exact.is_file() {
        return Ok(exact);
    }
    let entries = std::fs::read_dir(dir).map_err(|_| not_found())?;
    let mut versioned: Vec<(Vec<u64>, PathBuf)> = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let suffix = name.strip_prefix(LIBRARY_NAME)?.strip_prefix('.')?.to_string();
            let version: Option<Vec<u64>> = suffix.split('.').map(|p| p.parse().ok()).collect();
            Some((version?, e.path()))
        })
        .collect();
    versioned.sort();
    versioned.pop().map(|(_, p)| p).ok_or_else(not_found)
}

/// Loads the library at `path` and creates the environment (sessions with pools of their own),
/// once per process; see `init_with`.
pub fn init(path: &Path) -> Result<&'static Runtime> {
    init_with(path, ThreadPools::PerSession)
}

/// Loads the library at `path` and creates the environment with `thread_pools`, once per
/// process. Later calls return the same runtime; a different path then is reported, since a
/// process can hold only one.
pub fn init_with(path: &Path, thread_pools: ThreadPools) -> Result<&'static Runtime> {
    let rt = RUNTIME.get_or_try_init(|| {
        let mut builder = ort::init_from(path)
            .map_err(|e| Error::unavailable(format!("cannot load ONNX Runtime from '{}': {e}", path.display())))?
            .with_name("onnxrs");
        if let ThreadPools::Shared { threads } = thread_pools {
            // Inter-op threads serve only parallel execution mode, whose sessions keep pools of
            // their own (`config::params`): one is enough here.
            let options = ort::environment::GlobalThreadPoolOptions::default()
                .with_intra_threads(threads)?
                .with_inter_threads(1)?;
            builder = builder.with_global_thread_pool(options);
        }
        let environment = builder.build()?;
        let rt = Runtime { library: path.to_path_buf(), version: version_string(), environment, thread_pools };
        // Here, not in the callers: models load in parallel, and this runs once.
        log::info!(
            "onnxrs: loaded ONNX Runtime from {} ({}); operator threads: {:?}",
            rt.library.display(),
            rt.version,
            rt.thread_pools
        );
        Ok::<_, Error>(rt)
    })?;
    if rt.library != path {
        log::warn!(
            "onnxrs: ONNX Runtime is already loaded from '{}'; ignoring '{}' (one library per process)",
            rt.library.display(),
            path.display()
        );
    }
    Ok(rt)
}

/// The runtime, if `init` has succeeded.
pub fn get() -> Option<&'static Runtime> {
    RUNTIME.get()
}

/// ONNX Runtime's own build line ("ORT Build Info: git-branch=rel-1.31.1, ..."), for the load log.
fn version_string() -> String {
    ort::info().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolve_prefers_plain_name_then_highest_version() {
        let dir = std::env::temp_dir().join(format!("onnxrs-resolve-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        for v in ["1.9.0", "1.31.1", "1.4.2"] {
            std::fs::write(dir.join(format!("libonnxruntime.so.{v}")), b"").unwrap();
        }
        std::fs::write(dir.join("libonnxruntime_providers_shared.so"), b"").unwrap();
        assert_eq!(resolve_library(None, Some(&dir)).unwrap(), dir.join("libonnxruntime.so.1.31.1"));
        std::fs::write(dir.join("libonnxruntime.so"), b"").unwrap();
        assert_eq!(resolve_library(None, Some(&dir)).unwrap(), dir.join("libonnxruntime.so"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn resolve_errors_name_the_fix() {
        let e = resolve_library(None, Some(Path::new("/nonexistent-dir"))).unwrap_err();
        assert!(e.message().contains("ort-library"), "{e}");
        let e = resolve_library(Some(Path::new("/nonexistent/libonnxruntime.so")), None).unwrap_err();
        assert!(e.message().contains("does not exist"), "{e}");
    }
}

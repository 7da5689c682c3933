//! Loading the ONNX Runtime library and the process's one environment.
//!
//! `ort` is built with `load-dynamic`: nothing links libonnxruntime, we `dlopen` the file the user
//! names (`--backend-config=onnxrs,ort-library=PATH`) or the one installed beside our own library.
//! The library stays loaded for the life of the process. The environment does not: ONNX Runtime
//! allows one per process, so it is made once, kept in `CURRENT`, and given back by `release` when
//! the backend is finalized. Every session holds the runtime it was built on (an `Arc`), so the
//! environment (and with it the shared thread pool and the shared arena) is released when the last
//! of them goes: no ONNX Runtime thread outlives `TRITONBACKEND_Finalize`, and none is left
//! running while the process's static destructors run at exit. A backend initialized again in the
//! same process makes a new environment.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use once_cell::sync::OnceCell;

use crate::error::{Error, Result};
use crate::onnx::arena::SharedArena;
use crate::onnx::env::Env;

/// The library file names we look for in a directory, most specific first.
const LIBRARY_NAME: &str = "libonnxruntime.so";

/// The runtime sessions are built on now; `None` before the first load and after `release`.
static CURRENT: Mutex<Option<Arc<Runtime>>> = Mutex::new(None);

/// The loaded library and its environment.
pub struct Runtime {
    pub library: PathBuf,
    pub version: String,
    pub environment: Env,
    /// How the environment's sessions get their threads.
    pub thread_pools: ThreadPools,
    /// The CPU arena registered on this environment for every session, once asked for.
    pub(crate) shared_arena: OnceCell<SharedArena>,
}

/// Where sessions' operator threads come from (`--backend-config=onnxrs,thread-pools=...`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ThreadPools {
    /// One intra-op pool of `threads` threads for the whole process, used by every session that
    /// does not ask for thread counts of its own. Several models and instances then never start
    /// more operator threads than the process has CPUs; each session's own pool would spin
    /// `threads` threads of its own (N sessions × CPUs).
    /// `inter_threads`: the process-wide inter-op pool (1 unless the official backend's
    /// `inter_op_thread_count` asks for more).
    Shared { threads: usize, inter_threads: usize },
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
             install it beside libtriton_{name}.so or pass --backend-config={name},ort-library=/path/to/libonnxruntime.so",
            name = crate::backend::name()
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
/// unless one exists; see `init_with`.
pub fn init(path: &Path) -> Result<Arc<Runtime>> {
    init_with(path, ThreadPools::PerSession)
}

/// Loads the library at `path` (once per process) and creates the environment with
/// `thread_pools`, unless one exists: then it is returned as it is, and a different path is
/// reported, since a process can hold only one library.
pub fn init_with(path: &Path, thread_pools: ThreadPools) -> Result<Arc<Runtime>> {
    let mut current = CURRENT.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(rt) = current.as_ref() {
        if rt.library != path {
            log::warn!(
                "onnxrs: ONNX Runtime is already loaded from '{}'; ignoring '{}' (one library per process)",
                rt.library.display(),
                path.display()
            );
        }
        return Ok(Arc::clone(rt));
    }
    // Loads the library the first time; later calls (after a `release`) find it loaded.
    ort::init_from(path)
        .map_err(|e| Error::unavailable(format!("cannot load ONNX Runtime from '{}': {e}", path.display())))?;
    let threads = match thread_pools {
        ThreadPools::Shared { threads, inter_threads } => Some((threads, inter_threads)),
        ThreadPools::PerSession => None,
    };
    let environment = Env::new("onnxrs", threads)?;
    let rt = Arc::new(Runtime {
        library: path.to_path_buf(),
        version: version_string(),
        environment,
        thread_pools,
        shared_arena: OnceCell::new(),
    });
    // Here, not in the callers: models load in parallel, and this runs once per environment.
    log::info!(
        "onnxrs: loaded ONNX Runtime from {} ({}); operator threads: {:?}",
        rt.library.display(),
        rt.version,
        rt.thread_pools
    );
    *current = Some(Arc::clone(&rt));
    Ok(rt)
}

/// The runtime, if one is loaded.
pub fn get() -> Option<Arc<Runtime>> {
    CURRENT.lock().unwrap_or_else(PoisonError::into_inner).clone()
}

/// Gives back the runtime (at `TRITONBACKEND_Finalize`): the environment is released now if no
/// session holds it, else when the last one goes. Returns how many holders it still has besides
/// the caller's hands (0 when the environment was released here).
pub fn release() -> usize {
    let taken = CURRENT.lock().unwrap_or_else(PoisonError::into_inner).take();
    match taken {
        None => 0,
        Some(rt) => {
            let others = Arc::strong_count(&rt) - 1;
            drop(rt);
            others
        }
    }
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

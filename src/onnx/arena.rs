//! One CPU arena for every session (`--backend-config=onnxrs,shared-arena=1`), optionally capped
//! (`shared-arena-max-bytes=N`).
//!
//! By default each session has its own CPU arena, grown to the peak of the runs it served and kept:
//! N instances of dynamic-shape models hold N peaks. Registered here once on the environment
//! (`CreateAndRegisterAllocator` with an `OrtArenaCfg`), one arena serves every session built
//! with `session.use_env_allocators=1`, so they hold one peak between them: the largest set of
//! runs that were in flight together. Its `max_mem` is the only way ONNX Runtime offers to bound a
//! CPU arena; a run that would take it past the cap fails, and `exhausted` turns that failure into
//! an error that names the cap, for that request alone.

use ort::AsPointer;
use ort::memory::{AllocationDevice, AllocatorType, MemoryInfo, MemoryType};

use crate::error::{Error, Result};
use crate::onnx::runtime::Runtime;
use crate::onnx::session::SessionSettings;

/// The session config entry that makes a session allocate from the environment's arena.
pub const USE_ENV_ALLOCATORS: &str = "session.use_env_allocators";

/// What was registered, once per environment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SharedArena {
    /// `max_mem`: the most the arena may take from the system; `None` for no cap.
    pub max_bytes: Option<u64>,
}

fn cpu_arena_info() -> Result<MemoryInfo<'static>> {
    Ok(MemoryInfo::new(AllocationDevice::CPU, 0, AllocatorType::Arena, MemoryType::Default)?)
}

/// Registers the shared CPU arena on `runtime`'s environment, once per environment; later calls
/// return what was registered. It goes with the environment (`runtime::release`).
pub fn register(runtime: &Runtime, max_bytes: Option<u64>) -> Result<SharedArena> {
    let arena = *runtime.shared_arena.get_or_try_init(|| {
        let max_mem = usize::try_from(max_bytes.unwrap_or(0))
            .map_err(|_| Error::invalid_arg("shared-arena-max-bytes does not fit this machine's size_t"))?;
        let info = cpu_arena_info()?;
        // `max_mem` 0 is ONNX Runtime's "no limit"; the other keys keep their defaults (-1).
        let keys = [c"max_mem".as_ptr()];
        let values = [max_mem];
        let mut cfg = std::ptr::null_mut();
        // SAFETY: one key and one value, both arrays live across the call; on success we own `cfg`.
        let status = unsafe { (ort::api().CreateArenaCfgV2)(keys.as_ptr(), values.as_ptr(), 1, &mut cfg) };
        // SAFETY: the status of the call above, consumed once.
        unsafe { ort::Error::result_from_status(status)? };
        // SAFETY: the environment is live (`runtime` owns it); `info` and `cfg` are live. ONNX Runtime copies what it needs from both, so `cfg` is released below.
        // This runs once, before any session asks for the environment's allocators.
        let status = unsafe { (ort::api().CreateAndRegisterAllocator)(runtime.environment.ptr(), info.ptr(), cfg) };
        // SAFETY: `cfg` was created above and is not used again.
        unsafe { (ort::api().ReleaseArenaCfg)(cfg) };
        // SAFETY: the status of the registration, consumed once.
        unsafe { ort::Error::result_from_status(status) }
            .map_err(|e| Error::unavailable(format!("cannot register the shared CPU arena: {e}")))?;
        let cap = max_bytes.map_or_else(|| "no cap".to_string(), |b| format!("capped at {b} bytes"));
        log::info!("onnxrs: one shared CPU arena for the sessions of every model ({cap})");
        Ok::<_, Error>(SharedArena { max_bytes })
    })?;
    if arena.max_bytes != max_bytes {
        log::warn!("onnxrs: the shared CPU arena is already registered ({arena:?}); keeping it");
    }
    Ok(arena)
}

/// Whether sessions built on `runtime` with `settings` allocate from the shared arena.
pub fn uses_shared(runtime: &Runtime, settings: &SessionSettings) -> bool {
    registered(runtime).is_some() && settings.config_entries.iter().any(|(k, v)| k == USE_ENV_ALLOCATORS && v == "1")
}

/// The shared arena registered on `runtime`'s environment, if any.
pub fn registered(runtime: &Runtime) -> Option<SharedArena> {
    runtime.shared_arena.get().copied()
}

/// Refuses a session whose arrival put the shared arena past its cap (`held` bytes, read right
/// after the session was created). Weights go into the arena outside its cap check (ONNX
/// Runtime's `Reserve`), and once the arena holds more than `max_mem` its check of a run's
/// allocation wraps around and lets everything through: a cap that no longer holds is refused
/// here rather than left to be silently ignored.
pub fn check_cap(held: u64, max_bytes: Option<u64>) -> Result<()> {
    match max_bytes {
        Some(cap) if held > cap => Err(Error::unavailable(format!(
            "the shared CPU arena holds {held} bytes with this session's weights, more than its cap \
             (--backend-config={name},shared-arena-max-bytes={cap}); the weights of every session on it count \
             against the cap: raise it, or keep this model on its own arena with the parameter \
             memory.shared_arena: \"0\"",
            name = crate::backend::name()
        ))),
        _ => Ok(()),
    }
}

/// A run's failure as the request's error when it is ONNX Runtime's arena refusing memory:
/// UNAVAILABLE ("resource exhausted"), naming the cap when one is set, since that is the setting
/// to change. `None` for any other failure.
pub fn exhausted(ort_message: &str, max_bytes: Option<u64>) -> Option<Error> {
    const SIGNS: [&str; 3] = ["Failed to allocate memory", "Available memory of", "is smaller than requested bytes"];
    if !SIGNS.iter().any(|s| ort_message.contains(s)) {
        return None;
    }
    let what = match max_bytes {
        Some(cap) => format!(
            "the run needs more memory than the shared CPU arena's cap leaves free \
             (--backend-config={name},shared-arena-max-bytes={cap}); other requests are unaffected",
            name = crate::backend::name()
        ),
        None => "ONNX Runtime could not allocate the memory the run needs".to_string(),
    };
    Some(Error::unavailable(format!("resource exhausted: {what}: {ort_message}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;

    #[test]
    fn weights_past_the_cap_are_refused() {
        assert!(check_cap(1 << 20, Some(1 << 20)).is_ok());
        assert!(check_cap(u64::MAX, None).is_ok());
        let e = check_cap((1 << 20) + 1, Some(1 << 20)).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Unavailable);
        assert!(e.message().contains("holds 1048577 bytes"), "{e}");
        assert!(e.message().contains("shared-arena-max-bytes=1048576"), "{e}");
        assert!(e.message().contains("memory.shared_arena: \"0\""), "{e}");
    }

    #[test]
    fn exhaustion_names_the_cap() {
        let ort = "onnxruntime run failed: Non-zero status code returned while running MatMul node. \
                   Name:'' Status Message: Available memory of 8126464 is smaller than requested bytes of 16777216";
        let e = exhausted(ort, Some(8 << 20)).unwrap();
        assert_eq!(e.kind(), ErrorKind::Unavailable);
        assert!(e.message().starts_with("resource exhausted: "), "{e}");
        assert!(e.message().contains("shared-arena-max-bytes=8388608"), "{e}");
        assert!(e.message().ends_with("requested bytes of 16777216"), "{e}");
        let e = exhausted("Failed to allocate memory for requested buffer of size 1024", None).unwrap();
        assert!(e.message().contains("could not allocate") && !e.message().contains("max-bytes"), "{e}");
        assert!(exhausted("Got invalid dimensions for input: X", Some(1)).is_none());
    }
}

//! The one guard every entry point goes through: a panic never crosses into the server (since Rust
//! 1.81 it would abort the whole tritonserver process); it becomes an INTERNAL error instead.

use std::any::Any;
use std::panic::{AssertUnwindSafe, catch_unwind};

use crate::error::{Error, Result};
use crate::sys;
use crate::triton::error::into_raw;

/// Runs `f` and turns its outcome into what a TRITONBACKEND_* function returns.
pub(crate) fn entry(name: &str, f: impl FnOnce() -> Result<()>) -> *mut sys::TRITONSERVER_Error {
    into_raw(catch(name, f).and_then(|r| r))
}

/// Runs `f`, turning a panic into an error that names where it happened.
pub(crate) fn catch<T>(name: &str, f: impl FnOnce() -> T) -> Result<T> {
    // AssertUnwindSafe: after a panic we only report it; no state touched by `f` is used again
    // unless it is designed to survive (request slots answer and release themselves on drop).
    catch_unwind(AssertUnwindSafe(f)).map_err(|payload| {
        let e = Error::internal(format!("onnxrs: panic in {name}: {}", panic_message(&*payload)));
        log::error!("{e}");
        e
    })
}

fn panic_message(payload: &(dyn Any + Send)) -> &str {
    if let Some(s) = payload.downcast_ref::<&str>() {
        s
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s
    } else {
        "(non-string panic payload)"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn panic_becomes_error() {
        let e = catch("test", || -> u32 { panic!("boom {}", 1) }).unwrap_err();
        assert_eq!(e.message(), "onnxrs: panic in test: boom 1");
        assert_eq!(catch("test", || 5).unwrap(), 5);
    }
}

//! Routes the `log` crate into Triton's log, so that `--log-verbose`, `--log-info`,
//! `--log-format` and `--log-file` govern our lines like the server's own.

use std::ffi::CString;

use crate::sys;
use crate::triton::error::{c_string, check_server_error};

struct TritonLogger;

static LOGGER: TritonLogger = TritonLogger;

fn level_of(level: log::Level) -> sys::TRITONSERVER_LogLevel {
    use sys::TRITONSERVER_LogLevel as L;
    match level {
        log::Level::Error => L::TRITONSERVER_LOG_ERROR,
        log::Level::Warn => L::TRITONSERVER_LOG_WARN,
        log::Level::Info => L::TRITONSERVER_LOG_INFO,
        // Triton has one verbose level for the backend API; debug and trace both map to it.
        log::Level::Debug | log::Level::Trace => L::TRITONSERVER_LOG_VERBOSE,
    }
}

impl log::Log for TritonLogger {
    fn enabled(&self, metadata: &log::Metadata) -> bool {
        // SAFETY: a pure query of the server's log settings.
        unsafe { sys::TRITONSERVER_LogIsEnabled(level_of(metadata.level())) }
    }

    fn log(&self, record: &log::Record) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let file = CString::new(record.file().unwrap_or("onnxrs")).unwrap_or_default();
        let line = record.line().and_then(|l| i32::try_from(l).ok()).unwrap_or(0);
        let msg = c_string(&record.args().to_string());
        // SAFETY: both strings are NUL-terminated and outlive the call, which copies them.
        let r = unsafe {
            check_server_error(sys::TRITONSERVER_LogMessage(
                level_of(record.level()),
                file.as_ptr(),
                line,
                msg.as_ptr(),
            ))
        };
        // Nowhere else to report a failure to log.
        drop(r);
    }

    fn flush(&self) {}
}

/// Installs the logger once per load of the library; a second call is harmless.
pub(crate) fn install() {
    if log::set_logger(&LOGGER).is_ok() {
        log::set_max_level(log::LevelFilter::Trace);
    }
}

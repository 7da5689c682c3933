//! The backend's error type: a Triton error code and a message, free of any FFI.
//!
//! Everything below the entry points returns this type; `crate::triton::error` turns it into a
//! `TRITONSERVER_Error` at the boundary, and turns a server error back into it.

use std::fmt::Display;

/// The error codes Triton knows (`TRITONSERVER_Error_Code`), so a client sees the right status:
/// `InvalidArg` becomes HTTP 400 / gRPC INVALID_ARGUMENT, `Internal` 500 / INTERNAL, and so on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    Unknown,
    Internal,
    NotFound,
    InvalidArg,
    Unavailable,
    Unsupported,
    AlreadyExists,
    Cancelled,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct Error {
    kind: ErrorKind,
    message: String,
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Error { kind, message: message.into() }
    }

    pub fn invalid_arg(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::InvalidArg, message)
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Internal, message)
    }

    pub fn unsupported(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Unsupported, message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::NotFound, message)
    }

    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Unavailable, message)
    }

    pub fn cancelled(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Cancelled, message)
    }

    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    pub fn message(&self) -> &str {
        &self.message
    }

    /// Prefixes the message with where it happened, keeping the code.
    pub fn context(self, what: impl Display) -> Self {
        Error { kind: self.kind, message: format!("{what}: {}", self.message) }
    }
}

/// Adds context to any `Result` whose error converts into ours.
pub trait ResultExt<T> {
    fn context(self, what: impl Display) -> Result<T>;
}

impl<T, E: Into<Error>> ResultExt<T> for std::result::Result<T, E> {
    fn context(self, what: impl Display) -> Result<T> {
        self.map_err(|e| e.into().context(what))
    }
}

//! Safe handles over the Triton objects the backend touches.
//!
//! This layer and `crate::entry` are the only code that calls `crate::sys`. Handles are `Copy`
//! wrappers of a non-null pointer with the lifetime of the call that lent it to us; owners
//! (`OwnedRequest`, `Response`, `Message`, `ServerError`) release what they hold on drop.

pub(crate) mod backend;
pub(crate) mod error;
pub(crate) mod factory;
pub(crate) mod guard;
pub(crate) mod instance;
pub(crate) mod log;
pub(crate) mod memory;
pub(crate) mod message;
pub(crate) mod metrics;
pub(crate) mod model;
pub(crate) mod request;
pub(crate) mod response;
pub(crate) mod sequence_state;
pub(crate) mod state;

use std::ffi::{CStr, c_char};

use crate::dtype::DataType;
use crate::error::{Error, Result};
use crate::sys;

pub(crate) use backend::Backend;
pub(crate) use instance::Instance;
pub(crate) use model::Model;
pub(crate) use request::{OwnedRequest, Request};
pub(crate) use response::Response;

/// Where a buffer lives, as Triton says it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemoryType {
    Cpu,
    CpuPinned,
    Gpu,
}

impl MemoryType {
    pub(crate) fn to_sys(self) -> sys::TRITONSERVER_MemoryType {
        use sys::TRITONSERVER_MemoryType as M;
        match self {
            MemoryType::Cpu => M::TRITONSERVER_MEMORY_CPU,
            MemoryType::CpuPinned => M::TRITONSERVER_MEMORY_CPU_PINNED,
            MemoryType::Gpu => M::TRITONSERVER_MEMORY_GPU,
        }
    }

    pub(crate) fn from_sys(m: sys::TRITONSERVER_MemoryType) -> Result<Self> {
        use sys::TRITONSERVER_MemoryType as M;
        match m {
            M::TRITONSERVER_MEMORY_CPU => Ok(MemoryType::Cpu),
            M::TRITONSERVER_MEMORY_CPU_PINNED => Ok(MemoryType::CpuPinned),
            M::TRITONSERVER_MEMORY_GPU => Ok(MemoryType::Gpu),
            other => Err(Error::internal(format!("unknown memory type {}", other.0))),
        }
    }

    /// Whether the CPU can read and write it directly.
    pub fn is_host(self) -> bool {
        !matches!(self, MemoryType::Gpu)
    }
}

/// The kind of an instance group, as resolved by Triton (AUTO never reaches a backend instance).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InstanceKind {
    Cpu,
    Gpu,
    Model,
}

pub(crate) fn data_type_to_sys(t: DataType) -> sys::TRITONSERVER_DataType {
    use sys::TRITONSERVER_DataType as D;
    match t {
        DataType::Bool => D::TRITONSERVER_TYPE_BOOL,
        DataType::Uint8 => D::TRITONSERVER_TYPE_UINT8,
        DataType::Uint16 => D::TRITONSERVER_TYPE_UINT16,
        DataType::Uint32 => D::TRITONSERVER_TYPE_UINT32,
        DataType::Uint64 => D::TRITONSERVER_TYPE_UINT64,
        DataType::Int8 => D::TRITONSERVER_TYPE_INT8,
        DataType::Int16 => D::TRITONSERVER_TYPE_INT16,
        DataType::Int32 => D::TRITONSERVER_TYPE_INT32,
        DataType::Int64 => D::TRITONSERVER_TYPE_INT64,
        DataType::Fp16 => D::TRITONSERVER_TYPE_FP16,
        DataType::Fp32 => D::TRITONSERVER_TYPE_FP32,
        DataType::Fp64 => D::TRITONSERVER_TYPE_FP64,
        DataType::Bytes => D::TRITONSERVER_TYPE_BYTES,
        DataType::Bf16 => D::TRITONSERVER_TYPE_BF16,
    }
}

/// `None` for INVALID or a value this build does not know.
pub(crate) fn data_type_from_sys(t: sys::TRITONSERVER_DataType) -> Option<DataType> {
    crate::dtype::ALL.into_iter().find(|d| data_type_to_sys(*d) == t)
}

/// Borrows a C string the server owns for at least `'a`.
///
/// # Safety
/// `p` is null or a NUL-terminated string that stays valid and unchanged for `'a`.
pub(crate) unsafe fn borrowed_str<'a>(p: *const c_char, what: &str) -> Result<&'a str> {
    if p.is_null() {
        return Err(Error::internal(format!("server returned a null {what}")));
    }
    // SAFETY: non-null, NUL-terminated and valid for 'a (caller's contract).
    unsafe { CStr::from_ptr(p) }.to_str().map_err(|_| Error::invalid_arg(format!("{what} is not valid UTF-8")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_types_round_trip_through_sys() {
        for t in crate::dtype::ALL {
            assert_eq!(data_type_from_sys(data_type_to_sys(t)), Some(t));
        }
        assert_eq!(data_type_from_sys(sys::TRITONSERVER_DataType::TRITONSERVER_TYPE_INVALID), None);
        assert_eq!(data_type_from_sys(sys::TRITONSERVER_DataType(99)), None);
    }
}

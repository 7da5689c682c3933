//! Memory usage reports (TRITONBACKEND_Model/ModelInstanceReportMemoryUsage): a list of
//! (memory type, device, bytes) that the server shows as `memory_usage` in the statistics.

use std::ptr::{self, NonNull};

use crate::error::Result;
use crate::sys;
use crate::triton::MemoryType;
use crate::triton::error::check_server_error;

/// Bytes held in one kind of memory on one device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryUsage {
    pub memory_type: MemoryType,
    pub device: i64,
    pub bytes: u64,
}

/// Owned buffer-attributes objects, deleted on drop, built from usages for one report call.
pub(crate) struct UsageList(Vec<NonNull<sys::TRITONSERVER_BufferAttributes>>);

impl UsageList {
    pub(crate) fn new(usages: &[MemoryUsage]) -> Result<Self> {
        let mut list = UsageList(Vec::with_capacity(usages.len()));
        for u in usages {
            let mut raw = ptr::null_mut();
            // SAFETY: creates a new object that we own.
            unsafe { check_server_error(sys::TRITONSERVER_BufferAttributesNew(&mut raw))? };
            let Some(attr) = NonNull::new(raw) else {
                continue;
            };
            list.0.push(attr);
            // SAFETY: `attr` is a live object we own.
            unsafe {
                check_server_error(sys::TRITONSERVER_BufferAttributesSetMemoryType(
                    attr.as_ptr(),
                    u.memory_type.to_sys(),
                ))?
            };
            // SAFETY: as above.
            unsafe { check_server_error(sys::TRITONSERVER_BufferAttributesSetMemoryTypeId(attr.as_ptr(), u.device))? };
            let bytes = usize::try_from(u.bytes).unwrap_or(usize::MAX);
            // SAFETY: as above.
            unsafe { check_server_error(sys::TRITONSERVER_BufferAttributesSetByteSize(attr.as_ptr(), bytes))? };
        }
        Ok(list)
    }

    /// The array the report functions take; valid while `self` lives.
    pub(crate) fn as_mut_ptrs(&mut self) -> (Vec<*mut sys::TRITONSERVER_BufferAttributes>, u32) {
        let ptrs: Vec<_> = self.0.iter().map(|p| p.as_ptr()).collect();
        let n = u32::try_from(ptrs.len()).unwrap_or(u32::MAX);
        (ptrs, n)
    }
}

impl Drop for UsageList {
    fn drop(&mut self) {
        for attr in &self.0 {
            // SAFETY: each object was created by us and not handed over (the report call copies).
            let _ = unsafe { check_server_error(sys::TRITONSERVER_BufferAttributesDelete(attr.as_ptr())) };
        }
    }
}

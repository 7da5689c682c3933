//! TRITONBACKEND_ModelInstance: one copy of a model on one device, and the statistics it reports.

use std::ffi::{c_char, c_void};
use std::marker::PhantomData;
use std::ptr::{self, NonNull};

use crate::error::{Error, Result};
use crate::sys;
use crate::triton::error::{ServerError, check_server_error};
use crate::triton::factory::ResponseFactory;
use crate::triton::memory::{MemoryUsage, UsageList};
use crate::triton::model::Model;
use crate::triton::request::Request;
use crate::triton::state::StateHolder;
use crate::triton::{InstanceKind, borrowed_str};

/// The four timestamps Triton derives a request's compute_input / compute_infer / compute_output
/// from: input = compute_start - exec_start, infer = compute_end - compute_start, output =
/// exec_end - compute_end. All on CLOCK_MONOTONIC (see `crate::clock`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Timestamps {
    pub exec_start: u64,
    pub compute_start: u64,
    pub compute_end: u64,
    pub exec_end: u64,
}

/// The times of one response of a stream (`/stats` `response_stats`): its compute began at
/// `start`, its output at `output_start`, and it was sent by `end`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ResponseTimes {
    pub start: u64,
    pub output_start: u64,
    pub end: u64,
}

/// An instance that a thread of ours other than the server's may report on: a decoupled model's
/// generation loop, joined before the instance is finalized.
pub(crate) struct InstanceHandle(NonNull<sys::TRITONBACKEND_ModelInstance>);

// SAFETY: the server's instance calls (statistics) are thread-safe; `InstanceHandle::new`'s
// contract keeps the object alive while the handle is.
unsafe impl Send for InstanceHandle {}

impl InstanceHandle {
    /// # Safety
    /// The handle (and every `Instance` it gives) is dropped before the instance's
    /// `TRITONBACKEND_ModelInstanceFinalize` returns.
    pub(crate) unsafe fn new(instance: Instance<'_>) -> Self {
        InstanceHandle(instance.raw)
    }

    pub(crate) fn get(&self) -> Instance<'_> {
        Instance { raw: self.0, _life: PhantomData }
    }
}

#[derive(Clone, Copy)]
pub(crate) struct Instance<'a> {
    raw: NonNull<sys::TRITONBACKEND_ModelInstance>,
    _life: PhantomData<&'a ()>,
}

impl<'a> Instance<'a> {
    /// # Safety
    /// `raw` is an instance object the server keeps alive for `'a`.
    pub(crate) unsafe fn from_raw(raw: *mut sys::TRITONBACKEND_ModelInstance) -> Result<Self> {
        let raw = NonNull::new(raw).ok_or_else(|| Error::internal("null model instance"))?;
        Ok(Instance { raw, _life: PhantomData })
    }

    fn ptr(&self) -> *mut sys::TRITONBACKEND_ModelInstance {
        self.raw.as_ptr()
    }

    pub(crate) fn name(&self) -> Result<&'a str> {
        let mut p: *const c_char = ptr::null();
        // SAFETY: live instance; the name is owned by it.
        unsafe { check_server_error(sys::TRITONBACKEND_ModelInstanceName(self.ptr(), &mut p))? };
        // SAFETY: as above.
        unsafe { borrowed_str(p, "instance name") }
    }

    pub(crate) fn kind(&self) -> Result<InstanceKind> {
        use sys::TRITONSERVER_InstanceGroupKind as K;
        let mut k = K::TRITONSERVER_INSTANCEGROUPKIND_AUTO;
        // SAFETY: live instance.
        unsafe { check_server_error(sys::TRITONBACKEND_ModelInstanceKind(self.ptr(), &mut k))? };
        match k {
            K::TRITONSERVER_INSTANCEGROUPKIND_CPU => Ok(InstanceKind::Cpu),
            K::TRITONSERVER_INSTANCEGROUPKIND_GPU => Ok(InstanceKind::Gpu),
            K::TRITONSERVER_INSTANCEGROUPKIND_MODEL => Ok(InstanceKind::Model),
            other => Err(Error::unsupported(format!("instance group kind {} is not supported", other.0))),
        }
    }

    pub(crate) fn device_id(&self) -> Result<i32> {
        let mut d = 0i32;
        // SAFETY: live instance.
        unsafe { check_server_error(sys::TRITONBACKEND_ModelInstanceDeviceId(self.ptr(), &mut d))? };
        Ok(d)
    }

    pub(crate) fn model(&self) -> Result<Model<'a>> {
        let mut m = ptr::null_mut();
        // SAFETY: live instance; its model outlives it.
        unsafe { check_server_error(sys::TRITONBACKEND_ModelInstanceModel(self.ptr(), &mut m))? };
        // SAFETY: as above.
        unsafe { Model::from_raw(m) }
    }

    /// Replaces what the statistics show as this instance's memory.
    pub(crate) fn report_memory_usage(&self, usages: &[MemoryUsage]) -> Result<()> {
        let mut list = UsageList::new(usages)?;
        let (mut ptrs, n) = list.as_mut_ptrs();
        // SAFETY: live instance; `ptrs` holds `n` live attribute objects that the call only reads.
        unsafe {
            check_server_error(sys::TRITONBACKEND_ModelInstanceReportMemoryUsage(self.ptr(), ptrs.as_mut_ptr(), n))
        }
    }

    /// One request's outcome; must come before the request is released. For a failure the
    /// timestamps are ignored by the server.
    pub(crate) fn report_statistics(&self, request: Request<'_>, success: bool, t: Timestamps) -> Result<()> {
        // SAFETY: live instance and a request not yet released (the caller holds it).
        unsafe {
            check_server_error(sys::TRITONBACKEND_ModelInstanceReportStatistics(
                self.ptr(),
                request.ptr(),
                success,
                t.exec_start,
                t.compute_start,
                t.compute_end,
                t.exec_end,
            ))
        }
    }

    /// One response of a decoupled request's stream, sent through `factory`; with `error` the
    /// response failed.
    pub(crate) fn report_response_statistics(
        &self,
        factory: &ResponseFactory,
        t: ResponseTimes,
        error: Option<&Error>,
    ) -> Result<()> {
        let mut raw = ptr::null_mut();
        // SAFETY: on success we own `raw`, deleted below on every path.
        unsafe { check_server_error(sys::TRITONBACKEND_ModelInstanceResponseStatisticsNew(&mut raw))? };
        let err = match error {
            Some(e) => Some(ServerError::new(e).ok_or_else(|| Error::internal("cannot allocate an error"))?),
            None => None,
        };
        // SAFETY: `raw`, the instance and the factory are live; the statistics object only
        // refers to them during the report; the error stays ours and is deleted after.
        let result = unsafe {
            check_server_error(sys::TRITONBACKEND_ModelInstanceResponseStatisticsSetModelInstance(raw, self.ptr()))
                .and_then(|()| {
                    check_server_error(sys::TRITONBACKEND_ModelInstanceResponseStatisticsSetResponseFactory(
                        raw,
                        factory.ptr(),
                    ))
                })
                .and_then(|()| {
                    check_server_error(sys::TRITONBACKEND_ModelInstanceResponseStatisticsSetResponseStart(raw, t.start))
                })
                .and_then(|()| {
                    check_server_error(sys::TRITONBACKEND_ModelInstanceResponseStatisticsSetComputeOutputStart(
                        raw,
                        t.output_start,
                    ))
                })
                .and_then(|()| {
                    check_server_error(sys::TRITONBACKEND_ModelInstanceResponseStatisticsSetResponseEnd(raw, t.end))
                })
                .and_then(|()| match &err {
                    Some(e) => {
                        check_server_error(sys::TRITONBACKEND_ModelInstanceResponseStatisticsSetError(raw, e.as_ptr()))
                    }
                    None => Ok(()),
                })
                .and_then(|()| check_server_error(sys::TRITONBACKEND_ModelInstanceReportResponseStatistics(raw)))
        };
        // SAFETY: created above, not used again.
        let deleted = unsafe { check_server_error(sys::TRITONBACKEND_ModelInstanceResponseStatisticsDelete(raw)) };
        drop(err);
        result.and(deleted)
    }

    /// One model execution of `batch_size` items (the sum of the requests' batch sizes); the
    /// only source of the statistics' execution_count and batch_stats.
    pub(crate) fn report_batch_statistics(&self, batch_size: u64, t: Timestamps) -> Result<()> {
        // SAFETY: live instance.
        unsafe {
            check_server_error(sys::TRITONBACKEND_ModelInstanceReportBatchStatistics(
                self.ptr(),
                batch_size,
                t.exec_start,
                t.compute_start,
                t.compute_end,
                t.exec_end,
            ))
        }
    }
}

impl StateHolder for Instance<'_> {
    fn raw_state(&self) -> Result<*mut c_void> {
        let mut s = ptr::null_mut();
        // SAFETY: live instance.
        unsafe { check_server_error(sys::TRITONBACKEND_ModelInstanceState(self.ptr(), &mut s))? };
        Ok(s)
    }

    fn set_raw_state(&self, state: *mut c_void) -> Result<()> {
        // SAFETY: live instance; the server only stores the pointer.
        unsafe { check_server_error(sys::TRITONBACKEND_ModelInstanceSetState(self.ptr(), state)) }
    }
}

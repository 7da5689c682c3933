//! Custom metrics through Triton's metrics API: families and labelled metrics that the server
//! serves on its own `/metrics`, next to `nv_inference_*`. Both are owned and deleted on drop;
//! a metric must be dropped before its family (the owners in `crate::metrics` see to that).
//!
//! Creating and deleting a metric are serialized backend-wide (`LIFECYCLE`): the server's own
//! bookkeeping is not safe when a metric is created while another with the same labels is being
//! deleted, which is what two incarnations of one model do during a reload (SAFETY.md, "Load and
//! unload").

use std::ffi::c_void;
use std::ptr::{self, NonNull};
use std::sync::{Mutex, MutexGuard, PoisonError};

use crate::error::{Error, Result};
use crate::sys;
use crate::triton::error::{c_string, check_server_error};

/// Held around every `TRITONSERVER_MetricNew*` and `TRITONSERVER_MetricDelete`.
///
/// Why: in Triton 2.51 (`src/metric_family.cc`) `MetricFamily::Add` gets the prometheus child
/// for a label set (`Family::Add` returns the existing child for equal labels) *before* it takes
/// its `metric_mtx_` to count the reference, and `MetricFamily::Remove` drops the count to zero
/// under that lock but destroys the child *after* releasing it. A metric created between the two
/// points at a destroyed child: updating it writes to freed memory, deleting it frees it twice.
/// Only onnxrs creates metrics in onnxrs's families, so serializing our own calls closes the
/// window completely. Updates (increment/set/observe) need no lock: they touch a child that
/// cannot be destroyed while a metric of ours refers to it.
static LIFECYCLE: Mutex<()> = Mutex::new(());

fn lifecycle_lock() -> MutexGuard<'static, ()> {
    // The guarded data is `()`: a panic while holding it leaves nothing half-updated.
    LIFECYCLE.lock().unwrap_or_else(PoisonError::into_inner)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricKind {
    Counter,
    Gauge,
    Histogram,
}

pub(crate) struct Family(NonNull<sys::TRITONSERVER_MetricFamily>);

// SAFETY: Triton's metric families are created once and only read by the server afterwards;
// its metrics API is thread-safe.
unsafe impl Send for Family {}
// SAFETY: as above.
unsafe impl Sync for Family {}

impl Family {
    pub(crate) fn new(kind: MetricKind, name: &str, help: &str) -> Result<Self> {
        let k = match kind {
            MetricKind::Counter => sys::TRITONSERVER_MetricKind::TRITONSERVER_METRIC_KIND_COUNTER,
            MetricKind::Gauge => sys::TRITONSERVER_MetricKind::TRITONSERVER_METRIC_KIND_GAUGE,
            MetricKind::Histogram => sys::TRITONSERVER_MetricKind::TRITONSERVER_METRIC_KIND_HISTOGRAM,
        };
        let (n, h) = (c_string(name), c_string(help));
        let mut raw = ptr::null_mut();
        let _serialized = lifecycle_lock();
        // SAFETY: valid C strings for the call; the server copies them.
        unsafe { check_server_error(sys::TRITONSERVER_MetricFamilyNew(&mut raw, k, n.as_ptr(), h.as_ptr()))? };
        NonNull::new(raw).map(Family).ok_or_else(|| Error::internal(format!("metric family '{name}' was not created")))
    }
}

impl Drop for Family {
    fn drop(&mut self) {
        let _serialized = lifecycle_lock();
        // SAFETY: ours, and every metric of it is gone (owners drop metrics first).
        let _ = unsafe { check_server_error(sys::TRITONSERVER_MetricFamilyDelete(self.0.as_ptr())) };
    }
}

/// Labels as Triton parameters, deleted after the metric is made (the server copies them).
struct Labels(Vec<NonNull<sys::TRITONSERVER_Parameter>>);

impl Labels {
    fn new(labels: &[(&str, &str)]) -> Result<Self> {
        let mut out = Labels(Vec::with_capacity(labels.len()));
        for (k, v) in labels {
            let (k, v) = (c_string(k), c_string(v));
            // SAFETY: valid C strings; a STRING parameter copies the value it points to.
            let raw = unsafe {
                sys::TRITONSERVER_ParameterNew(
                    k.as_ptr(),
                    sys::TRITONSERVER_ParameterType::TRITONSERVER_PARAMETER_STRING,
                    v.as_ptr().cast::<c_void>(),
                )
            };
            out.0.push(NonNull::new(raw).ok_or_else(|| Error::internal("cannot create a metric label"))?);
        }
        Ok(out)
    }
}

impl Drop for Labels {
    fn drop(&mut self) {
        for p in &self.0 {
            // SAFETY: created above, not handed over.
            unsafe { sys::TRITONSERVER_ParameterDelete(p.as_ptr()) };
        }
    }
}

/// One labelled metric of a family.
pub(crate) struct Metric(NonNull<sys::TRITONSERVER_Metric>);

// SAFETY: Triton's metric updates are atomic (prometheus-cpp); a metric may be updated from any
// instance's thread.
unsafe impl Send for Metric {}
// SAFETY: as above.
unsafe impl Sync for Metric {}

impl Metric {
    /// A metric of `family` with `labels`; `buckets` (upper bounds) for a histogram family.
    pub(crate) fn new(family: &Family, labels: &[(&str, &str)], buckets: Option<&[f64]>) -> Result<Self> {
        let labels = Labels::new(labels)?;
        let label_ptrs: Vec<*const sys::TRITONSERVER_Parameter> =
            labels.0.iter().map(|p| p.as_ptr().cast_const()).collect();
        let mut args = ptr::null_mut();
        if let Some(b) = buckets {
            // SAFETY: creates an args object we own and delete below.
            unsafe { check_server_error(sys::TRITONSERVER_MetricArgsNew(&mut args))? };
            // SAFETY: `args` is live; `b` is valid for its length during the call (copied).
            let r = unsafe {
                check_server_error(sys::TRITONSERVER_MetricArgsSetHistogram(args, b.as_ptr(), b.len() as u64))
            };
            if let Err(e) = r {
                // SAFETY: ours, not handed over.
                let _ = unsafe { check_server_error(sys::TRITONSERVER_MetricArgsDelete(args)) };
                return Err(e);
            }
        }
        let mut raw = ptr::null_mut();
        let serialized = lifecycle_lock();
        // SAFETY: the family is live; labels and args are valid for the call and copied by it.
        let r = unsafe {
            check_server_error(sys::TRITONSERVER_MetricNewWithArgs(
                &mut raw,
                family.0.as_ptr(),
                label_ptrs.as_ptr().cast_mut(),
                label_ptrs.len() as u64,
                args,
            ))
        };
        drop(serialized);
        if !args.is_null() {
            // SAFETY: ours; the metric copied what it needed.
            let _ = unsafe { check_server_error(sys::TRITONSERVER_MetricArgsDelete(args)) };
        }
        r?;
        NonNull::new(raw).map(Metric).ok_or_else(|| Error::internal("metric was not created"))
    }

    pub(crate) fn increment(&self, v: f64) {
        // SAFETY: a live metric. A failed update only loses a sample: not worth failing a request.
        let _ = unsafe { check_server_error(sys::TRITONSERVER_MetricIncrement(self.0.as_ptr(), v)) };
    }

    pub(crate) fn set(&self, v: f64) {
        // SAFETY: as above.
        let _ = unsafe { check_server_error(sys::TRITONSERVER_MetricSet(self.0.as_ptr(), v)) };
    }

    pub(crate) fn observe(&self, v: f64) {
        // SAFETY: as above.
        let _ = unsafe { check_server_error(sys::TRITONSERVER_MetricObserve(self.0.as_ptr(), v)) };
    }
}

impl Drop for Metric {
    fn drop(&mut self) {
        let _serialized = lifecycle_lock();
        // SAFETY: ours; its family outlives it.
        let _ = unsafe { check_server_error(sys::TRITONSERVER_MetricDelete(self.0.as_ptr())) };
    }
}

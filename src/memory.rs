//! How much memory an instance's session holds, measured, for Triton's `memory_usage`.
//!
//! With ONNX Runtime's CPU arena (the default), the session's allocator keeps statistics: its
//! `TotalAllocated` is every byte the arena has taken from the system (the initializers it
//! reserved, prepacked weights, and the activation chunks it keeps for reuse). That is what the
//! instance really holds, and it grows as larger batches run, so it is re-read after runs.
//!
//! Without the arena (`enable_mem_arena: 0`) there are no statistics; we measure the growth of
//! the C heap (glibc's `mallinfo2`: bytes in use in arenas plus mmapped chunks) across session
//! creation instead. That figure is process-wide, so instances loading at the same moment can
//! see each other's allocations; it is the fallback, not the rule.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::clock;
use crate::onnx::session::OnnxSession;
use crate::triton::MemoryType;
use crate::triton::memory::MemoryUsage;

/// What one instance reports as its memory: its session's (when it is the instance's to report)
/// and what it holds beside the session (a generator's KV cache). Shared with a generator's loop,
/// which reports it as its cache grows and is given back.
pub struct MemoryFigure {
    session: Arc<OnnxSession>,
    /// The session's CPU arena is this instance's to report: it made the session, and the session
    /// is not on the shared arena (reported once, as the backend's).
    own_arena: bool,
    /// It made the session (a session shared by instances is reported by the one that made it).
    reports_session: bool,
    /// Heap growth measured at load, used when the session has no arena statistics.
    load_heap_bytes: u64,
    /// The GPU, for a GPU instance.
    gpu: Option<i32>,
    /// Bytes the instance holds beside its session, in system memory.
    extra_cpu: AtomicU64,
}

impl MemoryFigure {
    pub fn new(session: Arc<OnnxSession>, reports_session: bool, shared_arena: bool, load_heap_bytes: u64) -> Self {
        MemoryFigure {
            session,
            own_arena: reports_session && !shared_arena,
            reports_session,
            load_heap_bytes,
            gpu: None,
            extra_cpu: AtomicU64::new(0),
        }
    }

    /// A GPU instance on `device` also reports its CUDA arena.
    pub fn on_gpu(mut self, device: i32) -> Self {
        self.gpu = Some(device);
        self
    }

    /// What to report now: the CPU arena's figure (or the heap growth measured at load) with what
    /// the instance holds beside its session, and for a GPU instance the CUDA arena's figure.
    pub fn usage(&self) -> Vec<MemoryUsage> {
        let session = if self.own_arena { self.session.allocator_bytes().unwrap_or(self.load_heap_bytes) } else { 0 };
        let cpu = session.saturating_add(self.extra_cpu.load(Ordering::Relaxed));
        let mut usage = vec![MemoryUsage { memory_type: MemoryType::Cpu, device: 0, bytes: cpu }];
        if let Some(device) = self.gpu {
            let gpu = if self.reports_session { self.session.gpu_allocator_bytes(device).unwrap_or(0) } else { 0 };
            usage.push(MemoryUsage { memory_type: MemoryType::Gpu, device: i64::from(device), bytes: gpu });
        }
        usage
    }

    /// Sets what the instance holds beside its session.
    pub fn set_extra_cpu(&self, bytes: u64) {
        self.extra_cpu.store(bytes, Ordering::Relaxed);
    }
}

/// Bytes of the C heap in use right now (all threads).
pub fn heap_in_use() -> u64 {
    // SAFETY: mallinfo2 only reads allocator statistics.
    let m = unsafe { libc::mallinfo2() };
    (m.uordblks as u64).saturating_add(m.hblkhd as u64)
}

/// Decides when a changed figure is worth re-reporting: at most once per `interval_ns`, and only
/// when it differs from what was last reported.
pub struct ReportThrottle {
    last_bytes: AtomicU64,
    last_check_ns: AtomicU64,
    interval_ns: u64,
}

impl ReportThrottle {
    pub fn new(reported: u64, interval_ns: u64) -> Self {
        ReportThrottle {
            last_bytes: AtomicU64::new(reported),
            last_check_ns: AtomicU64::new(clock::now_ns()),
            interval_ns,
        }
    }

    /// Whether it is time to look again (cheap; call after every execute).
    pub fn due(&self, now_ns: u64) -> bool {
        let last = self.last_check_ns.load(Ordering::Relaxed);
        if now_ns.saturating_sub(last) < self.interval_ns {
            return false;
        }
        self.last_check_ns.store(now_ns, Ordering::Relaxed);
        true
    }

    /// Records `bytes`; true when it differs from the last report (so report it).
    pub fn changed(&self, bytes: u64) -> bool {
        self.last_bytes.swap(bytes, Ordering::Relaxed) != bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heap_grows_with_an_allocation() {
        // The figure is process-wide: another test thread freeing memory between the two reads
        // can hide part of the growth, so a few attempts are allowed; the bound is unchanged.
        let mut seen = Vec::new();
        for _ in 0..5 {
            let before = heap_in_use();
            let v = vec![1u8; 8 << 20];
            let after = heap_in_use();
            drop(v);
            if after >= before + (8 << 20) {
                return;
            }
            seen.push((before, after));
        }
        panic!("the heap never grew by the 8 MiB allocated: {seen:?}");
    }

    #[test]
    fn throttle() {
        let t = ReportThrottle::new(100, 1_000);
        let now = clock::now_ns();
        assert!(!t.due(now));
        assert!(t.due(now + 2_000));
        assert!(!t.due(now + 2_500));
        assert!(!t.changed(100));
        assert!(t.changed(200));
        assert!(!t.changed(200));
    }
}

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

use std::sync::atomic::{AtomicU64, Ordering};

use crate::clock;

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

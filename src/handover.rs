//! The hand-over between two incarnations of one model version, ordered around a race in the
//! server.
//!
//! Triton 2.51 keeps one metric reporter (`nv_inference_*` series) per model name and version,
//! shared by every incarnation through a weak pointer (`MetricModelReporter::Create`,
//! `src/metric_model_reporter.cc`). The reporter is destroyed when the last incarnation holding it
//! is, right after that incarnation's `TRITONBACKEND_ModelFinalize` returns, and its destructor
//! removes its prometheus series *without* the lock `Create` takes. A new incarnation whose model
//! object is created in that moment (an unload followed at once by a load) finds the weak pointer
//! expired, makes a new reporter, and is handed the old series that the destructor is removing:
//! every request then increments freed memory. The new incarnation's reporter is made before
//! any of our code runs for it, so we cannot make it wait; what we can order is the old one's
//! exit. A finalizing incarnation therefore waits until its successor has reached
//! `TRITONBACKEND_ModelInitialize` — its reporter then exists and shares the old one, which is
//! still alive — or until `GRACE` has passed with no successor (a plain unload).
//!
//! What remains: a successor whose load starts so late that its reporter is made exactly as the
//! grace ends. The storm in tests/test_lifecycle.py reloads at once, as operators do, and the
//! grace is long against the time a load takes to reach `ModelInitialize` (a few milliseconds).

use std::collections::HashMap;
use std::sync::{Condvar, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// How long a finalizing incarnation waits for a successor.
pub const GRACE: Duration = Duration::from_millis(250);

/// Per model name and version: how many incarnations have arrived so far.
#[derive(Default)]
pub struct Handover {
    arrivals: Mutex<HashMap<(String, u64), u64>>,
    arrived: Condvar,
}

impl std::fmt::Debug for Handover {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Handover")
    }
}

/// One incarnation: its model version, and its place in that version's line (the arrival
/// count when it arrived).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ticket {
    model: String,
    version: u64,
    arrival: u64,
}

impl Ticket {
    pub fn model(&self) -> &str {
        &self.model
    }

    pub fn version(&self) -> u64 {
        self.version
    }
}

impl Handover {
    /// Called when an incarnation enters `ModelInitialize`: wakes a predecessor that waits.
    pub fn arrive(&self, model: &str, version: u64) -> Ticket {
        let mut arrivals = self.arrivals.lock().unwrap_or_else(PoisonError::into_inner);
        let n = arrivals.entry((model.to_string(), version)).or_insert(0);
        *n += 1;
        let ticket = Ticket { model: model.to_string(), version, arrival: *n };
        drop(arrivals);
        self.arrived.notify_all();
        ticket
    }

    /// The ticket of the latest incarnation that arrived (for one whose state was never stored).
    pub fn latest(&self, model: &str, version: u64) -> Ticket {
        let arrivals = self.arrivals.lock().unwrap_or_else(PoisonError::into_inner);
        let arrival = arrivals.get(&(model.to_string(), version)).copied().unwrap_or(0);
        Ticket { model: model.to_string(), version, arrival }
    }

    /// Called at the end of `ModelFinalize`: returns once an incarnation of the same version
    /// arrived after `ticket`, or after `grace`. Returns whether a successor arrived.
    pub fn await_successor(&self, ticket: &Ticket, grace: Duration) -> bool {
        let deadline = Instant::now() + grace;
        let key = (ticket.model.clone(), ticket.version);
        let mut arrivals = self.arrivals.lock().unwrap_or_else(PoisonError::into_inner);
        loop {
            if arrivals.get(&key).is_some_and(|&n| n > ticket.arrival) {
                return true;
            }
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            arrivals = self.arrived.wait_timeout(arrivals, deadline - now).unwrap_or_else(PoisonError::into_inner).0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn a_successor_releases_the_wait_and_a_plain_unload_times_out() {
        let h = Arc::new(Handover::default());
        let first = h.arrive("m", 1);
        // No successor: the wait ends at the grace.
        let t = Instant::now();
        assert!(!h.await_successor(&first, Duration::from_millis(30)));
        assert!(t.elapsed() >= Duration::from_millis(30));
        // Another model or version is no successor.
        h.arrive("m", 2);
        h.arrive("other", 1);
        assert!(!h.await_successor(&first, Duration::from_millis(1)));
        // A successor arriving while we wait releases the wait.
        let h2 = Arc::clone(&h);
        let waiting = first.clone();
        let waiter = std::thread::spawn(move || h2.await_successor(&waiting, Duration::from_secs(60)));
        std::thread::sleep(Duration::from_millis(20));
        let second = h.arrive("m", 1);
        assert!(waiter.join().unwrap());
        // One that arrived before the wait began counts too (a reload while the old one served).
        assert!(h.await_successor(&first, Duration::ZERO));
        assert!(!h.await_successor(&second, Duration::ZERO));
        assert_eq!(h.latest("m", 1), second);
    }
}

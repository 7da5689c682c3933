//! The hand-over between two incarnations of one model version, ordered around a race in the
//! server.
//!
//! Triton 2.51 keeps one metric reporter (the `nv_inference_*` series) per model name and version,
//! shared by every incarnation through a weak pointer (`MetricModelReporter::Create`,
//! `src/metric_model_reporter.cc`). An incarnation's model object makes (or joins) it in
//! `Model::Init`, which runs *after* `TRITONBACKEND_ModelInitialize` returns and before the
//! instances are created; it is destroyed with the last incarnation holding it, right after that
//! incarnation's `TRITONBACKEND_ModelFinalize` returns, and its destructor removes its prometheus
//! series *without* the lock `Create` takes. A new incarnation whose `Model::Init` runs in that
//! moment (an unload followed at once by a load) finds the weak pointer expired, makes a new
//! reporter, and is handed the series being removed: every request then writes to freed memory.
//!
//! No code of ours runs between the new incarnation's `ModelInitialize` and its `Model::Init`, so
//! we cannot hold the new one back; we order the old one's exit instead. Each incarnation takes a
//! `Ticket` in `ModelInitialize` and reports `ready` from its first `ModelInstanceInitialize`
//! (its reporter exists by then). A finalizing incarnation returns from `ModelFinalize` only once
//! a later incarnation of its version is ready — that one's `Model::Init` then ran while the old
//! reporter was alive and joined it — or once `GRACE` has passed with none (a plain unload).
//!
//! What remains: a successor so slow to reach its first instance that its `Model::Init` falls
//! exactly at the end of the grace. The storm in tests/test_lifecycle.py reloads at once, as
//! operators do; a load reaches its instances within milliseconds, far inside the grace.

use std::collections::HashMap;
use std::sync::{Condvar, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// How long a finalizing incarnation waits for a successor.
pub const GRACE: Duration = Duration::from_millis(250);

/// Per model name and version: how many incarnations have registered, and the latest that is
/// ready (has reached its instances).
#[derive(Default)]
pub struct Handover {
    lines: Mutex<HashMap<(String, u64), Line>>,
    ready: Condvar,
}

#[derive(Default, Clone, Copy)]
struct Line {
    registered: u64,
    latest_ready: u64,
}

impl std::fmt::Debug for Handover {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Handover")
    }
}

/// One incarnation: its model version, and its place in that version's line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ticket {
    model: String,
    version: u64,
    place: u64,
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
    /// In `ModelInitialize`: the incarnation's place in its version's line.
    pub fn register(&self, model: &str, version: u64) -> Ticket {
        let mut lines = self.lines.lock().unwrap_or_else(PoisonError::into_inner);
        let line = lines.entry((model.to_string(), version)).or_default();
        line.registered += 1;
        Ticket { model: model.to_string(), version, place: line.registered }
    }

    /// In `ModelInstanceInitialize`: the incarnation's reporter exists; a predecessor waiting in
    /// its finalize may go.
    pub fn ready(&self, ticket: &Ticket) {
        let mut lines = self.lines.lock().unwrap_or_else(PoisonError::into_inner);
        let line = lines.entry((ticket.model.clone(), ticket.version)).or_default();
        if ticket.place > line.latest_ready {
            line.latest_ready = ticket.place;
            drop(lines);
            self.ready.notify_all();
        }
    }

    /// At the end of `ModelFinalize`: returns once a later incarnation of the same version is
    /// ready, or after `grace`. Returns whether a successor was ready.
    pub fn await_successor(&self, ticket: &Ticket, grace: Duration) -> bool {
        let deadline = Instant::now() + grace;
        let key = (ticket.model.clone(), ticket.version);
        let mut lines = self.lines.lock().unwrap_or_else(PoisonError::into_inner);
        loop {
            if lines.get(&key).is_some_and(|l| l.latest_ready > ticket.place) {
                return true;
            }
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            lines = self.ready.wait_timeout(lines, deadline - now).unwrap_or_else(PoisonError::into_inner).0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn a_ready_successor_releases_the_wait_and_a_plain_unload_times_out() {
        let h = Arc::new(Handover::default());
        let first = h.register("m", 1);
        h.ready(&first);
        // No successor: the wait ends at the grace.
        let t = Instant::now();
        assert!(!h.await_successor(&first, Duration::from_millis(30)));
        assert!(t.elapsed() >= Duration::from_millis(30));
        // Another model or version is no successor; a registered one that is not ready is none yet.
        h.ready(&h.register("m", 2));
        h.ready(&h.register("other", 1));
        let second = h.register("m", 1);
        assert!(!h.await_successor(&first, Duration::from_millis(1)));
        // The successor becoming ready while we wait releases the wait.
        let h2 = Arc::clone(&h);
        let waiting = first.clone();
        let waiter = std::thread::spawn(move || h2.await_successor(&waiting, Duration::from_secs(60)));
        std::thread::sleep(Duration::from_millis(20));
        h.ready(&second);
        h.ready(&second); // every instance reports; only the first one counts
        assert!(waiter.join().unwrap());
        // One that was ready before the wait began counts too (a reload while the old one served).
        assert!(h.await_successor(&first, Duration::ZERO));
        assert!(!h.await_successor(&second, Duration::ZERO));
    }
}

//! A reference on the model held across execute's return, ordered around a race in the server.
//!
//! Triton 2.51's backend thread takes an instance out of its list while it runs a payload and puts
//! it back after execute returns (`TritonBackendThread::BackendThread`). When a model's last
//! reference goes, another thread destroys it, and `StopBackendThread` reads the last entry of
//! that list without a lock: if the backend thread has not put the instance back yet (it was
//! preempted right after our execute returned), the list is empty and the server dereferences
//! garbage (`RateLimiter::EnqueuePayload`, a null instance queue: SAFETY.md, "Load and unload").
//! The last reference goes when a client's unload follows its last response, so a reload storm
//! on a loaded machine hits this window every few thousand cycles.
//!
//! So execute keeps one more reference past its return: a response factory made from one of its
//! requests, handed to `Holds` for its instance. It is let go when that instance's thread is seen
//! back in the server's wait for the next payload (at least `MIN_AGE` after the return, asleep
//! in one wait over two looks `TICK` apart), or when the same instance executes again (its thread
//! is then past the window). A thread preempted inside the window shows as runnable, not asleep,
//! and keeps its reference. Until it is let go the model cannot be destroyed, so
//! `StopBackendThread` cannot run inside the window; an unload's teardown starts some 30 ms later.
//! One reaper thread per backend watches the held references; it is joined at backend finalize.
//! Under traffic a reference is replaced by the next execute long before anyone looks at it: the
//! run path pays one factory and one map insert per execute, and the reaper wakes every `TICK`
//! only while something is held.

use std::collections::HashMap;
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::triton::factory::ResponseFactory;

/// Fault injection for the storm measurement (`bench/storm_rate.py --widen-us`), read once from
/// the environment, never set in service: `ONNXRS_FAULT_EXECUTE_TAIL_US` makes execute linger that
/// long after its requests are answered (the window the server's teardown race needs, made wide
/// instead of waiting for a preemption there), and `ONNXRS_FAULT_NO_HOLD=1` turns the hold off,
/// so the two can be compared.
pub struct Faults {
    pub execute_tail: Option<Duration>,
    pub no_hold: bool,
}

static FAULTS: once_cell::sync::Lazy<Faults> = once_cell::sync::Lazy::new(|| Faults {
    execute_tail: std::env::var("ONNXRS_FAULT_EXECUTE_TAIL_US")
        .ok()
        .and_then(|v| v.parse().ok())
        .map(Duration::from_micros),
    no_hold: std::env::var_os("ONNXRS_FAULT_NO_HOLD").is_some_and(|v| v == "1"),
});

/// The fault injection in force (see `Faults`).
pub fn faults() -> &'static Faults {
    &FAULTS
}

/// How long after execute's return a thread is first looked at.
const MIN_AGE: Duration = Duration::from_millis(20);

/// How often the reaper looks while something is held. A thread seen asleep twice this far apart
/// with its voluntary context switches unchanged has not woken between: it is in a wait, not
/// passing through a lock the server takes on the way back (held for far less).
const TICK: Duration = Duration::from_millis(5);

/// A reference held for one instance until its execute's thread is parked.
struct Held {
    _factory: ResponseFactory,
    tid: u32,
    /// When execute handed it over.
    since: Instant,
    /// The thread's voluntary context switches when it was last seen asleep.
    asleep: Option<u64>,
}

#[derive(Default)]
struct Table {
    held: HashMap<usize, Held>,
    stop: bool,
}

#[derive(Default)]
struct Shared {
    table: Mutex<Table>,
    wake: Condvar,
}

/// The backend's held references and their reaper thread.
pub struct Holds {
    shared: Arc<Shared>,
    reaper: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for Holds {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Holds")
    }
}

impl Holds {
    /// Starts the reaper thread.
    pub fn start() -> std::io::Result<Holds> {
        let shared = Arc::new(Shared::default());
        let for_reaper = Arc::clone(&shared);
        let reaper = std::thread::Builder::new().name("onnxrs-hold".into()).spawn(move || reap(&for_reaper))?;
        Ok(Holds { shared, reaper: Some(reaper) })
    }

    /// At the end of an execute of `instance` on this thread: holds `factory` until the thread is
    /// parked. The instance's previous reference is let go now: its thread is here again.
    pub(crate) fn hold(&self, instance: usize, factory: ResponseFactory) {
        let Some(tid) = current_tid() else { return };
        let held = Held { _factory: factory, tid, since: Instant::now(), asleep: None };
        let mut table = self.table();
        let was_empty = table.held.is_empty();
        let previous = table.held.insert(instance, held);
        drop(table);
        // The reaper sleeps untimed only while nothing is held.
        if was_empty {
            self.shared.wake.notify_one();
        }
        drop(previous);
    }

    /// At instance finalize: lets go of what is held for `instance`, if anything.
    pub(crate) fn forget(&self, instance: usize) {
        let previous = self.table().held.remove(&instance);
        drop(previous);
    }

    fn table(&self) -> std::sync::MutexGuard<'_, Table> {
        self.shared.table.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Drop for Holds {
    /// Stops and joins the reaper; whatever is still held is let go.
    fn drop(&mut self) {
        self.table().stop = true;
        self.shared.wake.notify_one();
        if let Some(reaper) = self.reaper.take()
            && reaper.join().is_err()
        {
            log::error!("onnxrs: the hold reaper panicked");
        }
        let rest: Vec<Held> = self.table().held.drain().map(|(_, h)| h).collect();
        drop(rest);
    }
}

/// The reaper: every `TICK` while something is held, lets go of the references whose thread is
/// parked. Sleeps while nothing is held.
fn reap(shared: &Shared) {
    let mut table = shared.table.lock().unwrap_or_else(PoisonError::into_inner);
    while !table.stop {
        if table.held.is_empty() {
            table = shared.wake.wait(table).unwrap_or_else(PoisonError::into_inner);
            continue;
        }
        let now = Instant::now();
        let parked: Vec<usize> = table.held.iter_mut().filter_map(|(k, h)| settled(h, now).then_some(*k)).collect();
        let released: Vec<Held> = parked.iter().filter_map(|k| table.held.remove(k)).collect();
        // Let go outside the lock: the last reference starts the server's teardown of the model.
        drop(table);
        drop(released);
        table = shared.table.lock().unwrap_or_else(PoisonError::into_inner);
        if !table.stop {
            table = shared.wake.wait_timeout(table, TICK).unwrap_or_else(PoisonError::into_inner).0;
        }
    }
}

/// Whether `h`'s thread is parked: `MIN_AGE` after the hand-over, seen asleep on this look and
/// the last with the same count of voluntary context switches (or gone).
fn settled(h: &mut Held, now: Instant) -> bool {
    if now.duration_since(h.since) < MIN_AGE {
        return false;
    }
    match thread_sleep(h.tid) {
        None => true,
        Some(now_asleep) => {
            let settled = now_asleep.is_some() && now_asleep == h.asleep;
            h.asleep = now_asleep;
            settled
        }
    }
}

/// A thread of this process: `None` if it is gone, `Some(None)` if it is running or runnable,
/// `Some(Some(n))` if it sleeps, with `n` voluntary context switches so far.
fn thread_sleep(tid: u32) -> Option<Option<u64>> {
    let status = std::fs::read_to_string(format!("/proc/self/task/{tid}/status")).ok()?;
    parse_status(&status)
}

fn parse_status(status: &str) -> Option<Option<u64>> {
    let field = |key: &str| status.lines().find_map(|l| l.strip_prefix(key)).map(str::trim);
    let state = field("State:")?;
    if !state.starts_with('S') {
        return Some(None);
    }
    Some(field("voluntary_ctxt_switches:").and_then(|v| v.parse().ok()))
}

thread_local! {
    static TID: Option<u32> = std::fs::read_link("/proc/thread-self")
        .ok()
        .and_then(|p| p.file_name()?.to_str()?.parse().ok());
}

/// The kernel's id of the calling thread (read once per thread).
fn current_tid() -> Option<u32> {
    TID.with(|t| *t)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_thread_state() {
        let sleeping = "Name:\tx\nState:\tS (sleeping)\nvoluntary_ctxt_switches:\t42\n";
        assert_eq!(parse_status(sleeping), Some(Some(42)));
        assert_eq!(parse_status("State:\tR (running)\nvoluntary_ctxt_switches:\t1\n"), Some(None));
        assert_eq!(parse_status("Name:\tx\n"), None);
        let me = current_tid().unwrap();
        assert_eq!(thread_sleep(me), Some(None), "the calling thread runs");
        assert_eq!(thread_sleep(u32::MAX), None);
    }

    #[test]
    fn a_thread_asleep_in_one_wait_keeps_its_switch_count() {
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let (tid_tx, tid_rx) = std::sync::mpsc::channel();
        let t = std::thread::spawn(move || {
            tid_tx.send(current_tid()).unwrap();
            rx.recv().ok();
        });
        let tid = tid_rx.recv().unwrap().unwrap();
        // It reaches its wait within the deadline, then stays in it.
        let deadline = Instant::now() + Duration::from_secs(10);
        let seen = loop {
            if let Some(Some(n)) = thread_sleep(tid) {
                break n;
            }
            assert!(Instant::now() < deadline, "the thread never slept");
            std::thread::sleep(Duration::from_millis(1));
        };
        std::thread::sleep(Duration::from_millis(5));
        assert_eq!(thread_sleep(tid), Some(Some(seen)), "asleep in the same wait");
        tx.send(()).unwrap();
        t.join().unwrap();
    }
}

//! Faults from the host side. This test plays the server's side of the ABI (host.rs): it loads
//! `libtriton_onnxrs.so` with dlopen (harness.rs) and injects failures a healthy Triton rarely
//! produces: an output buffer that cannot be allocated, a response that cannot be sent or
//! created, an input that cannot be read, a cancelled request. For each case in `CASES`, the
//! affected request must get an error (or at least be counted as failed), the others must get
//! correct outputs, and every request must be released exactly once; at the end every object the
//! host handed out must have been given back (the host counts them).
//!
//! The cases run in order in one test over one loaded backend, as Triton would run executes
//! one after another: the host's state is process-global and the last case checks that the
//! backend still works after all the others. Each case reports on its own line; a failed case
//! does not stop the rest. `ci/test.sh` also runs this binary under valgrind's leak checker.
//!
//! Needs `ONNXRS_TEST_MODELS` and `ONNXRS_ORT_LIBRARY` (set by ci/test.sh).
#![allow(clippy::missing_safety_doc, clippy::expect_used, clippy::unwrap_used)]

mod harness;
mod host;

use std::panic::{AssertUnwindSafe, catch_unwind};

use harness::{Loaded, expect_error, expect_outputs, success, thread_ids};
use host::{Answer, Faults, Stats};

/// The first and the last request's indices never change: gather_fail's outputs for them.
fn first_and_last_correct(a: &[Option<Answer>]) {
    expect_outputs(&a[0], &[10.0, 20.0]);
    expect_outputs(&a[2], &[50.0, 40.0]);
}

/// One execute over three requests (the report calls them 1, 2, 3; the host 0, 1, 2).
struct Case {
    /// The report's "injected fault" column.
    fault: &'static str,
    /// The report's "observed" column: what `check` asserts.
    observed: &'static str,
    faults: Faults,
    /// The middle request's indices into gather_fail's table.
    middle: &'static [i64],
    check: fn(&[Option<Answer>], &Stats),
}

const CASES: &[Case] = &[
    Case {
        fault: "none (a fused run of 3)",
        observed: "3 correct outputs, one batch statistic of size 3",
        faults: Faults::NONE,
        middle: &[2, 0],
        check: |a, stats| {
            expect_outputs(&a[1], &[30.0, 10.0]);
            first_and_last_correct(a);
            assert_eq!(stats.batches, vec![3]);
        },
    },
    Case {
        fault: "ONNX Runtime fails on request 2",
        observed: "request 2: the ORT error; 1 and 3 correct (rerun one by one)",
        faults: Faults::NONE,
        middle: &[7, 0],
        check: |a, stats| {
            expect_error(&a[1], "out of data bounds");
            first_and_last_correct(a);
            assert!(!success(stats, 1) && success(stats, 2));
        },
    },
    Case {
        fault: "reading request 2's input fails",
        observed: "request 2: that error; 1 and 3 correct",
        faults: Faults { input_query: Some(1), ..Faults::NONE },
        middle: &[2, 0],
        check: |a, _| {
            expect_error(&a[1], "input cannot be read");
            first_and_last_correct(a);
        },
    },
    Case {
        fault: "request 2 cancelled",
        observed: "request 2: a 'cancelled' error, counted as a failure; 1 and 3 correct",
        faults: Faults { cancelled: Some(1), ..Faults::NONE },
        middle: &[2, 0],
        check: |a, stats| {
            expect_error(&a[1], "cancelled");
            assert!(!success(stats, 1));
            expect_outputs(&a[2], &[50.0, 40.0]);
        },
    },
    Case {
        fault: "no response can be created for request 2",
        observed: "request 2 released and counted as failed; 1 and 3 correct",
        faults: Faults { response_new: Some(1), ..Faults::NONE },
        middle: &[2, 0],
        check: |a, stats| {
            assert!(a[1].is_none());
            assert!(!success(stats, 1));
            first_and_last_correct(a);
        },
    },
    Case {
        fault: "sending request 1's response fails",
        observed: "logged; 2 and 3 correct",
        faults: Faults { response_send: Some(0), ..Faults::NONE },
        middle: &[2, 0],
        check: |a, _| {
            expect_outputs(&a[1], &[30.0, 10.0]);
            expect_outputs(&a[2], &[50.0, 40.0]);
        },
    },
    Case {
        fault: "request 2's output buffer cannot be allocated",
        observed: "request 2: that error, counted as a failure; 1 and 3 correct",
        faults: Faults { output_buffer: Some(1), ..Faults::NONE },
        middle: &[2, 0],
        check: |a, stats| {
            expect_error(&a[1], "output buffer cannot be allocated");
            assert!(!success(stats, 1));
            first_and_last_correct(a);
        },
    },
    Case {
        fault: "none, after all of the above",
        observed: "correct outputs: the backend keeps working",
        faults: Faults::NONE,
        middle: &[0, 0],
        check: |a, _| expect_outputs(&a[1], &[10.0, 10.0]),
    },
];

/// The host's state is process-global: one backend at a time (cargo runs tests in parallel).
static ONE_BACKEND: std::sync::Mutex<()> = std::sync::Mutex::new(());

#[test]
fn injected_host_failures_fail_only_the_affected_request_and_leak_nothing() {
    let _one_backend = ONE_BACKEND.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    // SAFETY: the backend gets only pointers the host created, alive until the matching finalize.
    unsafe {
        let backend = Loaded::new();
        let mut failed = Vec::new();
        for (n, case) in CASES.iter().enumerate() {
            let run = catch_unwind(AssertUnwindSafe(|| {
                let answers = backend.execute_three(&case.faults, case.middle);
                (case.check)(&answers, &backend.stats());
            }));
            let verdict = if run.is_ok() { "ok" } else { "FAILED (the panic above)" };
            eprintln!("host fault case {}/{}: {}: {verdict}", n + 1, CASES.len(), case.fault);
            if run.is_err() {
                failed.push(case.fault);
            }
        }
        backend.finalize();
        assert!(failed.is_empty(), "failed cases: {failed:?}");
    }
    write_report();
}

/// Triton finalizes a backend when its last model goes and may initialize it again in the same
/// process. Finalize gives back every thread: ONNX Runtime's shared pool, the request log's
/// writer; a second life starts afresh (a new environment, shared arena and request log) and
/// works. Valgrind (ci/test.sh) then also sees no thread of ours or ONNX Runtime's at exit.
///
/// ONNX Runtime starts one thread of its own (a `std::thread`) with the first environment of the
/// process and keeps it until the process exits, whatever is released: it belongs to the library,
/// not to an environment. So the threads are counted from the end of the first life on.
#[test]
fn a_backend_finalized_and_initialized_again_works_and_leaves_no_thread() {
    let _one_backend = ONE_BACKEND.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let dir = std::env::temp_dir().join(format!("onnxrs-host-reinit-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let start = thread_ids();
    let mut before = None;
    for life in 1..=3 {
        let log = dir.join(format!("requests-{life}.jsonl"));
        let settings = format!(r#", "shared-arena": "1", "request-log": "{}""#, log.display());
        // SAFETY: the backend gets only pointers the host created, alive until the matching finalize.
        unsafe {
            let backend = Loaded::with_settings(&settings);
            if let Some(before) = &before {
                assert!(!thread_ids().is_subset(before), "life {life}: the shared pool and the log writer run");
            }
            let answers = backend.execute_three(&Faults::NONE, &[2, 0]);
            expect_outputs(&answers[1], &[30.0, 10.0]);
            first_and_last_correct(&answers);
            backend.finalize();
        }
        let lines = std::fs::read_to_string(&log).unwrap();
        assert_eq!(lines.lines().count(), 3, "life {life}: one log line per request, flushed at finalize");
        let Some(before) = &before else {
            let new = threads_since(&start, 1);
            assert!(new.len() <= 1, "life 1: threads {new:?} left, more than ONNX Runtime's own one");
            before = Some(thread_ids());
            continue;
        };
        let left = threads_since(before, 0);
        assert!(left.is_empty(), "life {life}: threads {left:?} still run after TRITONBACKEND_Finalize");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The threads running now that were not in `base` (id and name), once at most `allowed` are
/// left or a deadline has passed. Ids, not counts: another test's thread may end meanwhile, none
/// of its starts here. A joined thread can stay listed for a moment while the kernel reaps it.
fn threads_since(base: &std::collections::BTreeSet<String>, allowed: usize) -> Vec<String> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let left: Vec<_> = thread_ids()
            .difference(base)
            .map(|t| {
                let name = std::fs::read_to_string(format!("/proc/self/task/{t}/comm")).unwrap_or_default();
                format!("{t} ({})", name.trim())
            })
            .collect();
        if left.len() <= allowed || std::time::Instant::now() > deadline {
            return left;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

/// Everything held: record it for docs/reliability.md (ci/test.sh adds valgrind's line).
fn write_report() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("build/reliability");
    let _ = std::fs::create_dir_all(&dir);
    let mut md = String::from(
        "## Faults from the host side\n\ntests/host_faults.rs plays Triton's side of the ABI around the real \
         libtriton_onnxrs.so and injects failures. In every case each request was released exactly once and had \
         exactly one statistics record, and at the end no error, message, buffer-attributes, metric family, \
         metric, metric-args or label object the host handed out was left undeleted.\n\n| injected fault | observed |\n|---|---|\n",
    );
    for case in CASES {
        md.push_str(&format!("| {} | {} |\n", case.fault, case.observed));
    }
    let _ = std::fs::write(dir.join("host-faults.md"), md);
}

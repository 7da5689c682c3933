//! The structured request log (`--backend-config=onnxrs,request-log=PATH`): one JSON object per
//! line per answered request, with the same stage times the request's statistics carry.
//!
//! Execute never waits for it: answering a request builds a small `Entry` and offers it to a
//! bounded channel (`try_send`); a writer thread of its own wakes every `DRAIN_EVERY`, takes
//! what is there, writes the lines through a buffer and flushes it, and does so a last time when
//! the log closes (backend finalize, after every model is gone). When the writer falls behind and the channel is full
//! the entry is dropped and counted, never waited for; the count goes to Triton's log.
//!
//! Successful requests are sampled (`request-log-sample=R`: every 1/R-th, deterministically);
//! failed ones are always written.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TryRecvError, TrySendError};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::error::{Error, Result};

/// Entries waiting for the writer; beyond this, new ones are dropped (and counted). With
/// `DRAIN_EVERY`, room for 800,000 requests a second.
const CAPACITY: usize = 16 * 1024;
/// How often the writer drains the channel, writes and flushes: the longest a line waits.
const DRAIN_EVERY: Duration = Duration::from_millis(20);

/// `request-log=PATH` and `request-log-sample=R` from `--backend-config`.
#[derive(Debug, Clone, PartialEq)]
pub struct RequestLogSettings {
    pub path: PathBuf,
    /// The share of successful requests written, in [0, 1].
    pub sample: f64,
}

impl RequestLogSettings {
    /// From the two backend-config values (`None`: not given). No path, no log.
    pub fn parse(path: Option<&str>, sample: Option<&str>) -> Result<Option<Self>> {
        let sample = sample.map_or(Ok(1.0), |v| parse_share("backend config request-log-sample", v))?;
        match path.map(str::trim) {
            None | Some("") => Ok(None),
            Some(p) => Ok(Some(RequestLogSettings { path: PathBuf::from(p), sample })),
        }
    }
}

/// A share of requests, from 0 to 1; `what` names the setting in the error.
pub fn parse_share(what: &str, value: &str) -> Result<f64> {
    match value.trim().parse::<f64>() {
        Ok(r) if (0.0..=1.0).contains(&r) => Ok(r),
        _ => Err(Error::invalid_arg(format!("{what} must be a number from 0 to 1, got '{value}'"))),
    }
}

/// Which successful requests are written: of every run of 1/rate requests, one — the n-th is
/// kept when `floor((n + 1) · rate)` passes an integer. Deterministic, no clock, no randomness.
#[derive(Debug)]
struct Sampler {
    rate: f64,
    seen: AtomicU64,
}

impl Sampler {
    fn new(rate: f64) -> Arc<Self> {
        Arc::new(Sampler { rate, seen: AtomicU64::new(0) })
    }

    fn keep(&self) -> bool {
        if self.rate >= 1.0 {
            return true;
        }
        if self.rate <= 0.0 {
            return false;
        }
        let n = self.seen.fetch_add(1, Ordering::Relaxed) as f64;
        ((n + 1.0) * self.rate).floor() > (n * self.rate).floor()
    }
}

/// The ONNX Runtime run a request was part of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunSize {
    /// Requests fused into the run.
    pub requests: usize,
    /// Rows along the batch dimension, all of them together.
    pub rows: u64,
}

/// What became of a request, as the log says it.
#[derive(Debug)]
pub enum LoggedOutcome {
    /// Its stage times in nanoseconds, the differences of the timestamps reported in its
    /// statistics: compute input, compute infer, compute output.
    Success { input_ns: u64, infer_ns: u64, output_ns: u64 },
    /// The error's class (`onnxrs_request_errors_total`'s `kind`) and message.
    Failure { kind: &'static str, message: String },
}

/// One line of the log, as execute hands it over; serialized on the writer thread.
#[derive(Debug)]
pub struct Entry {
    /// Wall-clock time of the answer.
    pub time: SystemTime,
    pub names: Arc<InstanceNames>,
    pub request_id: String,
    pub run: Option<RunSize>,
    pub outcome: LoggedOutcome,
}

/// The names every line of one instance carries.
#[derive(Debug)]
pub struct InstanceNames {
    pub model: String,
    pub version: u64,
    pub instance: String,
}

/// One model's handle on the log: the log, and how its successful requests are sampled (the
/// model's own `request_log_sample`, counted for the model, or the backend's, counted across
/// the models that share it).
#[derive(Debug, Clone)]
pub struct ModelLog {
    log: Arc<RequestLog>,
    sampler: Arc<Sampler>,
}

impl ModelLog {
    pub fn new(log: &Arc<RequestLog>, sample: Option<f64>) -> Self {
        ModelLog { log: log.clone(), sampler: sample.map_or_else(|| log.sampler.clone(), Sampler::new) }
    }

    pub fn instance(&self, names: InstanceNames) -> InstanceLog {
        InstanceLog { model: self.clone(), names: Arc::new(names) }
    }
}

/// One instance's handle on the log: its model's, and the names each of its lines carries.
#[derive(Debug, Clone)]
pub struct InstanceLog {
    model: ModelLog,
    names: Arc<InstanceNames>,
}

impl InstanceLog {
    /// Logs one answered request: every failed one, the sampled share of the successful ones.
    /// Never waits (see `RequestLog::offer`).
    pub fn record(&self, request_id: &str, run: Option<RunSize>, outcome: LoggedOutcome) {
        if matches!(outcome, LoggedOutcome::Success { .. }) && !self.model.sampler.keep() {
            return;
        }
        self.model.log.offer(Entry {
            time: SystemTime::now(),
            names: self.names.clone(),
            request_id: request_id.to_string(),
            run,
            outcome,
        });
    }
}

/// The open log: the channel to its writer thread, and what was dropped.
#[derive(Debug)]
pub struct RequestLog {
    path: PathBuf,
    /// The backend's `request-log-sample`, for models without their own.
    sampler: Arc<Sampler>,
    /// Taken (closing the channel) when the log is dropped.
    sender: Option<SyncSender<Entry>>,
    writer: Option<JoinHandle<()>>,
    dropped: Arc<AtomicU64>,
}

impl RequestLog {
    /// Opens (appends to) the file and starts the writer.
    pub fn open(settings: &RequestLogSettings) -> Result<Arc<Self>> {
        let file = OpenOptions::new().create(true).append(true).open(&settings.path).map_err(|e| {
            Error::invalid_arg(format!("cannot open the request log '{}': {e}", settings.path.display()))
        })?;
        let (sender, receiver) = mpsc::sync_channel(CAPACITY);
        let dropped = Arc::new(AtomicU64::new(0));
        let writer = Writer { out: BufWriter::new(file), path: settings.path.clone(), dropped: dropped.clone() };
        let handle = std::thread::Builder::new()
            .name("onnxrs-request-log".into())
            .spawn(move || writer.run(receiver))
            .map_err(|e| Error::internal(format!("cannot start the request log's writer: {e}")))?;
        Ok(Arc::new(RequestLog {
            path: settings.path.clone(),
            sampler: Sampler::new(settings.sample),
            sender: Some(sender),
            writer: Some(handle),
            dropped,
        }))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Hands `entry` to the writer without waiting: when it is behind (or gone), the entry is
    /// dropped and counted.
    pub fn offer(&self, entry: Entry) {
        match self.sender.as_ref().map(|s| s.try_send(entry)) {
            Some(Ok(())) => {}
            Some(Err(TrySendError::Full(_) | TrySendError::Disconnected(_))) | None => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Entries dropped so far.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

impl Drop for RequestLog {
    /// Closes the channel and waits until the writer has written and flushed every entry
    /// already offered (at backend finalize: the last model holding the log is gone).
    fn drop(&mut self) {
        drop(self.sender.take());
        if let Some(handle) = self.writer.take()
            && handle.join().is_err()
        {
            log::error!("onnxrs: the request log's writer panicked");
        }
    }
}

/// The writer thread's side.
struct Writer {
    out: BufWriter<File>,
    path: PathBuf,
    dropped: Arc<AtomicU64>,
}

impl Writer {
    fn run(mut self, receiver: Receiver<Entry>) {
        let mut dropped_reported = 0;
        let mut failed = false;
        let mut line = Vec::with_capacity(512);
        loop {
            // Asleep rather than parked on the channel: a sender then never has a receiver to
            // wake (that would cost each request a futex call, and the writer a context switch
            // per line on a busy host).
            std::thread::sleep(DRAIN_EVERY);
            let mut wrote = false;
            let closing = loop {
                match receiver.try_recv() {
                    Ok(entry) => {
                        // Whole lines only: a line is made apart, then written at once.
                        line.clear();
                        if let Err(e) = entry.write_line(&mut line).and_then(|()| self.out.write_all(&line)) {
                            failed = self.report_failure(failed, &e);
                        }
                        wrote = true;
                    }
                    Err(TryRecvError::Empty) => break false,
                    // Empty, and every sender gone: the log is closing.
                    Err(TryRecvError::Disconnected) => break true,
                }
            };
            if wrote && let Err(e) = self.out.flush() {
                failed = self.report_failure(failed, &e);
            }
            let dropped = self.dropped.load(Ordering::Relaxed);
            if dropped > dropped_reported {
                log::warn!(
                    "onnxrs: request log '{}': {} entries dropped so far (the writer fell behind)",
                    self.path.display(),
                    dropped
                );
                dropped_reported = dropped;
            }
            if closing {
                return;
            }
        }
    }

    /// Logs the first write failure only (a full disk would otherwise flood Triton's log).
    fn report_failure(&self, already: bool, e: &std::io::Error) -> bool {
        if !already {
            log::error!("onnxrs: cannot write the request log '{}': {e}", self.path.display());
        }
        true
    }
}

impl Entry {
    /// Appends the line (one JSON object and a newline) to `out`, keys in a fixed order, time
    /// first. Stage times are whole microseconds (truncated) of the same nanosecond figures
    /// Triton sums into the statistics. Written by hand rather than through a `Value`: no map,
    /// no allocation per field, so the writer keeps up with far more requests than a server
    /// answers.
    pub fn write_line(&self, out: &mut Vec<u8>) -> std::io::Result<()> {
        let names = &self.names;
        write!(out, "{{\"time\":\"{}\",\"model\":", rfc3339_micros(self.time))?;
        serde_json::to_writer(&mut *out, &names.model)?;
        write!(out, ",\"version\":{},\"instance\":", names.version)?;
        serde_json::to_writer(&mut *out, &names.instance)?;
        out.extend_from_slice(b",\"request_id\":");
        serde_json::to_writer(&mut *out, &self.request_id)?;
        let outcome = match self.outcome {
            LoggedOutcome::Success { .. } => "success",
            LoggedOutcome::Failure { .. } => "error",
        };
        write!(out, ",\"outcome\":\"{outcome}\",")?;
        match self.run {
            Some(RunSize { requests, rows }) => write!(out, "\"run_requests\":{requests},\"run_rows\":{rows}")?,
            None => out.extend_from_slice(b"\"run_requests\":null,\"run_rows\":null"),
        }
        match &self.outcome {
            &LoggedOutcome::Success { input_ns, infer_ns, output_ns } => {
                let execute_ns = input_ns.saturating_add(infer_ns).saturating_add(output_ns);
                write!(
                    out,
                    ",\"input_us\":{},\"infer_us\":{},\"output_us\":{},\"execute_us\":{}",
                    input_ns / 1000,
                    infer_ns / 1000,
                    output_ns / 1000,
                    execute_ns / 1000
                )?;
            }
            LoggedOutcome::Failure { kind, message } => {
                out.extend_from_slice(b",\"error_kind\":");
                serde_json::to_writer(&mut *out, kind)?;
                out.extend_from_slice(b",\"error\":");
                serde_json::to_writer(&mut *out, message)?;
            }
        }
        out.extend_from_slice(b"}\n");
        Ok(())
    }
}

/// `2026-12-01T17:20:00.123456Z`.
fn rfc3339_micros(time: SystemTime) -> String {
    let since = time.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let (days, rest) = (secs / 86_400, secs % 86_400);
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:06}Z",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60,
        since.subsec_micros()
    )
}

/// The proleptic Gregorian date `days` after 1970-01-01 (Howard Hinnant's `civil_from_days`,
/// for days ≥ 0).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn names() -> Arc<InstanceNames> {
        Arc::new(InstanceNames { model: "m".into(), version: 3, instance: "m_0".into() })
    }

    #[test]
    fn settings_from_backend_config() {
        assert_eq!(RequestLogSettings::parse(None, None).unwrap(), None);
        assert_eq!(RequestLogSettings::parse(Some(" "), Some("0.5")).unwrap(), None);
        let s = RequestLogSettings::parse(Some("/tmp/r.jsonl"), None).unwrap().unwrap();
        assert_eq!((s.path, s.sample), (PathBuf::from("/tmp/r.jsonl"), 1.0));
        assert_eq!(RequestLogSettings::parse(Some("x"), Some("0.25")).unwrap().unwrap().sample, 0.25);
        for bad in ["-0.1", "1.5", "x", "NaN", ""] {
            let e = RequestLogSettings::parse(Some("x"), Some(bad)).unwrap_err();
            assert!(e.message().contains("backend config request-log-sample must be a number from 0 to 1"), "{e}");
        }
        assert_eq!(parse_share("p", " 0.5 ").unwrap(), 0.5);
        assert_eq!(parse_share("p", "1").unwrap(), 1.0);
    }

    #[test]
    fn sampling_keeps_every_nth() {
        let keep = |rate: f64, n: usize| {
            let s = Sampler::new(rate);
            (0..n).map(|_| s.keep()).collect::<Vec<_>>()
        };
        assert!(keep(1.0, 5).iter().all(|&k| k));
        assert!(keep(0.0, 5).iter().all(|&k| !k));
        let tenth = keep(0.1, 100);
        assert_eq!(tenth.iter().filter(|&&k| k).count(), 10);
        assert!(tenth.iter().enumerate().all(|(i, &k)| k == (i % 10 == 9)), "{tenth:?}");
        assert_eq!(keep(0.25, 1000).iter().filter(|&&k| k).count(), 250);
        assert_eq!(keep(1.0 / 3.0, 300).iter().filter(|&&k| k).count(), 100);
    }

    #[test]
    fn dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(59), (1970, 3, 1));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
        assert_eq!(civil_from_days(19_723), (2024, 1, 1));
        assert_eq!(civil_from_days(20_423), (2025, 12, 1));
        let t = UNIX_EPOCH + Duration::new(951_782_400 + 3_723, 4_005_000);
        assert_eq!(rfc3339_micros(t), "2000-02-29T01:02:03.004005Z");
    }

    #[test]
    fn lines_hold_the_statistics_figures() {
        let line = |e: &Entry| {
            let mut out = Vec::new();
            e.write_line(&mut out).unwrap();
            String::from_utf8(out).unwrap()
        };
        let e = Entry {
            time: UNIX_EPOCH,
            names: names(),
            request_id: "r1".into(),
            run: Some(RunSize { requests: 2, rows: 5 }),
            outcome: LoggedOutcome::Success { input_ns: 2_999, infer_ns: 6_001, output_ns: 2_500 },
        };
        assert_eq!(
            line(&e),
            concat!(
                r#"{"time":"1970-01-01T00:00:00.000000Z","model":"m","version":3,"instance":"m_0","#,
                r#""request_id":"r1","outcome":"success","run_requests":2,"run_rows":5,"#,
                r#""input_us":2,"infer_us":6,"output_us":2,"execute_us":11}"#,
                "\n"
            )
        );
        // Strings escaped as JSON; no run: nulls; a failure: its kind and message, no times.
        let e = Entry {
            time: UNIX_EPOCH,
            names: Arc::new(InstanceNames { model: "a\"b".into(), version: 1, instance: "\u{1}".into() }),
            request_id: "é\\".into(),
            run: None,
            outcome: LoggedOutcome::Failure { kind: "bad_input", message: "no \"X\"\nhere".into() },
        };
        let text = line(&e);
        assert!(text.ends_with('\n') && text.matches('\n').count() == 1, "{text}");
        let v: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(
            v,
            json!({"time": "1970-01-01T00:00:00.000000Z", "model": "a\"b", "version": 1, "instance": "\u{1}",
                   "request_id": "é\\", "outcome": "error", "run_requests": null, "run_rows": null,
                   "error_kind": "bad_input", "error": "no \"X\"\nhere"})
        );
    }

    #[test]
    fn writes_every_offered_line_and_flushes_on_close() {
        let path = std::env::temp_dir().join(format!("onnxrs-request-log-{}.jsonl", std::process::id()));
        let _ = std::fs::remove_file(&path);
        // The backend keeps one success in four; the model keeps every one, and every failure.
        let log = RequestLog::open(&RequestLogSettings { path: path.clone(), sample: 0.25 }).unwrap();
        let backend_rate = ModelLog::new(&log, None).instance(InstanceNames {
            model: "a".into(),
            version: 1,
            instance: "a_0_0".into(),
        });
        let own_rate = ModelLog::new(&log, Some(1.0)).instance(InstanceNames {
            model: "b".into(),
            version: 1,
            instance: "b_0_0".into(),
        });
        let success = || LoggedOutcome::Success { input_ns: 1, infer_ns: 2, output_ns: 3 };
        for i in 0..1000 {
            let failure = LoggedOutcome::Failure { kind: "internal", message: "x".into() };
            let (instance, outcome) = match i % 3 {
                0 => (&backend_rate, success()),
                1 => (&own_rate, success()),
                _ => (&backend_rate, failure),
            };
            instance.record(&format!("r{i}"), None, outcome);
        }
        drop((backend_rate, own_rate));
        let dropped = log.dropped();
        drop(log);
        let text = std::fs::read_to_string(&path).unwrap();
        let ids: Vec<String> = text
            .lines()
            .map(|l| serde_json::from_str::<Value>(l).unwrap()["request_id"].as_str().unwrap().to_string())
            .collect();
        // Model a's successes are i = 0, 3, 6, ...: its 4th, 8th, ... are kept.
        let want: Vec<String> = (0..1000)
            .filter(|i| match i % 3 {
                0 => (i / 3) % 4 == 3,
                _ => true,
            })
            .map(|i| format!("r{i}"))
            .collect();
        assert_eq!(ids, want);
        assert_eq!(dropped, 0);
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    fn an_unwritable_path_is_a_config_error() {
        let e =
            RequestLog::open(&RequestLogSettings { path: "/nonexistent-dir/x.jsonl".into(), sample: 1.0 }).unwrap_err();
        assert!(e.message().contains("cannot open the request log '/nonexistent-dir/x.jsonl'"), "{e}");
    }
}

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
use std::time::{Duration, SystemTime};

use crate::error::{Error, Result};

/// Entries waiting for the writer; beyond this, new ones are dropped (and counted). With
/// `DRAIN_EVERY`, room for 800,000 requests a second.
mod line;

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

/// What a generation request did (a generative model's lines carry it).
#[derive(Debug, Clone, PartialEq)]
pub struct Generation {
    pub prompt_tokens: usize,
    pub generated_tokens: usize,
    /// From its arrival to its first token; `None` when none came.
    pub ttft_ns: Option<u64>,
    /// The mean time between its tokens after the first; `None` with fewer than two.
    pub tpot_ns: Option<u64>,
    /// `stop`, `length`, `cancelled` or `error` (`onnxrs_request_success_total`'s reasons).
    pub finish_reason: &'static str,
}

/// One line of the log, as execute hands it over; serialized on the writer thread.
#[derive(Debug)]
pub struct Entry {
    /// Wall-clock time of the answer.
    pub time: SystemTime,
    pub names: Arc<InstanceNames>,
    pub request_id: Box<str>,
    pub run: Option<RunSize>,
    pub outcome: LoggedOutcome,
    /// Boxed: most lines have none, and entries travel through a channel by value.
    pub generation: Option<Box<Generation>>,
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
        self.offer(self.entry(request_id, run, outcome));
    }

    /// Logs one finished generation request, sampled as `record` samples.
    pub fn record_generation(&self, request_id: &str, outcome: LoggedOutcome, generation: Generation) {
        let mut entry = self.entry(request_id, None, outcome);
        entry.generation = Some(Box::new(generation));
        self.offer(entry);
    }

    fn entry(&self, request_id: &str, run: Option<RunSize>, outcome: LoggedOutcome) -> Entry {
        Entry {
            time: SystemTime::now(),
            names: self.names.clone(),
            request_id: request_id.into(),
            run,
            outcome,
            generation: None,
        }
    }

    fn offer(&self, entry: Entry) {
        if matches!(entry.outcome, LoggedOutcome::Success { .. }) && !self.model.sampler.keep() {
            return;
        }
        self.model.log.offer(entry);
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

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

//! The generation loop of one instance, on a thread of its own: requests wait in order; between
//! decode steps the loop admits waiting ones (each prefilled alone) while the instance has room
//! (`max_sequences` sequences and `kv_cache_bytes` of cache, reserved for each sequence's longest
//! possible length, so a running sequence never fails for want of memory); every running
//! sequence then advances one token in one ONNX Runtime run; finished ones leave at once.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, TryRecvError};

use crate::clock;
use crate::error::{Error, Result};
use crate::generate::kv::{KvBatch, OwnCache, Source};
use crate::generate::metrics::Load;
use crate::generate::respond::{Chunk, Finish, Reporter, StepTimes};
use crate::generate::sampling::{self, Rng};
use crate::generate::step::Decoder;
use crate::generate::text::{Detokenizer, Text};
use crate::generate::{Entry, Limits};
use crate::triton::model::Readiness;

/// How often a loop with work asks whether its model is being unloaded.
const READY_CHECK_NS: u64 = 10_000_000;

/// One running sequence: its request and everything generation keeps for it.
pub(crate) struct Sequence {
    pub entry: Entry,
    /// Where its cache is.
    place: Place,
    rng: Rng,
    pub generated: Vec<i64>,
    /// Tokens not sent yet (all of them, for a request that asked for one response).
    pub unsent: Vec<i64>,
    /// With text output: the sequence's text, handed out in whole characters, and the text of
    /// the unsent tokens.
    detokenizer: Option<Detokenizer>,
    unsent_text: String,
    /// When its prefill began, its first token was sent, and its last.
    pub started_ns: u64,
    pub first_token_ns: Option<u64>,
    pub last_token_ns: u64,
    /// When its first response was sent (for a request that asked for one response, the last).
    first_response_ns: Option<u64>,
    /// Cache bytes reserved for it (its longest possible length).
    reserved: usize,
}

/// Where a running sequence's cache is.
enum Place {
    /// Its prefill's, until it joins the batch at the next step.
    Own(OwnCache),
    /// A row of the batch.
    Row(usize),
}

pub(crate) struct Scheduler<'a> {
    pub decoder: Decoder<'a>,
    /// The model's tokenizer, for requests that want text back.
    text: Option<Arc<Text>>,
    pub limits: Limits,
    pub reporter: Reporter<'a>,
    waiting: VecDeque<Entry>,
    /// In the batch's row order while no sequence joined or left since its last step.
    running: Vec<Sequence>,
    /// The running sequences' caches, as the decoder reads them.
    batch: KvBatch,
    reserved: usize,
    /// Seeds requests that bring none: distinct per request, reproducible per instance start.
    next_seed: u64,
}

impl<'a> Scheduler<'a> {
    /// `text`: the model's tokenizer, for requests that want text back.
    pub fn new(decoder: Decoder<'a>, limits: Limits, reporter: Reporter<'a>, text: Option<Arc<Text>>) -> Self {
        Scheduler {
            batch: KvBatch::empty(decoder.shape),
            decoder,
            text,
            limits,
            reporter,
            waiting: VecDeque::new(),
            running: Vec::new(),
            reserved: 0,
            next_seed: 0,
        }
    }

    /// Runs until the channel closes (the instance is finalized) and nothing is left to do.
    /// While it holds requests it asks `readiness` every `READY_CHECK_NS`: a model being
    /// unloaded ends every stream with an error (the server waits for them to be released).
    pub fn run(mut self, incoming: &Receiver<Entry>, readiness: &Readiness) {
        let mut open = true;
        let mut checked = clock::now_ns();
        loop {
            if self.running.is_empty() && self.waiting.is_empty() {
                if !open {
                    break;
                }
                match incoming.recv() {
                    Ok(e) => self.enqueue(e),
                    Err(_) => break,
                }
            }
            while open {
                match incoming.try_recv() {
                    Ok(e) => self.enqueue(e),
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => open = false,
                }
            }
            self.drop_cancelled();
            let now = clock::now_ns();
            if now.saturating_sub(checked) >= READY_CHECK_NS {
                checked = now;
                if !readiness.is_ready().unwrap_or(true) {
                    self.end_all(Error::unavailable("the model is being unloaded: the stream ends here"));
                }
            }
            self.admit();
            self.decode();
            if self.running.is_empty() {
                // Nothing runs: the batch's buffers are given back.
                self.batch = KvBatch::empty(self.decoder.shape);
            }
            let load = Load {
                running: self.running.len(),
                waiting: self.waiting.len(),
                reserved: self.reserved,
                held: self.cache_bytes(),
            };
            self.reporter.set_gauges(&load);
        }
    }

    /// Ends every running and waiting request with `e`.
    fn end_all(&mut self, e: Error) {
        for seq in std::mem::take(&mut self.running) {
            self.finish(seq, Finish::Failed(e.clone()));
        }
        for entry in std::mem::take(&mut self.waiting) {
            self.reporter.reject(entry, e.clone());
        }
    }

    /// Bytes the caches hold: the batch's buffers, and the prefills that join it at the next step.
    fn cache_bytes(&self) -> usize {
        let joining: usize = self
            .running
            .iter()
            .map(|s| match &s.place {
                Place::Own(c) => c.bytes(),
                Place::Row(_) => 0,
            })
            .sum();
        self.batch.bytes() + joining
    }

    fn enqueue(&mut self, entry: Entry) {
        let need = self.reservation(&entry);
        if self.limits.kv_cache_bytes > 0 && need > self.limits.kv_cache_bytes {
            let e = Error::unavailable(format!(
                "the request needs {need} bytes of KV cache ({} prompt and {} new tokens); the instance has \
                 kv_cache_bytes {}",
                entry.prompt.len(),
                entry.params.max_tokens,
                self.limits.kv_cache_bytes
            ));
            self.reporter.reject(entry, e);
            return;
        }
        self.waiting.push_back(entry);
    }

    fn reservation(&self, entry: &Entry) -> usize {
        (entry.prompt.len() + entry.params.max_tokens) * self.decoder.shape.bytes_per_position()
    }

    fn has_room(&self, entry: &Entry) -> bool {
        self.running.len() < self.limits.max_sequences
            && (self.limits.kv_cache_bytes == 0
                || self.reserved + self.reservation(entry) <= self.limits.kv_cache_bytes)
    }

    fn drop_cancelled(&mut self) {
        let mut i = 0;
        while i < self.running.len() {
            if self.running[i].entry.factory.is_cancelled().unwrap_or(false) {
                let seq = self.running.swap_remove(i);
                self.finish(seq, Finish::Cancelled);
            } else {
                i += 1;
            }
        }
        let (cancelled, kept): (Vec<Entry>, Vec<Entry>) =
            self.waiting.drain(..).partition(|e| e.factory.is_cancelled().unwrap_or(false));
        self.waiting = kept.into();
        for e in cancelled {
            self.reporter.reject(e, Error::cancelled("the request was cancelled while it waited"));
        }
    }

    /// Prefills waiting requests, in order, while there is room; each sends its first token.
    fn admit(&mut self) {
        while let Some(entry) = self.waiting.front() {
            if !self.has_room(entry) {
                break;
            }
            let Some(entry) = self.waiting.pop_front() else { break };
            let reserved = self.reservation(&entry);
            let seed = entry.params.seed.unwrap_or_else(|| {
                self.next_seed += 1;
                self.next_seed
            });
            let started_ns = clock::now_ns();
            let result = self.decoder.prefill(&entry.prompt);
            let run_end = clock::now_ns();
            let (cache, logits) = match result {
                Ok((cache, logits)) => (cache, Ok(logits)),
                // A failed prefill leaves an empty cache.
                Err(e) => (OwnCache::new(self.decoder.shape, 0), Err(e)),
            };
            let seq = Sequence {
                place: Place::Own(cache),
                rng: Rng::new(seed),
                generated: Vec::new(),
                unsent: Vec::new(),
                detokenizer: entry.params.text_output.then(Detokenizer::default),
                unsent_text: String::new(),
                started_ns,
                first_token_ns: None,
                last_token_ns: started_ns,
                first_response_ns: None,
                reserved,
                entry,
            };
            match logits {
                Ok(logits) => {
                    self.reserved += reserved;
                    let times = StepTimes { start: started_ns, run_end, size: 1 };
                    self.reporter.batch(times);
                    if let Some(seq) = self.advance(seq, &logits, times) {
                        self.running.push(seq);
                    }
                }
                Err(e) => self.finish_unreserved(seq, Finish::Failed(e)),
            }
        }
    }

    /// One decode step over every running sequence.
    fn decode(&mut self) {
        if self.running.is_empty() {
            return;
        }
        let start = clock::now_ns();
        if let Err(e) = self.lay_out_if_changed() {
            self.end_running(&e);
            return;
        }
        let tokens: Vec<i64> = self.running.iter().map(|s| *s.generated.last().unwrap_or(&0)).collect();
        let result = self.decoder.decode(&mut self.batch, &tokens);
        let run_end = clock::now_ns();
        let running = std::mem::take(&mut self.running);
        match result {
            Ok(logits) => {
                let times = StepTimes { start, run_end, size: running.len() };
                self.reporter.batch(times);
                for (seq, logits) in running.into_iter().zip(logits) {
                    if let Some(seq) = self.advance(seq, &logits, times) {
                        self.running.push(seq);
                    }
                }
            }
            Err(e) => {
                self.running = running;
                self.end_running(&e);
            }
        }
    }

    /// Lays the batch out anew when a sequence joined or left since its last step (the running
    /// sequences are then not its rows in order).
    fn lay_out_if_changed(&mut self) -> Result<()> {
        let in_order = self.running.len() == self.batch.rows()
            && self.running.iter().enumerate().all(|(i, s)| matches!(s.place, Place::Row(r) if r == i));
        if in_order {
            return Ok(());
        }
        let sources: Vec<Source<'_>> = self
            .running
            .iter()
            .map(|s| match &s.place {
                Place::Own(c) => Source::Own(c),
                Place::Row(r) => Source::Row(*r),
            })
            .collect();
        self.batch = self.batch.lay_out(&sources)?;
        for (i, s) in self.running.iter_mut().enumerate() {
            s.place = Place::Row(i);
        }
        Ok(())
    }

    /// A decode step that failed: every running sequence ends with `e`.
    fn end_running(&mut self, e: &Error) {
        log::error!("onnxrs: a decode step of {} sequences failed: {e}", self.running.len());
        for seq in std::mem::take(&mut self.running) {
            self.finish(seq, Finish::Failed(e.clone()));
        }
    }

    /// Takes a sequence's next token from `logits`, answers with it, and keeps the sequence
    /// unless it is done.
    fn advance(&mut self, mut seq: Sequence, logits: &[f32], times: StepTimes) -> Option<Sequence> {
        let token = sampling::pick(logits, &seq.entry.params, &mut seq.rng) as i64;
        seq.generated.push(token);
        seq.unsent.push(token);
        let params = &seq.entry.params;
        let eos = !params.ignore_eos && self.decoder.genai.eos_token_ids.contains(&token);
        let full = seq.generated.len() >= params.max_tokens
            || seq.entry.prompt.len() + seq.generated.len() >= self.decoder.genai.context_length;
        let done = if eos {
            Some(Finish::Stop)
        } else if full {
            Some(Finish::Length)
        } else {
            None
        };
        if let (Some(detokenizer), Some(text)) = (seq.detokenizer.as_mut(), self.text.as_deref()) {
            let piece = detokenizer.push(text, token).and_then(|mut piece| {
                if done.is_some() {
                    piece.push_str(&detokenizer.flush(text)?);
                }
                Ok(piece)
            });
            match piece {
                Ok(piece) => seq.unsent_text.push_str(&piece),
                Err(e) => {
                    self.finish(seq, Finish::Failed(e));
                    return None;
                }
            }
        }
        if params.stream || done.is_some() {
            let tokens = std::mem::take(&mut seq.unsent);
            let text = seq.detokenizer.is_some().then(|| std::mem::take(&mut seq.unsent_text));
            let chunk = Chunk {
                tokens: &tokens,
                text: text.as_deref(),
                last: done.is_some(),
                first_response_ns: seq.first_response_ns,
            };
            match self.reporter.tokens(&seq.entry, &chunk, times) {
                Ok(sent_ns) => {
                    seq.first_response_ns.get_or_insert(sent_ns);
                }
                Err(e) => {
                    self.finish(seq, Finish::Failed(e));
                    return None;
                }
            }
        }
        let now = clock::now_ns();
        if seq.first_token_ns.is_some() {
            self.reporter.inter_token(now.saturating_sub(seq.last_token_ns));
        } else {
            self.reporter.first_token(&seq.entry, now);
            seq.first_token_ns = Some(now);
        }
        seq.last_token_ns = now;
        match done {
            Some(finish) => {
                self.finish(seq, finish);
                None
            }
            None => Some(seq),
        }
    }

    fn finish(&mut self, seq: Sequence, finish: Finish) {
        self.reserved = self.reserved.saturating_sub(seq.reserved);
        self.finish_unreserved(seq, finish);
    }

    fn finish_unreserved(&mut self, seq: Sequence, finish: Finish) {
        self.reporter.finish(seq, finish);
    }
}

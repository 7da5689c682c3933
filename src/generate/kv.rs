//! The KV cache of a generator's running sequences, laid out as the decoder's `past_key_values`
//! inputs (`[batch, kv_heads, positions, head_size]`, FP32) and kept that way between steps.
//!
//! A decode step's `present` outputs are written straight into the batch's spare buffers, which
//! then become the next step's `past`: while the batch's members do not change, a step copies no
//! cache at all (as ONNX Runtime GenAI feeds `present` back as `past`). Rows of different lengths
//! are right-padded: a row holds its own positions, zeros up to where the batch was laid out,
//! then the positions of the steps since (every row's), all masked by `attention_mask` so the
//! padding is never attended to. When a sequence joins (its prefill's cache, `OwnCache`) or
//! leaves, the batch is laid out anew, each row's positions packed at its start. Pure byte moves,
//! tested without a model.

use crate::error::{Error, Result};

/// The shape of every sequence's cache in one model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KvShape {
    pub layers: usize,
    pub heads: usize,
    /// Bytes of one position of one head (`head_size` FP32 elements).
    pub row_bytes: usize,
}

impl KvShape {
    /// The cache inputs (and outputs): a key and a value tensor per layer.
    pub fn slots(&self) -> usize {
        self.layers * 2
    }

    /// Bytes one position takes across every layer and head.
    pub fn bytes_per_position(&self) -> usize {
        self.slots() * self.heads * self.row_bytes
    }

    /// Bytes of one cache tensor of `rows` sequences over `positions` positions.
    fn tensor_bytes(&self, rows: usize, positions: usize) -> usize {
        rows * self.heads * positions * self.row_bytes
    }
}

/// Which cache tensor: a layer's keys, or its values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Slot {
    pub layer: usize,
    pub value: bool,
}

impl Slot {
    /// Every slot of `shape`, in the order of the batch's buffers.
    pub fn all(shape: KvShape) -> impl Iterator<Item = Slot> {
        (0..shape.layers).flat_map(|layer| [Slot { layer, value: false }, Slot { layer, value: true }])
    }
}

/// One sequence's cache before it joins the batch: its prefill's `present` outputs, one buffer
/// per slot, `[1, heads, len, head_size]`.
#[derive(Debug)]
pub struct OwnCache {
    slots: Vec<Vec<u8>>,
    len: usize,
}

impl OwnCache {
    /// Zeroed buffers for `len` positions, for a prefill to write its outputs into.
    pub fn new(shape: KvShape, len: usize) -> Self {
        OwnCache { slots: vec![vec![0; shape.tensor_bytes(1, len)]; shape.slots()], len }
    }

    /// Bytes held.
    pub fn bytes(&self) -> usize {
        self.slots.iter().map(Vec::capacity).sum()
    }

    /// The buffers, one per slot, for a run to write into.
    pub fn buffers(&mut self) -> impl Iterator<Item = &mut [u8]> {
        self.slots.iter_mut().map(Vec::as_mut_slice)
    }
}

/// Where a row of a new layout comes from.
#[derive(Debug, Clone, Copy)]
pub enum Source<'a> {
    /// Row `r` of the current batch.
    Row(usize),
    /// A sequence that joins now.
    Own(&'a OwnCache),
}

/// The running batch's cache: per slot one buffer of `[rows, heads, width, head_size]`. Row `r`
/// holds its own positions `0..own[r]`, padding up to `shared_from`, and the positions of the
/// steps since the layout, `shared_from..width`.
#[derive(Debug)]
pub struct KvBatch {
    shape: KvShape,
    width: usize,
    shared_from: usize,
    own: Vec<usize>,
    past: Vec<Vec<u8>>,
    /// Where the next step writes its `present` outputs; kept between steps so they allocate
    /// nothing while the batch grows within their capacity.
    spare: Vec<Vec<u8>>,
}

/// Positions a buffer grows by when it must grow (so a run of steps reallocates rarely).
const GROWTH: usize = 64;

/// `buffer` with `len` bytes, growing its capacity by `GROWTH` positions' worth (`step` bytes
/// each) when it must, without copying what it held (every byte of it is rewritten).
fn fit(buffer: &mut Vec<u8>, len: usize, step: usize) {
    if len > buffer.capacity() {
        *buffer = Vec::with_capacity(len + GROWTH * step);
    }
    buffer.resize(len, 0);
}

impl KvBatch {
    /// A batch of no sequences, holding nothing.
    pub fn empty(shape: KvShape) -> Self {
        KvBatch { shape, width: 0, shared_from: 0, own: Vec::new(), past: Vec::new(), spare: Vec::new() }
    }

    /// Sequences in the batch.
    pub fn rows(&self) -> usize {
        self.own.len()
    }

    /// Positions per row in the `past` inputs.
    pub fn width(&self) -> usize {
        self.width
    }

    /// Positions row `r` holds (each sequence's length).
    pub fn len(&self, r: usize) -> usize {
        self.own.get(r).map_or(0, |own| own + self.width - self.shared_from)
    }

    /// Bytes held (both sets of buffers, as allocated).
    pub fn bytes(&self) -> usize {
        self.past.iter().chain(&self.spare).map(Vec::capacity).sum()
    }

    /// A batch of `sources`, in that order, each row's positions packed at its start. Fails on a
    /// row this batch does not have.
    pub fn lay_out(&self, sources: &[Source<'_>]) -> Result<KvBatch> {
        if let Some(Source::Row(r)) = sources.iter().find(|s| matches!(s, Source::Row(r) if *r >= self.rows())) {
            return Err(Error::internal(format!("a KV cache layout names row {r} of a batch of {}", self.rows())));
        }
        let shape = self.shape;
        let own: Vec<usize> = sources
            .iter()
            .map(|s| match s {
                Source::Row(r) => self.len(*r),
                Source::Own(c) => c.len,
            })
            .collect();
        let width = own.iter().copied().max().unwrap_or(0);
        let row = shape.row_bytes;
        let step = shape.tensor_bytes(sources.len(), 1);
        let mut past = Vec::with_capacity(shape.slots());
        for slot in 0..shape.slots() {
            let mut out = Vec::new();
            fit(&mut out, shape.tensor_bytes(sources.len(), width), step);
            for (b, source) in sources.iter().enumerate() {
                for head in 0..shape.heads {
                    let to = (b * shape.heads + head) * width * row;
                    match *source {
                        Source::Own(c) => {
                            let from = head * c.len * row;
                            out[to..to + c.len * row].copy_from_slice(&c.slots[slot][from..from + c.len * row]);
                        }
                        Source::Row(r) => {
                            let from = (r * shape.heads + head) * self.width * row;
                            let (mine, shared) = (self.own[r] * row, (self.width - self.shared_from) * row);
                            let old = &self.past[slot];
                            out[to..to + mine].copy_from_slice(&old[from..from + mine]);
                            let from = from + self.shared_from * row;
                            out[to + mine..to + mine + shared].copy_from_slice(&old[from..from + shared]);
                        }
                    }
                }
            }
            past.push(out);
        }
        Ok(KvBatch { shape, width, shared_from: width, own, past, spare: vec![Vec::new(); shape.slots()] })
    }

    /// The `attention_mask` of a step of `new` positions: per row its own positions, zeros for
    /// its padding, then the shared positions and the step's.
    pub fn attention_mask(&self, new: usize) -> Vec<i64> {
        let mut out = Vec::with_capacity(self.rows() * (self.width + new));
        for &own in &self.own {
            out.extend((0..self.shared_from).map(|p| i64::from(p < own)));
            out.extend(std::iter::repeat_n(1, self.width - self.shared_from + new));
        }
        out
    }

    /// The `position_ids` of a step of `new` positions: each row counts its own positions.
    pub fn positions(&self, new: usize) -> Vec<i64> {
        (0..self.rows()).flat_map(|r| (self.len(r)..self.len(r) + new).map(|p| p as i64)).collect()
    }

    /// For a step of `new` positions: per slot the `past` input and the buffer its `present`
    /// output (`width + new` positions) is written into.
    pub fn io(&mut self, new: usize) -> (Vec<&[u8]>, Vec<&mut [u8]>) {
        let shape = self.shape;
        let (len, step) = (shape.tensor_bytes(self.rows(), self.width + new), shape.tensor_bytes(self.rows(), 1));
        self.spare.resize_with(shape.slots(), Vec::new);
        for buffer in &mut self.spare {
            fit(buffer, len, step);
        }
        (self.past.iter().map(Vec::as_slice).collect(), self.spare.iter_mut().map(Vec::as_mut_slice).collect())
    }

    /// After a step of `new` positions ran: its `present` outputs are the next step's `past`.
    pub fn advance(&mut self, new: usize) {
        std::mem::swap(&mut self.past, &mut self.spare);
        self.width += new;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHAPE: KvShape = KvShape { layers: 1, heads: 2, row_bytes: 2 };

    /// A prefill's cache of `len` positions: row p of head h = [tag + h, p].
    fn own(len: usize, tag: u8) -> OwnCache {
        let mut c = OwnCache::new(SHAPE, len);
        for buffer in c.buffers() {
            for (i, row) in buffer.chunks_exact_mut(2).enumerate() {
                row.copy_from_slice(&[tag + (i / len) as u8, (i % len) as u8]);
            }
        }
        c
    }

    /// Writes what a step's Concat would: each present row is its past row, then `tokens`
    /// new positions of [tag, 100 + width].
    fn run_step(batch: &mut KvBatch, tokens: usize) {
        let width = batch.width();
        let (pasts, presents) = batch.io(tokens);
        for (past, present) in pasts.iter().zip(presents) {
            let rows = present.len() / ((width + tokens) * 2);
            for r in 0..rows {
                let to = r * (width + tokens) * 2;
                present[to..to + width * 2].copy_from_slice(&past[r * width * 2..(r + 1) * width * 2]);
                for t in 0..tokens {
                    present[to + (width + t) * 2..to + (width + t + 1) * 2]
                        .copy_from_slice(&[9, 100 + (width + t) as u8]);
                }
            }
        }
        batch.advance(tokens);
    }

    #[test]
    fn steps_reuse_the_batch_and_a_new_layout_packs_each_row() {
        let (a, b) = (own(3, 0), own(1, 10));
        let mut batch = KvBatch::empty(SHAPE).lay_out(&[Source::Own(&a), Source::Own(&b)]).unwrap();
        assert_eq!((batch.rows(), batch.width(), batch.len(0), batch.len(1)), (2, 3, 3, 1));
        #[rustfmt::skip]
        assert_eq!(batch.io(1).0[0], &[
            0, 0, 0, 1, 0, 2,   1, 0, 1, 1, 1, 2,  // a: head 0, head 1
            10, 0, 0, 0, 0, 0,  11, 0, 0, 0, 0, 0, // b: one position, then padding
        ][..]);
        assert_eq!(batch.attention_mask(1), vec![1, 1, 1, 1, 1, 0, 0, 1]);
        assert_eq!(batch.positions(1), vec![3, 1]);
        run_step(&mut batch, 1);
        run_step(&mut batch, 1);
        // Two steps later: rows are 5 wide, b's padding stays in the middle.
        assert_eq!((batch.width(), batch.len(0), batch.len(1)), (5, 5, 3));
        assert_eq!(batch.attention_mask(1), vec![1, 1, 1, 1, 1, 1, 1, 0, 0, 1, 1, 1]);
        assert_eq!(batch.positions(1), vec![5, 3]);
        assert_eq!(&batch.io(1).0[1][20..30], &[10, 0, 0, 0, 0, 0, 9, 103, 9, 104]);
        // b stays, a leaves, c joins: b's rows are packed.
        let c = own(2, 20);
        assert!(batch.lay_out(&[Source::Row(2)]).is_err(), "no such row");
        let next = batch.lay_out(&[Source::Row(1), Source::Own(&c)]).unwrap();
        assert_eq!((next.rows(), next.width(), next.len(0), next.len(1)), (2, 3, 3, 2));
        assert_eq!(next.attention_mask(1), vec![1, 1, 1, 1, 1, 1, 0, 1]);
        #[rustfmt::skip]
        assert_eq!(next.past[0], vec![
            10, 0, 9, 103, 9, 104,  11, 0, 9, 103, 9, 104,  // b
            20, 0, 20, 1, 0, 0,     21, 0, 21, 1, 0, 0,     // c, then padding
        ]);
        assert!(next.bytes() > 0);
        assert_eq!(KvBatch::empty(SHAPE).bytes(), 0);
    }
}

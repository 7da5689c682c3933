//! One sequence's KV cache, and laying the caches of a step's sequences out as the decoder's
//! `past_key_values` inputs (`[batch, kv_heads, past, head_size]`, right-padded: each sequence's
//! own positions first, zeros after, masked by `attention_mask`), and taking a step's new
//! positions back from its `present` outputs. Pure byte moves over FP32 elements, tested
//! without a model.

/// The shape of every sequence's cache in one model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KvShape {
    pub layers: usize,
    pub heads: usize,
    /// Bytes of one position of one head (`head_size` FP32 elements).
    pub row_bytes: usize,
}

impl KvShape {
    /// Blocks in a cache: a key and a value block per layer and head.
    fn blocks(&self) -> usize {
        self.layers * 2 * self.heads
    }

    fn block(&self, layer: usize, value: bool, head: usize) -> usize {
        (layer * 2 + usize::from(value)) * self.heads + head
    }

    /// Bytes one position takes across every layer and head.
    pub fn bytes_per_position(&self) -> usize {
        self.blocks() * self.row_bytes
    }
}

/// Which block of every head: a layer's keys, or its values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Slot {
    pub layer: usize,
    pub value: bool,
}

/// Where a step's positions lie in its inputs and outputs: after `past` (padded) positions come
/// `new` ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    pub past: usize,
    pub new: usize,
}

/// One sequence's keys and values, one growing block per layer, kind and head.
#[derive(Debug, Clone)]
pub struct KvCache {
    shape: KvShape,
    blocks: Vec<Vec<u8>>,
    len: usize,
}

impl KvCache {
    pub fn new(shape: KvShape) -> Self {
        KvCache { shape, blocks: vec![Vec::new(); shape.blocks()], len: 0 }
    }

    /// Positions held.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Bytes held.
    pub fn bytes(&self) -> usize {
        self.len * self.shape.bytes_per_position()
    }
}

/// The `past` input of `slot` for `caches`, padded to `past` positions:
/// `[caches.len(), heads, past, head_size]` as bytes.
pub fn past_input(caches: &[&KvCache], shape: KvShape, slot: Slot, past: usize) -> Vec<u8> {
    let row = shape.row_bytes;
    let mut out = vec![0u8; caches.len() * shape.heads * past * row];
    for (b, cache) in caches.iter().enumerate() {
        for head in 0..shape.heads {
            let block = &cache.blocks[shape.block(slot.layer, slot.value, head)];
            let at = (b * shape.heads + head) * past * row;
            out[at..at + block.len()].copy_from_slice(block);
        }
    }
    out
}

/// Appends to each cache of `caches` (of `shape`) the new positions of `span` from the `present`
/// output of `slot` (`[caches.len(), heads, past + new, head_size]` as bytes). Returns false
/// when `present` is not of that size.
pub fn take_present(caches: &mut [&mut KvCache], slot: Slot, present: &[u8], span: Span) -> bool {
    let Some(shape) = caches.first().map(|c| c.shape) else { return present.is_empty() };
    let row = shape.row_bytes;
    let total = span.past + span.new;
    if present.len() != caches.len() * shape.heads * total * row {
        return false;
    }
    for (b, cache) in caches.iter_mut().enumerate() {
        for head in 0..shape.heads {
            let at = ((b * shape.heads + head) * total + span.past) * row;
            cache.blocks[shape.block(slot.layer, slot.value, head)]
                .extend_from_slice(&present[at..at + span.new * row]);
        }
    }
    true
}

/// After every layer's keys and values of a step were taken: the caches hold `new` more positions.
pub fn advance(caches: &mut [&mut KvCache], new: usize) {
    for cache in caches {
        cache.len += new;
    }
}

/// The `attention_mask` of a step: per sequence its own positions, zeros for the padding up to
/// `past`, and the `new` positions of the step.
pub fn attention_mask(lens: &[usize], past: usize, new: usize) -> Vec<i64> {
    let mut out = Vec::with_capacity(lens.len() * (past + new));
    for &len in lens {
        out.extend((0..past).map(|p| i64::from(p < len)));
        out.extend(std::iter::repeat_n(1, new));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHAPE: KvShape = KvShape { layers: 1, heads: 2, row_bytes: 2 };

    /// A present output for one sequence: heads × positions rows, row r of head h = [h, r].
    fn present(heads: usize, positions: usize) -> Vec<u8> {
        (0..heads).flat_map(|h| (0..positions).flat_map(move |r| [h as u8, r as u8])).collect()
    }

    #[test]
    fn caches_grow_and_lay_out_right_padded() {
        let (mut a, mut b) = (KvCache::new(SHAPE), KvCache::new(SHAPE));
        // a's prefill: 3 positions; b's: 1.
        for (cache, n) in [(&mut a, 3), (&mut b, 1)] {
            for value in [false, true] {
                let span = Span { past: 0, new: n };
                assert!(take_present(&mut [&mut *cache], Slot { layer: 0, value }, &present(2, n), span));
            }
            advance(&mut [cache], n);
        }
        assert_eq!((a.len(), b.len(), a.bytes()), (3, 1, 3 * 2 * 2 * 2));
        let keys = Slot { layer: 0, value: false };
        let past = past_input(&[&a, &b], SHAPE, keys, 3);
        #[rustfmt::skip]
        assert_eq!(past, vec![
            0, 0, 0, 1, 0, 2,   1, 0, 1, 1, 1, 2,  // a: head 0, head 1
            0, 0, 0, 0, 0, 0,   1, 0, 0, 0, 0, 0,  // b: one position, then padding
        ]);
        assert_eq!(attention_mask(&[3, 1], 3, 1), vec![1, 1, 1, 1, 1, 0, 0, 1]);
        // A decode step over both: present has 3 + 1 positions per head; the last is new.
        let step: Vec<u8> = [present(2, 4), present(2, 4)].concat();
        let span = Span { past: 3, new: 1 };
        assert!(take_present(&mut [&mut a, &mut b], keys, &step, span));
        let values = Slot { layer: 0, value: true };
        assert!(!take_present(&mut [&mut a, &mut b], values, &step[1..], span), "wrong size");
        assert_eq!(a.blocks[0], vec![0, 0, 0, 1, 0, 2, 0, 3]);
        assert_eq!(b.blocks[1], vec![1, 0, 1, 3]);
    }
}

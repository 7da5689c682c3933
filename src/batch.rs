//! How the requests of one execute become ONNX Runtime runs: which requests run together, how
//! their inputs are laid end to end along the batch dimension, and which rows of each output go
//! back to which request. Pure functions over shapes and byte slices.

use std::borrow::Cow;
use std::ops::Range;

use crate::config::ragged::BatchInputKind;
use crate::dtype::DataType;
use crate::error::{Error, Result};

/// What must agree for two requests to share a run: every input's shape without the batch
/// dimension, and which inputs are present (optional ones may be absent).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signature {
    /// (config input index, shape the model sees without the batch dimension), in config order.
    pub inputs: Vec<(usize, Vec<i64>)>,
}

/// Groups requests (given as (batch size, signature), in arrival order) into runs. With batching,
/// requests with equal signatures share a run, in arrival order, up to `max_batch` rows; without
/// batching (`max_batch == 0`) every request runs alone. Each group lists request indices.
pub fn plan(requests: &[(usize, &Signature)], max_batch: usize) -> Vec<Vec<usize>> {
    let mut groups: Vec<(Vec<usize>, usize)> = Vec::new();
    for (i, (rows, sig)) in requests.iter().enumerate() {
        let open = if max_batch == 0 {
            None
        } else {
            groups.iter_mut().find(|(members, total)| requests[members[0]].1 == *sig && total + rows <= max_batch)
        };
        match open {
            Some((members, total)) => {
                members.push(i);
                *total += rows;
            }
            None => groups.push((vec![i], *rows)),
        }
    }
    groups.into_iter().map(|(members, _)| members).collect()
}

/// Whether `data` can be handed to ONNX Runtime in place: one contiguous buffer, naturally
/// aligned for its element type (HTTP bodies put tensors at arbitrary offsets).
pub fn can_borrow(parts: &[&[u8]], element_size: usize) -> bool {
    parts.len() == 1 && (parts[0].as_ptr() as usize).is_multiple_of(element_size.max(1))
}

/// One input of a run laid out contiguously: borrowed when one part already is, else copied into
/// an 8-byte-aligned buffer (enough for every element type).
pub enum Gathered<'a> {
    Borrowed(&'a [u8]),
    Owned(AlignedBytes),
}

impl Gathered<'_> {
    pub fn bytes(&self) -> &[u8] {
        match self {
            Gathered::Borrowed(b) => b,
            Gathered::Owned(o) => o.as_slice(),
        }
    }
}

/// Bytes whose start is 8-byte aligned: a byte vector 7 bytes longer than needed, viewed from its
/// first aligned address. Safe Rust: the offset is computed from the address, never assumed.
pub struct AlignedBytes {
    storage: Vec<u8>,
    offset: usize,
    len: usize,
}

impl AlignedBytes {
    pub fn zeroed(len: usize) -> Result<Self> {
        let too_large = || Error::unavailable(format!("cannot allocate {len} bytes to gather an input"));
        let n = len.checked_add(ALIGN - 1).ok_or_else(too_large)?;
        let mut storage = Vec::new();
        storage.try_reserve_exact(n).map_err(|_| too_large())?;
        storage.resize(n, 0);
        // The vector never grows again, so its address, and this offset, stay valid.
        let address = storage.as_ptr() as usize;
        let offset = address.next_multiple_of(ALIGN) - address;
        Ok(AlignedBytes { storage, offset, len })
    }

    pub fn as_slice(&self) -> &[u8] {
        &self.storage[self.offset..self.offset + self.len]
    }

    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        &mut self.storage[self.offset..self.offset + self.len]
    }
}

/// Enough for every element type.
const ALIGN: usize = 8;

/// Lays out the parts of one input across the requests of a run (each request's parts in order,
/// requests in order). Borrows when there is a single aligned part.
pub fn gather<'a>(parts: &[&'a [u8]], element_size: usize) -> Result<Gathered<'a>> {
    if can_borrow(parts, element_size) {
        return Ok(Gathered::Borrowed(parts[0]));
    }
    let total = parts.iter().map(|p| p.len()).sum();
    let mut out = AlignedBytes::zeroed(total)?;
    let dst = out.as_mut_slice();
    let mut at = 0;
    for p in parts {
        dst[at..at + p.len()].copy_from_slice(p);
        at += p.len();
    }
    Ok(Gathered::Owned(out))
}

/// Joins the parts of one request's input when it came in several buffers (needed before BYTES
/// can be decoded, since an element may straddle two buffers).
pub fn contiguous<'a>(parts: &[&'a [u8]]) -> Cow<'a, [u8]> {
    match parts {
        [] => Cow::Borrowed(&[]),
        [one] => Cow::Borrowed(one),
        many => Cow::Owned(many.concat()),
    }
}

/// For an output of `total_rows` rows of `row_len` units each, the unit ranges of each request
/// (requests own `rows[i]` consecutive rows, in order). Fails if the output's batch dimension is
/// not the sum the requests put in, which would otherwise hand rows to the wrong client.
pub fn split_rows(total_rows: usize, row_len: usize, rows: &[usize]) -> Result<Vec<Range<usize>>> {
    let expected: usize = rows.iter().sum();
    if total_rows != expected {
        return Err(Error::internal(format!(
            "the model returned {total_rows} rows for a batch of {expected}; cannot split the output between requests"
        )));
    }
    Ok(consecutive(rows.iter().map(|&r| r * row_len)))
}

/// For an output of `total` elements scattered between requests that own `counts[i]`
/// consecutive elements each (a `batch_output`), each request's element range. Fails if the
/// counts do not add up to the output, which would otherwise hand elements to the wrong client.
pub fn split_elements(total: usize, counts: &[usize]) -> Result<Vec<Range<usize>>> {
    let expected: usize = counts.iter().sum();
    if total != expected {
        return Err(Error::internal(format!(
            "the model returned {total} elements where the requests' source inputs have {expected}"
        )));
    }
    Ok(consecutive(counts.iter().copied()))
}

/// Back-to-back ranges of the given sizes, from 0: what each request owns of an output.
fn consecutive(sizes: impl Iterator<Item = usize>) -> Vec<Range<usize>> {
    let mut at = 0;
    sizes
        .map(|n| {
            at += n;
            at - n..at
        })
        .collect()
}

/// The shape one request gets back of a `batch_output` (BATCH_SCATTER_WITH_INPUT_SHAPE): the
/// output's `dims` (batch dimension first) with each -1 taken from `source`, the request's shape
/// of the source input (batch dimension first), at the same place.
pub fn scatter_shape(dims: &[i64], source: &[i64]) -> Result<Vec<i64>> {
    dims.iter()
        .enumerate()
        .map(|(i, &d)| match d {
            -1 => source.get(i).copied().ok_or_else(|| {
                Error::invalid_arg(format!(
                    "dimension {i} is -1 but the source input has only {} dimensions",
                    source.len()
                ))
            }),
            d => Ok(d),
        })
        .collect()
}

/// The number of elements of a tensor of `shape` (negative dimensions count as 0).
pub fn element_count(shape: &[i64]) -> usize {
    shape.iter().map(|&d| usize::try_from(d).unwrap_or(0)).product()
}

/// A batch input's tensor for a run: its shape and values, from each request's source input as
/// (rows, shape without the batch dimension), in run order.
pub fn batch_input(kind: BatchInputKind, items: &[(usize, &[i64])]) -> (Vec<i64>, Vec<i64>) {
    let count = |(rows, dims): &(usize, &[i64])| *rows as i64 * dims.iter().product::<i64>();
    let running = items.iter().scan(0i64, |sum, item| {
        *sum += count(item);
        Some(*sum)
    });
    let item_shapes = || items.iter().flat_map(|(rows, dims)| (0..*rows).flat_map(move |_| dims.iter().copied()));
    let n = items.len() as i64;
    let rows: i64 = items.iter().map(|(rows, _)| *rows as i64).sum();
    let rank = items.first().map_or(0, |(_, dims)| dims.len()) as i64;
    match kind {
        BatchInputKind::ElementCount => (vec![n], items.iter().map(count).collect()),
        BatchInputKind::AccumulatedElementCount => (vec![n], running.collect()),
        BatchInputKind::AccumulatedElementCountWithZero => (vec![n + 1], std::iter::once(0).chain(running).collect()),
        BatchInputKind::MaxElementCountAsShape => {
            let max = items.iter().map(count).max().unwrap_or(0);
            (vec![max], vec![0; max.max(0) as usize])
        }
        BatchInputKind::ItemShape => (vec![rows, rank], item_shapes().collect()),
        BatchInputKind::ItemShapeFlatten => (vec![rows * rank], item_shapes().collect()),
    }
}

/// `values` as a tensor of `data_type` (TYPE_FP32 or TYPE_INT32, what a batch input may be).
pub fn batch_input_bytes(values: &[i64], data_type: DataType) -> Result<Gathered<'static>> {
    let mut out = AlignedBytes::zeroed(values.len() * 4)?;
    for (chunk, &v) in out.as_mut_slice().chunks_exact_mut(4).zip(values) {
        let bytes = match data_type {
            DataType::Fp32 => (v as f32).to_le_bytes(),
            DataType::Int32 => i32::try_from(v)
                .map_err(|_| Error::invalid_arg(format!("a batch input value {v} does not fit TYPE_INT32")))?
                .to_le_bytes(),
            other => return Err(Error::internal(format!("a batch input of type {other}"))),
        };
        chunk.copy_from_slice(&bytes);
    }
    Ok(Gathered::Owned(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_inputs_of_every_kind() {
        use BatchInputKind::*;
        // Three requests: one row of 3 elements, two rows of 2x1, one row of 1.
        let items: [(usize, &[i64]); 3] = [(1, &[3]), (2, &[2]), (1, &[1])];
        assert_eq!(batch_input(ElementCount, &items), (vec![3], vec![3, 4, 1]));
        assert_eq!(batch_input(AccumulatedElementCount, &items), (vec![3], vec![3, 7, 8]));
        assert_eq!(batch_input(AccumulatedElementCountWithZero, &items), (vec![4], vec![0, 3, 7, 8]));
        assert_eq!(batch_input(MaxElementCountAsShape, &items), (vec![4], vec![0; 4]));
        assert_eq!(batch_input(ItemShape, &items), (vec![4, 1], vec![3, 2, 2, 1]));
        assert_eq!(batch_input(ItemShapeFlatten, &items), (vec![4], vec![3, 2, 2, 1]));
        let b = batch_input_bytes(&[1, -2], DataType::Int32).unwrap();
        assert_eq!(b.bytes(), [1, 0, 0, 0, 0xfe, 0xff, 0xff, 0xff]);
        assert_eq!(batch_input_bytes(&[3], DataType::Fp32).unwrap().bytes(), 3.0f32.to_le_bytes());
    }

    fn sig(tail: &[i64]) -> Signature {
        Signature { inputs: vec![(0, tail.to_vec())] }
    }

    #[test]
    fn same_shapes_fuse_in_order() {
        let a = sig(&[4]);
        let reqs = [(1, &a), (2, &a), (1, &a)];
        assert_eq!(plan(&reqs, 8), vec![vec![0, 1, 2]]);
    }

    #[test]
    fn different_shapes_run_separately_but_still_fuse_with_their_kind() {
        let a = sig(&[4]);
        let b = sig(&[5]);
        let reqs = [(1, &a), (1, &b), (1, &a), (1, &b)];
        assert_eq!(plan(&reqs, 8), vec![vec![0, 2], vec![1, 3]]);
    }

    #[test]
    fn max_batch_is_respected_and_zero_means_alone() {
        let a = sig(&[4]);
        let reqs = [(3, &a), (3, &a), (3, &a)];
        assert_eq!(plan(&reqs, 6), vec![vec![0, 1], vec![2]]);
        assert_eq!(plan(&reqs, 0), vec![vec![0], vec![1], vec![2]]);
    }

    #[test]
    fn optional_input_presence_is_part_of_the_signature() {
        let with = Signature { inputs: vec![(0, vec![4]), (1, vec![4])] };
        let without = Signature { inputs: vec![(0, vec![4])] };
        assert_eq!(plan(&[(1, &with), (1, &without)], 8), vec![vec![0], vec![1]]);
    }

    #[test]
    fn gather_borrows_single_aligned_part() {
        let data = AlignedBytes::zeroed(16).unwrap();
        let parts = [data.as_slice()];
        assert!(matches!(gather(&parts, 4).unwrap(), Gathered::Borrowed(_)));
        let odd = [&data.as_slice()[1..9]];
        let g = gather(&odd, 4).unwrap();
        assert!(matches!(g, Gathered::Owned(_)));
        assert_eq!(g.bytes().as_ptr() as usize % 8, 0);
    }

    #[test]
    fn gather_concatenates_in_order() {
        let (a, b) = ([1u8, 2], [3u8, 4, 5, 6]);
        let g = gather(&[&a, &b], 2).unwrap();
        assert_eq!(g.bytes(), &[1, 2, 3, 4, 5, 6]);
        assert_eq!(contiguous(&[&a, &b]).as_ref(), &[1, 2, 3, 4, 5, 6]);
        assert!(matches!(contiguous(&[&a]), Cow::Borrowed(_)));
    }

    #[test]
    fn split_rows_checks_the_total() {
        assert_eq!(split_rows(3, 4, &[1, 2]).unwrap(), vec![0..4, 4..12]);
        assert_eq!(split_rows(0, 4, &[0]).unwrap(), vec![0..0]);
        assert!(split_rows(4, 4, &[1, 2]).unwrap_err().message().contains("4 rows for a batch of 3"));
    }

    #[test]
    fn scatter_takes_the_source_shape_and_checks_the_total() {
        assert_eq!(scatter_shape(&[-1, -1], &[2, 3]).unwrap(), vec![2, 3]);
        assert_eq!(scatter_shape(&[-1, 4], &[1, 3]).unwrap(), vec![1, 4]);
        assert!(scatter_shape(&[-1, -1, -1], &[1, 3]).is_err());
        assert_eq!(element_count(&[2, 3]), 6);
        assert_eq!(split_elements(9, &[3, 6, 0]).unwrap(), vec![0..3, 3..9, 9..9]);
        assert!(split_elements(8, &[3, 6]).unwrap_err().message().contains("returned 8 elements"));
    }
}

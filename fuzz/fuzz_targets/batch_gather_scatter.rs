//! Batching (`src/batch.rs`): which requests share a run, how their inputs are laid end to end,
//! and how an output's rows go back to each request. Random requests (rows, shapes, data types,
//! data cut into parts at random, at random alignments) go through plan → gather → a model that
//! returns its input → split_rows, the way `src/execute/run.rs` and `respond.rs` use them.
//!
//! Invariants, on every execution:
//! - the plan puts every request in exactly one run, in arrival order; a run's requests share one
//!   signature and stay within max_batch_size (a lone request may exceed it: Triton checked it);
//! - gathering gives the run's bytes end to end, borrowed exactly when one aligned part allows;
//! - scattering the output gives every request exactly the rows it put in (so no client ever
//!   receives another's data), for fixed-size types and BYTES alike;
//! - an output whose batch dimension is not the sum of the requests' rows is refused.
#![no_main]

use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;
use triton_onnxrs::batch::{self, AlignedBytes, Gathered, Signature};
use triton_onnxrs::bytes;
use triton_onnxrs::dtype;

#[derive(Debug, Arbitrary)]
struct Request {
    rows: u8,
    /// Which of a few signatures (shapes) the request has.
    signature: u8,
    /// Where its data is cut into parts (positions, modulo the length).
    cuts: Vec<u16>,
    /// Offset of its data from an 8-byte boundary.
    misalign: u8,
    /// For BYTES: each element's length.
    lengths: Vec<u8>,
}

#[derive(Debug, Arbitrary)]
struct Input {
    max_batch: u8,
    data_type: u8,
    /// Elements per row (the product of the shape without the batch dimension).
    row_len: u8,
    requests: Vec<Request>,
    /// How far off the output's batch dimension is in the refusal check.
    wrong_rows: u8,
}

/// One request's input data, `misalign` bytes after an 8-byte boundary, cut into parts.
struct Held {
    buffer: AlignedBytes,
    misalign: usize,
    cuts: Vec<usize>,
}

impl Held {
    fn new(content: &[u8], misalign: usize, cuts: &[u16]) -> Self {
        let mut buffer = AlignedBytes::zeroed(misalign + content.len()).unwrap();
        buffer.as_mut_slice()[misalign..].copy_from_slice(content);
        let mut cuts: Vec<usize> = cuts.iter().take(6).map(|&c| c as usize % (content.len() + 1)).collect();
        cuts.sort_unstable();
        Held { buffer, misalign, cuts }
    }
    fn bytes(&self) -> &[u8] {
        &self.buffer.as_slice()[self.misalign..]
    }
    /// The data as the server may hold it: in pieces, some possibly empty.
    fn parts(&self) -> Vec<&[u8]> {
        let data = self.bytes();
        let mut parts = Vec::new();
        let mut at = 0;
        for &cut in &self.cuts {
            parts.push(&data[at..cut]);
            at = cut;
        }
        parts.push(&data[at..]);
        parts
    }
}

fuzz_target!(|input: Input| {
    let signatures: Vec<Signature> =
        (0..3).map(|k| Signature { inputs: vec![(0, vec![k, 2])] }).chain([Signature { inputs: vec![] }]).collect();
    let max_batch = input.max_batch as usize % 17;
    let requests: Vec<&Request> = input.requests.iter().take(16).collect();
    let rows: Vec<usize> = requests.iter().map(|r| r.rows as usize % 9).collect();
    let planned: Vec<(usize, &Signature)> =
        requests.iter().zip(&rows).map(|(r, &n)| (n, &signatures[r.signature as usize % signatures.len()])).collect();
    let runs = batch::plan(&planned, max_batch);

    let mut seen: Vec<usize> = runs.iter().flatten().copied().collect();
    seen.sort_unstable();
    assert_eq!(seen, (0..planned.len()).collect::<Vec<_>>(), "every request in exactly one run");
    for run in &runs {
        assert!(!run.is_empty());
        assert!(run.windows(2).all(|w| w[0] < w[1]), "arrival order within a run");
        assert!(run.iter().all(|&i| planned[i].1 == planned[run[0]].1), "one signature per run");
        let total: usize = run.iter().map(|&i| rows[i]).sum();
        assert!(run.len() == 1 || (max_batch > 0 && total <= max_batch), "run of {total} rows, max {max_batch}");
    }

    let data_type = dtype::ALL[input.data_type as usize % dtype::ALL.len()];
    let row_len = input.row_len as usize % 7;
    for run in &runs {
        let run_rows: Vec<usize> = run.iter().map(|&i| rows[i]).collect();
        let total: usize = run_rows.iter().sum();
        let ranges = batch::split_rows(total, row_len, &run_rows).unwrap();
        assert!(batch::split_rows(total + 1 + input.wrong_rows as usize, row_len, &run_rows).is_err());
        if total > 0 {
            assert!(batch::split_rows(total - 1, row_len, &run_rows).is_err());
        }
        match data_type.byte_size() {
            Some(size) => {
                let held: Vec<Held> = run
                    .iter()
                    .map(|&i| {
                        let len = rows[i] * row_len * size;
                        let content: Vec<u8> = (0..len).map(|b| (b as u8) ^ (i as u8).wrapping_mul(37)).collect();
                        Held::new(&content, requests[i].misalign as usize % 8, &requests[i].cuts)
                    })
                    .collect();
                let parts: Vec<&[u8]> = held.iter().flat_map(Held::parts).collect();
                let gathered = batch::gather(&parts, size).unwrap();
                let end_to_end: Vec<u8> = held.iter().flat_map(|h| h.bytes().iter().copied()).collect();
                assert_eq!(gathered.bytes(), &end_to_end[..]);
                match &gathered {
                    Gathered::Borrowed(b) => {
                        assert!(batch::can_borrow(&parts, size));
                        assert_eq!(b.as_ptr(), parts[0].as_ptr(), "borrowed means no copy");
                    }
                    Gathered::Owned(o) => {
                        assert!(!batch::can_borrow(&parts, size));
                        assert!((o.as_slice().as_ptr() as usize).is_multiple_of(8), "a copy is 8-byte aligned");
                    }
                }
                // The model returns its input: each request's rows of the output are its own data.
                let output = gathered.bytes();
                for (h, range) in held.iter().zip(&ranges) {
                    assert_eq!(&output[range.start * size..range.end * size], h.bytes());
                }
            }
            None => {
                // BYTES: each request's elements, encoded as the client sends them; decoded from
                // its (joined) parts; the run's elements laid end to end; split back by rows.
                let elements: Vec<Vec<Vec<u8>>> = run
                    .iter()
                    .map(|&i| {
                        let mut lengths = requests[i].lengths.iter().cycle();
                        (0..rows[i] * row_len)
                            .map(|e| {
                                let len = lengths.next().map_or(0, |&l| l as usize % 9);
                                vec![(e as u8) ^ (i as u8).wrapping_mul(37); len]
                            })
                            .collect()
                    })
                    .collect();
                let held: Vec<Held> = run
                    .iter()
                    .zip(&elements)
                    .map(|(&i, els)| {
                        let refs: Vec<&[u8]> = els.iter().map(Vec::as_slice).collect();
                        let mut encoded = vec![0u8; bytes::encoded_len(refs.iter().copied())];
                        bytes::encode_into(&mut encoded, refs.iter().copied()).unwrap();
                        Held::new(&encoded, requests[i].misalign as usize % 8, &requests[i].cuts)
                    })
                    .collect();
                let joined: Vec<_> = held.iter().map(|h| batch::contiguous(&h.parts())).collect();
                let mut output: Vec<&[u8]> = Vec::new();
                for ((j, h), n) in joined.iter().zip(&held).zip(&run_rows) {
                    assert_eq!(&j[..], h.bytes());
                    output.extend(bytes::decode(j, n * row_len).unwrap());
                }
                for (els, range) in elements.iter().zip(&ranges) {
                    assert_eq!(&output[range.clone()], &els.iter().map(Vec::as_slice).collect::<Vec<_>>()[..]);
                }
            }
        }
    }
});

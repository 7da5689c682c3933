//! Fuzzing, on the stable toolchain: `cargo fuzz` needs nightly (libFuzzer's sanitizer flags),
//! and this project's machines have only stable Rust. So each target is driven here by a seeded
//! generator that mixes random bytes with structure-aware mutations of valid inputs, and checks
//! invariants, not just "no panic". A panic anywhere fails the test and prints the seed.
//!
//! Executions per target: `ONNXRS_FUZZ_EXECS` (default 20 000; `ci/test.sh` runs the slow tier
//! with more). The counts are written to build/reliability/fuzz.md for docs/reliability.md.
// Helpers outside #[test] functions may panic too: a panic is how a test fails.
#![allow(clippy::unwrap_used)]

use std::fmt::Write as _;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::Instant;

use serde_json::json;
use triton_onnxrs::batch::{self, Signature};
use triton_onnxrs::bytes;
use triton_onnxrs::config::model_config::ModelConfig;
use triton_onnxrs::dtype::DataType;
use triton_onnxrs::inputs::{self, Payload, RawInput};

/// xorshift64*: small, seedable, good enough to drive a fuzzer.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next() % n }
    }
    fn bytes(&mut self, max: usize) -> Vec<u8> {
        let n = self.below(max as u64 + 1) as usize;
        (0..n).map(|_| self.next() as u8).collect()
    }
    /// A dimension: mostly small, sometimes 0, -1, huge or negative.
    fn dim(&mut self) -> i64 {
        match self.below(20) {
            0 => 0,
            1 => -1,
            2 => i64::MAX / (1 + self.below(3) as i64),
            3 => -(self.below(100) as i64) - 2,
            _ => self.below(5) as i64 + 1,
        }
    }
}

fn execs() -> u64 {
    std::env::var("ONNXRS_FUZZ_EXECS").ok().and_then(|v| v.parse().ok()).unwrap_or(20_000)
}

/// Runs `body` `n` times with seeds 1..=n; a panic is reported with its seed.
fn fuzz(name: &str, body: impl Fn(&mut Rng)) -> (String, u64, f64) {
    let n = execs();
    let start = Instant::now();
    for seed in 1..=n {
        let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
        if catch_unwind(AssertUnwindSafe(|| body(&mut rng))).is_err() {
            panic!("fuzz target '{name}' panicked with seed {seed}");
        }
    }
    let secs = start.elapsed().as_secs_f64();
    record(name, n, secs);
    (name.to_string(), n, secs)
}

fn record(name: &str, n: u64, secs: f64) {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("build/reliability");
    let _ = std::fs::create_dir_all(&dir);
    let _ = std::fs::write(dir.join(format!("fuzz-{name}.txt")), format!("{name}\t{n}\t{secs:.2}\n"));
    // Rebuild the table from every target's line, whichever test finishes last.
    let mut rows: Vec<String> = std::fs::read_dir(&dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("fuzz-"))
        .filter_map(|e| std::fs::read_to_string(e.path()).ok())
        .collect();
    rows.sort();
    let mut md = String::from(
        "## Fuzzing\n\nStable-toolchain fuzzing (tests/fuzz.rs): seeded random and structure-aware inputs, \
         invariants checked on every execution.\n\n| target | executions | crashes | seconds |\n|---|---|---|---|\n",
    );
    for r in rows {
        let f: Vec<&str> = r.trim().split('\t').collect();
        if let [t, n, s] = f[..] {
            let _ = writeln!(md, "| {t} | {n} | 0 | {s} |");
        }
    }
    let _ = std::fs::write(dir.join("fuzz.md"), md);
}

#[test]
fn fuzz_bytes_codec() {
    fuzz("bytes_codec", |rng| {
        // Valid data, then mutated: decode must never panic, and what it accepts must re-encode
        // to exactly the same bytes.
        let elements: Vec<Vec<u8>> = (0..rng.below(6)).map(|_| rng.bytes(12)).collect();
        let refs: Vec<&[u8]> = elements.iter().map(Vec::as_slice).collect();
        let mut data = vec![0u8; bytes::encoded_len(refs.iter().copied())];
        bytes::encode_into(&mut data, refs.iter().copied()).unwrap();
        assert_eq!(bytes::decode(&data, refs.len()).unwrap(), refs);
        match rng.below(4) {
            0 => data = rng.bytes(40),
            1 if !data.is_empty() => {
                let at = rng.below(data.len() as u64) as usize;
                data[at] = rng.next() as u8;
            }
            2 => data.truncate(rng.below(data.len() as u64 + 1) as usize),
            _ => data.extend(rng.bytes(6)),
        }
        let expected = match rng.below(3) {
            0 => refs.len(),
            1 => rng.below(8) as usize,
            _ => usize::MAX >> rng.below(4),
        };
        if let Ok(got) = bytes::decode(&data, expected) {
            assert_eq!(got.len(), expected);
            let mut again = vec![0u8; bytes::encoded_len(got.iter().copied())];
            bytes::encode_into(&mut again, got.iter().copied()).unwrap();
            assert_eq!(again, data);
        }
    });
}

fn fuzz_config(rng: &mut Rng) -> ModelConfig {
    let max_batch = [0, 1, 4, 8][rng.below(4) as usize];
    ModelConfig::parse(&json!({
        "name": "fuzz", "max_batch_size": max_batch,
        "input": [
            {"name": "F", "data_type": "TYPE_FP32", "dims": [-1, 2]},
            {"name": "S", "data_type": "TYPE_STRING", "dims": [-1]},
            {"name": "O", "data_type": "TYPE_INT64", "dims": [3], "optional": true},
            {"name": "R", "data_type": "TYPE_UINT8", "dims": [2, 2], "reshape": {"shape": [4]}}
        ],
        "output": [{"name": "Y", "data_type": "TYPE_FP32", "dims": [-1]}]
    }))
    .unwrap()
}

const NAMES: [&str; 5] = ["F", "S", "O", "R", "nope"];
const TYPES: [Option<DataType>; 6] = [
    Some(DataType::Fp32),
    Some(DataType::Bytes),
    Some(DataType::Int64),
    Some(DataType::Uint8),
    Some(DataType::Fp16),
    None,
];

fn strings(n: usize, rng: &mut Rng) -> Vec<u8> {
    let elements: Vec<Vec<u8>> = (0..n).map(|_| rng.bytes(5)).collect();
    let mut out = vec![0u8; bytes::encoded_len(elements.iter().map(Vec::as_slice))];
    bytes::encode_into(&mut out, elements.iter().map(Vec::as_slice)).unwrap();
    out
}

#[test]
fn fuzz_input_validation() {
    let accepted = std::sync::atomic::AtomicU64::new(0);
    fuzz("input_validation", |rng| {
        let config = fuzz_config(rng);
        // A valid request for this config, then (mostly) one mutation of it.
        let rows = if config.batching() { 1 + rng.below(config.max_batch_size as u64) as i64 } else { 1 };
        let n = rng.below(3) as i64;
        let lead = |s: &[i64]| if config.batching() { [&[rows][..], s].concat() } else { s.to_vec() };
        let mut shapes = vec![lead(&[n, 2]), lead(&[n]), lead(&[3]), lead(&[4])];
        let r = rows as usize;
        let mut datas = vec![
            rng.bytes(0).into_iter().chain(std::iter::repeat_n(0u8, r * n as usize * 2 * 4)).collect::<Vec<u8>>(),
            strings(r * n as usize, rng),
            vec![0u8; r * 3 * 8],
            vec![0u8; r * 4],
        ];
        let mut names = NAMES[..4].to_vec();
        let mut types = vec![Some(DataType::Fp32), Some(DataType::Bytes), Some(DataType::Int64), Some(DataType::Uint8)];
        let k = rng.below(4) as usize;
        match rng.below(7) {
            0 => {}
            1 => names[k] = NAMES[rng.below(NAMES.len() as u64) as usize],
            2 => types[k] = TYPES[rng.below(TYPES.len() as u64) as usize],
            3 => {
                let len = shapes[k].len() as u64;
                if len > 0 {
                    let d = rng.below(len) as usize;
                    shapes[k][d] = rng.dim();
                }
            }
            4 => {
                let cut = rng.below(datas[k].len() as u64 + 1) as usize;
                datas[k].truncate(cut);
            }
            5 => datas[k] = rng.bytes(64),
            _ => {
                names.remove(k);
                types.remove(k);
                shapes.remove(k);
                datas.remove(k);
            }
        }
        let raw: Vec<RawInput<'_>> = (0..names.len())
            .map(|i| {
                let data = &datas[i];
                let cut = rng.below(data.len() as u64 + 1) as usize;
                RawInput {
                    name: names[i],
                    data_type: types[i],
                    shape: &shapes[i],
                    parts: if rng.below(2) == 0 { vec![&data[..]] } else { vec![&data[..cut], &data[cut..]] },
                }
            })
            .collect();
        if let Ok(req) = inputs::check_request(&config, raw) {
            accepted.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            // What is accepted is consistent: rows within limits, every payload the size its
            // shape needs, required inputs present.
            if config.batching() {
                assert!(req.rows >= 1 && req.rows <= config.max_batch_size);
            }
            assert!(req.inputs.iter().any(|i| i.config_index == 0) && req.inputs.iter().any(|i| i.config_index == 1));
            for (input, (index, tail)) in req.inputs.iter().zip(&req.signature.inputs) {
                assert_eq!(input.config_index, *index);
                let elements: usize =
                    tail.iter().map(|&d| usize::try_from(d).unwrap()).product::<usize>() * req.rows.max(1);
                match (&input.payload, config.inputs[*index].data_type.byte_size()) {
                    (Payload::Fixed(parts), Some(size)) => {
                        assert_eq!(parts.iter().map(|p| p.len()).sum::<usize>(), elements * size)
                    }
                    (Payload::Strings { elements: e, .. }, None) => assert_eq!(e.len(), elements),
                    _ => panic!("payload kind does not match the type"),
                }
            }
        }
    });
    // The generator must reach the accepting paths too, not only the refusals.
    let accepted = accepted.into_inner();
    assert!(accepted > execs() / 10, "only {accepted} of {} generated requests were valid", execs());
}

#[test]
fn fuzz_batch_planning_gather_and_scatter() {
    fuzz("batch_plan_gather_scatter", |rng| {
        let sigs: Vec<Signature> =
            (0..3).map(|k| Signature { inputs: vec![(0, vec![k, rng.below(3) as i64])] }).collect();
        let max_batch = rng.below(9) as usize;
        let reqs: Vec<(usize, &Signature)> =
            (0..rng.below(12)).map(|_| (1 + rng.below(4) as usize, &sigs[rng.below(3) as usize])).collect();
        let groups = batch::plan(&reqs, max_batch);
        // Every request in exactly one group, in arrival order; groups share one signature and
        // stay within max_batch (a lone request may exceed it: Triton checked its own size).
        let mut seen: Vec<usize> = groups.iter().flatten().copied().collect();
        seen.sort_unstable();
        assert_eq!(seen, (0..reqs.len()).collect::<Vec<_>>());
        for g in &groups {
            assert!(g.windows(2).all(|w| w[0] < w[1]));
            assert!(g.iter().all(|&i| reqs[i].1 == reqs[g[0]].1));
            let rows: usize = g.iter().map(|&i| reqs[i].0).sum();
            assert!(g.len() == 1 || (max_batch > 0 && rows <= max_batch));
        }
        // Gather arbitrary parts, then split the rows back: each request gets its own bytes.
        let size = [1usize, 2, 4, 8][rng.below(4) as usize];
        let rows: Vec<usize> = (0..1 + rng.below(4)).map(|_| rng.below(4) as usize).collect();
        let row_len = rng.below(4) as usize;
        let total: usize = rows.iter().sum();
        let data: Vec<u8> = (0..total * row_len * size).map(|i| i as u8).collect();
        let mut parts: Vec<&[u8]> = Vec::new();
        let mut at = 0;
        while at < data.len() {
            let n = (1 + rng.below(5) as usize).min(data.len() - at);
            parts.push(&data[at..at + n]);
            at += n;
        }
        let gathered = batch::gather(&parts, size).unwrap();
        assert_eq!(gathered.bytes(), &data[..]);
        let ranges = batch::split_rows(total, row_len, &rows).unwrap();
        let mut next = 0;
        for (r, n) in ranges.iter().zip(&rows) {
            assert_eq!((r.start, r.end - r.start), (next, n * row_len));
            next = r.end;
        }
        assert!(batch::split_rows(total + 1 + rng.below(3) as usize, row_len, &rows).is_err());
    });
}

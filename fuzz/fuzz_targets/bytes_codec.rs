//! The BYTES codec (`src/bytes.rs`): a request's BYTES input is decoded from what the client
//! sent, and a BYTES output is encoded into the response.
//!
//! Invariants, on every execution:
//! - decoding agrees with a reference decoder written here independently: the same elements when
//!   the data is well-formed, an error for every malformed input (a length prefix cut short, an
//!   element longer than what remains, bytes left over, fewer elements than expected);
//! - what decodes re-encodes to exactly the same bytes;
//! - encoding then decoding gives the elements back, and encoding into a buffer of the wrong
//!   length is an error, never a partial write that looks like success.
#![no_main]

use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;
use triton_onnxrs::bytes;

#[derive(Debug, Arbitrary)]
enum Input {
    /// Client data, decoded as `count` elements (`huge`: counted down from usize::MAX, as a
    /// shape with an enormous element count would ask).
    Decode { count: u8, huge: bool, data: Vec<u8> },
    /// Elements encoded into a buffer `slack` bytes longer (or shorter) than they need, then
    /// decoded.
    RoundTrip { elements: Vec<Vec<u8>>, slack: i8 },
}

/// The format, spelled out: each element a 4-byte little-endian length and that many bytes,
/// exactly `count` of them, nothing after.
fn reference(mut data: &[u8], count: usize) -> Option<Vec<&[u8]>> {
    let mut out = Vec::new();
    // Each element consumes at least 4 bytes, so a huge count ends at the data's end.
    while out.len() < count {
        let prefix: [u8; 4] = data.get(..4)?.try_into().ok()?;
        let len = u32::from_le_bytes(prefix) as usize;
        out.push(data.get(4..4 + len)?);
        data = &data[4 + len..];
    }
    data.is_empty().then_some(out)
}

fn encode(elements: &[&[u8]]) -> Vec<u8> {
    let mut out = vec![0u8; bytes::encoded_len(elements.iter().copied())];
    bytes::encode_into(&mut out, elements.iter().copied()).unwrap();
    out
}

fuzz_target!(|input: Input| {
    match input {
        Input::Decode { count, huge, data } => {
            let count = if huge { usize::MAX - count as usize } else { count as usize };
            let got = bytes::decode(&data, count);
            match (&got, reference(&data, count)) {
                (Ok(got), Some(want)) => {
                    assert_eq!(*got, want);
                    assert_eq!(encode(got), data, "decoded elements must re-encode to the same bytes");
                }
                (Err(e), None) => assert!(e.message().contains("BYTES"), "error does not say what: {e}"),
                (got, want) => panic!("decode({data:?}, {count}) = {got:?}, the format says {want:?}"),
            }
        }
        Input::RoundTrip { elements, slack } => {
            let refs: Vec<&[u8]> = elements.iter().map(Vec::as_slice).collect();
            let len = bytes::encoded_len(refs.iter().copied());
            assert_eq!(len, refs.iter().map(|e| 4 + e.len()).sum::<usize>());
            let data = encode(&refs);
            assert_eq!(bytes::decode(&data, refs.len()).unwrap(), refs);
            if slack != 0 {
                let Some(wrong) = len.checked_add_signed(slack as isize) else { return };
                let mut buffer = vec![0u8; wrong];
                assert!(bytes::encode_into(&mut buffer, refs.iter().copied()).is_err(), "{wrong} bytes for {len}");
            }
        }
    }
});

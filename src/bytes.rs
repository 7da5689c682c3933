//! Triton's BYTES tensor encoding: each element is a 4-byte little-endian length followed by that
//! many bytes, elements back to back with no padding. ONNX calls these tensors `string`; ONNX
//! Runtime stores them as byte strings, so non-UTF-8 content passes through unchanged.

use crate::error::{Error, Result};

const PREFIX: usize = 4;

/// Splits a serialized BYTES tensor into exactly `expected` elements, borrowing from `data`.
///
/// Every malformed input is an error that says where it went wrong: a length prefix cut short, an
/// element longer than what remains, or bytes left over after the last element.
pub fn decode(data: &[u8], expected: usize) -> Result<Vec<&[u8]>> {
    let (out, rest) = decode_leading(data, expected)?;
    if !rest.is_empty() {
        return Err(Error::invalid_arg(format!(
            "BYTES tensor holds {} bytes after its {expected} elements",
            rest.len()
        )));
    }
    Ok(out)
}

/// The first `expected` elements of `data`, and what follows them. Triton gives a string
/// CONTROL_SEQUENCE_CORRID tensor a buffer larger than its one element, padded after it.
pub fn decode_leading(data: &[u8], expected: usize) -> Result<(Vec<&[u8]>, &[u8])> {
    // Each element needs at least its prefix, so a huge `expected` cannot make us reserve more
    // than the data could describe.
    let mut out = Vec::with_capacity(expected.min(data.len() / PREFIX));
    let mut rest = data;
    for index in 0..expected {
        if rest.len() < PREFIX {
            return Err(Error::invalid_arg(format!(
                "BYTES element {index} of {expected}: length prefix truncated ({} of 4 bytes present)",
                rest.len()
            )));
        }
        let (prefix, tail) = rest.split_at(PREFIX);
        let len = u32::from_le_bytes([prefix[0], prefix[1], prefix[2], prefix[3]]) as usize;
        if tail.len() < len {
            return Err(Error::invalid_arg(format!(
                "BYTES element {index} of {expected}: declares {len} bytes but only {} remain",
                tail.len()
            )));
        }
        let (element, tail) = tail.split_at(len);
        out.push(element);
        rest = tail;
    }
    Ok((out, rest))
}

/// The serialized size of `elements`.
pub fn encoded_len<'a>(elements: impl IntoIterator<Item = &'a [u8]>) -> usize {
    elements.into_iter().map(|e| PREFIX + e.len()).sum()
}

/// Serializes `elements` into `out`, which must be exactly `encoded_len(elements)` long.
pub fn encode_into<'a>(out: &mut [u8], elements: impl IntoIterator<Item = &'a [u8]>) -> Result<()> {
    let mut at = 0usize;
    for e in elements {
        let len = u32::try_from(e.len())
            .map_err(|_| Error::invalid_arg(format!("BYTES element of {} bytes exceeds 4 GiB", e.len())))?;
        let end = at + PREFIX + e.len();
        let slot =
            out.get_mut(at..end).ok_or_else(|| Error::internal("BYTES output buffer shorter than its elements"))?;
        slot[..PREFIX].copy_from_slice(&len.to_le_bytes());
        slot[PREFIX..].copy_from_slice(e);
        at = end;
    }
    if at != out.len() {
        return Err(Error::internal("BYTES output buffer longer than its elements"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encode(elements: &[&[u8]]) -> Vec<u8> {
        let mut out = vec![0u8; encoded_len(elements.iter().copied())];
        encode_into(&mut out, elements.iter().copied()).unwrap();
        out
    }

    #[test]
    fn round_trip_including_empty_and_binary() {
        let elements: [&[u8]; 4] = [b"hello", b"", &[0xff, 0x00, 0xfe], "héllo".as_bytes()];
        let data = encode(&elements);
        assert_eq!(data.len(), 4 * 4 + 5 + 3 + 6);
        assert_eq!(decode(&data, 4).unwrap(), elements.to_vec());
    }

    #[test]
    fn zero_elements() {
        assert!(decode(&[], 0).unwrap().is_empty());
        assert!(decode(&[1], 0).unwrap_err().message().contains("after its 0 elements"));
    }

    #[test]
    fn truncated_prefix() {
        let mut data = encode(&[b"ab"]);
        data.extend_from_slice(&[1, 0]);
        let e = decode(&data, 2).unwrap_err();
        assert!(e.message().contains("element 1 of 2: length prefix truncated (2 of 4"), "{e}");
    }

    #[test]
    fn oversized_prefix() {
        let data = [0xff, 0xff, 0xff, 0x7f, b'a'];
        let e = decode(&data, 1).unwrap_err();
        assert!(e.message().contains("declares 2147483647 bytes but only 1 remain"), "{e}");
    }

    #[test]
    fn trailing_bytes_and_too_few_elements() {
        let data = encode(&[b"a", b"b"]);
        assert!(decode(&data, 1).unwrap_err().message().contains("5 bytes after its 1 elements"));
        assert!(decode(&data, 3).unwrap_err().message().contains("element 2 of 3"));
    }

    #[test]
    fn huge_expected_count_does_not_allocate_it() {
        assert!(decode(&[], usize::MAX).is_err());
    }
}

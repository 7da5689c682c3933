//! Element types between Triton and ONNX Runtime: `crate::dtype` names Triton's, this maps them
//! to ONNX Runtime's, so that nothing outside `crate::onnx` knows ONNX Runtime's.

use ort::value::TensorElementType;

use crate::dtype::DataType;

/// The Triton type of an ONNX element type; `None` for one Triton has no name for.
pub(crate) fn from_onnx(t: TensorElementType) -> Option<DataType> {
    use DataType::*;
    Some(match t {
        TensorElementType::Bool => Bool,
        TensorElementType::Uint8 => Uint8,
        TensorElementType::Uint16 => Uint16,
        TensorElementType::Uint32 => Uint32,
        TensorElementType::Uint64 => Uint64,
        TensorElementType::Int8 => Int8,
        TensorElementType::Int16 => Int16,
        TensorElementType::Int32 => Int32,
        TensorElementType::Int64 => Int64,
        TensorElementType::Float16 => Fp16,
        TensorElementType::Float32 => Fp32,
        TensorElementType::Float64 => Fp64,
        TensorElementType::String => Bytes,
        TensorElementType::Bfloat16 => Bf16,
        _ => return None,
    })
}

pub(crate) fn to_onnx(t: DataType) -> TensorElementType {
    use DataType::*;
    match t {
        Bool => TensorElementType::Bool,
        Uint8 => TensorElementType::Uint8,
        Uint16 => TensorElementType::Uint16,
        Uint32 => TensorElementType::Uint32,
        Uint64 => TensorElementType::Uint64,
        Int8 => TensorElementType::Int8,
        Int16 => TensorElementType::Int16,
        Int32 => TensorElementType::Int32,
        Int64 => TensorElementType::Int64,
        Fp16 => TensorElementType::Float16,
        Fp32 => TensorElementType::Float32,
        Fp64 => TensorElementType::Float64,
        Bytes => TensorElementType::String,
        Bf16 => TensorElementType::Bfloat16,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dtype::ALL;

    #[test]
    fn names_round_trip() {
        for t in ALL {
            assert_eq!(from_onnx(to_onnx(t)), Some(t));
        }
        assert_eq!(from_onnx(TensorElementType::Complex64), None);
    }

    #[test]
    fn sizes_match_onnx() {
        for t in ALL {
            assert_eq!(t.byte_size(), to_onnx(t).byte_size(1), "{t}");
        }
    }
}

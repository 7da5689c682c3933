//! Tensor element types as Triton names them (`crate::onnx::element` maps them to ONNX Runtime's).

/// The Triton data types that have an ONNX counterpart (all of Triton's but INVALID).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DataType {
    Bool,
    Uint8,
    Uint16,
    Uint32,
    Uint64,
    Int8,
    Int16,
    Int32,
    Int64,
    Fp16,
    Fp32,
    Fp64,
    /// Triton's variable-length bytes (each element a 4-byte little-endian length and the
    /// bytes); ONNX's `string`.
    Bytes,
    Bf16,
}

/// Every type once, for tables and tests.
pub const ALL: [DataType; 14] = [
    DataType::Bool,
    DataType::Uint8,
    DataType::Uint16,
    DataType::Uint32,
    DataType::Uint64,
    DataType::Int8,
    DataType::Int16,
    DataType::Int32,
    DataType::Int64,
    DataType::Fp16,
    DataType::Fp32,
    DataType::Fp64,
    DataType::Bytes,
    DataType::Bf16,
];

impl DataType {
    /// Bytes per element; `None` for BYTES, whose elements have no fixed size.
    pub fn byte_size(self) -> Option<usize> {
        use DataType::*;
        match self {
            Bool | Uint8 | Int8 => Some(1),
            Uint16 | Int16 | Fp16 | Bf16 => Some(2),
            Uint32 | Int32 | Fp32 => Some(4),
            Uint64 | Int64 | Fp64 => Some(8),
            Bytes => None,
        }
    }

    /// The name used in the inference protocol and in error messages ("FP32").
    pub fn name(self) -> &'static str {
        use DataType::*;
        match self {
            Bool => "BOOL",
            Uint8 => "UINT8",
            Uint16 => "UINT16",
            Uint32 => "UINT32",
            Uint64 => "UINT64",
            Int8 => "INT8",
            Int16 => "INT16",
            Int32 => "INT32",
            Int64 => "INT64",
            Fp16 => "FP16",
            Fp32 => "FP32",
            Fp64 => "FP64",
            Bytes => "BYTES",
            Bf16 => "BF16",
        }
    }

    /// The model configuration's spelling ("TYPE_FP32"); TYPE_STRING is Triton's name for BYTES.
    pub fn config_name(self) -> &'static str {
        use DataType::*;
        match self {
            Bool => "TYPE_BOOL",
            Uint8 => "TYPE_UINT8",
            Uint16 => "TYPE_UINT16",
            Uint32 => "TYPE_UINT32",
            Uint64 => "TYPE_UINT64",
            Int8 => "TYPE_INT8",
            Int16 => "TYPE_INT16",
            Int32 => "TYPE_INT32",
            Int64 => "TYPE_INT64",
            Fp16 => "TYPE_FP16",
            Fp32 => "TYPE_FP32",
            Fp64 => "TYPE_FP64",
            Bytes => "TYPE_STRING",
            Bf16 => "TYPE_BF16",
        }
    }

    pub fn from_config_name(name: &str) -> Option<Self> {
        ALL.into_iter().find(|t| t.config_name() == name)
    }
}

impl std::fmt::Display for DataType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for t in ALL {
            assert_eq!(DataType::from_config_name(t.config_name()), Some(t));
        }
        assert_eq!(DataType::from_config_name("TYPE_INVALID"), None);
    }
}

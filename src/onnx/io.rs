//! A session's inputs and outputs as the model declares them, read through the C API.

use std::collections::HashSet;
use std::ffi::{CStr, c_char};
use std::ptr::{self, NonNull};

use ort::value::TensorElementType;

use crate::dtype::DataType;
use crate::error::{Error, Result};
use crate::onnx::element;
use crate::onnx::error::check;

/// A graph input or output as the model declares it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorInfo {
    pub name: String,
    /// `None` when it is not a tensor of a type Triton has (a sequence, a map, complex numbers).
    pub data_type: Option<DataType>,
    /// What it is, for messages about unsupported ones.
    pub type_description: String,
    /// Dimensions; -1 where the model leaves one open (symbolic or unknown).
    pub shape: Vec<i64>,
}

/// The model's interface.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ModelIo {
    pub inputs: Vec<TensorInfo>,
    pub outputs: Vec<TensorInfo>,
    /// Inputs that also have an initializer: ONNX Runtime uses the initializer when a run does not
    /// feed them, so they may be left out.
    pub overridable: HashSet<String>,
}

impl ModelIo {
    pub fn input(&self, name: &str) -> Option<&TensorInfo> {
        self.inputs.iter().find(|t| t.name == name)
    }

    pub fn output(&self, name: &str) -> Option<&TensorInfo> {
        self.outputs.iter().find(|t| t.name == name)
    }

    /// Reads the interface of a live `session`. Inputs that have an initializer are listed apart
    /// by ONNX Runtime; requests may feed them like any input, so they join the inputs (as the
    /// official backend does).
    pub(crate) fn read(session: *mut ort::sys::OrtSession) -> Result<ModelIo> {
        let api = ort::api();
        let mut inputs =
            read_list(session, api.SessionGetInputCount, api.SessionGetInputName, api.SessionGetInputTypeInfo)?;
        let overridable = read_list(
            session,
            api.SessionGetOverridableInitializerCount,
            api.SessionGetOverridableInitializerName,
            api.SessionGetOverridableInitializerTypeInfo,
        )?;
        let outputs =
            read_list(session, api.SessionGetOutputCount, api.SessionGetOutputName, api.SessionGetOutputTypeInfo)?;
        let overridable_names = overridable.iter().map(|t| t.name.clone()).collect();
        inputs.extend(overridable);
        Ok(ModelIo { inputs, outputs, overridable: overridable_names })
    }
}

type CountFn = unsafe extern "system" fn(*const ort::sys::OrtSession, *mut usize) -> ort::sys::OrtStatusPtr;
type NameFn = unsafe extern "system" fn(
    *const ort::sys::OrtSession,
    usize,
    *mut ort::sys::OrtAllocator,
    *mut *mut c_char,
) -> ort::sys::OrtStatusPtr;
type TypeInfoFn = unsafe extern "system" fn(
    *const ort::sys::OrtSession,
    usize,
    *mut *mut ort::sys::OrtTypeInfo,
) -> ort::sys::OrtStatusPtr;

/// One of the session's three lists (inputs, overridable initializers, outputs).
fn read_list(
    session: *mut ort::sys::OrtSession,
    count: CountFn,
    name: NameFn,
    type_info: TypeInfoFn,
) -> Result<Vec<TensorInfo>> {
    let api = ort::api();
    let mut n = 0usize;
    // SAFETY: a live session; `n` is written by the call.
    unsafe { check(count(session, &mut n))? };
    let mut allocator = ptr::null_mut();
    // SAFETY: the default allocator is owned by ONNX Runtime and never released.
    unsafe { check((api.GetAllocatorWithDefaultOptions)(&mut allocator))? };
    (0..n)
        .map(|i| {
            let mut raw_name = ptr::null_mut();
            // SAFETY: `i` < count; on success `raw_name` is a string from `allocator`, freed below.
            unsafe { check(name(session, i, allocator, &mut raw_name))? };
            if raw_name.is_null() {
                return Err(Error::internal("onnxruntime returned no tensor name"));
            }
            // SAFETY: a NUL-terminated string ONNX Runtime just made; copied, then freed once.
            let text = unsafe { CStr::from_ptr(raw_name) }.to_string_lossy().into_owned();
            // SAFETY: as above.
            unsafe { check((api.AllocatorFree)(allocator, raw_name.cast()))? };
            let mut info = ptr::null_mut();
            // SAFETY: `i` < count; on success we own `info`, released by `TypeInfo`'s drop.
            unsafe { check(type_info(session, i, &mut info))? };
            let info = TypeInfo(NonNull::new(info).ok_or_else(|| Error::internal("onnxruntime returned no type"))?);
            info.describe(text)
        })
        .collect()
}

/// An `OrtTypeInfo` we own.
struct TypeInfo(NonNull<ort::sys::OrtTypeInfo>);

impl Drop for TypeInfo {
    fn drop(&mut self) {
        // SAFETY: made for us by a `Session*TypeInfo` call, released only here.
        unsafe { (ort::api().ReleaseTypeInfo)(self.0.as_ptr()) };
    }
}

impl TypeInfo {
    fn describe(&self, name: String) -> Result<TensorInfo> {
        let api = ort::api();
        let mut kind = ort::sys::ONNXType::ONNX_TYPE_UNKNOWN;
        // SAFETY: a live type info; `kind` is written by the call.
        unsafe { check((api.GetOnnxTypeFromTypeInfo)(self.0.as_ptr(), &mut kind))? };
        if kind != ort::sys::ONNXType::ONNX_TYPE_TENSOR {
            let what = match kind {
                ort::sys::ONNXType::ONNX_TYPE_SEQUENCE => "sequence",
                ort::sys::ONNXType::ONNX_TYPE_MAP => "map",
                ort::sys::ONNXType::ONNX_TYPE_OPTIONAL => "optional",
                ort::sys::ONNXType::ONNX_TYPE_SPARSETENSOR => "sparse tensor",
                _ => "value of an unknown kind",
            };
            return Ok(TensorInfo { name, data_type: None, type_description: what.to_string(), shape: Vec::new() });
        }
        let mut tensor = ptr::null();
        // SAFETY: a tensor's type info; `tensor` is borrowed from it (not released).
        unsafe { check((api.CastTypeInfoToTensorInfo)(self.0.as_ptr(), &mut tensor))? };
        let mut element = ort::sys::ONNXTensorElementDataType::ONNX_TENSOR_ELEMENT_DATA_TYPE_UNDEFINED;
        let mut rank = 0usize;
        // SAFETY: `tensor` is live while `self` is; each call writes one scalar.
        unsafe {
            check((api.GetTensorElementType)(tensor, &mut element))?;
            check((api.GetDimensionsCount)(tensor, &mut rank))?;
        }
        let mut shape = vec![0i64; rank];
        // SAFETY: `shape` holds exactly the `rank` dimensions the call writes.
        unsafe { check((api.GetDimensions)(tensor, shape.as_mut_ptr(), rank))? };
        let ty = TensorElementType::from(element);
        Ok(TensorInfo {
            name,
            data_type: element::from_onnx(ty),
            type_description: format!("tensor({ty})"),
            shape: shape.into_iter().map(|d| if d < 0 { -1 } else { d }).collect(),
        })
    }
}

//! TRITONBACKEND_State: a sequence's implicit state, handed back to the server after a step so
//! the sequence's next request carries it as its state input. A state is created, filled and
//! updated in one call: the server owns it from `StateNew` on (the request frees it), so nothing
//! of ours outlives the call.

use std::ffi::c_void;
use std::ptr;

use crate::dtype::DataType;
use crate::error::{Error, Result};
use crate::sys;
use crate::triton::error::{c_string, check_server_error};
use crate::triton::{MemoryType, Request, data_type_to_sys};

/// One request's new value of one state, in host memory.
pub(crate) struct StateTensor<'a> {
    /// The state's `output_name`.
    pub(crate) name: &'a str,
    pub(crate) data_type: DataType,
    /// The request's shape of the state, its batch dimension included (when the model batches).
    pub(crate) shape: &'a [i64],
    /// The bytes (BYTES states already in Triton's length-prefixed encoding).
    pub(crate) bytes: &'a [u8],
}

/// Gives the server the new value of a state of `request`'s sequence.
pub(crate) fn update_state(request: Request<'_>, tensor: &StateTensor<'_>) -> Result<()> {
    let StateTensor { name, data_type, shape, bytes } = *tensor;
    let cname = c_string(name);
    let dims = u32::try_from(shape.len()).map_err(|_| Error::invalid_arg("state rank too large"))?;
    let mut state = ptr::null_mut();
    // SAFETY: live request; `cname` and `shape` outlive the call, which copies them. The state
    // belongs to the request's sequence states, not to us.
    unsafe {
        check_server_error(sys::TRITONBACKEND_StateNew(
            &mut state,
            request.ptr(),
            cname.as_ptr(),
            data_type_to_sys(data_type),
            shape.as_ptr(),
            dims,
        ))?
    };
    if state.is_null() {
        return Err(Error::internal(format!("server returned a null state for '{name}'")));
    }
    let mut buffer: *mut c_void = ptr::null_mut();
    let mut memory = MemoryType::Cpu.to_sys();
    let mut device = 0i64;
    // SAFETY: `state` is live until its request is released, after this call.
    unsafe {
        check_server_error(sys::TRITONBACKEND_StateBuffer(
            state,
            &mut buffer,
            bytes.len() as u64,
            &mut memory,
            &mut device,
        ))?
    };
    match MemoryType::from_sys(memory)? {
        MemoryType::Gpu => {
            return Err(Error::unsupported(format!(
                "the server placed state '{name}' in memory of GPU {device}; onnxrs writes states from the CPU"
            )));
        }
        _ if bytes.is_empty() => {}
        _ if buffer.is_null() => return Err(Error::internal(format!("server gave a null buffer for state '{name}'"))),
        _ => {
            // SAFETY: the server gave `bytes.len()` writable host bytes for this state, which
            // nothing else touches until `StateUpdate`; the source is our own memory.
            unsafe { ptr::copy_nonoverlapping(bytes.as_ptr(), buffer.cast::<u8>(), bytes.len()) };
        }
    }
    // SAFETY: live state, filled above.
    unsafe { check_server_error(sys::TRITONBACKEND_StateUpdate(state)) }
}

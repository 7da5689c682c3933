//! The first step of a request's way: reading its inputs from the server and checking them
//! against the config (`crate::inputs`). A request that cannot be read is answered at once.

use super::{ExecutionScope, RequestRecord};
use crate::error::{Error, ErrorKind, Result};
use crate::inputs::{self, CheckedRequest, RawInput};
use crate::metrics::ErrorClass;
use crate::triton::Request;
use crate::triton::request::InputBuffer;

/// Reads and checks the record's request: its checked inputs go into the record, or its error
/// is its answer.
pub(super) fn read(scope: &ExecutionScope<'_>, record: &mut RequestRecord<'_>) {
    if record.response.is_none() {
        // The outcome already says why the server gave no response.
        record.answer(scope.reporter);
        return;
    }
    if super::sequence::is_null_request(scope.config, record.request) {
        super::sequence::answer_null_request(scope, record);
        return;
    }
    record.position = super::sequence::position(scope.config, record.request);
    match crate::response_timings::wanted(scope.timings_always, record.request) {
        Ok(wanted) => record.timings = wanted,
        Err(e) => {
            let class = read_failure_class(&e);
            record.fail((e, class), scope.reporter);
            return;
        }
    }
    match read_request(scope, record.request) {
        Ok(checked) => record.checked = Some(checked),
        Err(e) => {
            let class = read_failure_class(&e);
            record.fail((e, class), scope.reporter);
        }
    }
}

/// A request that could not be read: cancelled, refused (its inputs), or a server call failed.
fn read_failure_class(e: &Error) -> ErrorClass {
    match e.kind() {
        ErrorKind::Cancelled => ErrorClass::Cancelled,
        ErrorKind::InvalidArg | ErrorKind::Unsupported => ErrorClass::BadInput,
        _ => ErrorClass::Internal,
    }
}

/// Reads a request's inputs from the server and checks them against the config.
fn read_request<'r>(scope: &ExecutionScope<'_>, request: Request<'r>) -> Result<CheckedRequest<'r>> {
    if request.is_cancelled()? {
        return Err(Error::cancelled("the request was cancelled before it ran"));
    }
    let count = request.input_count()?;
    let mut raw = Vec::with_capacity(count as usize);
    for index in 0..count {
        let input = request.input(index)?;
        let p = input.properties()?;
        let mut parts = Vec::with_capacity(p.buffer_count as usize);
        for b in 0..p.buffer_count {
            match input.buffer(b)? {
                InputBuffer::Host(bytes) => parts.push(bytes),
                InputBuffer::Device { len, device } => {
                    return Err(Error::unsupported(format!(
                        "input '{}' is in memory of GPU {device} ({len} bytes); onnxrs reads inputs from system \
                         memory (send it in the request or in system shared memory)",
                        p.name
                    )));
                }
            }
        }
        raw.push(RawInput { name: p.name, data_type: p.data_type, shape: p.shape, parts });
    }
    inputs::check_request(scope.config, raw)
}

//! The functions Triton calls: the only symbols libtriton_onnxrs.so exports. Each is one call
//! through `guard::entry`, which turns an error into a TRITONSERVER_Error and a panic into an
//! INTERNAL error, so neither can cross into the server.
//!
//! This module is also the one place that knows which Rust type lives in which state slot:
//! `BackendState` on the backend, `ModelState` on each model, `InstanceState` on each instance.
#![allow(clippy::not_unsafe_ptr_arg_deref)] // the pointers come from the server, checked for null by the handles

use crate::backend::BackendState;
use crate::error::{Error, Result};
use crate::handover;
use crate::instance::InstanceState;
use crate::model::ModelState;
use crate::sys;
use crate::triton::backend::BackendAttribute;
use crate::triton::error::check_server_error;
use crate::triton::factory::ResponseFactory;
use crate::triton::guard::{catch, entry};
use crate::triton::instance::InstanceHandle;
use crate::triton::state::Slot;
use crate::triton::{Backend, Instance, Model, OwnedRequest};

fn backend_slot<'h>(b: &'h Backend<'h>) -> Slot<'h, Backend<'h>, BackendState> {
    // SAFETY: the backend's slot only ever holds a BackendState (set in `initialize`, taken in
    // `finalize`).
    unsafe { Slot::new(b) }
}

fn model_slot<'h>(m: &'h Model<'h>) -> Slot<'h, Model<'h>, ModelState> {
    // SAFETY: a model's slot only ever holds a ModelState (set in `model_initialize`, taken in
    // `model_finalize`).
    unsafe { Slot::new(m) }
}

fn instance_slot<'h>(i: &'h Instance<'h>) -> Slot<'h, Instance<'h>, InstanceState> {
    // SAFETY: an instance's slot only ever holds an InstanceState (set in
    // `instance_initialize`, taken in `instance_finalize`).
    unsafe { Slot::new(i) }
}

/// Refuses a server whose API is older than the one we were written against, or of another
/// major version.
fn check_api_versions() -> Result<()> {
    let (mut major, mut minor) = (0u32, 0u32);
    // SAFETY: plain out-parameters.
    unsafe { check_server_error(sys::TRITONBACKEND_ApiVersion(&mut major, &mut minor))? };
    if major != sys::ONNXRS_BACKEND_API_MAJOR || minor < sys::ONNXRS_BACKEND_API_MINOR {
        return Err(Error::unsupported(format!(
            "onnxrs needs TRITONBACKEND API {}.{} or a later 1.x; this server has {major}.{minor}",
            sys::ONNXRS_BACKEND_API_MAJOR,
            sys::ONNXRS_BACKEND_API_MINOR
        )));
    }
    // SAFETY: plain out-parameters.
    unsafe { check_server_error(sys::TRITONSERVER_ApiVersion(&mut major, &mut minor))? };
    if major != sys::ONNXRS_SERVER_API_MAJOR || minor < sys::ONNXRS_SERVER_API_MINOR {
        return Err(Error::unsupported(format!(
            "onnxrs needs TRITONSERVER API {}.{} or a later 1.x; this server has {major}.{minor}",
            sys::ONNXRS_SERVER_API_MAJOR,
            sys::ONNXRS_SERVER_API_MINOR
        )));
    }
    Ok(())
}

fn initialize(raw: *mut sys::TRITONBACKEND_Backend) -> Result<()> {
    // SAFETY: the server passes a live backend for the duration of the call.
    let backend = unsafe { Backend::from_raw(raw) }?;
    crate::triton::log::install();
    check_api_versions()?;
    crate::backend::set_name(backend.name()?);
    let dir = backend.artifacts().ok();
    let mut state = BackendState::from_config(&backend.config()?, dir)?;
    state.enable_metrics();
    log::info!(
        "onnxrs {}: backend '{}' initialized (ONNX Runtime library: {})",
        env!("CARGO_PKG_VERSION"),
        backend.name()?,
        state.ort_library.as_ref().map_or_else(
            || format!("from {}", state.backend_dir.as_ref().map_or("?".into(), |d| d.display().to_string())),
            |p| p.display().to_string()
        )
    );
    backend_slot(&backend).put(Box::new(state))
}

/// Gives back everything the backend made: its state (the request log's writer flushed and
/// joined, the metric families deleted) and ONNX Runtime's environment (its shared thread pool
/// joined, the shared arena freed). After it no thread of ours or of ONNX Runtime's runs, and an
/// `initialize` in the same process starts afresh.
fn finalize(raw: *mut sys::TRITONBACKEND_Backend) -> Result<()> {
    // SAFETY: the server passes a live backend for the duration of the call.
    let backend = unsafe { Backend::from_raw(raw) }?;
    drop(backend_slot(&backend).take()?);
    let holders = crate::onnx::runtime::release();
    if holders > 0 {
        // Every model is finalized before the backend, and with it every session: a holder left
        // here is a session that outlived its model.
        log::error!("onnxrs: {holders} session(s) still hold ONNX Runtime's environment at backend finalize");
    }
    Ok(())
}

fn model_initialize(raw: *mut sys::TRITONBACKEND_Model) -> Result<()> {
    // SAFETY: the server passes a live model for the duration of the call.
    let model = unsafe { Model::from_raw(raw) }?;
    let backend = model.backend()?;
    let backend_state = backend_slot(&backend).get()?;
    // First, before anything can fail: a predecessor waiting in its finalize may go now.
    let ticket = backend_state.handover.register(model.name()?, model.version()?);
    let state = ModelState::initialize(model, backend_state, ticket)?;
    model_slot(&model).put(Box::new(state))
}

/// Frees the model's state, then holds the server's teardown of this incarnation until a
/// successor of the same version has reached its instances, or a short grace has passed
/// (`handover`). A load that failed in `ModelInitialize` never made a metric reporter (the server
/// makes it after that call), so it has nothing to hand over.
fn model_finalize(raw: *mut sys::TRITONBACKEND_Model) -> Result<()> {
    // SAFETY: the server passes a live model for the duration of the call.
    let model = unsafe { Model::from_raw(raw) }?;
    let Some(state) = model_slot(&model).take()? else { return Ok(()) };
    let ticket = state.ticket.clone();
    drop(state);
    let backend = model.backend()?;
    let slot = backend_slot(&backend);
    slot.get()?.handover.await_successor(&ticket, handover::GRACE);
    Ok(())
}

fn instance_initialize(raw: *mut sys::TRITONBACKEND_ModelInstance) -> Result<()> {
    // SAFETY: the server passes a live instance for the duration of the call.
    let instance = unsafe { Instance::from_raw(raw) }?;
    let model = instance.model()?;
    let model_slot = model_slot(&model);
    let model_state = model_slot.get()?;
    // First, before anything can fail: the server made this incarnation's metric reporter before
    // its instances, so a predecessor waiting in its finalize may go now (`handover`).
    let backend = model.backend()?;
    backend_slot(&backend).get()?.handover.ready(&model_state.ticket);
    // SAFETY: the handle lives in the instance's state (a generator's loop), which
    // `instance_finalize` drops before it returns.
    let handle = unsafe { InstanceHandle::new(instance) };
    let state = InstanceState::initialize(instance, model_state, handle)?;
    instance_slot(&instance).put(Box::new(state))
}

fn instance_finalize(raw: *mut sys::TRITONBACKEND_ModelInstance) -> Result<()> {
    // SAFETY: the server passes a live instance for the duration of the call.
    let instance = unsafe { Instance::from_raw(raw) }?;
    drop(instance_slot(&instance).take()?);
    let model = instance.model()?;
    if let Ok(model_state) = model_slot(&model).get() {
        model_state.holds.forget(raw as usize);
    }
    Ok(())
}

/// Before the commit point an error hands the requests back to the server; after it, we own
/// them and the call succeeds whatever happens to them.
fn instance_execute(
    raw: *mut sys::TRITONBACKEND_ModelInstance,
    requests: *mut *mut sys::TRITONBACKEND_Request,
    count: u32,
) -> Result<()> {
    // The instance, as `hold` names it.
    let key = raw as usize;
    // SAFETY: the server passes a live instance for the duration of the call.
    let instance = unsafe { Instance::from_raw(raw) }?;
    let model = instance.model()?;
    let model_state = model_slot(&model).get()?;
    let state = instance_slot(&instance).get()?;
    if requests.is_null() && count > 0 {
        return Err(Error::internal("null request array"));
    }
    let raw: &[*mut sys::TRITONBACKEND_Request] = if count == 0 {
        &[]
    } else {
        // SAFETY: the server passes `count` request pointers; the array is ours to read during
        // this call.
        unsafe { std::slice::from_raw_parts(requests, count as usize) }
    };
    // Commit point: from here on every request is ours to answer and release, and this function
    // returns success.
    // SAFETY: each pointer is a request of this call and we return Ok below, so the server
    // will not touch them again.
    let owned: Vec<OwnedRequest> = raw.iter().filter_map(|&r| unsafe { OwnedRequest::take(r) }).collect();
    // The model must outlive this call's return until the server's thread is back in its wait
    // (`hold`): a reference made now, handed over once the requests are answered.
    let held = if crate::hold::faults().no_hold {
        None
    } else {
        owned.first().and_then(|r| ResponseFactory::new(r.view()).ok())
    };
    // A panic inside is caught here, not by the outer guard: the requests are already ours
    // (their owners answer and release them while unwinding), so the server must see success.
    let _ = catch("TRITONBACKEND_ModelInstanceExecute", || match &state.generator {
        Some(generator) => generator.submit(instance, owned),
        None => crate::execute::execute(instance, model_state, state, owned),
    });
    if let Some(tail) = crate::hold::faults().execute_tail {
        std::thread::sleep(tail);
    }
    if let Some(factory) = held {
        model_state.holds.hold(key, factory);
    }
    Ok(())
}

fn get_backend_attribute(raw: *mut sys::TRITONBACKEND_BackendAttribute) -> Result<()> {
    // SAFETY: the attribute object is live for the duration of the call.
    let attribute = unsafe { BackendAttribute::from_raw(raw) }?;
    attribute.set_parallel_model_instance_loading(true)
}

#[unsafe(no_mangle)]
pub extern "C" fn TRITONBACKEND_Initialize(backend: *mut sys::TRITONBACKEND_Backend) -> *mut sys::TRITONSERVER_Error {
    entry("TRITONBACKEND_Initialize", || initialize(backend))
}

#[unsafe(no_mangle)]
pub extern "C" fn TRITONBACKEND_Finalize(backend: *mut sys::TRITONBACKEND_Backend) -> *mut sys::TRITONSERVER_Error {
    entry("TRITONBACKEND_Finalize", || finalize(backend))
}

#[unsafe(no_mangle)]
pub extern "C" fn TRITONBACKEND_GetBackendAttribute(
    _backend: *mut sys::TRITONBACKEND_Backend,
    attribute: *mut sys::TRITONBACKEND_BackendAttribute,
) -> *mut sys::TRITONSERVER_Error {
    entry("TRITONBACKEND_GetBackendAttribute", || get_backend_attribute(attribute))
}

#[unsafe(no_mangle)]
pub extern "C" fn TRITONBACKEND_ModelInitialize(model: *mut sys::TRITONBACKEND_Model) -> *mut sys::TRITONSERVER_Error {
    entry("TRITONBACKEND_ModelInitialize", || model_initialize(model))
}

#[unsafe(no_mangle)]
pub extern "C" fn TRITONBACKEND_ModelFinalize(model: *mut sys::TRITONBACKEND_Model) -> *mut sys::TRITONSERVER_Error {
    entry("TRITONBACKEND_ModelFinalize", || model_finalize(model))
}

#[unsafe(no_mangle)]
pub extern "C" fn TRITONBACKEND_ModelInstanceInitialize(
    instance: *mut sys::TRITONBACKEND_ModelInstance,
) -> *mut sys::TRITONSERVER_Error {
    entry("TRITONBACKEND_ModelInstanceInitialize", || instance_initialize(instance))
}

#[unsafe(no_mangle)]
pub extern "C" fn TRITONBACKEND_ModelInstanceFinalize(
    instance: *mut sys::TRITONBACKEND_ModelInstance,
) -> *mut sys::TRITONSERVER_Error {
    entry("TRITONBACKEND_ModelInstanceFinalize", || instance_finalize(instance))
}

#[unsafe(no_mangle)]
pub extern "C" fn TRITONBACKEND_ModelInstanceExecute(
    instance: *mut sys::TRITONBACKEND_ModelInstance,
    requests: *mut *mut sys::TRITONBACKEND_Request,
    request_count: u32,
) -> *mut sys::TRITONSERVER_Error {
    entry("TRITONBACKEND_ModelInstanceExecute", || instance_execute(instance, requests, request_count))
}

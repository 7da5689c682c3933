//! Triton's side of the ABI, as far as the backend uses it: every TRITONSERVER_/TRITONBACKEND_
//! function the library imports, exported from the test executable (see build.rs). The host
//! objects are plain Rust values; errors, messages, buffer attributes and metric objects are
//! counted while alive, so a leak shows as a count left above zero. `Faults` says which request
//! an injected failure hits; `ANSWERS` records what each request got back.
// Every function here is called by the backend with the pointers this host created.
#![allow(clippy::undocumented_unsafe_blocks, unsafe_op_in_unsafe_fn, non_camel_case_types)]

use std::cell::RefCell;
use std::ffi::{CStr, CString, c_char, c_void};
use std::ptr;
use std::sync::atomic::{AtomicI64, Ordering};

pub type Err = *mut c_void;

pub static LIVE_ERRORS: AtomicI64 = AtomicI64::new(0);
pub static LIVE_MESSAGES: AtomicI64 = AtomicI64::new(0);
pub static LIVE_ATTRS: AtomicI64 = AtomicI64::new(0);
pub static LIVE_METRIC_OBJECTS: AtomicI64 = AtomicI64::new(0);
pub static METRIC_UPDATES: AtomicI64 = AtomicI64::new(0);
/// Response factories made and not yet deleted (each holds the model in the real server).
pub static LIVE_FACTORIES: AtomicI64 = AtomicI64::new(0);

struct FakeError {
    code: u32,
    msg: CString,
}

pub fn error(code: u32, msg: &str) -> Err {
    LIVE_ERRORS.fetch_add(1, Ordering::SeqCst);
    Box::into_raw(Box::new(FakeError { code, msg: CString::new(msg).unwrap() })).cast()
}

/// Takes back an error the backend returned to the host; its code and message.
pub unsafe fn take_error(e: Err) -> Option<(u32, String)> {
    if e.is_null() {
        return None;
    }
    let b = Box::from_raw(e.cast::<FakeError>());
    LIVE_ERRORS.fetch_sub(1, Ordering::SeqCst);
    Some((b.code, b.msg.to_string_lossy().into_owned()))
}

// ---- host objects

pub struct Backend {
    pub config: CString,
    pub artifacts: CString,
    pub state: *mut c_void,
}

pub struct Model {
    pub name: CString,
    pub repo: CString,
    pub config: CString,
    pub backend: *mut Backend,
    pub state: *mut c_void,
}

#[derive(Default)]
pub struct Stats {
    pub request: Vec<(usize, bool, [u64; 4])>,
    pub batches: Vec<u64>,
}

pub struct Instance {
    pub name: CString,
    pub model: *mut Model,
    pub state: *mut c_void,
    pub stats: RefCell<Stats>,
    pub memory_reports: RefCell<u32>,
}

pub struct Input {
    pub name: CString,
    pub dtype: u32,
    pub shape: Vec<i64>,
    pub data: Vec<u8>,
}

pub struct Request {
    pub index: usize,
    pub id: CString,
    pub inputs: Vec<Input>,
    pub outputs: Vec<CString>,
    pub released: RefCell<u32>,
}

pub struct Response {
    pub request: usize,
    // Boxed: the backend holds pointers to earlier outputs while later ones are added.
    #[allow(clippy::vec_box)]
    pub outputs: Vec<Box<Output>>,
}

pub struct Output {
    pub request: usize,
    pub name: String,
    pub shape: Vec<i64>,
    pub data: Vec<u8>,
}

/// What the test asks the host to do wrong, by request index.
#[derive(Clone)]
pub struct Faults {
    pub output_buffer: Option<usize>,
    pub response_send: Option<usize>,
    pub response_new: Option<usize>,
    pub input_query: Option<usize>,
    pub cancelled: Option<usize>,
}

impl Faults {
    /// A healthy host.
    pub const NONE: Faults =
        Faults { output_buffer: None, response_send: None, response_new: None, input_query: None, cancelled: None };
}

/// What came back for each request: outputs (name -> bytes, shape) or the error message.
#[derive(Debug, Clone)]
pub enum Answer {
    Outputs(Vec<(String, Vec<i64>, Vec<u8>)>),
    Error(#[allow(dead_code)] u32, String),
}

thread_local! {
    pub static FAULTS: RefCell<Faults> = const { RefCell::new(Faults::NONE) };
    pub static ANSWERS: RefCell<Vec<(usize, Answer)>> = const { RefCell::new(Vec::new()) };
}

fn faulty(pick: impl Fn(&Faults) -> Option<usize>, index: usize) -> bool {
    FAULTS.with(|f| pick(&f.borrow()) == Some(index))
}

unsafe fn cstr_out(s: &CStr, out: *mut *const c_char) -> Err {
    *out = s.as_ptr();
    ptr::null_mut()
}

// ---- TRITONSERVER_*

#[unsafe(no_mangle)]
pub unsafe extern "C" fn TRITONSERVER_ApiVersion(major: *mut u32, minor: *mut u32) -> Err {
    (*major, *minor) = (1, 34);
    ptr::null_mut()
}
#[unsafe(no_mangle)]
pub unsafe extern "C" fn TRITONSERVER_ErrorNew(code: u32, msg: *const c_char) -> Err {
    error(code, &CStr::from_ptr(msg).to_string_lossy())
}
#[unsafe(no_mangle)]
pub unsafe extern "C" fn TRITONSERVER_ErrorDelete(e: Err) {
    take_error(e);
}
#[unsafe(no_mangle)]
pub unsafe extern "C" fn TRITONSERVER_ErrorCode(e: Err) -> u32 {
    (*e.cast::<FakeError>()).code
}
#[unsafe(no_mangle)]
pub unsafe extern "C" fn TRITONSERVER_ErrorMessage(e: Err) -> *const c_char {
    (*e.cast::<FakeError>()).msg.as_ptr()
}
#[unsafe(no_mangle)]
pub unsafe extern "C" fn TRITONSERVER_MessageNewFromSerializedJson(
    m: *mut *mut c_void,
    base: *const c_char,
    size: usize,
) -> Err {
    let bytes = std::slice::from_raw_parts(base.cast::<u8>(), size).to_vec();
    LIVE_MESSAGES.fetch_add(1, Ordering::SeqCst);
    *m = Box::into_raw(Box::new(CString::new(bytes).unwrap())).cast();
    ptr::null_mut()
}
#[unsafe(no_mangle)]
pub unsafe extern "C" fn TRITONSERVER_MessageDelete(m: *mut c_void) -> Err {
    LIVE_MESSAGES.fetch_sub(1, Ordering::SeqCst);
    drop(Box::from_raw(m.cast::<CString>()));
    ptr::null_mut()
}
#[unsafe(no_mangle)]
pub unsafe extern "C" fn TRITONSERVER_MessageSerializeToJson(
    m: *mut c_void,
    base: *mut *const c_char,
    size: *mut usize,
) -> Err {
    let s = &*m.cast::<CString>();
    *base = s.as_ptr();
    *size = s.as_bytes().len();
    ptr::null_mut()
}
#[unsafe(no_mangle)]
pub extern "C" fn TRITONSERVER_LogIsEnabled(_level: u32) -> bool {
    std::env::var_os("ONNXRS_HOST_LOG").is_some()
}
#[unsafe(no_mangle)]
pub unsafe extern "C" fn TRITONSERVER_LogMessage(level: u32, _f: *const c_char, _l: i32, msg: *const c_char) -> Err {
    eprintln!("[backend log {level}] {}", CStr::from_ptr(msg).to_string_lossy());
    ptr::null_mut()
}
#[unsafe(no_mangle)]
pub unsafe extern "C" fn TRITONSERVER_BufferAttributesNew(a: *mut *mut c_void) -> Err {
    LIVE_ATTRS.fetch_add(1, Ordering::SeqCst);
    *a = Box::into_raw(Box::new([0u64; 3])).cast();
    ptr::null_mut()
}
#[unsafe(no_mangle)]
pub unsafe extern "C" fn TRITONSERVER_BufferAttributesDelete(a: *mut c_void) -> Err {
    LIVE_ATTRS.fetch_sub(1, Ordering::SeqCst);
    drop(Box::from_raw(a.cast::<[u64; 3]>()));
    ptr::null_mut()
}
#[unsafe(no_mangle)]
pub unsafe extern "C" fn TRITONSERVER_BufferAttributesSetMemoryTypeId(a: *mut c_void, id: i64) -> Err {
    (*a.cast::<[u64; 3]>())[0] = id as u64;
    ptr::null_mut()
}
#[unsafe(no_mangle)]
pub unsafe extern "C" fn TRITONSERVER_BufferAttributesSetMemoryType(a: *mut c_void, t: u32) -> Err {
    (*a.cast::<[u64; 3]>())[1] = u64::from(t);
    ptr::null_mut()
}
#[unsafe(no_mangle)]
pub unsafe extern "C" fn TRITONSERVER_BufferAttributesSetByteSize(a: *mut c_void, n: usize) -> Err {
    (*a.cast::<[u64; 3]>())[2] = n as u64;
    ptr::null_mut()
}

// ---- metrics and traces: counted objects, so a leak shows

fn new_counted<T>(v: T) -> *mut c_void {
    LIVE_METRIC_OBJECTS.fetch_add(1, Ordering::SeqCst);
    Box::into_raw(Box::new(v)).cast()
}
unsafe fn delete_counted<T>(p: *mut c_void) -> Err {
    LIVE_METRIC_OBJECTS.fetch_sub(1, Ordering::SeqCst);
    drop(Box::from_raw(p.cast::<T>()));
    ptr::null_mut()
}
#[unsafe(no_mangle)]
pub unsafe extern "C" fn TRITONSERVER_ParameterNew(_n: *const c_char, _t: u32, _v: *const c_void) -> *mut c_void {
    new_counted(0u8)
}
#[unsafe(no_mangle)]
pub unsafe extern "C" fn TRITONSERVER_ParameterDelete(p: *mut c_void) {
    delete_counted::<u8>(p);
}
#[unsafe(no_mangle)]
pub unsafe extern "C" fn TRITONSERVER_MetricFamilyNew(
    f: *mut *mut c_void,
    _k: u32,
    _n: *const c_char,
    _d: *const c_char,
) -> Err {
    *f = new_counted(0u16);
    ptr::null_mut()
}
#[unsafe(no_mangle)]
pub unsafe extern "C" fn TRITONSERVER_MetricFamilyDelete(f: *mut c_void) -> Err {
    delete_counted::<u16>(f)
}
#[unsafe(no_mangle)]
pub unsafe extern "C" fn TRITONSERVER_MetricArgsNew(a: *mut *mut c_void) -> Err {
    *a = new_counted(0u32);
    ptr::null_mut()
}
#[unsafe(no_mangle)]
pub extern "C" fn TRITONSERVER_MetricArgsSetHistogram(_a: *mut c_void, _b: *const f64, _n: u64) -> Err {
    ptr::null_mut()
}
#[unsafe(no_mangle)]
pub unsafe extern "C" fn TRITONSERVER_MetricArgsDelete(a: *mut c_void) -> Err {
    delete_counted::<u32>(a)
}
#[unsafe(no_mangle)]
pub unsafe extern "C" fn TRITONSERVER_MetricNewWithArgs(
    m: *mut *mut c_void,
    _f: *mut c_void,
    _l: *mut *const c_void,
    _n: u64,
    _a: *const c_void,
) -> Err {
    *m = new_counted(0u64);
    ptr::null_mut()
}
#[unsafe(no_mangle)]
pub unsafe extern "C" fn TRITONSERVER_MetricDelete(m: *mut c_void) -> Err {
    delete_counted::<u64>(m)
}
#[unsafe(no_mangle)]
pub extern "C" fn TRITONSERVER_MetricIncrement(_m: *mut c_void, _v: f64) -> Err {
    METRIC_UPDATES.fetch_add(1, Ordering::SeqCst);
    ptr::null_mut()
}
#[unsafe(no_mangle)]
pub extern "C" fn TRITONSERVER_MetricSet(_m: *mut c_void, _v: f64) -> Err {
    METRIC_UPDATES.fetch_add(1, Ordering::SeqCst);
    ptr::null_mut()
}
#[unsafe(no_mangle)]
pub extern "C" fn TRITONSERVER_MetricObserve(_m: *mut c_void, _v: f64) -> Err {
    METRIC_UPDATES.fetch_add(1, Ordering::SeqCst);
    ptr::null_mut()
}
#[unsafe(no_mangle)]
pub extern "C" fn TRITONSERVER_InferenceTraceReportActivity(_t: *mut c_void, _ts: u64, _n: *const c_char) -> Err {
    ptr::null_mut()
}
#[unsafe(no_mangle)]
pub unsafe extern "C" fn TRITONBACKEND_RequestTrace(_r: *mut c_void, t: *mut *mut c_void) -> Err {
    *t = ptr::null_mut();
    ptr::null_mut()
}

// ---- TRITONBACKEND_* (backend, model, instance)

#[unsafe(no_mangle)]
pub unsafe extern "C" fn TRITONBACKEND_ApiVersion(major: *mut u32, minor: *mut u32) -> Err {
    (*major, *minor) = (1, 19);
    ptr::null_mut()
}
#[unsafe(no_mangle)]
pub unsafe extern "C" fn TRITONBACKEND_BackendName(_b: *mut Backend, name: *mut *const c_char) -> Err {
    cstr_out(c"onnxrs", name)
}
#[unsafe(no_mangle)]
pub unsafe extern "C" fn TRITONBACKEND_BackendConfig(b: *mut Backend, m: *mut *mut c_void) -> Err {
    // Server-owned: the backend must not delete it (Triton's contract); keep it alive here.
    let c = &(*b).config;
    *m = Box::into_raw(Box::new(c.clone())).cast();
    LIVE_MESSAGES.fetch_add(1, Ordering::SeqCst);
    BACKEND_MESSAGES.with(|v| v.borrow_mut().push(*m));
    ptr::null_mut()
}
thread_local! {
    pub static BACKEND_MESSAGES: RefCell<Vec<*mut c_void>> = const { RefCell::new(Vec::new()) };
}
#[unsafe(no_mangle)]
pub unsafe extern "C" fn TRITONBACKEND_BackendArtifacts(
    b: *mut Backend,
    kind: *mut u32,
    loc: *mut *const c_char,
) -> Err {
    *kind = 0;
    cstr_out(&(*b).artifacts, loc)
}
#[unsafe(no_mangle)]
pub unsafe extern "C" fn TRITONBACKEND_BackendState(b: *mut Backend, s: *mut *mut c_void) -> Err {
    *s = (*b).state;
    ptr::null_mut()
}
#[unsafe(no_mangle)]
pub unsafe extern "C" fn TRITONBACKEND_BackendSetState(b: *mut Backend, s: *mut c_void) -> Err {
    (*b).state = s;
    ptr::null_mut()
}
#[unsafe(no_mangle)]
pub extern "C" fn TRITONBACKEND_BackendAttributeSetParallelModelInstanceLoading(_a: *mut c_void, _e: bool) -> Err {
    ptr::null_mut()
}
#[unsafe(no_mangle)]
pub unsafe extern "C" fn TRITONBACKEND_ModelName(m: *mut Model, name: *mut *const c_char) -> Err {
    cstr_out(&(*m).name, name)
}
#[unsafe(no_mangle)]
pub unsafe extern "C" fn TRITONBACKEND_ModelVersion(_m: *mut Model, v: *mut u64) -> Err {
    *v = 1;
    ptr::null_mut()
}
#[unsafe(no_mangle)]
pub unsafe extern "C" fn TRITONBACKEND_ModelRepository(m: *mut Model, kind: *mut u32, loc: *mut *const c_char) -> Err {
    *kind = 0;
    cstr_out(&(*m).repo, loc)
}
#[unsafe(no_mangle)]
pub unsafe extern "C" fn TRITONBACKEND_ModelConfig(m: *mut Model, _v: u32, out: *mut *mut c_void) -> Err {
    let c = &(*m).config;
    TRITONSERVER_MessageNewFromSerializedJson(out, c.as_ptr(), c.as_bytes().len())
}
#[unsafe(no_mangle)]
pub unsafe extern "C" fn TRITONBACKEND_ModelAutoCompleteConfig(_m: *mut Model, a: *mut bool) -> Err {
    *a = false;
    ptr::null_mut()
}
#[unsafe(no_mangle)]
pub extern "C" fn TRITONBACKEND_ModelSetConfig(_m: *mut Model, _v: u32, _c: *mut c_void) -> Err {
    error(5, "the test host does not auto-complete")
}
#[unsafe(no_mangle)]
pub unsafe extern "C" fn TRITONBACKEND_ModelBackend(m: *mut Model, b: *mut *mut Backend) -> Err {
    *b = (*m).backend;
    ptr::null_mut()
}
#[unsafe(no_mangle)]
pub unsafe extern "C" fn TRITONBACKEND_ModelState(m: *mut Model, s: *mut *mut c_void) -> Err {
    *s = (*m).state;
    ptr::null_mut()
}
#[unsafe(no_mangle)]
pub unsafe extern "C" fn TRITONBACKEND_ModelSetState(m: *mut Model, s: *mut c_void) -> Err {
    (*m).state = s;
    ptr::null_mut()
}
#[unsafe(no_mangle)]
pub unsafe extern "C" fn TRITONBACKEND_ModelInstanceName(i: *mut Instance, name: *mut *const c_char) -> Err {
    cstr_out(&(*i).name, name)
}
#[unsafe(no_mangle)]
pub unsafe extern "C" fn TRITONBACKEND_ModelInstanceKind(_i: *mut Instance, kind: *mut u32) -> Err {
    *kind = 1;
    ptr::null_mut()
}
#[unsafe(no_mangle)]
pub unsafe extern "C" fn TRITONBACKEND_ModelInstanceDeviceId(_i: *mut Instance, id: *mut i32) -> Err {
    *id = 0;
    ptr::null_mut()
}
#[unsafe(no_mangle)]
pub unsafe extern "C" fn TRITONBACKEND_ModelInstanceModel(i: *mut Instance, m: *mut *mut Model) -> Err {
    *m = (*i).model;
    ptr::null_mut()
}
#[unsafe(no_mangle)]
pub unsafe extern "C" fn TRITONBACKEND_ModelInstanceState(i: *mut Instance, s: *mut *mut c_void) -> Err {
    *s = (*i).state;
    ptr::null_mut()
}
#[unsafe(no_mangle)]
pub unsafe extern "C" fn TRITONBACKEND_ModelInstanceSetState(i: *mut Instance, s: *mut c_void) -> Err {
    (*i).state = s;
    ptr::null_mut()
}
#[unsafe(no_mangle)]
pub unsafe extern "C" fn TRITONBACKEND_ModelInstanceReportMemoryUsage(
    i: *mut Instance,
    _u: *mut *mut c_void,
    _n: u32,
) -> Err {
    *(*i).memory_reports.borrow_mut() += 1;
    ptr::null_mut()
}
#[unsafe(no_mangle)]
pub unsafe extern "C" fn TRITONBACKEND_ModelInstanceReportStatistics(
    i: *mut Instance,
    r: *mut Request,
    success: bool,
    a: u64,
    b: u64,
    c: u64,
    d: u64,
) -> Err {
    (*i).stats.borrow_mut().request.push(((*r).index, success, [a, b, c, d]));
    ptr::null_mut()
}
#[unsafe(no_mangle)]
pub unsafe extern "C" fn TRITONBACKEND_ModelInstanceReportBatchStatistics(
    i: *mut Instance,
    n: u64,
    _a: u64,
    _b: u64,
    _c: u64,
    _d: u64,
) -> Err {
    (*i).stats.borrow_mut().batches.push(n);
    ptr::null_mut()
}

// ---- requests and responses

#[unsafe(no_mangle)]
pub unsafe extern "C" fn TRITONBACKEND_RequestId(r: *mut Request, id: *mut *const c_char) -> Err {
    cstr_out(&(*r).id, id)
}
#[unsafe(no_mangle)]
pub unsafe extern "C" fn TRITONBACKEND_RequestIsCancelled(r: *mut Request, c: *mut bool) -> Err {
    *c = faulty(|f| f.cancelled, (*r).index);
    ptr::null_mut()
}
#[unsafe(no_mangle)]
pub unsafe extern "C" fn TRITONBACKEND_RequestInputCount(r: *mut Request, n: *mut u32) -> Err {
    *n = (*r).inputs.len() as u32;
    ptr::null_mut()
}
#[unsafe(no_mangle)]
pub unsafe extern "C" fn TRITONBACKEND_RequestInputByIndex(r: *mut Request, i: u32, out: *mut *mut Input) -> Err {
    if faulty(|f| f.input_query, (*r).index) {
        return error(1, "injected: the input cannot be read");
    }
    let r = &*r;
    *out = ptr::from_ref(&r.inputs[i as usize]).cast_mut();
    ptr::null_mut()
}
#[unsafe(no_mangle)]
pub unsafe extern "C" fn TRITONBACKEND_RequestOutputCount(r: *mut Request, n: *mut u32) -> Err {
    *n = (*r).outputs.len() as u32;
    ptr::null_mut()
}
#[unsafe(no_mangle)]
pub unsafe extern "C" fn TRITONBACKEND_RequestOutputName(r: *mut Request, i: u32, name: *mut *const c_char) -> Err {
    let r = &*r;
    cstr_out(&r.outputs[i as usize], name)
}
#[unsafe(no_mangle)]
pub unsafe extern "C" fn TRITONBACKEND_RequestRelease(r: *mut Request, _flags: u32) -> Err {
    *(*r).released.borrow_mut() += 1;
    ptr::null_mut()
}
#[unsafe(no_mangle)]
pub unsafe extern "C" fn TRITONBACKEND_InputProperties(
    i: *mut Input,
    name: *mut *const c_char,
    dtype: *mut u32,
    shape: *mut *const i64,
    dims: *mut u32,
    size: *mut u64,
    buffers: *mut u32,
) -> Err {
    let i = &*i;
    if !name.is_null() {
        *name = i.name.as_ptr();
    }
    if !dtype.is_null() {
        *dtype = i.dtype;
    }
    if !shape.is_null() {
        *shape = i.shape.as_ptr();
    }
    if !dims.is_null() {
        *dims = i.shape.len() as u32;
    }
    if !size.is_null() {
        *size = i.data.len() as u64;
    }
    if !buffers.is_null() {
        *buffers = 1;
    }
    ptr::null_mut()
}
#[unsafe(no_mangle)]
pub unsafe extern "C" fn TRITONBACKEND_InputBuffer(
    i: *mut Input,
    _index: u32,
    buffer: *mut *const c_void,
    size: *mut u64,
    mt: *mut u32,
    id: *mut i64,
) -> Err {
    *buffer = (*i).data.as_ptr().cast();
    *size = (*i).data.len() as u64;
    *mt = 0;
    *id = 0;
    ptr::null_mut()
}
#[unsafe(no_mangle)]
pub unsafe extern "C" fn TRITONBACKEND_ResponseFactoryNew(out: *mut *mut c_void, _r: *mut Request) -> Err {
    LIVE_FACTORIES.fetch_add(1, Ordering::SeqCst);
    *out = Box::into_raw(Box::new(0u8)).cast();
    ptr::null_mut()
}
#[unsafe(no_mangle)]
pub unsafe extern "C" fn TRITONBACKEND_ResponseFactoryDelete(f: *mut c_void) -> Err {
    LIVE_FACTORIES.fetch_sub(1, Ordering::SeqCst);
    drop(Box::from_raw(f.cast::<u8>()));
    ptr::null_mut()
}
// The stream calls of decoupled (generative) models: this host serves no generator, so they
// only have to exist for the library to load; each says so if it is ever called.
macro_rules! not_served {
    ($($name:ident($($arg:ident: $ty:ty),*);)*) => {$(
        #[unsafe(no_mangle)]
        pub unsafe extern "C" fn $name($(_: $ty),*) -> Err {
            error(1, concat!(stringify!($name), ": the test host serves no decoupled model"))
        }
    )*};
}
not_served! {
    TRITONBACKEND_ResponseFactorySendFlags(f: *mut c_void, flags: u32);
    TRITONBACKEND_ResponseFactoryIsCancelled(f: *mut c_void, c: *mut bool);
    TRITONBACKEND_ResponseNewFromFactory(r: *mut *mut Response, f: *mut c_void);
    TRITONBACKEND_ModelInstanceResponseStatisticsNew(s: *mut *mut c_void);
    TRITONBACKEND_ModelInstanceResponseStatisticsDelete(s: *mut c_void);
    TRITONBACKEND_ModelInstanceResponseStatisticsSetModelInstance(s: *mut c_void, i: *mut c_void);
    TRITONBACKEND_ModelInstanceResponseStatisticsSetResponseFactory(s: *mut c_void, f: *mut c_void);
    TRITONBACKEND_ModelInstanceResponseStatisticsSetResponseStart(s: *mut c_void, t: u64);
    TRITONBACKEND_ModelInstanceResponseStatisticsSetComputeOutputStart(s: *mut c_void, t: u64);
    TRITONBACKEND_ModelInstanceResponseStatisticsSetResponseEnd(s: *mut c_void, t: u64);
    TRITONBACKEND_ModelInstanceResponseStatisticsSetError(s: *mut c_void, e: Err);
    TRITONBACKEND_ModelInstanceReportResponseStatistics(s: *mut c_void);
    TRITONBACKEND_ModelServer(m: *mut c_void, s: *mut *mut c_void);
    TRITONSERVER_ServerModelIsReady(s: *mut c_void, n: *const c_char, v: i64, r: *mut bool);
}
#[unsafe(no_mangle)]
pub unsafe extern "C" fn TRITONBACKEND_ResponseNew(out: *mut *mut Response, r: *mut Request) -> Err {
    if faulty(|f| f.response_new, (*r).index) {
        return error(1, "injected: no response can be created");
    }
    *out = Box::into_raw(Box::new(Response { request: (*r).index, outputs: Vec::new() }));
    ptr::null_mut()
}
#[unsafe(no_mangle)]
pub unsafe extern "C" fn TRITONBACKEND_ResponseOutput(
    resp: *mut Response,
    out: *mut *mut Output,
    name: *const c_char,
    _dtype: u32,
    shape: *const i64,
    dims: u32,
) -> Err {
    let shape = std::slice::from_raw_parts(shape, dims as usize).to_vec();
    let name = CStr::from_ptr(name).to_string_lossy().into_owned();
    let mut o = Box::new(Output { request: (*resp).request, name, shape, data: Vec::new() });
    *out = ptr::from_mut(o.as_mut());
    (*resp).outputs.push(o);
    ptr::null_mut()
}
#[unsafe(no_mangle)]
pub unsafe extern "C" fn TRITONBACKEND_OutputBuffer(
    o: *mut Output,
    buffer: *mut *mut c_void,
    size: u64,
    mt: *mut u32,
    id: *mut i64,
) -> Err {
    if faulty(|f| f.output_buffer, (*o).request) {
        return error(1, "injected: the output buffer cannot be allocated");
    }
    (*o).data = vec![0u8; size as usize];
    *buffer = (*o).data.as_mut_ptr().cast();
    *mt = 0;
    *id = 0;
    ptr::null_mut()
}
#[unsafe(no_mangle)]
pub unsafe extern "C" fn TRITONBACKEND_ResponseSend(resp: *mut Response, _flags: u32, e: Err) -> Err {
    let resp = Box::from_raw(resp);
    // Triton reads the error but does not take it: the backend deletes it after the call.
    let answer = match e.cast::<FakeError>().as_ref() {
        Some(fe) => Answer::Error(fe.code, fe.msg.to_string_lossy().into_owned()),
        None => {
            Answer::Outputs(resp.outputs.iter().map(|o| (o.name.clone(), o.shape.clone(), o.data.clone())).collect())
        }
    };
    ANSWERS.with(|a| a.borrow_mut().push((resp.request, answer)));
    if faulty(|f| f.response_send, resp.request) {
        return error(4, "injected: the response cannot be sent");
    }
    ptr::null_mut()
}

// Sequences: the fake host serves no stateful model; a request has no flags and no states.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn TRITONBACKEND_RequestFlags(_r: *mut Request, flags: *mut u32) -> Err {
    *flags = 0;
    ptr::null_mut()
}
#[unsafe(no_mangle)]
pub unsafe extern "C" fn TRITONBACKEND_StateNew(
    _state: *mut *mut c_void,
    _r: *mut Request,
    _name: *const c_char,
    _dt: u32,
    _shape: *const i64,
    _dims: u32,
) -> Err {
    error(3, "the fake host keeps no sequence state")
}
#[unsafe(no_mangle)]
pub unsafe extern "C" fn TRITONBACKEND_StateBuffer(
    _state: *mut c_void,
    _buffer: *mut *mut c_void,
    _size: u64,
    _mt: *mut u32,
    _id: *mut i64,
) -> Err {
    error(3, "the fake host keeps no sequence state")
}
#[unsafe(no_mangle)]
pub unsafe extern "C" fn TRITONBACKEND_StateUpdate(_state: *mut c_void) -> Err {
    error(3, "the fake host keeps no sequence state")
}
#[unsafe(no_mangle)]
pub unsafe extern "C" fn TRITONBACKEND_RequestCorrelationId(_r: *mut Request, id: *mut u64) -> Err {
    *id = 0;
    ptr::null_mut()
}
#[unsafe(no_mangle)]
pub unsafe extern "C" fn TRITONBACKEND_RequestParameterCount(_r: *mut Request, n: *mut u32) -> Err {
    // The fake host's clients send no request parameters.
    *n = 0;
    ptr::null_mut()
}
#[unsafe(no_mangle)]
pub unsafe extern "C" fn TRITONBACKEND_RequestParameter(
    _r: *mut Request,
    _index: u32,
    _key: *mut *const c_char,
    _kind: *mut u32,
    _value: *mut *const c_void,
) -> Err {
    error(3, "the fake host's requests have no parameters")
}
#[unsafe(no_mangle)]
pub unsafe extern "C" fn TRITONBACKEND_ResponseSetIntParameter(
    _resp: *mut Response,
    _name: *const c_char,
    _v: i64,
) -> Err {
    ptr::null_mut()
}
#[unsafe(no_mangle)]
pub unsafe extern "C" fn TRITONBACKEND_ResponseSetStringParameter(
    _resp: *mut Response,
    _name: *const c_char,
    _v: *const c_char,
) -> Err {
    ptr::null_mut()
}
#[unsafe(no_mangle)]
pub unsafe extern "C" fn TRITONBACKEND_RequestCorrelationIdString(_r: *mut Request, _id: *mut *const c_char) -> Err {
    error(3, "the fake host's correlation ids are integers")
}

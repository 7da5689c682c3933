//! The server side of the ABI, played by this test: it loads `libtriton_onnxrs.so` with dlopen,
//! provides every TRITONSERVER_/TRITONBACKEND_ function the library imports (exported from this
//! executable, see build.rs), and injects failures a healthy Triton rarely produces: an output
//! buffer that cannot be allocated, a response that cannot be sent or created, an input that
//! cannot be read, a cancelled request. For each, the affected request must get an error (or at
//! least be counted as failed), the others must get correct outputs, every request must be
//! released exactly once, and every object the host hands out must be given back (the host
//! counts them). `ci/test.sh` also runs this binary under valgrind's leak checker.
//!
//! Needs `ONNXRS_TEST_MODELS` and `ONNXRS_ORT_LIBRARY` (set by ci/test.sh).
#![allow(clippy::missing_safety_doc, clippy::expect_used, clippy::unwrap_used, non_camel_case_types)]
// Every function here is called by the backend with the pointers this host created.
#![allow(clippy::undocumented_unsafe_blocks, unsafe_op_in_unsafe_fn)]

use std::cell::RefCell;
use std::ffi::{CStr, CString, c_char, c_void};
use std::path::PathBuf;
use std::ptr;
use std::sync::atomic::{AtomicI64, Ordering};

type Err = *mut c_void;

static LIVE_ERRORS: AtomicI64 = AtomicI64::new(0);
static LIVE_MESSAGES: AtomicI64 = AtomicI64::new(0);
static LIVE_ATTRS: AtomicI64 = AtomicI64::new(0);
static LIVE_METRIC_OBJECTS: AtomicI64 = AtomicI64::new(0);
static METRIC_UPDATES: AtomicI64 = AtomicI64::new(0);

struct FakeError {
    code: u32,
    msg: CString,
}

fn error(code: u32, msg: &str) -> Err {
    LIVE_ERRORS.fetch_add(1, Ordering::SeqCst);
    Box::into_raw(Box::new(FakeError { code, msg: CString::new(msg).unwrap() })).cast()
}

/// Takes back an error the backend returned to the host; its code and message.
unsafe fn take_error(e: Err) -> Option<(u32, String)> {
    if e.is_null() {
        return None;
    }
    let b = Box::from_raw(e.cast::<FakeError>());
    LIVE_ERRORS.fetch_sub(1, Ordering::SeqCst);
    Some((b.code, b.msg.to_string_lossy().into_owned()))
}

// ---- host objects

pub struct Backend {
    config: CString,
    artifacts: CString,
    state: *mut c_void,
}

pub struct Model {
    name: CString,
    repo: CString,
    config: CString,
    backend: *mut Backend,
    state: *mut c_void,
}

#[derive(Default)]
pub struct Stats {
    request: Vec<(usize, bool, [u64; 4])>,
    batches: Vec<u64>,
}

pub struct Instance {
    name: CString,
    model: *mut Model,
    state: *mut c_void,
    stats: RefCell<Stats>,
    memory_reports: RefCell<u32>,
}

pub struct Input {
    name: CString,
    dtype: u32,
    shape: Vec<i64>,
    data: Vec<u8>,
}

pub struct Request {
    index: usize,
    id: CString,
    inputs: Vec<Input>,
    outputs: Vec<CString>,
    released: RefCell<u32>,
}

pub struct Response {
    request: usize,
    // Boxed: the backend holds pointers to earlier outputs while later ones are added.
    #[allow(clippy::vec_box)]
    outputs: Vec<Box<Output>>,
}

pub struct Output {
    request: usize,
    name: String,
    shape: Vec<i64>,
    data: Vec<u8>,
}

/// What the test asks the host to do wrong, by request index.
#[derive(Default, Clone)]
struct Faults {
    output_buffer: Option<usize>,
    response_send: Option<usize>,
    response_new: Option<usize>,
    input_query: Option<usize>,
    cancelled: Option<usize>,
}

/// What came back for each request: outputs (name -> bytes, shape) or the error message.
#[derive(Debug, Clone)]
enum Answer {
    Outputs(Vec<(String, Vec<i64>, Vec<u8>)>),
    Error(#[allow(dead_code)] u32, String),
}

thread_local! {
    static FAULTS: RefCell<Faults> = RefCell::new(Faults::default());
    static ANSWERS: RefCell<Vec<(usize, Answer)>> = const { RefCell::new(Vec::new()) };
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
    static BACKEND_MESSAGES: RefCell<Vec<*mut c_void>> = const { RefCell::new(Vec::new()) };
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

// ---- the test

type EntryFn = unsafe extern "C" fn(*mut c_void) -> Err;
type ExecFn = unsafe extern "C" fn(*mut c_void, *mut *mut Request, u32) -> Err;

struct Lib {
    initialize: EntryFn,
    finalize: EntryFn,
    model_initialize: EntryFn,
    model_finalize: EntryFn,
    instance_initialize: EntryFn,
    instance_finalize: EntryFn,
    execute: ExecFn,
}

fn env_path(key: &str) -> PathBuf {
    PathBuf::from(std::env::var(key).unwrap_or_else(|_| panic!("{key} is not set: run `bash ci/test.sh`")))
}

unsafe fn open_backend() -> Lib {
    // The cdylib cargo built beside this test's deps folder.
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().and_then(|p| p.parent()).unwrap();
    let path = CString::new(dir.join("libtriton_onnxrs.so").to_string_lossy().as_bytes()).unwrap();
    let h = libc::dlopen(path.as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL);
    assert!(
        !h.is_null(),
        "dlopen: {} (build the library first: `cargo build --lib`; ci/test.sh does)",
        CStr::from_ptr(libc::dlerror()).to_string_lossy()
    );
    let sym = |name: &CStr| {
        let p = libc::dlsym(h, name.as_ptr());
        assert!(!p.is_null(), "missing {name:?}");
        p
    };
    Lib {
        initialize: std::mem::transmute::<*mut c_void, EntryFn>(sym(c"TRITONBACKEND_Initialize")),
        finalize: std::mem::transmute::<*mut c_void, EntryFn>(sym(c"TRITONBACKEND_Finalize")),
        model_initialize: std::mem::transmute::<*mut c_void, EntryFn>(sym(c"TRITONBACKEND_ModelInitialize")),
        model_finalize: std::mem::transmute::<*mut c_void, EntryFn>(sym(c"TRITONBACKEND_ModelFinalize")),
        instance_initialize: std::mem::transmute::<*mut c_void, EntryFn>(sym(c"TRITONBACKEND_ModelInstanceInitialize")),
        instance_finalize: std::mem::transmute::<*mut c_void, EntryFn>(sym(c"TRITONBACKEND_ModelInstanceFinalize")),
        execute: std::mem::transmute::<*mut c_void, ExecFn>(sym(c"TRITONBACKEND_ModelInstanceExecute")),
    }
}

fn gather_request(index: usize, idx: &[i64]) -> Request {
    Request {
        index,
        id: CString::new(format!("req-{index}")).unwrap(),
        inputs: vec![Input {
            name: CString::new("IDX").unwrap(),
            dtype: 9, // INT64
            shape: vec![1, idx.len() as i64],
            data: idx.iter().flat_map(|v| v.to_le_bytes()).collect(),
        }],
        outputs: vec![CString::new("Y").unwrap()],
        released: RefCell::new(0),
    }
}

fn floats(b: &[u8]) -> Vec<f32> {
    b.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect()
}

/// Runs one execute with `faults` over three requests (index 0..3, the middle one's data as
/// given) and returns what each request got, in index order.
unsafe fn execute_three(lib: &Lib, inst: *mut Instance, faults: Faults, middle: &[i64]) -> Vec<Option<Answer>> {
    FAULTS.with(|f| *f.borrow_mut() = faults.clone());
    ANSWERS.with(|a| a.borrow_mut().clear());
    (*inst).stats.borrow_mut().request.clear();
    (*inst).stats.borrow_mut().batches.clear();
    let mut reqs = [gather_request(0, &[0, 1]), gather_request(1, middle), gather_request(2, &[4, 3])];
    let mut ptrs: Vec<*mut Request> = reqs.iter_mut().map(ptr::from_mut).collect();
    let e = (lib.execute)(inst.cast(), ptrs.as_mut_ptr(), 3);
    assert_eq!(take_error(e), None, "execute must return success once it took the requests");
    for r in &reqs {
        assert_eq!(*r.released.borrow(), 1, "request {} released {} times", r.index, r.released.borrow());
    }
    let stats = (*inst).stats.borrow();
    for r in &reqs {
        let n = stats.request.iter().filter(|(i, _, _)| *i == r.index).count();
        assert_eq!(n, 1, "request {} has {n} statistics records", r.index);
    }
    for (_, ok, [a, b, c, d]) in &stats.request {
        if *ok {
            assert!(a <= b && b <= c && c <= d, "timestamps out of order: {a} {b} {c} {d}");
        }
    }
    let answers = ANSWERS.with(|a| a.borrow().clone());
    (0..3)
        .map(|i| {
            let mine: Vec<&Answer> = answers.iter().filter(|(r, _)| *r == i).map(|(_, a)| a).collect();
            assert!(mine.len() <= 1, "request {i} got {} responses", mine.len());
            mine.first().map(|a| (*a).clone())
        })
        .collect()
}

fn success(stats: &Stats, index: usize) -> bool {
    stats.request.iter().any(|(i, ok, _)| *i == index && *ok)
}

fn expect_outputs(a: &Option<Answer>, want: &[f32]) {
    match a {
        Some(Answer::Outputs(o)) => {
            assert_eq!(o.len(), 1);
            assert_eq!(floats(&o[0].2), want);
        }
        other => panic!("expected outputs {want:?}, got {other:?}"),
    }
}

fn expect_error(a: &Option<Answer>, fragment: &str) {
    match a {
        Some(Answer::Error(_, msg)) => assert!(msg.contains(fragment), "'{fragment}' not in '{msg}'"),
        other => panic!("expected an error with '{fragment}', got {other:?}"),
    }
}

#[test]
fn injected_host_failures_fail_only_the_affected_request_and_leak_nothing() {
    let models = env_path("ONNXRS_TEST_MODELS");
    let ort = env_path("ONNXRS_ORT_LIBRARY");
    unsafe {
        let lib = open_backend();
        let config = format!(r#"{{"cmdline": {{"ort-library": "{}"}}}}"#, ort.display());
        let backend = Box::into_raw(Box::new(Backend {
            config: CString::new(config).unwrap(),
            artifacts: CString::new("/nonexistent").unwrap(),
            state: ptr::null_mut(),
        }));
        assert_eq!(take_error((lib.initialize)(backend.cast())), None);
        let model = Box::into_raw(Box::new(Model {
            name: CString::new("gather_fail").unwrap(),
            repo: CString::new(models.join("gather_fail").to_string_lossy().as_bytes()).unwrap(),
            config: CString::new(
                r#"{"name": "gather_fail", "backend": "onnxrs", "max_batch_size": 8,
                    "input": [{"name": "IDX", "data_type": "TYPE_INT64", "dims": [-1]}],
                    "output": [{"name": "Y", "data_type": "TYPE_FP32", "dims": [-1]}],
                    "dynamic_batching": {}}"#,
            )
            .unwrap(),
            backend,
            state: ptr::null_mut(),
        }));
        assert_eq!(take_error((lib.model_initialize)(model.cast())), None);
        let inst = Box::into_raw(Box::new(Instance {
            name: CString::new("gather_fail_0").unwrap(),
            model,
            state: ptr::null_mut(),
            stats: RefCell::new(Stats::default()),
            memory_reports: RefCell::new(0),
        }));
        assert_eq!(take_error((lib.instance_initialize)(inst.cast())), None);
        assert!(*(*inst).memory_reports.borrow() >= 1, "memory reported at load");

        let good = Faults::default();
        // Healthy: one fused run of 3 requests.
        let a = execute_three(&lib, inst, good.clone(), &[2, 0]);
        expect_outputs(&a[0], &[10.0, 20.0]);
        expect_outputs(&a[1], &[30.0, 10.0]);
        expect_outputs(&a[2], &[50.0, 40.0]);
        assert_eq!((*inst).stats.borrow().batches, vec![3]);

        // ONNX Runtime fails on the middle one: only it fails.
        let a = execute_three(&lib, inst, good.clone(), &[7, 0]);
        expect_outputs(&a[0], &[10.0, 20.0]);
        expect_error(&a[1], "out of data bounds");
        expect_outputs(&a[2], &[50.0, 40.0]);
        assert!(!success(&(*inst).stats.borrow(), 1) && success(&(*inst).stats.borrow(), 2));

        // The middle request's input cannot be read.
        let a = execute_three(&lib, inst, Faults { input_query: Some(1), ..good.clone() }, &[2, 0]);
        expect_error(&a[1], "input cannot be read");
        expect_outputs(&a[0], &[10.0, 20.0]);
        expect_outputs(&a[2], &[50.0, 40.0]);

        // The middle request was cancelled.
        let a = execute_three(&lib, inst, Faults { cancelled: Some(1), ..good.clone() }, &[2, 0]);
        expect_error(&a[1], "cancelled");
        assert!(!success(&(*inst).stats.borrow(), 1));
        expect_outputs(&a[2], &[50.0, 40.0]);

        // No response can be created for the middle request: it is still released and counted
        // as failed; the others are answered.
        let a = execute_three(&lib, inst, Faults { response_new: Some(1), ..good.clone() }, &[2, 0]);
        assert!(a[1].is_none());
        assert!(!success(&(*inst).stats.borrow(), 1));
        expect_outputs(&a[0], &[10.0, 20.0]);
        expect_outputs(&a[2], &[50.0, 40.0]);

        // Sending the first response fails: the backend logs it, the others are unaffected.
        let a = execute_three(&lib, inst, Faults { response_send: Some(0), ..good.clone() }, &[2, 0]);
        expect_outputs(&a[1], &[30.0, 10.0]);
        expect_outputs(&a[2], &[50.0, 40.0]);

        // The middle request's output buffer cannot be allocated.
        let a = execute_three(&lib, inst, Faults { output_buffer: Some(1), ..good.clone() }, &[2, 0]);
        expect_error(&a[1], "output buffer cannot be allocated");
        assert!(!success(&(*inst).stats.borrow(), 1));
        expect_outputs(&a[0], &[10.0, 20.0]);
        expect_outputs(&a[2], &[50.0, 40.0]);

        // And the backend still works.
        let a = execute_three(&lib, inst, good, &[0, 0]);
        expect_outputs(&a[1], &[10.0, 10.0]);

        assert_eq!(take_error((lib.instance_finalize)(inst.cast())), None);
        assert_eq!(take_error((lib.model_finalize)(model.cast())), None);
        assert_eq!(take_error((lib.finalize)(backend.cast())), None);
        drop(Box::from_raw(inst));
        drop(Box::from_raw(model));
        drop(Box::from_raw(backend));
        BACKEND_MESSAGES.with(|v| {
            for m in v.borrow_mut().drain(..) {
                TRITONSERVER_MessageDelete(m);
            }
        });
    }
    assert_eq!(LIVE_ERRORS.load(Ordering::SeqCst), 0, "errors not deleted");
    assert_eq!(LIVE_MESSAGES.load(Ordering::SeqCst), 0, "messages not deleted");
    assert_eq!(LIVE_ATTRS.load(Ordering::SeqCst), 0, "buffer attributes not deleted");
    assert_eq!(LIVE_METRIC_OBJECTS.load(Ordering::SeqCst), 0, "metric families, metrics, args or labels not deleted");
    assert!(METRIC_UPDATES.load(Ordering::SeqCst) > 0, "the backend's metrics were updated");

    // Everything above held: record it for docs/reliability.md (ci/test.sh adds valgrind's line).
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("build/reliability");
    let _ = std::fs::create_dir_all(&dir);
    let rows = [
        ("none (a fused run of 3)", "3 correct outputs, one batch statistic of size 3"),
        ("ONNX Runtime fails on request 2", "request 2: the ORT error; 1 and 3 correct (rerun one by one)"),
        ("reading request 2's input fails", "request 2: that error; 1 and 3 correct"),
        ("request 2 cancelled", "request 2: a 'cancelled' error, counted as a failure; 1 and 3 correct"),
        ("no response can be created for request 2", "request 2 released and counted as failed; 1 and 3 correct"),
        ("sending request 1's response fails", "logged; 2 and 3 correct"),
        (
            "request 2's output buffer cannot be allocated",
            "request 2: that error, counted as a failure; 1 and 3 correct",
        ),
        ("none, after all of the above", "correct outputs: the backend keeps working"),
    ];
    let mut md = String::from(
        "## Faults from the host side\n\ntests/host_faults.rs plays Triton's side of the ABI around the real \
         libtriton_onnxrs.so and injects failures. In every case each request was released exactly once and had \
         exactly one statistics record, and at the end no error, message, buffer-attributes, metric family, \
         metric, metric-args or label object the host handed out was left undeleted.\n\n| injected fault | observed |\n|---|---|\n",
    );
    for (fault, observed) in rows {
        md.push_str(&format!("| {fault} | {observed} |\n"));
    }
    let _ = std::fs::write(dir.join("host-faults.md"), md);
}

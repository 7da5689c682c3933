//! Drives the real `libtriton_onnxrs.so` the way Triton does, against the host in host.rs: load
//! the backend, the model `gather_fail` and one instance; run one execute over three requests
//! with chosen faults; finalize everything and check that every counted host object came back.
// The backend's entry points get only pointers this harness created and keeps alive.
#![allow(clippy::undocumented_unsafe_blocks, unsafe_op_in_unsafe_fn)]

use std::cell::RefCell;
use std::ffi::{CStr, CString, c_void};
use std::path::PathBuf;
use std::ptr;
use std::sync::atomic::Ordering;

use crate::host::{
    ANSWERS, Answer, BACKEND_MESSAGES, Backend, Err, FAULTS, Faults, Input, Instance, LIVE_ATTRS, LIVE_ERRORS,
    LIVE_FACTORIES, LIVE_MESSAGES, LIVE_METRIC_OBJECTS, METRIC_UPDATES, Model, Request, Stats,
    TRITONSERVER_MessageDelete, take_error,
};

type EntryFn = unsafe extern "C" fn(*mut c_void) -> Err;
type ExecFn = unsafe extern "C" fn(*mut c_void, *mut *mut Request, u32) -> Err;

/// The backend's entry points, found with dlsym.
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

/// The backend with the model `gather_fail` (`Y = TABLE[IDX]`) and one instance loaded, as
/// Triton leaves them after a model load. Needs `ONNXRS_TEST_MODELS` and `ONNXRS_ORT_LIBRARY`.
pub struct Loaded {
    lib: Lib,
    backend: *mut Backend,
    model: *mut Model,
    inst: *mut Instance,
}

impl Loaded {
    pub unsafe fn new() -> Loaded {
        Loaded::with_settings("")
    }

    /// `new`, with more `--backend-config` settings: `extra` is JSON members to add to the
    /// cmdline object (`, "key": "value"`).
    pub unsafe fn with_settings(extra: &str) -> Loaded {
        let models = env_path("ONNXRS_TEST_MODELS");
        let ort = env_path("ONNXRS_ORT_LIBRARY");
        let lib = open_backend();
        let config = format!(r#"{{"cmdline": {{"ort-library": "{}"{extra}}}}}"#, ort.display());
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
        Loaded { lib, backend, model, inst }
    }

    /// The statistics the instance reported during the last `execute_three`.
    pub unsafe fn stats(&self) -> std::cell::Ref<'_, Stats> {
        (*self.inst).stats.borrow()
    }

    /// Runs one execute with `faults` over three requests (index 0..3, the middle one's indices
    /// as given) and returns what each request got, in index order. Whatever the faults, every
    /// request must be released exactly once and have exactly one statistics record.
    pub unsafe fn execute_three(&self, faults: &Faults, middle: &[i64]) -> Vec<Option<Answer>> {
        let inst = self.inst;
        FAULTS.with(|f| *f.borrow_mut() = faults.clone());
        ANSWERS.with(|a| a.borrow_mut().clear());
        (*inst).stats.borrow_mut().request.clear();
        (*inst).stats.borrow_mut().batches.clear();
        let mut reqs = [gather_request(0, &[0, 1]), gather_request(1, middle), gather_request(2, &[4, 3])];
        let mut ptrs: Vec<*mut Request> = reqs.iter_mut().map(ptr::from_mut).collect();
        let e = (self.lib.execute)(inst.cast(), ptrs.as_mut_ptr(), 3);
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

    /// Finalizes instance, model and backend as Triton does at unload, then checks that no
    /// error, message, buffer-attributes or metric object the host handed out is still alive.
    pub unsafe fn finalize(self) {
        let Loaded { lib, backend, model, inst } = self;
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
        assert_eq!(LIVE_ERRORS.load(Ordering::SeqCst), 0, "errors not deleted");
        assert_eq!(LIVE_MESSAGES.load(Ordering::SeqCst), 0, "messages not deleted");
        assert_eq!(LIVE_ATTRS.load(Ordering::SeqCst), 0, "buffer attributes not deleted");
        assert_eq!(LIVE_FACTORIES.load(Ordering::SeqCst), 0, "response factories (model references) not deleted");
        assert_eq!(
            LIVE_METRIC_OBJECTS.load(Ordering::SeqCst),
            0,
            "metric families, metrics, args or labels not deleted"
        );
        assert!(METRIC_UPDATES.load(Ordering::SeqCst) > 0, "the backend's metrics were updated");
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

/// The ids of the threads this process runs now.
pub fn thread_ids() -> std::collections::BTreeSet<String> {
    std::fs::read_dir("/proc/self/task")
        .map(|d| d.filter_map(|e| e.ok()).map(|e| e.file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default()
}

fn floats(b: &[u8]) -> Vec<f32> {
    b.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect()
}

/// Whether the request's one statistics record says success.
pub fn success(stats: &Stats, index: usize) -> bool {
    stats.request.iter().any(|(i, ok, _)| *i == index && *ok)
}

pub fn expect_outputs(a: &Option<Answer>, want: &[f32]) {
    match a {
        Some(Answer::Outputs(o)) => {
            assert_eq!(o.len(), 1);
            assert_eq!(floats(&o[0].2), want);
        }
        other => panic!("expected outputs {want:?}, got {other:?}"),
    }
}

pub fn expect_error(a: &Option<Answer>, fragment: &str) {
    match a {
        Some(Answer::Error(_, msg)) => assert!(msg.contains(fragment), "'{fragment}' not in '{msg}'"),
        other => panic!("expected an error with '{fragment}', got {other:?}"),
    }
}

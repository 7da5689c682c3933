"""The test harness: real tritonserver processes, and the clients every test, benchmark and
check talks to them with.

- `TritonServer`: one tritonserver on free loopback ports (optionally under a wrapper such as
  valgrind), a readiness deadline, the log printed when something fails, and a stop by PID that
  always runs. `make_repo` copies test models,
  `bare_backend_dir` makes a backend directory without ONNX Runtime.
- `Rest`: Triton's HTTP/REST API (repository index, load and unload, config, statistics, JSON
  inference); every `TritonServer` is one, and tests/gpu/gpu_check.py uses it on its own.
- `Metrics`: the Prometheus text of `/metrics`, parsed.
- `OtlpReceiver`: an OTLP/HTTP trace collector on a free loopback port (Triton's OpenTelemetry
  trace mode exports to it), decoding with `opentelemetry-proto`.
- `infer` (tritonclient over HTTP or gRPC), `binary_infer` (plain HTTP with Triton's binary
  extension; `bytes_elements` packs BYTES data for it) and `json_body` (a plain HTTP JSON
  request).

Importing it needs only the standard library and numpy: the GPU host that runs gpu_check.py has
nothing else. tritonclient and requests are there in the test environment (.deps/venv).
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np

try:
    import requests
    import tritonclient.grpc as tgrpc
    import tritonclient.http as thttp
except ImportError:  # the GPU host: only `Rest` and `Metrics` are used there
    requests = tgrpc = thttp = None

ROOT = Path(__file__).resolve().parent.parent
DEPS = ROOT / ".deps"
TRITONSERVER = Path(
    os.environ.get("ONNXRS_TRITONSERVER", DEPS / "triton" / "pytriton" / "tritonserver" / "bin" / "tritonserver")
)
BACKEND_DIR = Path(os.environ.get("ONNXRS_BACKEND_DIR", DEPS / "install" / "backends"))
READY_DEADLINE_S = 120.0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def models_dir() -> Path:
    """Where tests/models/make_models.py wrote the models (ci/test.sh sets the variable)."""
    d = os.environ.get("ONNXRS_TEST_MODELS")
    if not d or not Path(d, "mlp_fp32", "1", "model.onnx").is_file():
        raise RuntimeError(
            "ONNXRS_TEST_MODELS is not set or holds no models: run "
            "`python tests/models/make_models.py build/test-models` and export ONNXRS_TEST_MODELS, "
            "or run the whole suite with `bash ci/test.sh`"
        )
    return Path(d)


def make_repo(dest: Path, names: list[str]) -> Path:
    """A model repository holding copies of the named test models."""
    src = models_dir()
    dest.mkdir(parents=True, exist_ok=True)
    for n in names:
        shutil.copytree(src / n, dest / n)
    return dest


MALLOC_DEBUG = Path("/lib/x86_64-linux-gnu/libc_malloc_debug.so.0")


def heap_checker_env(build: Path) -> dict[str, str]:
    """The environment that makes tritonserver check its heap: glibc's checking allocator
    (`MALLOC_CHECK_=3`: a bad free aborts at once) and a preloaded thread that walks every free
    list in a loop (tests/heapcheck/mallinfo_walker.c, built here into `build`), so corruption
    aborts the server within microseconds instead of minutes later."""
    lib = build / "libmallinfo_walker.so"
    src = ROOT / "tests" / "heapcheck" / "mallinfo_walker.c"
    subprocess.run(["cc", "-O2", "-shared", "-fPIC", "-o", str(lib), str(src), "-lpthread"], check=True)
    preload = [str(lib)]
    env = {"ONNXRS_HEAPCHECK_INTERVAL_US": "500"}
    if MALLOC_DEBUG.is_file():
        preload.insert(0, str(MALLOC_DEBUG))
        env["MALLOC_CHECK_"] = "3"
    env["LD_PRELOAD"] = ":".join(preload)
    return env


def bare_backend_dir(dest: Path) -> Path:
    """A backend directory holding only libtriton_onnxrs.so, no ONNX Runtime beside it."""
    (dest / "onnxrs").mkdir(parents=True)
    shutil.copy(BACKEND_DIR / "onnxrs" / "libtriton_onnxrs.so", dest / "onnxrs")
    return dest


class Rest:
    """Triton's HTTP/REST API at `url`, over the standard library."""

    def __init__(self, url: str):
        self._url = url.rstrip("/")

    @property
    def url(self) -> str:
        return self._url

    def request(self, method: str, path: str, body=None, timeout: float = 120) -> tuple[int, bytes]:
        """The status and body of one call; an HTTP error status is returned, not raised."""
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.url + path, data=data, method=method)
        req.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                return r.status, r.read()
        except urllib.error.HTTPError as e:
            return e.code, e.read()

    def call(self, method: str, path: str, body=None):
        """The parsed JSON answer of a call that must succeed."""
        status, text = self.request(method, path, body)
        if not 200 <= status < 300:
            raise RuntimeError(f"{method} {path}: {status} {text.decode(errors='replace')}")
        return json.loads(text) if text else None

    def model_ready(self, model: str, version: str = "") -> bool:
        v = f"/versions/{version}" if version else ""
        return self.request("GET", f"/v2/models/{model}{v}/ready", timeout=10)[0] == 200

    def index(self) -> dict[str, list[dict]]:
        out: dict[str, list[dict]] = {}
        for e in self.call("POST", "/v2/repository/index", {}):
            out.setdefault(e["name"], []).append(e)
        return out

    def load(self, model: str) -> None:
        self.call("POST", f"/v2/repository/models/{model}/load", {})

    def unload(self, model: str) -> None:
        """Asks for the unload and waits (up to a minute) until the model is no longer ready."""
        self.call("POST", f"/v2/repository/models/{model}/unload", {})
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if all(e.get("state") != "READY" for e in self.index().get(model, [])):
                return
            time.sleep(0.2)

    def config(self, model: str) -> dict:
        return self.call("GET", f"/v2/models/{model}/config")

    def stats(self, model: str, version: str = "") -> dict:
        """The model's one statistics entry (the given version, or the only one)."""
        v = f"/versions/{version}" if version else ""
        entries = self.call("GET", f"/v2/models/{model}{v}/stats")["model_stats"]
        assert len(entries) == 1, entries
        return entries[0]

    def infer_json(self, model: str, inputs: dict[str, tuple[np.ndarray, str]]) -> dict[str, np.ndarray]:
        """One inference as plain HTTP JSON (see `json_body`); the outputs by name."""
        outs = self.call("POST", f"/v2/models/{model}/infer", json_body(inputs))["outputs"]
        return {o["name"]: np.array(o["data"], dtype=NUMPY.get(o["datatype"])).reshape(o["shape"]) for o in outs}


class TritonServer(Rest):
    """`with TritonServer(repo) as s:` starts tritonserver and waits until it answers; the exit
    stops it (SIGTERM, then SIGKILL) whatever happened."""

    def __init__(
        self,
        repo: Path,
        *extra: str,
        backend_dir: Path | None = None,
        log_dir: Path | None = None,
        env: dict[str, str] | None = None,
        wrapper: list[str] | None = None,
        ready_deadline_s: float = READY_DEADLINE_S,
        stop_timeout_s: float = 30.0,
    ):
        self.repo = Path(repo)
        self.extra = list(extra)
        # Put before the tritonserver command (e.g. valgrind and its options). `stop` signals the
        # wrapper's process group: a wrapper that runs the server as a child of its own (gdb)
        # leaves it to the test to signal the server (tests/test_shutdown.py).
        self.wrapper = list(wrapper or [])
        # How long the server may take to answer, and to exit after SIGTERM before SIGKILL.
        self.ready_deadline_s = ready_deadline_s
        self.stop_timeout_s = stop_timeout_s
        # Added to the server's environment (a preloaded heap checker, MALLOC_CHECK_, ...).
        self.env = dict(env or {})
        self.backend_dir = Path(backend_dir or BACKEND_DIR)
        self.log_path = Path(log_dir or self.repo.parent) / f"tritonserver-{os.getpid()}-{id(self)}.log"
        self.proc: subprocess.Popen | None = None
        self.http_port = self.grpc_port = self.metrics_port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def http_addr(self) -> str:
        return f"127.0.0.1:{self.http_port}"

    @property
    def grpc_addr(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    def start(self) -> TritonServer:
        if not TRITONSERVER.is_file():
            raise RuntimeError(f"{TRITONSERVER} is missing: run `bash ci/setup.sh`")
        # Three distinct ports: the OS may hand the same free port out twice in a row.
        ports: list[int] = []
        while len(ports) < 3:
            p = free_port()
            if p not in ports:
                ports.append(p)
        self.http_port, self.grpc_port, self.metrics_port = ports
        cmd = [
            *self.wrapper,
            str(TRITONSERVER),
            f"--model-repository={self.repo}",
            f"--backend-directory={self.backend_dir}",
            "--http-address=127.0.0.1",
            f"--http-port={self.http_port}",
            "--grpc-address=127.0.0.1",
            f"--grpc-port={self.grpc_port}",
            "--metrics-address=127.0.0.1",
            f"--metrics-port={self.metrics_port}",
            # Counters are read right after requests: refresh the polled gauges often.
            "--metrics-interval-ms=200",
            # A client that keeps its connection open must not hold the stop for the default 30 s.
            "--exit-timeout-secs=5",
            *self.extra,
        ]
        self.log = open(self.log_path, "w")
        self.log.write("$ " + " ".join(cmd) + "\n")
        self.log.flush()
        if self.env:
            self.log.write("environment: " + " ".join(f"{k}={v}" for k, v in self.env.items()) + "\n")
            self.log.flush()
        self.proc = subprocess.Popen(
            cmd,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env={**os.environ, **self.env},
        )
        deadline = time.monotonic() + self.ready_deadline_s
        while True:
            if self.proc.poll() is not None:
                self.fail(f"tritonserver exited with status {self.proc.returncode} before it was live")
            try:
                # The HTTP endpoint opens only after the initial model loads have finished.
                if self.request("GET", "/v2/health/live", timeout=2)[0] == 200:
                    return self
            except OSError:
                pass
            if time.monotonic() > deadline:
                self.fail(f"tritonserver was not live after {self.ready_deadline_s:.0f} s")
            time.sleep(0.2)

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"

    def fail(self, why: str):
        log = self.log_text()
        self.stop()
        raise RuntimeError(f"{why}\n----- tritonserver log ({self.log_path}) -----\n{log[-20000:]}")

    def stop(self) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=self.stop_timeout_s)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
        rc = self.proc.returncode
        self.log.close()
        self.proc = None
        return rc

    def __enter__(self) -> TritonServer:
        return self.start()

    def __exit__(self, exc_type, exc, tb):
        if exc_type is not None and not isinstance(exc, RuntimeError | KeyboardInterrupt):
            print(f"----- tritonserver log ({self.log_path}) -----\n{self.log_text()[-20000:]}")
        self.stop()

    def rss_kib(self) -> int:
        """The server's resident memory now."""
        assert self.proc is not None, "the server is not running"
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise RuntimeError("no VmRSS")

    def backtraces(self) -> str:
        """The interesting threads' stacks of a server that crashed or stopped answering (gdb,
        when installed). After a fatal signal Triton's handler prints a raw trace and then parks
        the process, so the faulting thread can still be read here, with our symbols."""
        gdb = shutil.which("gdb")
        if gdb is None or self.proc is None or self.proc.poll() is not None:
            return "(no backtraces: gdb missing or the server is gone)"
        r = subprocess.run(
            [gdb, "-p", str(self.proc.pid), "-batch", "-ex", "thread apply all bt 30"],
            capture_output=True,
            text=True,
            timeout=120,
        )

        def interesting(t: str) -> bool:
            # The faulting thread and any thread inside onnxrs or ONNX Runtime; idle pools are not.
            if "<signal handler called>" in t or "onnxrs" in t or "onnxruntime" in t:
                return True
            return "pthread_cond_wait" not in t and "epoll_wait" not in t

        threads = [t for t in r.stdout.split("\nThread ") if interesting(t)]
        # Whose crash it is, said plainly: a faulting thread with only the server's frames is a
        # race of the server's own (SAFETY.md, "Load and unload"), reported as such.
        faulting = [t for t in threads if "<signal handler called>" in t]
        if not faulting:
            verdict = "no thread stopped in a signal handler"
        elif any("onnxrs" in t or "onnxruntime" in t for t in faulting):
            verdict = "the faulting thread has onnxrs or ONNX Runtime frames"
        else:
            verdict = "the faulting thread has only the server's frames, none of onnxrs or ONNX Runtime"
        return f"\n----- server threads (gdb): {verdict} -----\nThread " + "\nThread ".join(threads)[-20000:]

    def metrics(self) -> Metrics:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=10) as r:
            return Metrics(r.read().decode())


class OtlpReceiver:
    """`with OtlpReceiver() as r:` an OTLP/HTTP trace collector on a free loopback port, for
    `--trace-config opentelemetry,url=<r.url>`: every POST to /v1/traces is decoded with the
    `opentelemetry-proto` package (protobuf, or OTLP's JSON, which Triton's exporter sends) and
    its spans kept in `spans` (`Span` messages, in arrival order)."""

    def __init__(self):
        import http.server
        import threading

        from opentelemetry.proto.collector.trace.v1 import trace_service_pb2

        self.spans: list = []
        self._lock = threading.Lock()
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                try:
                    export = receiver.decode(body, self.headers.get("Content-Type", ""))
                except Exception as e:  # answered as the error it is; the test sees no spans
                    self.send_response(400)
                    self.end_headers()
                    self.wfile.write(str(e).encode())
                    return
                with receiver._lock:
                    for resource in export.resource_spans:
                        for scope in resource.scope_spans:
                            receiver.spans.extend(scope.spans)
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                reply = trace_service_pb2.ExportTraceServiceResponse().SerializeToString()
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, *args):
                pass

        self._pb2 = trace_service_pb2
        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/v1/traces"

    def decode(self, body: bytes, content_type: str):
        """One ExportTraceServiceRequest from an OTLP/HTTP body."""
        from google.protobuf import json_format

        request = self._pb2.ExportTraceServiceRequest()
        if "json" not in content_type:
            request.ParseFromString(body)
            return request
        # OTLP's JSON writes trace and span ids as hex, protobuf's JSON mapping wants base64.
        def ids_to_base64(node):
            if isinstance(node, dict):
                return {
                    k: base64.b64encode(bytes.fromhex(v)).decode()
                    if k in ("traceId", "spanId", "parentSpanId") and isinstance(v, str)
                    else ids_to_base64(v)
                    for k, v in node.items()
                }
            if isinstance(node, list):
                return [ids_to_base64(v) for v in node]
            return node

        return json_format.ParseDict(ids_to_base64(json.loads(body)), request, ignore_unknown_fields=True)

    def snapshot(self) -> list:
        with self._lock:
            return list(self.spans)

    def __enter__(self) -> OtlpReceiver:
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._server.shutdown()
        self._server.server_close()


class Metrics:
    """Prometheus text exposition, parsed into (name, labels) -> value."""

    def __init__(self, text: str):
        self.text = text
        self.samples: list[tuple[str, dict[str, str], float]] = []
        for line in text.splitlines():
            if not line or line.startswith("#"):
                continue
            head, _, value = line.rpartition(" ")
            name, labels = head, {}
            if "{" in head:
                name, _, rest = head.partition("{")
                for part in rest.rstrip("}").split('",'):
                    if "=" in part:
                        k, _, v = part.partition("=")
                        labels[k.strip()] = v.strip().strip('"')
            self.samples.append((name, labels, float(value)))

    def values(self, name: str, **labels: str) -> list[float]:
        """The samples of `name` whose labels include `labels`."""
        return [v for n, l, v in self.samples if n == name and all(l.get(k) == x for k, x in labels.items())]

    def get(self, name: str, **labels: str) -> float:
        """The one sample of `name` whose labels include `labels`."""
        found = self.values(name, **labels)
        if len(found) != 1:
            raise KeyError(f"{len(found)} samples of {name}{labels}")
        return found[0]

    def sum(self, name: str, **labels: str) -> float | None:
        """The sum of `values` (None: there are none)."""
        found = self.values(name, **labels)
        return sum(found) if found else None

    def names(self) -> set[str]:
        return {n for n, _, _ in self.samples}


# ---- clients

# Triton's datatypes as numpy types, for outputs read back from JSON.
NUMPY = {"FP32": np.float32, "FP64": np.float64, "INT32": np.int32, "INT64": np.int64, "BOOL": np.bool_, "BYTES": np.object_}
CLIENTS = {"http": thttp, "grpc": tgrpc}


def json_body(inputs: dict[str, tuple[np.ndarray, str]]) -> dict:
    """A plain HTTP JSON inference request: input name -> (array, Triton datatype)."""
    return {
        "inputs": [
            {"name": n, "shape": list(np.shape(a)), "datatype": t, "data": np.asarray(a).flatten().tolist()}
            for n, (a, t) in inputs.items()
        ]
    }


def infer(server: TritonServer, proto: str, model: str, inputs: dict[str, tuple[np.ndarray, str]], outputs=None,
          version: str = "", shm_inputs: dict[str, tuple[str, int, str, list[int]]] | None = None,
          sequence: tuple[int | str, bool, bool] | None = None):
    """One inference through tritonclient, `proto` "http" or "grpc"; its InferResult.

    inputs: name -> (array, Triton datatype); shm_inputs: name -> (registered system shared
    memory region, byte size, datatype, shape); outputs: the names to ask for (None: all);
    sequence: (correlation id, integer or string; starts the sequence; ends it)."""
    mod = CLIENTS[proto]
    ins = []
    for name, (array, datatype) in inputs.items():
        i = mod.InferInput(name, list(array.shape), datatype)
        i.set_data_from_numpy(array)
        ins.append(i)
    for name, (region, size, datatype, shape) in (shm_inputs or {}).items():
        i = mod.InferInput(name, shape, datatype)
        i.set_shared_memory(region, size)
        ins.append(i)
    outs = [mod.InferRequestedOutput(o) for o in outputs] if outputs else None
    addr = server.http_addr if proto == "http" else server.grpc_addr
    # Closed after each use: an open keep-alive connection holds up the server's shutdown.
    with mod.InferenceServerClient(addr) as c:
        if sequence is None:
            return c.infer(model, ins, outputs=outs, model_version=version)
        sequence_id, start, end = sequence
        return c.infer(model, ins, outputs=outs, model_version=version, sequence_id=sequence_id,
                       sequence_start=start, sequence_end=end)


def binary_infer(server: TritonServer, model: str, header: dict, raw: bytes):
    """Plain HTTP with Triton's binary extension: the JSON header (inputs declare
    `binary_data_size`), then the raw bytes. The requests.Response."""
    head = json.dumps(header).encode()
    return requests.post(
        f"{server.url}/v2/models/{model}/infer",
        data=head + raw,
        headers={"Inference-Header-Content-Length": str(len(head))},
        timeout=60,
    )


def bytes_elements(*items: bytes) -> bytes:
    """BYTES tensor data as Triton carries it: each element's length (u32 LE), then its bytes."""
    return b"".join(struct.pack("<I", len(i)) + i for i in items)

"""A real tritonserver process for one test (or one module): free loopback ports, a readiness
deadline, the log printed when something fails, and a stop by PID that always runs.

Also small readers for what the tests check: `/v2/models/<m>/stats` and the Prometheus text of
`/metrics`.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import requests

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


class TritonServer:
    """`with TritonServer(repo) as s:` starts tritonserver and waits until it answers; the exit
    stops it (SIGTERM, then SIGKILL) whatever happened."""

    def __init__(
        self,
        repo: Path,
        *extra: str,
        backend_dir: Path | None = None,
        log_dir: Path | None = None,
        env: dict[str, str] | None = None,
    ):
        self.repo = Path(repo)
        self.extra = list(extra)
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
        self.http_port, self.grpc_port, self.metrics_port = free_port(), free_port(), free_port()
        cmd = [
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
        deadline = time.monotonic() + READY_DEADLINE_S
        while True:
            if self.proc.poll() is not None:
                self.fail(f"tritonserver exited with status {self.proc.returncode} before it was live")
            try:
                # The HTTP endpoint opens only after the initial model loads have finished.
                if requests.get(f"{self.url}/v2/health/live", timeout=2).status_code == 200:
                    return self
            except requests.RequestException:
                pass
            if time.monotonic() > deadline:
                self.fail(f"tritonserver was not live after {READY_DEADLINE_S:.0f} s")
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
                self.proc.wait(timeout=30)
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

    # ---- readers

    def model_ready(self, model: str, version: str = "") -> bool:
        v = f"/versions/{version}" if version else ""
        return requests.get(f"{self.url}/v2/models/{model}{v}/ready", timeout=10).status_code == 200

    def index(self) -> dict[str, list[dict]]:
        r = requests.post(f"{self.url}/v2/repository/index", json={}, timeout=10)
        r.raise_for_status()
        out: dict[str, list[dict]] = {}
        for e in r.json():
            out.setdefault(e["name"], []).append(e)
        return out

    def config(self, model: str) -> dict:
        r = requests.get(f"{self.url}/v2/models/{model}/config", timeout=10)
        r.raise_for_status()
        return r.json()

    def stats(self, model: str, version: str = "") -> dict:
        """The model's one statistics entry (the given version, or the only one)."""
        v = f"/versions/{version}" if version else ""
        r = requests.get(f"{self.url}/v2/models/{model}{v}/stats", timeout=10)
        r.raise_for_status()
        entries = r.json()["model_stats"]
        assert len(entries) == 1, entries
        return entries[0]

    def metrics(self) -> Metrics:
        r = requests.get(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=10)
        r.raise_for_status()
        return Metrics(r.text)


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

    def get(self, name: str, **labels: str) -> float:
        """The one sample of `name` whose labels include `labels`."""
        found = [v for n, l, v in self.samples if n == name and all(l.get(k) == x for k, x in labels.items())]
        if len(found) != 1:
            raise KeyError(f"{len(found)} samples of {name}{labels}")
        return found[0]

    def names(self) -> set[str]:
        return {n for n, _, _ in self.samples}

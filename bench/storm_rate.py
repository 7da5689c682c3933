#!/usr/bin/env python3
"""How often does a load/unload storm kill tritonserver? Measured per backend.

Each run starts one tritonserver as tests/test_lifecycle.py's storm does (explicit model control,
free loopback ports, `ONNXRS_LIFECYCLE_SERVER_ARGS`, and by default the same heap checker:
`libc_malloc_debug.so` with `MALLOC_CHECK_=3` plus the preloaded free-list walker), then does
`--cycles` cycles of: load the model, 3 inferences each checked against the expected output,
unload. A run ends early when the server dies (it exited, or its log shows one of
test_lifecycle's ABORT_MARKS, e.g. Triton's `Signal (11) received`) or a cycle fails while the
server lives (an "error": not a death, reported apart).

    --backend onnxrs   `lifecycle` (test_lifecycle's model: 2 CPU instances, dynamic batching,
                       max_batch_size 8) from --backend-dir (default $ONNXRS_BACKEND_DIR), so two
                       builds of onnxrs can be compared on the same machine.
    --backend python   the control: `lifecycle_py`, the same config on Triton's Python backend
                       from the nvidia-pytriton wheel; model.py computes what `lifecycle` v1 does
                       (Y = X + 1, OUT = TEXT + "|v1"), checked the same way. Setup: the wheel
                       ships the stub apart (python_backend_stubs/<X.Y>/ for this interpreter);
                       it is copied beside links to the backend's files into a backend directory
                       of this run, LD_LIBRARY_PATH gets the wheel's libraries the stub's RPATH
                       pointed at (bench/bench.py's `python_backend_env`). The stub embeds the
                       system's libpython 3.11, ignores PYTHONPATH and needs numpy < 2 (its
                       pybind11 predates numpy 2: under the venv's numpy 2.4 a BYTES input aborts
                       it in `deserialize_bytes_tensor` and FP32 outputs come back empty), so
                       model.py puts --stub-site first on sys.path; it is installed there
                       (build/storm_rate/stub-site) the first time. The heap
                       checker's LD_PRELOAD reaches the stub processes too. A load costs ~2 s
                       here, most of it the auto-complete stub: ONNXRS_LIFECYCLE_SERVER_ARGS=
                       --disable-auto-complete-config makes cycles ~3x faster (for both backends;
                       it is then not test_lifecycle's setup).

Reading the table: `deaths` lists the cycle each dead run reached (1-based); a rate is deaths per
total cycles. Triton's teardown race struck about once in 7,300 cycles on a 2-core machine, so
runs of a few hundred cycles only show the script works: tens of thousands of cycles per backend
are needed to tell two rates apart. `load avg` is /proc/loadavg's 1-minute figure sampled every
50 cycles (mean / max): a busy machine changes the race's timing, so compare rows measured under
similar load. Every server log, and for each death the faulting frames and gdb's stacks, stay
under --work (default build/storm_rate/<time>-<backend>).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "bench")]
os.environ.setdefault("ONNXRS_TEST_MODELS", str(ROOT / "build" / "test-models"))

import tritonclient.http as thttp  # noqa: E402
from bench import python_backend_env  # noqa: E402
from report import table  # noqa: E402
from server import BACKEND_DIR, TRITONSERVER, TritonServer, heap_checker_env  # noqa: E402
from test_lifecycle import ABORT_MARKS, EXTRA_ARGS, TIMEOUT_S, inputs, lifecycle_repo, version_of  # noqa: E402

WHEEL = TRITONSERVER.parent.parent  # .../pytriton/tritonserver
STUB_SITE = ROOT / "build" / "storm_rate" / "stub-site"
MODEL_PY = '''"""What onnxrs's `lifecycle` version 1 computes: Y = X + 1, OUT = TEXT + "|v1"."""
import sys
sys.path.insert(0, STUB_SITE)  # numpy < 2: the stub's embedded Python ignores PYTHONPATH
import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        responses = []
        for r in requests:
            x = pb_utils.get_input_tensor_by_name(r, "X").as_numpy()
            text = pb_utils.get_input_tensor_by_name(r, "TEXT").as_numpy()
            out = np.array([[t + b"|v1" for t in row] for row in text], dtype=np.object_)
            tensors = [pb_utils.Tensor("Y", x + np.float32(1)), pb_utils.Tensor("OUT", out)]
            responses.append(pb_utils.InferenceResponse(output_tensors=tensors))
        return responses
'''
CONFIG_PY = """name: "lifecycle_py"
backend: "python"
max_batch_size: 8
input [
  { name: "X" data_type: TYPE_FP32 dims: [ 4 ] },
  { name: "TEXT" data_type: TYPE_STRING dims: [ -1 ] }
]
output [
  { name: "Y" data_type: TYPE_FP32 dims: [ 4 ] },
  { name: "OUT" data_type: TYPE_STRING dims: [ -1 ] }
]
dynamic_batching { }
instance_group [ { kind: KIND_CPU count: 2 } ]
"""
FRAME = re.compile(r"^\s*\d+# ")  # a frame of the trace Triton's signal handler prints


def python_repo(dest: Path, stub_site: Path) -> Path:
    """A repository holding `lifecycle_py` (CONFIG_PY, MODEL_PY)."""
    (dest / "lifecycle_py" / "1").mkdir(parents=True)
    (dest / "lifecycle_py" / "config.pbtxt").write_text(CONFIG_PY)
    (dest / "lifecycle_py" / "1" / "model.py").write_text(MODEL_PY.replace("STUB_SITE", repr(str(stub_site))))
    return dest


def python_backends(dest: Path) -> Path:
    """A backend directory holding the wheel's Python backend (linked) and the stub for this
    interpreter's version (copied: the backend makes a stub it cannot run executable-only, which
    must not touch the wheel's file); sets the stub's environment in os.environ."""
    (dest / "python").mkdir(parents=True)
    for f in (WHEEL / "backends" / "python").iterdir():
        (dest / "python" / f.name).symlink_to(f)
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    shutil.copy(WHEEL / "python_backend_stubs" / version / "triton_python_backend_stub", dest / "python")
    python_backend_env()
    return dest


class LogWatch:
    """Reads what the server log gained since the last look (with a little overlap, so that a
    mark split between two looks is still seen); returns the ABORT_MARKS it shows."""

    def __init__(self, path: Path):
        self.path, self.offset = path, 0

    def aborted(self) -> list[str]:
        start = max(0, self.offset - 64)
        with open(self.path, "rb") as f:
            f.seek(start)
            new = f.read()
        self.offset = start + len(new)
        text = new.decode(errors="replace")
        return [m for m in ABORT_MARKS if m in text]


def loadavg() -> float:
    return float(Path("/proc/loadavg").read_text().split()[0])


def storm(s: TritonServer, model: str, cycles: int, loads: list[float]) -> tuple[int, str, str]:
    """Runs the cycles; (the 1-based cycle reached: the last one, or the one in which the server
    was found dead or a check failed; "ok" | "died" | "error"; what happened)."""
    client = thttp.InferenceServerClient(s.http_addr, connection_timeout=TIMEOUT_S, network_timeout=TIMEOUT_S)
    watch = LogWatch(s.log_path)

    def dead() -> list[str]:
        marks = watch.aborted()
        exited = s.proc.poll() is not None
        return marks + ([f"exited with status {s.proc.returncode}"] if exited else [])

    for cycle in range(cycles):
        try:
            client.load_model(model)
            for k in range(3):
                text = f"cycle {cycle} request {k}"
                x, ins = inputs(thttp, cycle + k, text)
                got = version_of(client.infer(model, ins, request_id=f"{cycle}-{k}"), x, text)
                if got != "v1":
                    raise AssertionError(f"request {k}: {got}")
            client.unload_model(model)
        except Exception as e:  # noqa: BLE001 - classified below: a death or an error
            client.close()
            time.sleep(1)
            marks = dead()
            return cycle + 1, ("died" if marks else "error"), f"{marks or ''} {type(e).__name__}: {e}"[:600]
        if marks := dead():
            return cycle + 1, "died", str(marks)
        if cycle % 50 == 0:
            loads.append(loadavg())
    client.close()  # an open connection would hold the server's stop for --exit-timeout-secs
    # Unloads finish in the background: wait (bounded) until every incarnation has gone.
    deadline = time.monotonic() + 60
    while s.log_text().count(f"successfully unloaded '{model}'") < cycles and time.monotonic() < deadline:
        time.sleep(0.2)
    marks = dead()
    return cycles, ("died" if marks else "ok"), str(marks or "")


def run_once(i: int, args, work: Path, env: dict[str, str]) -> dict:
    run_dir = work / f"run-{i}"
    run_dir.mkdir()
    if args.backend == "onnxrs":
        repo, backends, model = lifecycle_repo(run_dir), args.backend_dir, "lifecycle"
    else:
        repo, backends, model = python_repo(run_dir / "repo", args.stub_site), work / "backends", "lifecycle_py"
    s = TritonServer(repo, "--model-control-mode=explicit", *EXTRA_ARGS, backend_dir=backends, log_dir=run_dir, env=env)
    loads = [loadavg()]
    t0 = time.monotonic()
    try:
        s.start()
        t1 = time.monotonic()
        done, outcome, what = storm(s, model, args.cycles, loads)
        storm_s = time.monotonic() - t1
        loads.append(loadavg())
        if outcome == "died":
            time.sleep(3)  # let Triton's handler finish printing its trace
            if s.proc.poll() is None:  # Triton parks a crashed server: read its stacks
                (run_dir / "gdb.txt").write_text(s.backtraces())
        if outcome != "ok":
            s.stop_timeout_s = 5.0
    except RuntimeError as e:  # the server never became live
        done, outcome, what, storm_s = 0, "error", str(e)[:2000], time.monotonic() - t0
    finally:
        rc = s.stop()
    log = s.log_text().splitlines()
    fatal = [line for line in log if any(m in line for m in ABORT_MARKS) and "Signal (15)" not in line]
    if outcome == "ok" and fatal:  # while the server stopped
        outcome, what = "died", f"while stopping after the last cycle: {fatal[0]}"
    first = log.index(fatal[0]) if fatal else len(log)
    frames = [line for line in log[first:first + 80] if FRAME.search(line)]
    return {"run": i, "cycles": done, "outcome": outcome, "what": what, "seconds": storm_s, "rc": rc,
            "loads": loads, "log": str(s.log_path), "tail": log[-args.tail:], "frames": frames}


def report(args, results: list[dict]) -> str:
    total = sum(r["cycles"] for r in results)
    seconds = sum(r["seconds"] for r in results)
    deaths = [str(r["cycles"]) for r in results if r["outcome"] == "died"]
    errors = [str(r["cycles"]) for r in results if r["outcome"] == "error"]
    loads = [x for r in results for x in r["loads"]]
    backend = args.backend + (f" (`{args.backend_dir}`)" if args.backend == "onnxrs" else " (the wheel's)")
    header = ["backend", "heap checker", "runs", "cycles per run", "total cycles", "deaths (at cycle)",
              "errors (at cycle)", "cycles/s", "s per 100 cycles", "load avg 1-min (mean / max)"]
    row = [backend, "on" if args.heap_checker else "off", len(results), args.cycles, total,
           f"{len(deaths)}" + (f": {', '.join(deaths)}" if deaths else ""),
           f"{len(errors)}" + (f": {', '.join(errors)}" if errors else ""),
           f"{total / seconds:.1f}" if seconds else "-", f"{100 * seconds / total:.1f}" if total else "-",
           f"{statistics.mean(loads):.2f} / {max(loads):.2f}"]
    out = ["", table(header, [row])]
    for r in results:
        if r["outcome"] == "ok":
            continue
        fence = ["```", *r["frames"], "```"] if r["frames"] else ["(none in the log)"]
        out += ["", f"### run {r['run']}: {r['outcome']} at cycle {r['cycles']} (exit status {r['rc']})", "",
                r["what"], "", f"log: `{r['log']}`", "", "faulting frames from the log:", "", *fence, "",
                f"last {len(r['tail'])} log lines:", "", "```", *r["tail"], "```"]
    return "\n".join(out)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--backend", choices=["onnxrs", "python"], required=True)
    ap.add_argument("--cycles", type=int, default=500, help="load/infer/unload cycles per run")
    ap.add_argument("--runs", type=int, default=1, help="servers started one after the other")
    ap.add_argument("--backend-dir", type=Path, default=BACKEND_DIR, help="holds onnxrs/ (--backend onnxrs)")
    ap.add_argument("--heap-checker", action=argparse.BooleanOptionalAction, default=True,
                    help="test_lifecycle's heap checker (default on, as in the storm)")
    ap.add_argument("--stub-site", type=Path, default=STUB_SITE, help="numpy < 2 for the Python backend's stub")
    ap.add_argument("--work", type=Path, help="where repositories and server logs go")
    ap.add_argument("--tail", type=int, default=30, help="server log lines shown for a failed run")
    ap.add_argument("--widen-us", type=int, default=0,
                    help="onnxrs only: execute lingers this long after answering (ONNXRS_FAULT_EXECUTE_TAIL_US): "
                         "the window of the server's teardown race, made wide instead of waiting for a preemption")
    ap.add_argument("--no-hold", action="store_true",
                    help="onnxrs only: without the model reference held across execute's return "
                         "(ONNXRS_FAULT_NO_HOLD=1, src/hold.rs), to compare")
    args = ap.parse_args()
    # The servers inherit the environment (tests/server.py).
    if args.widen_us:
        os.environ["ONNXRS_FAULT_EXECUTE_TAIL_US"] = str(args.widen_us)
    if args.no_hold:
        os.environ["ONNXRS_FAULT_NO_HOLD"] = "1"
    args.backend_dir = args.backend_dir.resolve()
    if args.backend == "onnxrs" and not (args.backend_dir / "onnxrs" / "libtriton_onnxrs.so").is_file():
        ap.error(f"no onnxrs/libtriton_onnxrs.so under {args.backend_dir}")
    args.stub_site = args.stub_site.resolve()
    if args.backend == "python" and not (args.stub_site / "numpy").is_dir():
        # Made once, under build/ (PyPI): the stub's numpy, apart from the venv's.
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--only-binary=:all:",
                        "--target", str(args.stub_site), "numpy<2"], check=True)
    work = args.work or ROOT / "build" / "storm_rate" / f"{time.strftime('%Y%m%d-%H%M%S')}-{args.backend}"
    work = work.resolve()
    work.mkdir(parents=True)
    env = heap_checker_env(work) if args.heap_checker else {}
    if args.backend == "python":
        python_backends(work / "backends")
    results = []
    for i in range(args.runs):
        r = run_once(i, args, work, env)
        results.append(r)
        print(f"run {i}: {r['outcome']} at cycle {r['cycles']}, {r['seconds']:.1f} s {r['what']}", flush=True)
    print(report(args, results))
    print(f"\nlogs: {work}")
    return 1 if any(r["outcome"] == "error" for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())

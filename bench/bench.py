#!/usr/bin/env python3
"""The benchmark: onnxrs against what a user would pick instead, on the same tritonserver 2.51
and the same model files, in one run. Called by ci/bench.sh (which installs and builds what it
needs, and copies the report into BENCHMARKS.md and docs/ when asked with --update-docs);
`python bench/bench.py --report-only` regenerates build/bench/BENCHMARKS.md and the plots from
the last results.

Contenders: onnxrs; Triton's Python backend (from the same nvidia-pytriton wheel) running the
model with the `onnxruntime` Python package; the official onnxruntime backend when
ONNXRS_BENCH_REFERENCE_BACKEND_DIR points at one; and the floor, the same ORT session called
in-process from Rust (examples/bench_floor.rs). Load: perf_analyzer 2.51 (from the tritonclient
wheel), closed loop, zeros as inputs, HTTP and gRPC. Every point is repeated with the contenders'
order alternating, and the CPU steal time of each point is recorded from /proc/stat.
"""

from __future__ import annotations

import argparse
import csv
import datetime
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
from server import TritonServer  # noqa: E402

BUILD = ROOT / "build" / "bench"
MODELS_DIR = ROOT / "build" / "bench-models"
RESULTS = BUILD / "results.json"
DEPS = ROOT / ".deps"
PERF = DEPS / "perf_analyzer" / "perf_analyzer"
FLOOR = ROOT / "target" / "release" / "examples" / "bench_floor"

# name -> (input name, triton dtype, dims without batch, output, output dims, max batch)
MODELS = {
    "mlp": ("X", "FP32", [64], "Y", [16], 64),
    "resnet50": ("X", "FP32", [3, 224, 224], "Y", [1000], 8),
    "bert_base": ("input_ids", "INT64", [128], "Y", [128, 768], 8),
}
PLANS = {
    # mode -> model -> (protocols, concurrencies, batching variants, repeats, window ms)
    "quick": {
        "mlp": (["http"], [1, 4, 16], [False, True], 2, 1000),
        "resnet50": (["http"], [1], [False], 1, 3000),
        "bert_base": (["http"], [1], [False], 1, 4000),
    },
    "full": {
        "mlp": (["http", "grpc"], [1, 4, 16], [False, True], 3, 3000),
        "resnet50": (["http", "grpc"], [1, 4], [False, True], 3, 6000),
        "bert_base": (["http", "grpc"], [1, 4], [False, True], 3, 8000),
    },
}
THREADS = {"intra_op_thread_count": "2", "inter_op_thread_count": "1"}

PY_MODEL = '''
import json, os, sys
sys.path[:0] = SITE_PACKAGES  # the stub embeds the system's Python: add this environment's packages
import numpy as np
import onnxruntime as ort
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    """What users write instead of a backend: onnxruntime in Triton's Python backend."""

    def initialize(self, args):
        cfg = json.loads(args["model_config"])
        p = {k: v["string_value"] for k, v in cfg.get("parameters", {}).items()}
        so = ort.SessionOptions()
        so.intra_op_num_threads = int(p.get("intra_op_thread_count", "0"))
        so.inter_op_num_threads = int(p.get("inter_op_thread_count", "0"))
        path = os.path.join(args["model_repository"], args["model_version"], "model.onnx")
        self.session = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
        self.inputs = [i.name for i in self.session.get_inputs()]
        self.outputs = [o.name for o in self.session.get_outputs()]

    def execute(self, requests):
        arrays = [[pb_utils.get_input_tensor_by_name(r, n).as_numpy() for n in self.inputs] for r in requests]
        rows = [a[0].shape[0] for a in arrays]
        feeds = {n: np.concatenate([a[k] for a in arrays]) for k, n in enumerate(self.inputs)}
        outs = self.session.run(self.outputs, feeds)
        responses, at = [], 0
        for n in rows:
            tensors = [pb_utils.Tensor(name, o[at:at + n]) for name, o in zip(self.outputs, outs)]
            responses.append(pb_utils.InferenceResponse(output_tensors=tensors))
            at += n
        return responses
'''


def config(name: str, model: str, contender: str, batching: bool) -> str:
    inp, dt, dims, out, odims, mbs = MODELS[model]
    head = {
        "onnxrs": 'backend: "onnxrs"',
        "python": 'backend: "python"',
        "official": 'platform: "onnxruntime_onnx"\nbackend: "onnxruntime"',
    }[contender]
    params = "".join(f'parameters {{ key: "{k}" value: {{ string_value: "{v}" }} }}\n' for k, v in THREADS.items())
    db = "dynamic_batching { max_queue_delay_microseconds: 100 }\n" if batching else ""
    return (
        f'name: "{name}"\n{head}\nmax_batch_size: {mbs}\n'
        f'input [ {{ name: "{inp}" data_type: TYPE_{dt} dims: {dims} }} ]\n'
        f'output [ {{ name: "{out}" data_type: TYPE_FP32 dims: {odims} }} ]\n'
        f"instance_group [ {{ kind: KIND_CPU count: 1 }} ]\n{db}{params}"
    )


def steal_sample() -> tuple[int, int]:
    f = open("/proc/stat").readline().split()[1:]
    vals = [int(v) for v in f]
    return vals[7] if len(vals) > 7 else 0, sum(vals)


def steal_pct(a, b) -> float:
    d_total = b[1] - a[1]
    return 100.0 * (b[0] - a[0]) / d_total if d_total else 0.0


def stage_delta(before, after) -> dict:
    a, b = before["inference_stats"], after["inference_stats"]
    n = b["success"]["count"] - a["success"]["count"]
    per = {k: (b[k]["ns"] - a[k]["ns"]) / max(n, 1) / 1e3 for k in ("success", "queue", "compute_input", "compute_infer", "compute_output")}
    per["requests"] = n
    per["executions"] = after["execution_count"] - before["execution_count"]
    return per


def ort_run_us(server, model) -> tuple[float, float] | None:
    m = server.metrics()
    try:
        return m.get("onnxrs_ort_run_duration_us_sum", model=model, version="1"), m.get(
            "onnxrs_ort_run_duration_us_count", model=model, version="1"
        )
    except KeyError:
        return None


def perf_command(server, model, proto, conc, window_ms, out_csv: Path, stability=100, max_trials=6) -> list[str]:
    """perf_analyzer's command line for one point: closed loop at `conc`, zeros as inputs; it
    reports once 3 windows agree within `stability` percent, and fails after `max_trials`."""
    url = server.http_addr if proto == "http" else server.grpc_addr
    return [
        str(PERF), "-m", model, "-u", url, "-i", proto, "--concurrency-range", f"{conc}:{conc}",
        "--input-data", "zero", "--measurement-interval", str(window_ms), "-s", str(stability),
        "--max-trials", str(max_trials), "-f", str(out_csv), "--verbose-csv",
    ]


def perf_env() -> dict[str, str]:
    """perf_analyzer's environment: the libraries it needs by soname (see ci/bench.sh)."""
    return dict(os.environ, LD_LIBRARY_PATH=str(PERF.parent / "lib"))


def perf_point(server, model, proto, conc, window_ms, out_csv: Path) -> dict:
    cmd = perf_command(server, model, proto, conc, window_ms, out_csv)
    r = subprocess.run(cmd, capture_output=True, text=True, env=perf_env(), timeout=900)
    if r.returncode != 0 or not out_csv.exists():
        raise RuntimeError(f"perf_analyzer failed for {model} {proto} c={conc}:\n{r.stdout[-2000:]}\n{r.stderr[-2000:]}")
    return read_perf_csv(out_csv)


def read_perf_csv(out_csv: Path) -> dict:
    """Throughput and latency percentiles of the point perf_analyzer wrote to `out_csv`."""
    row = next(csv.DictReader(out_csv.open()))
    return {
        "infer_per_s": float(row["Inferences/Second"]),
        "p50_us": float(row["p50 latency"]),
        "p99_us": float(row["p99 latency"]),
    }


def build_repo(mode: str, contenders: list[str]) -> Path:
    repo = BUILD / "repo"
    shutil.rmtree(repo, ignore_errors=True)
    for model, (_, _, batchings, _, _) in ((m, (p[0], p[1], p[2], p[3], p[4])) for m, p in PLANS[mode].items()):
        for contender in contenders:
            for b in batchings:
                name = f"{model}_{contender}{'_db' if b else ''}"
                write_model(repo, name, MODELS_DIR / f"{model}.onnx", config(name, model, contender, b), contender)
    return repo


def write_model(repo: Path, name: str, onnx_file: Path, config_text: str, contender: str = "onnxrs") -> None:
    """Model `name` in `repo`: version 1 links to `onnx_file`; the Python contender gets its
    model.py (PY_MODEL) beside it."""
    d = repo / name / "1"
    d.mkdir(parents=True)
    (d / "model.onnx").symlink_to(onnx_file)
    (repo / name / "config.pbtxt").write_text(config_text)
    if contender == "python":
        site = [p for p in sys.path if p.endswith("site-packages")]
        (d / "model.py").write_text(PY_MODEL.replace("SITE_PACKAGES", repr(site)))


def backend_dir(contenders: list[str]) -> Path:
    d = BUILD / "backends"
    shutil.rmtree(d, ignore_errors=True)
    d.mkdir(parents=True)
    (d / "onnxrs").symlink_to(DEPS / "install" / "backends" / "onnxrs")
    tri = DEPS / "triton" / "pytriton" / "tritonserver"
    py = d / "python"
    py.mkdir()
    for f in (tri / "backends" / "python").iterdir():
        (py / f.name).symlink_to(f)
    ver = f"{sys.version_info.major}.{sys.version_info.minor}"
    shutil.copy(tri / "python_backend_stubs" / ver / "triton_python_backend_stub", py / "triton_python_backend_stub")
    if "official" in contenders:
        (d / "onnxruntime").symlink_to(Path(os.environ["ONNXRS_BENCH_REFERENCE_BACKEND_DIR"]))
    return d


def python_backend_env() -> None:
    """Sets, in this process's environment (which the servers it starts inherit), what the Python
    backend's stub needs: it runs the system's libpython, so this environment's packages, and,
    copied out of the wheel's tree, the wheel's libraries its RPATH pointed at."""
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p.endswith("site-packages"))
    libs = str(DEPS / "triton" / "nvidia_pytriton.libs")
    if libs not in os.environ.get("LD_LIBRARY_PATH", "").split(os.pathsep):
        os.environ["LD_LIBRARY_PATH"] = os.pathsep.join(x for x in (libs, os.environ.get("LD_LIBRARY_PATH")) if x)


def floor(model: str, batch: int, seconds: float) -> dict:
    ort = os.environ["ONNXRS_ORT_LIBRARY"]
    r = subprocess.run(
        [str(FLOOR), ort, str(MODELS_DIR / f"{model}.onnx"), str(batch), str(seconds), THREADS["intra_op_thread_count"], THREADS["inter_op_thread_count"]],
        capture_output=True, text=True, check=True, timeout=600,
    )
    return json.loads(r.stdout.strip().splitlines()[-1])


def run(mode: str) -> dict:
    contenders = ["onnxrs", "python"] + (["official"] if os.environ.get("ONNXRS_BENCH_REFERENCE_BACKEND_DIR") else [])
    repo = build_repo(mode, contenders)
    backends = backend_dir(contenders)
    python_backend_env()
    points = []
    for model, (protos, concs, batchings, repeats, window) in PLANS[mode].items():
        for proto in protos:
            for conc in concs:
                for b in batchings:
                    for rep in range(repeats):
                        points.append((model, proto, conc, b, rep, window))
    results = {"mode": mode, "points": [], "floor": [], "env": environment()}
    run_floor(mode, results, "before")
    total = len(points) * len(contenders)
    done = 0
    t_start = time.monotonic()
    with TritonServer(repo, "--log-verbose=0", backend_dir=backends, log_dir=BUILD) as server:
        for model, proto, conc, b, rep, window in points:
            order = contenders if rep % 2 == 0 else list(reversed(contenders))
            for contender in order:
                name = f"{model}_{contender}{'_db' if b else ''}"
                before, ort_before = server.stats(name), ort_run_us(server, name)
                s0 = steal_sample()
                p = perf_point(server, name, proto, conc, window, BUILD / f"pa-{name}-{proto}-{conc}-{rep}.csv")
                s1 = steal_sample()
                after, ort_after = server.stats(name), ort_run_us(server, name)
                p.update(model=model, contender=contender, proto=proto, concurrency=conc, batching=b, repeat=rep)
                p["steal_pct"] = round(steal_pct(s0, s1), 2)
                p["stages_us"] = stage_delta(before, after)
                if ort_before and ort_after and p["stages_us"]["requests"]:
                    p["ort_run_us_per_request"] = (ort_after[0] - ort_before[0]) / p["stages_us"]["requests"]
                results["points"].append(p)
                done += 1
                eta = (time.monotonic() - t_start) / done * (total - done)
                print(
                    f"[{done:>3}/{total}] {model:<9} {contender:<8} {proto:<4} c={conc:<2} {'db' if b else '  '} "
                    f"rep {rep}: {p['infer_per_s']:>9.1f} infer/s  p50 {p['p50_us'] / 1e3:8.3f} ms  "
                    f"steal {p['steal_pct']:4.1f}%   (eta {eta:4.0f} s)",
                    flush=True,
                )
    run_floor(mode, results, "after")
    return results


def run_floor(mode: str, results: dict, phase: str) -> None:
    """The floor, measured before and after the server runs (the report keeps the faster)."""
    for model in PLANS[mode]:
        secs = 3 if model == "mlp" else 8
        for batch in (1, MODELS[model][5]) if mode == "full" else (1,):
            f = floor(model, batch, secs)
            f.update(model=model, phase=phase)
            results["floor"].append(f)
            print(f"[floor {phase}] {model:<9} batch {batch}: {f['infer_per_s']:.1f} infer/s  mean {f['mean_ms']:.3f} ms", flush=True)


def environment() -> dict:
    cpu = "unknown"
    for line in open("/proc/cpuinfo"):
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    import onnxruntime

    return {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": cpu,
        "cores": os.cpu_count(),
        "kernel": platform.release(),
        "tritonserver": "2.51.0 (nvidia-pytriton 0.7.0)",
        "onnxruntime": f"{os.environ.get('ONNXRS_ORT_VERSION', '?')} (C library), {onnxruntime.__version__} (Python)",
        "perf_analyzer": "2.51.0 (tritonclient wheel)",
        "threads": THREADS,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mode", choices=["quick", "full"], default="quick")
    ap.add_argument("--report-only", action="store_true")
    args = ap.parse_args()
    BUILD.mkdir(parents=True, exist_ok=True)
    if not args.report_only:
        results = run(args.mode)
        RESULTS.write_text(json.dumps(results, indent=1))
    import bench_report

    bench_report.write(json.loads(RESULTS.read_text()), BUILD)
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    sys.exit(main())

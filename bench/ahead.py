#!/usr/bin/env python3
"""What issue 12 bought, measured: four scenarios, each onnxrs's default against onnxrs set to
do what it did before (or what a backend without the feature does), on the same tritonserver
2.51 and the same model files. Called by `bash ci/bench.sh --ahead` (which makes the bench models,
installs perf_analyzer and builds examples/run_cost); writes build/bench/ahead.json and
build/bench/ahead.md (the section "## Ahead of the official backend"), and prints a summary.

1. Per-run cost: examples/run_cost (onnxrs's run path against the same steps on ONNX Runtime's C
   API and through `ort`'s Value wrapper, the path before), then the bench MLP served by onnxrs
   and by Triton's Python backend (bench.py's contender) at concurrency 1 over HTTP.
2. One session for many instances: a model with ~190 MiB of weights, 4 CPU instances,
   `share_session_between_instances` false vs true: RSS, reported memory, throughput.
3. No oversubscription by default: 4 models x 2 instances, `thread-pools=per-session` vs the
   default `shared`: the process's threads, aggregate throughput and p99 under 4 concurrent
   perf_analyzer processes.
4. Large outputs: a 12 MiB image-to-image output, config dims fixed (written by the run into the
   response) vs [3,-1,-1] (copied), checked through onnxrs_output_bytes_direct_total.

    python bench/ahead.py                       run the scenarios, write the report
    python bench/ahead.py --report-only         rewrite ahead.md from ahead.json
    python bench/ahead.py --splice-into FILE    put ahead.md into FILE between its markers
    python bench/ahead.py --replace-docs NEW OLD  copy NEW over OLD, keeping OLD's marked sections

ONNXRS_BENCH_WINDOW_MS sets perf_analyzer's measurement window (default 2000; a few hundred for
a check that the scenarios work, not for figures).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench  # noqa: E402
from bench import BUILD, MODELS_DIR, THREADS, TritonServer  # noqa: E402
from report import table  # noqa: E402  (tests/, on the path through bench)

ROOT = bench.ROOT
OUT = BUILD / "ahead"
RESULTS = BUILD / "ahead.json"
REPORT = BUILD / "ahead.md"
RUN_COST = ROOT / "target" / "release" / "examples" / "run_cost"
PROFILE = bench.BUILD / "profile.txt"  # written by bench/profile.py, which ci/bench.sh --ahead runs first
WINDOW_MS = int(os.environ.get("ONNXRS_BENCH_WINDOW_MS", "2000"))
REPEATS = 2  # scenarios 1 and 4: each point twice, the contenders' order alternating
ATTEMPTS = 3  # perf_analyzer runs for a point before its failure to stabilize is an error
MARK = ("<!-- ahead:begin -->", "<!-- ahead:end -->")
SECTION = "## Ahead of the official backend"

TARGET_OVERHEAD_NS = 1000.0
TARGET_RATIO = 2.4

# Scenario 2: X[batch, 2048] @ W1[2048, 12288] -> Relu -> @ W2[12288, 2048]: 2 x 96 MiB of weights.
BIG_IN, BIG_HIDDEN = 2048, 12288
# Scenario 4: X[batch, 3, 1024, 1024] -> X * 2 + 1, 12 MiB each way.
IMAGE = [3, 1024, 1024]


# ---- helpers


def log(msg: str) -> None:
    print(msg, flush=True)


def proc_status(server: TritonServer) -> dict[str, int]:
    """VmRSS, VmHWM (KiB) and Threads of the server process now."""
    out = {}
    for line in Path(f"/proc/{server.proc.pid}/status").read_text().splitlines():
        k, _, v = line.partition(":")
        if k in ("VmRSS", "VmHWM", "Threads"):
            out[k] = int(v.split()[0])
    return out


def cpu_memory(server: TritonServer, model: str) -> int:
    """The model's memory_usage in /stats: the sum of its CPU entries' byte_size."""
    return sum(int(u["byte_size"]) for u in server.stats(model).get("memory_usage", []) if u["type"] == "CPU")


def measured_point(server: TritonServer, model: str, conc: int, tag: str) -> dict:
    """One perf_analyzer point over HTTP, with Triton's per-request stage times (µs) from /stats."""
    for attempt in range(ATTEMPTS):
        before = server.stats(model)
        try:
            p = bench.perf_point(server, model, "http", conc, WINDOW_MS, OUT / f"pa-{tag}.csv")
        except RuntimeError as e:
            # perf_analyzer gives up when its windows disagree (a busy machine, short windows).
            if attempt + 1 == ATTEMPTS:
                raise
            log(f"    {model} c={conc}: {str(e).strip().splitlines()[-1]} (attempt {attempt + 1} of {ATTEMPTS})")
            continue
        p["stages_us"] = bench.stage_delta(before, server.stats(model))
        return p
    raise AssertionError("unreachable")


def median_of(points: list[dict]) -> dict:
    """Medians over repeats of a point: throughput, latencies and stage times."""
    out = {k: statistics.median(p[k] for p in points) for k in ("infer_per_s", "p50_us", "p99_us")}
    out["stages_us"] = {k: statistics.median(p["stages_us"][k] for p in points) for k in points[0]["stages_us"]}
    out["repeats"] = [p["infer_per_s"] for p in points]
    return out


def onnxrs_config(name: str, inp: tuple, out: tuple, max_batch: int, instances: int, params: dict[str, str]) -> str:
    """A config for the onnxrs backend: one input and one output, (name, dims) each, FP32."""
    ps = "".join(f'parameters {{ key: "{k}" value: {{ string_value: "{v}" }} }}\n' for k, v in params.items())
    return (
        f'name: "{name}"\nbackend: "onnxrs"\nmax_batch_size: {max_batch}\n'
        f'input [ {{ name: "{inp[0]}" data_type: TYPE_FP32 dims: {inp[1]} }} ]\n'
        f'output [ {{ name: "{out[0]}" data_type: TYPE_FP32 dims: {out[1]} }} ]\n'
        f"instance_group [ {{ kind: KIND_CPU count: {instances} }} ]\n{ps}"
    )


def fresh_repo(name: str) -> Path:
    repo = OUT / name
    shutil.rmtree(repo, ignore_errors=True)
    repo.mkdir(parents=True)
    return repo


def server(repo: Path, backends: Path, *extra: str) -> TritonServer:
    return TritonServer(repo, "--log-verbose=0", *extra, backend_dir=backends, log_dir=OUT)


# ---- models made here


def make_models() -> tuple[Path, Path]:
    """The scenario 2 and 4 models under build/bench-models/ (skipped when present)."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    def save(path: Path, nodes, inits, x, y) -> None:
        g = helper.make_graph(nodes, path.stem, [x], [y], initializer=inits)
        m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 21)], producer_name="onnxrs-bench")
        m.ir_version = 10
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(m.SerializeToString())
        tmp.replace(path)

    MODELS_DIR.mkdir(parents=True, exist_ok=True)
    big, image = MODELS_DIR / "big_weights.onnx", MODELS_DIR / "image2x.onnx"
    if not big.exists():
        rng = np.random.default_rng(12)
        w1 = (rng.standard_normal((BIG_IN, BIG_HIDDEN), dtype=np.float32) * np.sqrt(2.0 / BIG_IN)).astype(np.float32)
        w2 = (rng.standard_normal((BIG_HIDDEN, BIG_IN), dtype=np.float32) * np.sqrt(1.0 / BIG_HIDDEN)).astype(np.float32)
        nodes = [
            helper.make_node("MatMul", ["X", "W1"], ["h"]),
            helper.make_node("Relu", ["h"], ["r"]),
            helper.make_node("MatMul", ["r", "W2"], ["Y"]),
        ]
        save(big, nodes, [numpy_helper.from_array(w1, "W1"), numpy_helper.from_array(w2, "W2")],
             helper.make_tensor_value_info("X", TensorProto.FLOAT, ["batch", BIG_IN]),
             helper.make_tensor_value_info("Y", TensorProto.FLOAT, ["batch", BIG_IN]))
    if not image.exists():
        nodes = [helper.make_node("Mul", ["X", "two"], ["x2"]), helper.make_node("Add", ["x2", "one"], ["Y"])]
        inits = [numpy_helper.from_array(np.array(2.0, np.float32), "two"), numpy_helper.from_array(np.array(1.0, np.float32), "one")]
        save(image, nodes, inits,
             helper.make_tensor_value_info("X", TensorProto.FLOAT, ["batch", *IMAGE]),
             helper.make_tensor_value_info("Y", TensorProto.FLOAT, ["batch", *IMAGE]))
    log(f"models: {big.name} {big.stat().st_size / 2**20:.0f} MiB, {image.name}")
    return big, image


# ---- scenarios


def per_run_cost(backends: Path) -> dict:
    """examples/run_cost, then the bench MLP in the server: onnxrs vs the Python backend, c=1."""
    r = subprocess.run([str(RUN_COST), os.environ["ONNXRS_ORT_LIBRARY"], str(MODELS_DIR / "mlp.onnx")],
                       capture_output=True, text=True, check=True, timeout=600)
    micro = json.loads(r.stdout.strip().splitlines()[-1])
    md, mn = micro["median_ns"], micro["min_ns"]
    log(f"[1] run_cost (min / median ns per run): onnxrs {mn['onnxrs']} / {md['onnxrs']}, C API {mn['c_api']} / "
        f"{md['c_api']}, ort Value {mn['ort_value']} / {md['ort_value']}")
    repo = fresh_repo("repo-run-cost")
    contenders = ["onnxrs", "python"]
    for c in contenders:
        bench.write_model(repo, f"mlp_{c}", MODELS_DIR / "mlp.onnx", bench.config(f"mlp_{c}", "mlp", c, False), c)
    points: dict[str, list[dict]] = {c: [] for c in contenders}
    with server(repo, backends) as s:
        for rep in range(REPEATS):
            for c in contenders if rep % 2 == 0 else contenders[::-1]:
                p = measured_point(s, f"mlp_{c}", 1, f"run-cost-{c}-{rep}")
                points[c].append(p)
                log(f"[1] mlp {c:<6} c=1 rep {rep}: {p['infer_per_s']:8.1f} infer/s  p50 {p['p50_us']:.0f} µs")
    served = {c: median_of(ps) for c, ps in points.items()}
    ratio = served["onnxrs"]["infer_per_s"] / served["python"]["infer_per_s"]
    return {
        "run_cost": micro,
        # Judged on the minimum over rounds: the cost without load from other processes, which
        # falls on the medians unevenly on a shared machine (both are in the report).
        "overhead_ns": micro["onnxrs_over_c_api_ns"]["min"],
        "overhead_median_ns": micro["onnxrs_over_c_api_ns"]["median"],
        "overhead_target_ns": TARGET_OVERHEAD_NS,
        "overhead_met": micro["onnxrs_over_c_api_ns"]["min"] <= TARGET_OVERHEAD_NS,
        "profile": PROFILE.read_text() if PROFILE.exists() else None,
        "served": served,
        "ratio": ratio,
        "ratio_target": TARGET_RATIO,
        "ratio_met": ratio >= TARGET_RATIO,
        "threads": THREADS,
    }


def shared_session(backends: Path, big: Path) -> dict:
    """4 instances of a ~190 MiB model, sessions shared or not."""
    out = {"weights_mib": round(big.stat().st_size / 2**20, 1), "instances": 4, "runs": {}}
    for share in ("false", "true"):
        repo = fresh_repo(f"repo-share-{share}")
        cfg = onnxrs_config("big", ("X", [BIG_IN]), ("Y", [BIG_IN]), 8, 4, {"share_session_between_instances": share})
        bench.write_model(repo, "big", big, cfg)
        with server(repo, backends) as s:
            time.sleep(1.0)  # the loads' transient buffers freed
            run = {"after_load": proc_status(s), "memory_usage_bytes": cpu_memory(s, "big"), "points": {}}
            for conc in (4, 16):
                p = measured_point(s, "big", conc, f"share-{share}-{conc}")
                run["points"][str(conc)] = p
                log(f"[2] share={share:<5} c={conc:<2}: {p['infer_per_s']:7.1f} infer/s  p99 {p['p99_us'] / 1e3:.1f} ms")
            run["after_traffic"] = proc_status(s)
        log(f"[2] share={share:<5}: RSS after load {run['after_load']['VmRSS'] / 1024:.0f} MiB, after traffic "
            f"{run['after_traffic']['VmRSS'] / 1024:.0f} MiB, memory_usage {run['memory_usage_bytes'] / 2**20:.0f} MiB")
        out["runs"][share] = run
    return out


def concurrent_load(s: TritonServer, names: list[str], tag: str) -> dict:
    """One perf_analyzer per model at once (HTTP, concurrency 2 each): the server's count of
    requests over two windows while they all run, and each one's latencies over its 3 windows.
    Each reports after exactly 3 windows, however much they differ (the others starting and
    stopping around its first and last would make it give up), so that all run together."""
    w = WINDOW_MS / 1e3
    csvs = [OUT / f"pa-{tag}-{n}.csv" for n in names]
    procs = [
        subprocess.Popen(bench.perf_command(s, n, "http", 2, WINDOW_MS, f, stability=10000, max_trials=3), env=bench.perf_env(),
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for n, f in zip(names, csvs)
    ]
    run = {}
    try:
        time.sleep(max(0.5, w / 2))
        c0, t0 = sum(s.stats(n)["inference_stats"]["success"]["count"] for n in names), time.monotonic()
        time.sleep(2 * w)
        c1, t1 = sum(s.stats(n)["inference_stats"]["success"]["count"] for n in names), time.monotonic()
        # False: a perf_analyzer was done before the count ended (windows too short to overlap).
        run["all_loaded_throughout"] = all(p.poll() is None for p in procs)
        run["threads_under_load"] = proc_status(s)["Threads"]
        logs = [p.communicate(timeout=900)[0] for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    for n, p, f, text in zip(names, procs, csvs, logs):
        if p.returncode != 0 or not f.exists():
            raise RuntimeError(f"perf_analyzer failed for {n} ({tag}):\n{text[-2000:]}")
    pas = [bench.read_perf_csv(f) for f in csvs]
    run["aggregate_infer_per_s"] = (c1 - c0) / (t1 - t0)
    run["sum_pa_infer_per_s"] = sum(p["infer_per_s"] for p in pas)
    run["p99_us"] = {n: p["p99_us"] for n, p in zip(names, pas)}
    run["p99_us_max"] = max(p["p99_us"] for p in pas)
    run["p50_us_median"] = statistics.median(p["p50_us"] for p in pas)
    return run


def thread_pools(backends: Path) -> dict:
    """4 copies of the bench MLP x 2 instances, no thread counts: per-session pools vs the shared one."""
    names = [f"mlp_{c}" for c in "abcd"]
    repo = fresh_repo("repo-pools")
    for n in names:
        bench.write_model(repo, n, MODELS_DIR / "mlp.onnx", onnxrs_config(n, ("X", [64]), ("Y", [16]), 64, 2, {}))
    out = {"models": len(names), "instances_per_model": 2, "concurrency_per_model": 2, "cpus": os.cpu_count(), "runs": {}}
    for pools in ("per-session", "shared"):
        with server(repo, backends, f"--backend-config=onnxrs,thread-pools={pools}") as s:
            m = re.search(r'operator threads: ([^"\n]*)', s.log_text())
            run = {"threads_after_load": proc_status(s)["Threads"], "pool_log": m.group(1).strip() if m else None}
            for attempt in range(ATTEMPTS):
                try:
                    run.update(concurrent_load(s, names, f"pools-{pools}"))
                    break
                except RuntimeError as e:
                    if attempt + 1 == ATTEMPTS:
                        raise
                    log(f"    {pools}: a perf_analyzer failed ({str(e).strip().splitlines()[-1]}), attempt {attempt + 1} of {ATTEMPTS}")
        log(f"[3] {pools:<11}: {run['threads_after_load']} threads, {run['aggregate_infer_per_s']:.0f} infer/s in all, "
            f"p99 (worst model) {run['p99_us_max'] / 1e3:.2f} ms")
        out["runs"][pools] = run
    return out


def large_outputs(backends: Path, image: Path) -> dict:
    """12 MiB outputs: config dims fixed (written into the response) vs [3,-1,-1] (copied)."""
    repo = fresh_repo("repo-outputs")
    variants = {"direct": IMAGE, "copied": [IMAGE[0], -1, -1]}
    for v, dims in variants.items():
        bench.write_model(repo, f"image_{v}", image, onnxrs_config(f"image_{v}", ("X", IMAGE), ("Y", dims), 1, 1, {}))
    points: dict[str, list[dict]] = {v: [] for v in variants}
    out = {"output_mib": 4 * IMAGE[0] * IMAGE[1] * IMAGE[2] / 2**20, "variants": {}}
    with server(repo, backends) as s:
        def counters(v):
            m, labels = s.metrics(), {"model": f"image_{v}", "version": "1"}
            return m.get("onnxrs_output_bytes_total", **labels), m.get("onnxrs_output_bytes_direct_total", **labels)

        before = {v: counters(v) for v in variants}
        for rep in range(REPEATS):
            for v in list(variants) if rep % 2 == 0 else list(variants)[::-1]:
                p = measured_point(s, f"image_{v}", 1, f"outputs-{v}-{rep}")
                points[v].append(p)
                log(f"[4] image {v:<6} rep {rep}: {p['infer_per_s']:6.1f} infer/s  compute_output "
                    f"{p['stages_us']['compute_output']:.0f} µs  compute_infer {p['stages_us']['compute_infer']:.0f} µs")
        time.sleep(0.5)
        after = {v: counters(v) for v in variants}
    for v in variants:
        total, direct = after[v][0] - before[v][0], after[v][1] - before[v][1]
        out["variants"][v] = {**median_of(points[v]), "dims": variants[v], "output_bytes": total, "output_bytes_direct": direct}
    out["verified"] = out["variants"]["direct"]["output_bytes_direct"] > 0 and out["variants"]["copied"]["output_bytes_direct"] == 0 \
        and out["variants"]["copied"]["output_bytes"] > 0
    return out


# ---- report


def fmt_mib(kib_or_bytes: float, unit: str) -> str:
    return f"{kib_or_bytes / (1024 if unit == 'KiB' else 2**20):.0f}"


def pct(new: dict, old: dict) -> str:
    """`new`'s throughput against `old`'s, as "+3.1 %" or "−9.8 %"."""
    d = 100.0 * (new["infer_per_s"] / old["infer_per_s"] - 1.0)
    return f"{'+' if d >= 0 else '−'}{abs(d):.1f} %"


def met(ok: bool) -> str:
    return "met" if ok else "**missed**"


def report(r: dict) -> str:
    e = r["env"]
    parts = [
        MARK[0],
        SECTION,
        "",
        f"Generated by `bash ci/bench.sh --ahead` (bench/ahead.py) on {e['date']}: {e['cpu']}, {e['cores']} vCPUs, "
        f"Linux {e['kernel']}; tritonserver {e['tritonserver']}, ONNX Runtime {e['onnxruntime']}, perf_analyzer "
        f"{e['perf_analyzer']} (closed loop, HTTP, zeros as inputs, batch 1 per request, {r['window_ms']} ms windows). "
        "Each scenario sets onnxrs one way and the other on the same server binary and model file; the official "
        "onnxruntime backend itself is not in the pytriton wheel and is not run here.",
        "",
    ]
    a = r["scenarios"].get("per_run_cost")
    if a:
        m, on, py = a["run_cost"], a["served"]["onnxrs"], a["served"]["python"]
        parts += [
            "### Per-run cost",
            "",
            table(["path (examples/run_cost, bench MLP, 1 thread)", "ns per run, minimum over rounds", "median"], [
                ["ONNX Runtime C API loop (the least any backend can do)", f"{m['min_ns']['c_api']:.0f}", f"{m['median_ns']['c_api']:.0f}"],
                ["onnxrs run path", f"{m['min_ns']['onnxrs']:.0f}", f"{m['median_ns']['onnxrs']:.0f}"],
                ["`ort` Value path (onnxrs's run path before this one)", f"{m['min_ns']['ort_value']:.0f}", f"{m['median_ns']['ort_value']:.0f}"],
            ]),
            "",
            table(["served, bench MLP, c=1, HTTP", "infer/s", "p50 / p99 µs", "compute_input µs", "compute_infer µs", "compute_output µs"], [
                [c, f"{x['infer_per_s']:.1f}", f"{x['p50_us']:.0f} / {x['p99_us']:.0f}", f"{x['stages_us']['compute_input']:.1f}",
                 f"{x['stages_us']['compute_infer']:.1f}", f"{x['stages_us']['compute_output']:.1f}"]
                for c, x in (("onnxrs", on), ("python backend", py))
            ]),
            "",
            table(["figure", "target", "measured", ""], [
                ["onnxrs over the C API, per run (minimum; median)", f"≤ {a['overhead_target_ns'] / 1e3:.1f} µs",
                 f"{a['overhead_ns'] / 1e3:.2f} µs; {a['overhead_median_ns'] / 1e3:.2f} µs", met(a["overhead_met"])],
                ["onnxrs ÷ python backend, infer/s at c=1", f"≥ {a['ratio_target']}×", f"{a['ratio']:.2f}×", met(a["ratio_met"])],
            ]),
            "",
            f"What the backend adds to a run is {a['overhead_ns'] / 1e3:.2f} µs over a hand-written C API loop "
            f"(the old `ort` Value path added {m['ort_value_over_c_api_ns']['min'] / 1e3:.2f} µs); served, a small model answers "
            f"{a['ratio']:.2f}× as many requests a second as the same model in Triton's Python backend, "
            f"intra_op {a['threads']['intra_op_thread_count']}, inter_op {a['threads']['inter_op_thread_count']} for both.",
            "",
        ]
    if a and a.get("profile"):
        parts += [
            "Where the server's CPU goes in that case (`bench/profile.py`: `perf record -e cpu-clock -g` on "
            "tritonserver, onnxrs, bench MLP, HTTP, c=1; ONNX Runtime's share includes its pool threads spinning "
            "between runs):",
            "",
            "```",
            *a["profile"].strip().splitlines()[:22],
            "```",
            "",
        ]
    b = r["scenarios"].get("shared_session")
    if b:
        f_, t_ = b["runs"]["false"], b["runs"]["true"]
        rows = [
            ["RSS after load, MiB", fmt_mib(f_["after_load"]["VmRSS"], "KiB"), fmt_mib(t_["after_load"]["VmRSS"], "KiB")],
            ["RSS after load and traffic, MiB", fmt_mib(f_["after_traffic"]["VmRSS"], "KiB"), fmt_mib(t_["after_traffic"]["VmRSS"], "KiB")],
            ["peak RSS (VmHWM), MiB", fmt_mib(f_["after_traffic"]["VmHWM"], "KiB"), fmt_mib(t_["after_traffic"]["VmHWM"], "KiB")],
            ["memory_usage in /stats (CPU), MiB", fmt_mib(f_["memory_usage_bytes"], "B"), fmt_mib(t_["memory_usage_bytes"], "B")],
        ]
        for conc in ("4", "16"):
            pf, pt = f_["points"][conc], t_["points"][conc]
            rows.append([f"infer/s at c={conc}", f"{pf['infer_per_s']:.1f}", f"{pt['infer_per_s']:.1f}"])
            rows.append([f"p50 / p99 ms at c={conc}", f"{pf['p50_us'] / 1e3:.1f} / {pf['p99_us'] / 1e3:.1f}",
                         f"{pt['p50_us'] / 1e3:.1f} / {pt['p99_us'] / 1e3:.1f}"])
        saved = (f_["after_traffic"]["VmRSS"] - t_["after_traffic"]["VmRSS"]) / 1024
        parts += [
            "### One session for many instances",
            "",
            f"A model with {b['weights_mib']:.0f} MiB of weights (MatMul {BIG_IN}×{BIG_HIDDEN}, Relu, MatMul "
            f"{BIG_HIDDEN}×{BIG_IN}), {b['instances']} CPU instances, the default thread pool.",
            "",
            table(["", "share_session_between_instances: false", "true"], rows),
            "",
            f"Sharing the session keeps one copy of the weights for the {b['instances']} instances: the server holds "
            f"{saved:.0f} MiB less after traffic, and the memory it reports is one session's. Throughput with the "
            f"shared session is {pct(t_['points']['4'], f_['points']['4'])} at c=4 and "
            f"{pct(t_['points']['16'], f_['points']['16'])} at c=16 against a session per instance: concurrent runs "
            "of one session share its arena (and its lock), where separate sessions each have their own.",
            "",
        ]
    c = r["scenarios"].get("thread_pools")
    if c:
        ps, sh = c["runs"]["per-session"], c["runs"]["shared"]
        rows = [
            ["threads in the process after load", ps["threads_after_load"], sh["threads_after_load"]],
            ["threads under load", ps["threads_under_load"], sh["threads_under_load"]],
            ["aggregate infer/s (the server's count while all 4 run)", f"{ps['aggregate_infer_per_s']:.0f}", f"{sh['aggregate_infer_per_s']:.0f}"],
            ["p50 ms (median model)", f"{ps['p50_us_median'] / 1e3:.2f}", f"{sh['p50_us_median'] / 1e3:.2f}"],
            ["p99 ms (worst model, its perf_analyzer's windows)", f"{ps['p99_us_max'] / 1e3:.2f}", f"{sh['p99_us_max'] / 1e3:.2f}"],
        ]
        parts += [
            "### No oversubscription by default",
            "",
            f"{c['models']} copies of the bench MLP × {c['instances_per_model']} CPU instances, no thread counts in their "
            f"configs, {c['models']} perf_analyzer processes at once (one per model, concurrency "
            f"{c['concurrency_per_model']}), {c['cpus']} CPUs.",
            "",
            table(["", "thread-pools=per-session (a pool of all cores per session, ONNX Runtime's default)", "thread-pools=shared (default)"], rows),
            "",
            f"With the default, {c['models'] * c['instances_per_model']} sessions share one pool as large as the "
            f"CPUs instead of each starting its own, so the process runs {ps['threads_after_load'] - sh['threads_after_load']} "
            "fewer threads and the sessions do not compete for cores; the throughput and p99 rows show what that does "
            "to a server with several models busy at once.",
            "",
        ]
        if not (ps.get("all_loaded_throughout") and sh.get("all_loaded_throughout")):
            parts += ["(A perf_analyzer finished before the server's count ended: the windows were too short for the "
                      "aggregate figures to compare.)", ""]
    d = r["scenarios"].get("large_outputs")
    if d:
        dv, cv = d["variants"]["direct"], d["variants"]["copied"]
        rows = [
            [f"`{v}` (output dims {x['dims']})", f"{x['infer_per_s']:.1f}", f"{x['p50_us'] / 1e3:.2f} / {x['p99_us'] / 1e3:.2f}",
             f"{x['stages_us']['compute_infer']:.0f}", f"{x['stages_us']['compute_output']:.0f}",
             f"{x['stages_us']['compute_infer'] + x['stages_us']['compute_output']:.0f}",
             f"{x['output_bytes_direct'] / 2**20:.0f} of {x['output_bytes'] / 2**20:.0f}"]
            for v, x in (("direct", dv), ("copied", cv))
        ]
        parts += [
            "### Large outputs without a copy",
            "",
            f"An image-to-image model (Y = 2X + 1, {d['output_mib']:.0f} MiB in and out per request), one CPU instance, "
            "served twice by one server; only the config's output dims differ. Over HTTP, infer/s and latency are "
            "mostly the client and server moving the request's and response's bytes; the stage times (from /stats) "
            "are the backend's share.",
            "",
            table(["model", "infer/s", "p50 / p99 ms", "compute_infer µs", "compute_output µs", "infer + output µs", "MiB written directly (metric)"], rows),
            "",
            f"With dims the config fixes, ONNX Runtime writes the output straight into Triton's response buffer "
            f"(onnxrs_output_bytes_direct_total: {'checked' if d['verified'] else '**check failed**'}), so "
            f"compute_output drops from {cv['stages_us']['compute_output']:.0f} µs to {dv['stages_us']['compute_output']:.0f} µs "
            f"per request (the run itself, which now writes into the response, takes {dv['stages_us']['compute_infer']:.0f} µs "
            f"against {cv['stages_us']['compute_infer']:.0f} µs); a config with -1 dims pays the {d['output_mib']:.0f} MiB copy.",
            "",
        ]
    parts.append(MARK[1])
    return "\n".join(parts) + "\n"


def summary(r: dict) -> str:
    rows = []
    a = r["scenarios"].get("per_run_cost")
    if a:
        rows.append(["1 per-run cost", "onnxrs over C API, µs/run", f"{a['overhead_ns'] / 1e3:.2f}", f"≤ 1.0 {met(a['overhead_met'])}"])
        rows.append(["1 per-run cost", "onnxrs ÷ python, c=1", f"{a['ratio']:.2f}×", f"≥ 2.4 {met(a['ratio_met'])}"])
    b = r["scenarios"].get("shared_session")
    if b:
        for share in ("false", "true"):
            x = b["runs"][share]
            rows.append([f"2 share={share}", "RSS load/traffic MiB, mem MiB",
                         f"{x['after_load']['VmRSS'] / 1024:.0f} / {x['after_traffic']['VmRSS'] / 1024:.0f}, {x['memory_usage_bytes'] / 2**20:.0f}",
                         f"c4 {x['points']['4']['infer_per_s']:.1f}/s, c16 {x['points']['16']['infer_per_s']:.1f}/s"])
    c = r["scenarios"].get("thread_pools")
    if c:
        for pools in ("per-session", "shared"):
            x = c["runs"][pools]
            rows.append([f"3 {pools}", "threads, infer/s, p99 ms", f"{x['threads_after_load']}, {x['aggregate_infer_per_s']:.0f}",
                         f"{x['p99_us_max'] / 1e3:.2f}"])
    d = r["scenarios"].get("large_outputs")
    if d:
        for v in ("direct", "copied"):
            x = d["variants"][v]
            rows.append([f"4 {v}", "infer/s, output µs, infer µs", f"{x['infer_per_s']:.1f}",
                         f"{x['stages_us']['compute_output']:.0f}, {x['stages_us']['compute_infer']:.0f}"
                         + ("" if v == "copied" else f" (direct bytes checked: {d['verified']})")])
    return table(["scenario", "figure", "value", "target / more"], rows)


# ---- docs


def splice(doc: str, section: str) -> str:
    """`doc` with its ahead section (between MARK) replaced by `section`, or `section` appended."""
    begin, end = (re.escape(m) for m in MARK)
    pat = re.compile(begin + r".*?" + end + r"\n?", re.S)
    if pat.search(doc):
        return pat.sub(lambda _: section, doc, count=1)
    return doc.rstrip("\n") + "\n\n" + section


def marked_sections(doc: str) -> list[str]:
    """Every `<!-- NAME:begin -->` ... `<!-- NAME:end -->` block of `doc` (sections other scripts own)."""
    return [m.group(0) for m in re.finditer(r"<!-- ([\w-]+):begin -->.*?<!-- \1:end -->\n?", doc, re.S)]


def replace_docs(new: Path, old: Path) -> None:
    """Copies the bench report `new` over `old`, keeping the marked sections `old` had."""
    keep = marked_sections(old.read_text()) if old.exists() else []
    text = new.read_text()
    for block in keep:
        if block.split("-->", 1)[0] not in text:
            text = text.rstrip("\n") + "\n\n" + (block if block.endswith("\n") else block + "\n")
    old.write_text(text)


# ---- main


def run(only: list[str]) -> dict:
    shutil.rmtree(OUT, ignore_errors=True)
    OUT.mkdir(parents=True)
    big, image = make_models()
    backends = bench.backend_dir(["onnxrs", "python"])
    bench.python_backend_env()
    results = {"window_ms": WINDOW_MS, "env": bench.environment(), "scenarios": {}}
    t0 = time.monotonic()
    steps = {
        "per_run_cost": lambda: per_run_cost(backends),
        "shared_session": lambda: shared_session(backends, big),
        "thread_pools": lambda: thread_pools(backends),
        "large_outputs": lambda: large_outputs(backends, image),
    }
    for name, step in steps.items():
        if only and name not in only:
            continue
        t = time.monotonic()
        results["scenarios"][name] = step()
        results["scenarios"][name]["seconds"] = round(time.monotonic() - t, 1)
        RESULTS.write_text(json.dumps(results, indent=1))
    results["seconds"] = round(time.monotonic() - t0, 1)
    return results


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--report-only", action="store_true")
    ap.add_argument("--only", action="append", default=[], choices=["per_run_cost", "shared_session", "thread_pools", "large_outputs"])
    ap.add_argument("--splice-into", type=Path, metavar="FILE")
    ap.add_argument("--replace-docs", type=Path, nargs=2, metavar=("NEW", "OLD"))
    args = ap.parse_args()
    if args.replace_docs:
        replace_docs(*args.replace_docs)
        return 0
    if args.splice_into:
        args.splice_into.write_text(splice(args.splice_into.read_text() if args.splice_into.exists() else "", REPORT.read_text()))
        return 0
    BUILD.mkdir(parents=True, exist_ok=True)
    if not args.report_only:
        results = run(args.only)
        RESULTS.write_text(json.dumps(results, indent=1))
    results = json.loads(RESULTS.read_text())
    REPORT.write_text(report(results))
    print()
    print(summary(results))
    print(f"\n{RESULTS.relative_to(ROOT)}, {REPORT.relative_to(ROOT)} written ({results.get('seconds', 0):.0f} s)")
    d = results["scenarios"].get("large_outputs")
    if d and not d["verified"]:
        print("large outputs: onnxrs_output_bytes_direct_total did not show the direct path on one model and not on the other")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

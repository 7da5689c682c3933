#!/usr/bin/env python3
"""Memory under dynamic shapes, measured on real tritonservers in one run (`bash ci/bench.sh
--memory`; `--update-docs` also writes the section of BENCHMARKS.md between its markers).

The model is the issue's: X[N, L, 512] -> MatMul(512x2048) -> Relu -> MatMul(2048x512) ->
ReduceMean(L). Small requests are [1, 64, 512]; long ones [4, 4096, 512] (128 MiB of hidden
activations each). Scenarios:

1. the table: one instance; RSS (VmRSS) and the reported memory_usage after small requests, after
   three long ones, and after small ones again, with ONNX Runtime's defaults and with
   `memory.enable_memory_arena_shrinkage`; the peak RSS (VmHWM);
2. one arena for many sessions: 4 models x 2 instances, two long requests at once per model,
   model after model; peak and steady RSS and what is reported, each session with its own arena,
   with `--backend-config=onnxrs,shared-arena=1`, and with the shared arena and shrinkage;
3. a cap: `shared-arena-max-bytes` below what a long request needs: the long request fails alone
   while small and medium ones beside it and after it are served;
4. shrinkage's cost: one client, requests back to back alternating between a model that keeps
   its arena and one that shrinks it after every run; small, medium and long requests.

Writes build/bench/memory.json and build/bench/memory.md.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "tests" / "models"))
import tritonclient.http as thttp  # noqa: E402
from report import publish  # noqa: E402
from server import TritonServer  # noqa: E402

BUILD = ROOT / "build" / "bench"
WORK = ROOT / "build" / "bench-memory"
RESULTS = BUILD / "memory.json"
REPORT = BUILD / "memory.md"
BENCHMARKS = ROOT / "BENCHMARKS.md"
# The section it owns in BENCHMARKS.md (the main report's --update-docs keeps marked sections).
BEGIN, END = "<!-- memory:begin -->", "<!-- memory:end -->"

MIB = 1 << 20
WIDTH, HIDDEN = 512, 2048
SMALL, MEDIUM, LONG = (1, 64), (1, 1024), (4, 4096)
SHRINK = {"memory.enable_memory_arena_shrinkage": "cpu:0"}
# Re-read at most once a second after an execute (src/instance.rs).
REPORT_INTERVAL_S = 1.2
CAP = 96 * MIB


def model_file() -> Path:
    from make_models import arena_model

    import onnx

    path = WORK / "model.onnx"
    if not path.is_file():
        WORK.mkdir(parents=True, exist_ok=True)
        onnx.save(arena_model(WIDTH, HIDDEN), str(path))
    return path


def repo(name: str, models: dict[str, tuple[int, dict[str, str]]]) -> Path:
    """A repository of the issue's model under each name: (instances, parameters)."""
    dest = WORK / name
    shutil.rmtree(dest, ignore_errors=True)
    for m, (instances, params) in models.items():
        (dest / m / "1").mkdir(parents=True)
        shutil.copy(model_file(), dest / m / "1" / "model.onnx")
        extra = "".join(f'parameters {{ key: "{k}" value: {{ string_value: "{v}" }} }}\n' for k, v in params.items())
        (dest / m / "config.pbtxt").write_text(
            f'name: "{m}"\nbackend: "onnxrs"\nmax_batch_size: 4\n'
            f'input [ {{ name: "X" data_type: TYPE_FP32 dims: [ -1, {WIDTH} ] }} ]\n'
            f'output [ {{ name: "Y" data_type: TYPE_FP32 dims: [ {WIDTH} ] }} ]\n'
            f"instance_group [ {{ kind: KIND_CPU count: {instances} }} ]\n{extra}"
        )
    return dest


def proc_kib(s: TritonServer, key: str) -> int:
    for line in Path(f"/proc/{s.proc.pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"no {key}")


INPUTS: dict[tuple[int, int], np.ndarray] = {}


def ask(s: TritonServer, model: str, shape: tuple[int, int]) -> None:
    """One request; raises the client's exception when it fails."""
    x = INPUTS.setdefault(shape, np.linspace(-1, 1, shape[0] * shape[1] * WIDTH, dtype=np.float32).reshape(*shape, WIDTH))
    i = thttp.InferInput("X", list(x.shape), "FP32")
    i.set_data_from_numpy(x)
    with thttp.InferenceServerClient(s.http_addr, network_timeout=600, connection_timeout=600) as c:
        y = c.infer(model, [i]).as_numpy("Y")
    assert y.shape == (shape[0], WIDTH), y.shape


def together(calls) -> list:
    """Runs the calls at once; each one's None or exception, in order."""

    def run(call):
        try:
            return call()
        except Exception as e:  # noqa: BLE001 - reported, not raised
            return e

    with ThreadPoolExecutor(len(calls)) as ex:
        return list(ex.map(run, calls))


def refresh(s: TritonServer, models: list[str], instances: int) -> None:
    """Small requests to every instance after the report interval, so each re-reads its figure."""
    time.sleep(REPORT_INTERVAL_S)
    errors = [r for r in together([lambda m=m: ask(s, m, SMALL) for m in models for _ in range(2 * instances)]) if r]
    assert not errors, errors
    time.sleep(0.1)


def reported(s: TritonServer, models: list[str]) -> dict:
    """memory_usage (CPU) summed over the models, and the shared arena's gauge (if any)."""
    usage = sum(u["byte_size"] for m in models for u in s.stats(m)["memory_usage"] if u["type"] == "CPU")
    shared = s.metrics().values("onnxrs_shared_arena_bytes")
    return {"memory_usage": usage, "shared_arena": shared[0] if shared else None}


def point(s: TritonServer, models: list[str], instances: int) -> dict:
    refresh(s, models, instances)
    return {"rss_kib": proc_kib(s, "VmRSS"), **reported(s, models)}


def table() -> dict:
    """Scenario 1: small -> three long -> small again, one instance, kept vs shrunk."""
    out = {}
    for setting, params in [("defaults", {}), ("shrinkage", SHRINK)]:
        with TritonServer(repo(f"table-{setting}", {"m": (1, params)})) as s:
            for _ in range(5):
                ask(s, "m", SMALL)
            small = point(s, ["m"], 1)
            for _ in range(3):
                ask(s, "m", LONG)
            after_long = point(s, ["m"], 1)
            for _ in range(5):
                ask(s, "m", SMALL)
            again = point(s, ["m"], 1)
            out[setting] = {"small": small, "after_long": after_long, "small_again": again,
                            "peak_rss_kib": proc_kib(s, "VmHWM")}
        print(f"table {setting}: {out[setting]}", flush=True)
    return out


FOUR = ["m_a", "m_b", "m_c", "m_d"]


def shared() -> dict:
    """Scenario 2: 4 models x 2 instances; own arenas, one shared arena, shared + shrinkage."""
    out = {}
    for setting, backend, params in [
        ("own arenas", [], {}),
        ("shared arena", ["--backend-config=onnxrs,shared-arena=1"], {}),
        ("shared arena + shrinkage", ["--backend-config=onnxrs,shared-arena=1"], SHRINK),
    ]:
        with TritonServer(repo("shared", {m: (2, params) for m in FOUR}), *backend) as s:
            start = point(s, FOUR, 2)
            for m in FOUR:
                errors = [r for r in together([lambda m=m: ask(s, m, LONG)] * 2) if r]
                assert not errors, errors
            steady = point(s, FOUR, 2)
            out[setting] = {"start": start, "steady": steady, "peak_rss_kib": proc_kib(s, "VmHWM")}
        print(f"shared {setting}: {out[setting]}", flush=True)
    return out


def cap() -> dict:
    """Scenario 3: a capped shared arena; a long request beside small and medium ones."""
    models = ["m_a", "m_b"]
    with TritonServer(repo("cap", {m: (2, {}) for m in models}), f"--backend-config=onnxrs,shared-arena-max-bytes={CAP}") as s:
        for m in models:
            ask(s, m, SMALL)
        calls = [lambda: ask(s, "m_a", LONG)] + [lambda: ask(s, "m_a", SMALL)] * 4 + [lambda: ask(s, "m_b", MEDIUM)] * 2
        results = together(calls)
        long_error = results[0]
        beside = results[1:]
        after = together([lambda: ask(s, "m_a", SMALL), lambda: ask(s, "m_b", MEDIUM)])
        held = point(s, models, 2)
        out = {
            "cap_bytes": CAP,
            "long": "served" if long_error is None else {"status": long_error.status(), "message": long_error.message()},
            "beside_served": sum(r is None for r in beside),
            "beside": len(beside),
            "after_served": sum(r is None for r in after),
            "after": len(after),
            "shared_arena": held["shared_arena"],
            "memory_usage": held["memory_usage"],
            "peak_rss_kib": proc_kib(s, "VmHWM"),
            "fail_count": s.stats("m_a")["inference_stats"]["fail"]["count"],
        }
    print(f"cap: {out}", flush=True)
    return out


def interleaved(s: TritonServer, shape: tuple[int, int], seconds: float, least: int) -> dict[str, dict]:
    """One client sends requests back to back, alternating between the kept and the shrunk
    model, for `seconds` (and at least `least` pairs): both see the same load from other work.
    Per model: the median of each request's latency and of its compute_infer (the server's
    statistics, read after each request), so the other work's bursts weigh little."""
    x = np.zeros((*shape, WIDTH), dtype=np.float32)
    i = thttp.InferInput("X", list(x.shape), "FP32")
    i.set_data_from_numpy(x)
    lat: dict[str, list[float]] = {"kept": [], "shrunk": []}
    compute: dict[str, list[float]] = {"kept": [], "shrunk": []}
    with thttp.InferenceServerClient(s.http_addr, network_timeout=600, connection_timeout=600) as c:
        last = {}
        for m in lat:
            c.infer(m, [i])  # warm up
            last[m] = c.get_inference_statistics(m)["model_stats"][0]["inference_stats"]["compute_infer"]["ns"]
        end = time.monotonic() + seconds
        pairs = 0
        while time.monotonic() < end or pairs < least:
            for m in (("kept", "shrunk") if pairs % 2 == 0 else ("shrunk", "kept")):
                t = time.perf_counter()
                c.infer(m, [i])
                lat[m].append(time.perf_counter() - t)
                ns = c.get_inference_statistics(m)["model_stats"][0]["inference_stats"]["compute_infer"]["ns"]
                compute[m].append((int(ns) - int(last[m])) / 1e6)
                last[m] = ns
            pairs += 1
    return {
        m: {"requests": len(v), "p50_ms": statistics.median(v) * 1e3, "compute_infer_ms": statistics.median(compute[m])}
        for m, v in lat.items()
    }


def throughput() -> dict:
    """Scenario 4: the cost of shrinking after every run, requests alternating kept / shrunk."""
    out = {}
    # One intra-op thread: a run that waits for a second thread the other work has delayed would
    # measure the machine's load more than the arena.
    one = {"intra_op_thread_count": "1"}
    with TritonServer(repo("throughput", {"kept": (1, one), "shrunk": (1, {**one, **SHRINK})})) as s:
        for shape, seconds, least in ((SMALL, 15.0, 100), (MEDIUM, 15.0, 20), (LONG, 0.0, 8)):
            key = f"{shape[0]}x{shape[1]}"
            out[key] = interleaved(s, shape, seconds, least)
            print(f"throughput {key}: {out[key]}", flush=True)
    return out


def loadavg() -> float:
    """The 1-minute load average: other work shares these cores."""
    return float(Path("/proc/loadavg").read_text().split()[0])


def environment() -> dict:
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), "?")
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": cpu,
        "cores": os.cpu_count(),
        "kernel": platform.release(),
        "onnxruntime": os.environ.get("ONNXRS_ORT_VERSION", "?"),
    }


def mib(b) -> str:
    return "—" if b is None else f"{b / MIB:.1f}"


def kib(k) -> str:
    return f"{k / 1024:.0f}"


def report(r: dict) -> str:
    e = r["environment"]
    lines = [
        "## Memory under dynamic shapes",
        "",
        f"Generated by `bash ci/bench.sh --memory --update-docs` (`bench/memory.py`) on {e['date']}: {e['cpu']}, "
        f"{e['cores']} vCPUs, Linux {e['kernel']}, ONNX Runtime {e['onnxruntime']}. The model of the memory issue users report most (onnxruntime_backend#102) "
        f"X[N, L, {WIDTH}] → MatMul({WIDTH}×{HIDDEN}) → Relu → MatMul({HIDDEN}×{WIDTH}) → ReduceMean(L); "
        f"small requests {SMALL[0]}×{SMALL[1]}, long ones {LONG[0]}×{LONG[1]} (128 MiB of hidden activations). "
        "RSS is the server's VmRSS, peak its VmHWM; memory_usage is what `/v2/models/<m>/stats` reports "
        "(re-read by onnxrs after a run, at most once a second); all in MiB, from one run. "
        f"Other work shares this machine: the 1-minute load average went {' → '.join(f'{x:.1f}' for x in r['loadavg'])} "
        "over the scenarios, so throughput figures are noisy; memory figures are not.",
        "",
        "**Small → long → small again** (one instance):",
        "",
        "| setting | RSS small | RSS after 3 long | RSS small again | peak RSS | memory_usage small | after long | small again |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for setting, t in r["table"].items():
        lines.append(
            f"| {setting} | {kib(t['small']['rss_kib'])} | {kib(t['after_long']['rss_kib'])} | "
            f"{kib(t['small_again']['rss_kib'])} | {kib(t['peak_rss_kib'])} | {mib(t['small']['memory_usage'])} | "
            f"{mib(t['after_long']['memory_usage'])} | {mib(t['small_again']['memory_usage'])} |"
        )
    lines += [
        "",
        "**One arena for many sessions** (4 models × 2 instances; two long requests at once per model, "
        "model after model; steady = after small requests again):",
        "",
        "| setting | RSS at start | peak RSS | steady RSS | memory_usage (sum of models) | onnxrs_shared_arena_bytes |",
        "|---|---|---|---|---|---|",
    ]
    for setting, t in r["shared"].items():
        lines.append(
            f"| {setting} | {kib(t['start']['rss_kib'])} | {kib(t['peak_rss_kib'])} | {kib(t['steady']['rss_kib'])} | "
            f"{mib(t['steady']['memory_usage'])} | {mib(t['steady']['shared_arena'])} |"
        )
    own, one = r["shared"]["own arenas"], r["shared"]["shared arena"]
    lines += [
        "",
        f"One shared arena instead of eight: peak RSS {kib(own['peak_rss_kib'] - one['peak_rss_kib'])} MiB lower, "
        f"steady RSS {kib(own['steady']['rss_kib'] - one['steady']['rss_kib'])} MiB lower; the arena holds "
        f"{mib(one['steady']['shared_arena'])} MiB where the eight held {mib(own['steady']['memory_usage'])} MiB "
        "between them. Instances on the shared arena report none of it as their own (README, \"One CPU arena for "
        "every model\").",
    ]
    c = r["cap"]
    long = c["long"]
    if long == "served":
        outcome = "served"
    else:
        msg = long["message"].strip()
        head = msg.split(": onnxruntime run failed")[0]
        tail = msg[msg.find("Available memory"):] if "Available memory" in msg else ""
        outcome = f"HTTP {long['status']}, `{head}: onnxruntime run failed: … {tail}`"
    lines += [
        "",
        f"**A cap** (`shared-arena-max-bytes={c['cap_bytes']}`, {mib(c['cap_bytes'])} MiB; 2 models × 2 instances): "
        f"a long request sent together with {c['beside']} others (small on the same model, medium "
        f"{MEDIUM[0]}×{MEDIUM[1]} on the other): {outcome}. Served beside it: {c['beside_served']} of {c['beside']}; "
        f"after it: {c['after_served']} of {c['after']}; failed requests in the model's statistics: {c['fail_count']}. "
        f"The arena then held {mib(c['shared_arena'])} MiB (cap {mib(c['cap_bytes'])}); instances report "
        f"{mib(c['memory_usage'])} MiB as their own; peak RSS {kib(c['peak_rss_kib'])} MiB.",
        "",
        "**What shrinkage costs** (it frees after every run, and the next run takes the memory again): one "
        "client sends requests back to back, alternating between two models that differ only in shrinkage "
        "(so both see the same load from other work); medians per request of the latency at the client and "
        "of compute_infer (the run itself, from the server's statistics read after each request); one "
        "intra-op thread, so a run does not wait on a second thread delayed by the other work:",
        "",
        "| request | requests each | kept: latency ms | shrunk: latency ms | kept: compute_infer ms | shrunk: compute_infer ms | cost of shrinkage (compute_infer) |",
        "|---|---|---|---|---|---|---|",
    ]
    for shape, t in r["throughput"].items():
        k, sh = t["kept"], t["shrunk"]
        cost = sh["compute_infer_ms"] / k["compute_infer_ms"] - 1
        lines.append(
            f"| {shape}×{WIDTH} | {k['requests']} | {k['p50_ms']:.2f} | {sh['p50_ms']:.2f} | "
            f"{k['compute_infer_ms']:.2f} | {sh['compute_infer_ms']:.2f} | {cost:+.1%} |"
        )
    return "\n".join(lines) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--update-docs", action="store_true", help="also write the section of BENCHMARKS.md")
    ap.add_argument("--report-only", action="store_true", help="the report from the last results")
    args = ap.parse_args()
    BUILD.mkdir(parents=True, exist_ok=True)
    if not args.report_only:
        results = {"environment": environment(), "loadavg": [loadavg()]}
        for name, scenario in [("table", table), ("shared", shared), ("cap", cap), ("throughput", throughput)]:
            results[name] = scenario()
            results["loadavg"].append(loadavg())
        RESULTS.write_text(json.dumps(results, indent=1))
    publish(report(json.loads(RESULTS.read_text())), REPORT, BENCHMARKS if args.update_docs else None, BEGIN, END)
    return 0


if __name__ == "__main__":
    sys.exit(main())

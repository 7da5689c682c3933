#!/usr/bin/env python3
"""The GPU check: talks to a running tritonserver (started by ci/gpu-run.sh with explicit model
control), loads a GPU model, and writes a markdown report of what it measured:

- outputs against the numpy reference and against the same model on a CPU instance;
- exact statistics counts for the requests it sent, and stage times within request times;
- memory_usage (GPU bytes, device id) against NVML's per-process figure (`nvidia-smi`): the
  process's GPU memory before the load and after the load and the runs, the delta compared with
  what the backend reports (Triton's QA accepts +-10 %);
- latency at batch 1 and at the model's max batch (client side, plain HTTP; indicative only);
- the GPU memory given back at unload;
- a generator (a decoder in ONNX Runtime GenAI's layout) on a GPU instance: its greedy tokens,
  alone and while 4 requests run at once, against the same decoder on a CPU instance, over
  Triton's HTTP generate extension, with exact request counts.

Needs only the Python standard library and numpy (the GPU host has no package registry).
`--cpu` runs the same flow against a CPU model on a machine without a GPU (memory comparison
left out): the test suite uses it to keep this script working.
"""

from __future__ import annotations

import argparse
import datetime
import shutil
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

TESTS = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(TESTS), str(TESTS / "models")]
from reference import mlp_reference  # noqa: E402
from server import Rest  # noqa: E402


def infer(server: Rest, model: str, x: np.ndarray) -> np.ndarray:
    return server.infer_json(model, {"X": (x, "FP32")})["Y"]


def process_gpu_mib(pid: int) -> int | None:
    """NVML's figure for the process (nvidia-smi), in MiB; None without nvidia-smi."""
    if not shutil.which("nvidia-smi"):
        return None
    out = subprocess.run(
        ["nvidia-smi", "--query-compute-apps=pid,used_memory", "--format=csv,noheader,nounits"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout
    total = 0
    for line in out.splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) == 2 and parts[0] == str(pid) and parts[1].isdigit():
            total += int(parts[1])
    return total


def generate(server: Rest, model: str, prompt: list[int], n: int) -> list[int]:
    """n greedy tokens (`ignore_eos`) from Triton's HTTP generate extension (one JSON answer: `stream` false)."""
    body = {"input_ids": prompt, "max_tokens": n, "ignore_eos": True, "stream": False}
    out = server.call("POST", f"/v2/models/{model}/generate", body)["output_ids"]
    return out if isinstance(out, list) else [out]


def generation_checks(s: Rest, model: str, cpu_model: str) -> tuple[list[str], list[str]]:
    """The generator on a GPU instance against the same decoder on a CPU instance: report lines
    and failures."""
    s.load(model)
    s.load(cpu_model)
    prompts = [[1, 5, 9], [1, 7, 3, 8, 2, 11, 4], list(range(3, 40)), [1]]
    want = [generate(s, cpu_model, p, 24) for p in prompts]
    alone = [generate(s, model, p, 24) for p in prompts]
    with ThreadPoolExecutor(len(prompts)) as pool:
        together = list(pool.map(lambda p: generate(s, model, p, 24), prompts))
    sent = 2 * len(prompts)
    # The loop counts a request just after sending its last response: wait for the counts.
    deadline = time.monotonic() + 10
    inf = s.stats(model)["inference_stats"]
    while inf["success"]["count"] + inf["fail"]["count"] < sent and time.monotonic() < deadline:
        time.sleep(0.02)
        inf = s.stats(model)["inference_stats"]
    checks = {
        "greedy tokens alone == the CPU instance's": alone == want,
        "greedy tokens with 4 at once == the CPU instance's": together == want,
        "every request made 24 tokens": all(len(t) == 24 for t in want + alone + together),
        f"success.count == {sent}, fail.count == 0": inf["success"]["count"] == sent and inf["fail"]["count"] == 0,
    }
    lines = [f"## `{model}`: a generator on a GPU instance",
             f"{len(prompts)} prompts, 24 greedy tokens each, alone and all at once, against `{cpu_model}` (CPU).",
             "", "| check | result |", "| --- | --- |"]
    lines += [f"| {k} | {'OK' if v else 'FAIL'} |" for k, v in checks.items()]
    mem = s.stats(model)["memory_usage"]
    lines += ["", "memory_usage: " + ", ".join(f"{m['type']} {m['id']}: {m['byte_size']} bytes" for m in mem)
              + " (the KV cache lives in system memory: ONNX Runtime copies it to the device and back each step).", ""]
    s.unload(model)
    return lines, [f"{model}: {k}" for k, v in checks.items() if not v]


def device_name() -> str:
    if not shutil.which("nvidia-smi"):
        return "no GPU (CPU run)"
    q = "name,driver_version,memory.total"
    out = subprocess.run(["nvidia-smi", f"--query-gpu={q}", "--format=csv,noheader"], capture_output=True, text=True)
    return out.stdout.strip().splitlines()[0] if out.stdout.strip() else "unknown"


def latency_ms(server: Rest, model: str, batch: int, n: int) -> float:
    x = np.random.default_rng(batch).standard_normal((batch, 16)).astype(np.float32)
    infer(server, model, x)  # warm-up
    times = []
    for _ in range(n):
        t = time.perf_counter()
        infer(server, model, x)
        times.append((time.perf_counter() - t) * 1000)
    return statistics.median(times)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--url", required=True, help="tritonserver HTTP address, http://127.0.0.1:PORT")
    ap.add_argument("--pid", type=int, required=True, help="tritonserver's process id (for nvidia-smi)")
    ap.add_argument("--model", default="mlp_gpu", help="the GPU model to check")
    ap.add_argument("--cpu-model", default="mlp_fp32", help="the same network on a CPU instance")
    ap.add_argument("--report", required=True, help="markdown file to write")
    ap.add_argument("--cpu", action="store_true", help="no GPU here: check the flow, skip GPU memory")
    ap.add_argument("--requests", type=int, default=20)
    ap.add_argument("--shared-model", default="", help="a model whose GPU instances share one session (also checked)")
    ap.add_argument("--generator-model", default="", help="a generator on a GPU instance (also checked)")
    ap.add_argument("--generator-cpu-model", default="decoder_tiny", help="the same decoder on a CPU instance")
    args = ap.parse_args()
    s = Rest(args.url)
    failures: list[str] = []
    lines = [
        f"# onnxrs GPU validation — {datetime.date.today().isoformat()}",
        "",
        f"- device: {device_name()}",
        f"- model: `{args.model}` (GPU instance), reference: numpy and `{args.cpu_model}` (CPU instance)",
        "",
    ]

    before_mib = process_gpu_mib(args.pid)
    s.load(args.model)
    s.load(args.cpu_model)
    cfg = s.config(args.model)
    group = cfg["instance_group"][0]
    lines += [f"- instance group: kind {group['kind']}, count {group['count']}, gpus {group.get('gpus')}", ""]

    # Outputs.
    rng = np.random.default_rng(0)
    worst_ref = worst_cpu = 0.0
    sent_rows = 0
    max_batch = int(cfg["max_batch_size"])
    both = min(max_batch, int(s.config(args.cpu_model)["max_batch_size"]))
    for i in range(args.requests):
        rows = 1 + i % both
        x = rng.standard_normal((rows, 16)).astype(np.float32)
        y = infer(s, args.model, x)
        y_cpu = infer(s, args.cpu_model, x)
        ref = mlp_reference(x)
        scale = np.maximum(np.abs(ref), 1e-3)
        worst_ref = max(worst_ref, float(np.max(np.abs(y - ref) / scale)))
        worst_cpu = max(worst_cpu, float(np.max(np.abs(y - y_cpu) / np.maximum(np.abs(y_cpu), 1e-3))))
        sent_rows += rows
    ok = worst_ref < 1e-3 and worst_cpu < 1e-3
    failures += [] if ok else ["outputs differ from the reference"]
    lines += [
        "## Outputs",
        f"{args.requests} requests, batch 1..{both}: max relative error vs numpy {worst_ref:.2e}, "
        f"vs the CPU instance {worst_cpu:.2e} ({'OK' if ok else 'FAIL'}, bound 1e-3).",
        "",
    ]

    # Statistics.
    st = s.stats(args.model)
    inf = st["inference_stats"]
    stages = sum(inf[k]["ns"] for k in ("queue", "compute_input", "compute_infer", "compute_output"))
    checks = {
        "success.count == sent": inf["success"]["count"] == args.requests,
        "fail.count == 0": inf["fail"]["count"] == 0,
        "inference_count == rows sent": st["inference_count"] == sent_rows,
        "stage counts == success": all(
            inf[k]["count"] == args.requests for k in ("queue", "compute_input", "compute_infer", "compute_output")
        ),
        "stages <= request time": stages <= inf["success"]["ns"],
    }
    failures += [k for k, v in checks.items() if not v]
    lines += ["## Statistics", "| check | result |", "| --- | --- |"]
    lines += [f"| {k} | {'OK' if v else 'FAIL'} |" for k, v in checks.items()]
    n = max(inf["success"]["count"], 1)
    lines += [
        "",
        f"Per request (means): queue {inf['queue']['ns'] / n / 1e3:.1f} us, compute_input "
        f"{inf['compute_input']['ns'] / n / 1e3:.1f} us, compute_infer {inf['compute_infer']['ns'] / n / 1e3:.1f} us, "
        f"compute_output {inf['compute_output']['ns'] / n / 1e3:.1f} us.",
        "",
    ]

    # Latency.
    l1 = latency_ms(s, args.model, 1, 50)
    lmax = latency_ms(s, args.model, max_batch, 50)
    lines += [
        "## Latency (client side, plain HTTP JSON, median of 50)",
        "| batch | ms |",
        "| --- | --- |",
        f"| 1 | {l1:.3f} |",
        f"| {max_batch} | {lmax:.3f} |",
        "",
    ]

    # Memory.
    time.sleep(1.5)  # the backend re-reports at most once a second
    infer(s, args.model, np.zeros((1, 16), np.float32))
    mem = s.stats(args.model)["memory_usage"]
    lines += ["## Memory", "memory_usage reported for the model:", "", "| type | id | bytes |", "| --- | --- | --- |"]
    lines += [f"| {m['type']} | {m['id']} | {m['byte_size']} |" for m in mem]
    lines.append("")
    gpu = [m for m in mem if m["type"] == "GPU"]
    if args.cpu:
        lines.append("CPU run: no GPU entries expected, no NVML comparison.")
        if gpu:
            failures.append("GPU memory reported on a CPU run")
    else:
        after_mib = process_gpu_mib(args.pid)
        reported = sum(m["byte_size"] for m in gpu)
        if not gpu:
            failures.append("no GPU entry in memory_usage")
        if before_mib is not None and after_mib is not None:
            delta = (after_mib - before_mib) * (1 << 20)
            ratio = reported / delta if delta > 0 else float("inf")
            within = 0.9 <= ratio <= 1.1
            if not within:
                failures.append(f"reported GPU bytes are {ratio:.2%} of the NVML delta (bound +-10 %)")
            lines.append(
                f"NVML (nvidia-smi) for the server process: {before_mib} MiB before the load, {after_mib} MiB after "
                f"the load and the runs: delta {delta} bytes; reported {reported} bytes = {ratio:.2%} of the delta "
                f"({'within' if within else 'OUTSIDE'} +-10 %)."
            )
            lines.append(
                "The delta also holds what ONNX Runtime's CUDA provider allocates outside its arena (cuBLAS/cuDNN "
                "handles and workspaces, the CUDA context's growth on first use), which the arena figure does not."
            )
        s.unload(args.model)
        time.sleep(2)
        unloaded_mib = process_gpu_mib(args.pid)
        lines.append(f"After unloading `{args.model}`: {unloaded_mib} MiB (before the load: {before_mib} MiB).")
    lines.append("")

    # GPU instances sharing one session (share_session_between_instances), run concurrently.
    if args.shared_model:
        s.load(args.shared_model)

        def client(k: int) -> float:
            rng_k = np.random.default_rng(100 + k)
            worst = 0.0
            for _ in range(25):
                x = rng_k.standard_normal((1 + k % 4, 16)).astype(np.float32)
                ref = mlp_reference(x)
                y = infer(s, args.shared_model, x)
                worst = max(worst, float(np.max(np.abs(y - ref) / np.maximum(np.abs(ref), 1e-3))))
            return worst

        with ThreadPoolExecutor(4) as pool:
            worst_shared = max(pool.map(client, range(4)))
        st = s.stats(args.shared_model)
        inf = st["inference_stats"]
        gpu_bytes = sum(m["byte_size"] for m in st["memory_usage"] if m["type"] == "GPU")
        shared_checks = {
            "outputs within 1e-3 of numpy": worst_shared < 1e-3,
            "success.count == 100, fail.count == 0": inf["success"]["count"] == 100 and inf["fail"]["count"] == 0,
            "GPU memory reported (once, by the instance that made the session)": args.cpu or gpu_bytes > 0,
        }
        failures += [f"{args.shared_model}: {k}" for k, v in shared_checks.items() if not v]
        lines += [f"## `{args.shared_model}`: GPU instances sharing one session", "4 clients x 25 requests at once.",
                  "", "| check | result |", "| --- | --- |"]
        lines += [f"| {k} | {'OK' if v else 'FAIL'} |" for k, v in shared_checks.items()]
        lines += ["", f"Max relative error {worst_shared:.2e}; GPU memory_usage {gpu_bytes} bytes.", ""]
    if args.generator_model:
        more, failed = generation_checks(s, args.generator_model, args.generator_cpu_model)
        lines += more
        failures += failed
    lines += ["## Result", "PASS" if not failures else "FAIL: " + "; ".join(failures), ""]
    Path(args.report).write_text("\n".join(lines))
    print("\n".join(lines))
    return 0 if not failures else 1


if __name__ == "__main__":
    sys.exit(main())

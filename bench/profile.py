#!/usr/bin/env python3
"""Where a request's CPU time goes inside tritonserver with onnxrs: `perf record -e cpu-clock -g`
on the server while perf_analyzer drives the bench MLP (64→256→256→16, intra_op 2, inter_op 1,
one CPU instance) at concurrency 1 over HTTP, the case where per-run overhead matters most.
Writes build/bench/profile.txt: CPU samples by library (onnxrs, ONNX Runtime, Triton, the
kernel, libc), the hottest onnxrs functions, and the per-request stage times from /stats.

    python bench/profile.py [SECONDS]        (ci/bench.sh --profile builds what it needs)
"""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench  # noqa: E402
from server import TritonServer  # noqa: E402

OUT = bench.BUILD / "profile.txt"


def main() -> int:
    seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 8.0
    bench.BUILD.mkdir(parents=True, exist_ok=True)
    repo = bench.BUILD / "profile-repo"
    name = "mlp_onnxrs"
    (repo / name / "1").mkdir(parents=True, exist_ok=True)
    model = repo / name / "1" / "model.onnx"
    if not model.exists():
        model.symlink_to(bench.MODELS_DIR / "mlp.onnx")
    (repo / name / "config.pbtxt").write_text(bench.config(name, "mlp", "onnxrs", False))
    data = bench.BUILD / "perf.data"
    with TritonServer(repo, log_dir=bench.BUILD) as s:
        bench.perf_point(s, name, "http", 1, 1000, bench.BUILD / "profile-warmup.csv")
        before = s.stats(name)
        rec = subprocess.Popen(
            ["perf", "record", "-e", "cpu-clock", "-g", "-p", str(s.proc.pid), "-o", str(data)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        time.sleep(0.5)
        point = bench.perf_point(s, name, "http", 1, int(seconds * 1000 / 3), bench.BUILD / "profile.csv")
        rec.send_signal(signal.SIGINT)
        rec.wait(timeout=60)
        stages = bench.stage_delta(before, s.stats(name))

    def report(*args: str) -> str:
        r = subprocess.run(["perf", "report", "-i", str(data), "--no-children", "--stdio", *args],
                           capture_output=True, text=True, timeout=300)
        rows = [re.sub(r"(\s+-)+\s*$", "", l).rstrip() for l in r.stdout.splitlines()]
        return "\n".join(l for l in rows if l.strip() and not l.startswith("#") and "%" in l)

    by_dso = report("--sort", "dso", "-g", "none")
    ours = report("--sort", "symbol", "-g", "none", "--dsos", "libtriton_onnxrs.so")
    lines = [
        f"perf record -e cpu-clock -g on tritonserver, bench MLP, HTTP, concurrency 1, {seconds:.0f} s",
        f"throughput {point['infer_per_s']:.1f} infer/s, p50 {point['p50_us'] / 1e3:.3f} ms",
        "per request (µs, /stats): " + ", ".join(
            f"{k} {stages[k]:.1f}" for k in ("queue", "compute_input", "compute_infer", "compute_output", "success")),
        "",
        "CPU samples by library:",
        *by_dso.splitlines()[:15],
        "",
        "hottest functions in libtriton_onnxrs.so (share of all samples):",
        *ours.splitlines()[:25],
    ]
    OUT.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    print(f"\nwritten to {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

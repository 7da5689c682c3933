#!/usr/bin/env python3
"""Renders docs/observability.png: the dashboard's main panels drawn from real data. Starts a
tritonserver with the onnxrs backend on the test models, drives a workload that changes over
time (concurrency 1, then 8, then a burst of bad requests, then dynamic batching at 16),
scrapes /metrics every half second and plots what the Grafana dashboard (deploy/grafana) shows.

    python bench/observability-plot.py [OUT.png]    (ci/test.sh's environment: ONNXRS_TEST_MODELS)

OUT.png defaults to build/bench/observability.png; the README shows docs/observability.png.
"""

from __future__ import annotations

import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import requests  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from server import TritonServer, json_body, make_repo  # noqa: E402

PHASES = [("c=1", 1, "mlp_fp32", 6), ("c=8", 8, "mlp_fp32", 6), ("bad requests", 4, "gather_fail", 4), ("batching c=16", 16, "mlp_batching", 6)]


def main(out: Path) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        repo = make_repo(Path(tmp) / "repo", ["mlp_fp32", "mlp_batching", "gather_fail"])
        cfg = repo / "mlp_batching" / "config.pbtxt"
        cfg.write_text(cfg.read_text().replace("max_queue_delay_microseconds: 500000", "max_queue_delay_microseconds: 2000"))
        with TritonServer(repo) as s:
            samples: list[tuple[float, object]] = []
            stop = threading.Event()

            def scrape():
                while not stop.is_set():
                    samples.append((time.monotonic(), s.metrics()))
                    time.sleep(0.5)

            def client(model, until):
                sess = requests.Session()
                x = np.random.default_rng().standard_normal((1, 16)).astype(np.float32)
                while time.monotonic() < until:
                    if model == "gather_fail":
                        idx = [[0, 9]] if np.random.random() < 0.3 else [[1, 2]]
                        body = json_body({"IDX": (np.array(idx, np.int64), "INT64")})
                    else:
                        body = json_body({"X": (x, "FP32")})
                    sess.post(f"{s.url}/v2/models/{model}/infer", json=body, timeout=30)

            t0 = time.monotonic()
            scraper = threading.Thread(target=scrape)
            scraper.start()
            marks = []
            for name, conc, model, secs in PHASES:
                marks.append((time.monotonic() - t0, name))
                until = time.monotonic() + secs
                with ThreadPoolExecutor(conc) as pool:
                    list(pool.map(lambda _: client(model, until), range(conc)))
            time.sleep(1)
            stop.set()
            scraper.join()
    plot(samples, t0, marks, out)


def plot(samples, t0, marks, out: Path) -> None:
    fig, axes = plt.subplots(3, 2, figsize=(13, 10))
    fig.suptitle("onnxrs: tritonserver /metrics scraped every 0.5 s during a changing workload (2-core machine)")
    models = ["mlp_fp32", "mlp_batching", "gather_fail"]
    dt = lambda i: samples[i + 1][0] - samples[i][0]  # noqa: E731

    def rate(name, **labels):
        out_t, out_v = [], []
        for i in range(len(samples) - 1):
            a, b = samples[i][1].sum(name, **labels), samples[i + 1][1].sum(name, **labels)
            if a is not None and b is not None:
                out_t.append(samples[i + 1][0] - t0)
                out_v.append((b - a) / dt(i))
        return np.array(out_t), np.array(out_v)

    def ratio(num, den, **labels):
        """Increase of `num` over increase of `den` between scrapes (NaN where `den` did not move)."""
        t, n = rate(num, **labels)
        _, d = rate(den, **labels)
        return t, np.divide(n, d, out=np.full_like(n, np.nan), where=d > 0)

    ax = axes[0][0]
    for m in models:
        ax.plot(*rate("nv_inference_count", model=m), label=m)
    ax.set_title("Throughput (inferences/s)")
    ax = axes[0][1]
    for m in models:
        ax.plot(*ratio("onnxrs_ort_run_duration_us_sum", "onnxrs_ort_run_duration_us_count", model=m), label=m)
    ax.set_title("ONNX Runtime run time, mean per run (us)")
    ax = axes[1][0]
    for stage in ("queue", "compute_input", "compute_infer", "compute_output"):
        ax.plot(*ratio(f"nv_inference_{stage}_duration_us", "nv_inference_request_success", model="mlp_fp32"), label=stage)
    ax.set_title("mlp_fp32: time per request by stage (us)")
    ax.set_yscale("log")
    ax = axes[1][1]
    for m in models:
        ax.plot(*ratio("onnxrs_batch_size_sum", "onnxrs_batch_size_count", model=m), label=m)
    ax.set_title("Executed batch size (mean rows per run)")
    ax = axes[2][0]
    for kind in ("ort_failure", "bad_input", "output_allocation"):
        ax.plot(*rate("onnxrs_request_errors_total", model="gather_fail", kind=kind), label=kind)
    ax.set_title("gather_fail: backend errors by kind (/s)")
    ax = axes[2][1]
    for m in models:
        ts = [tt - t0 for tt, mm in samples]
        ax.plot(ts, [(mm.sum("onnxrs_memory_bytes", model=m) or 0) / 2**20 for _, mm in samples], label=m)
    ax.set_title("Session memory, CPU (MiB)")
    for row in axes:
        for ax in row:
            for x, name in marks:
                ax.axvline(x, color="grey", lw=0.6, ls="--")
                ax.text(x, 1.0, f" {name}", transform=ax.get_xaxis_transform(), fontsize=7, va="top", color="grey")
            ax.set_xlabel("seconds")
            ax.legend(fontsize=7)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=80)
    print(f"wrote {out}")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parent.parent / "build" / "bench" / "observability.png")

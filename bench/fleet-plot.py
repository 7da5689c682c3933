#!/usr/bin/env python3
"""Renders docs/fleet.png: a fleet's run as Prometheus recorded it. tests/test_fleet.py writes
build/fleet/fleet-run.json when it passes (three replicas, an uneven workload, a burst of
failures, a queue held at 40 requests); this draws the traffic per replica and per model, the
error ratio and the queue against their alerts' thresholds, when Prometheus's alerts were firing
(shaded) and when Alertmanager's notifications reached the webhook (marks).

    python bench/fleet-plot.py [RUN.json] [OUT.png]

RUN.json defaults to build/fleet/fleet-run.json, OUT.png to build/fleet/fleet.png; the README
shows docs/fleet.png.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def main(run_file: Path, out: Path) -> None:
    run = json.loads(run_file.read_text())
    t0 = run["start"]
    name = {inst: f"replica {i}" for i, inst in enumerate(run["replicas"])}

    def lines(key, label):
        out = [(label(s["metric"]), [float(t) - t0 for t, _ in s["values"]], [float(v) for _, v in s["values"]])
               for s in run["series"][key]]
        return sorted(out, key=lambda x: x[0])

    def firing(alertname, **labels):
        """(start, end) spans, in seconds of the run, when Prometheus had the alert firing."""
        spans = []
        for s in run["series"]["firing"]:
            m = s["metric"]
            if m["alertname"] != alertname or any(m.get(k) != v for k, v in labels.items()):
                continue
            ts = [float(t) - t0 for t, _ in s["values"]]
            begin = prev = ts[0]
            for t in ts[1:]:
                if t - prev > 1.0:  # a gap: the alert stopped firing
                    spans.append((begin, prev))
                    begin = t
                prev = t
            spans.append((begin, prev))
        return spans

    def notified(ax, alertname, **labels):
        for n in run["notifications"]:
            if n["labels"]["alertname"] == alertname and all(n["labels"].get(k) == v for k, v in labels.items()):
                resolved = n["status"] == "resolved"
                ax.axvline(n["time"] - t0, color="green" if resolved else "red", lw=1.2)
                ax.text(n["time"] - t0, 0.98 - 0.05 * resolved, " resolved" if resolved else " notified", color="green" if resolved else "red",
                        transform=ax.get_xaxis_transform(), fontsize=7, va="top")

    fig, axes = plt.subplots(2, 2, figsize=(13, 8))
    fig.suptitle("onnxrs fleet: 3 tritonserver replicas, Prometheus (1 s scrapes) and Alertmanager, from tests/test_fleet.py")
    ax = axes[0][0]
    for label, t, v in lines("requests_by_replica", lambda m: name[m["instance"]]):
        ax.plot(t, v, label=label)
    ax.set_title("Requests/s per replica (instance label), 5 s rate")
    ax = axes[0][1]
    for label, t, v in lines("success_by_model", lambda m: m["model"] + " ok"):
        ax.plot(t, v, label=label)
    for label, t, v in lines("failure_by_model", lambda m: m["model"] + " failed"):
        if max(v, default=0) > 0:
            ax.plot(t, v, ls="--", label=label)
    ax.set_title("Fleet requests/s by model, 5 s rate")
    ax = axes[1][0]
    for label, t, v in lines("error_ratio", lambda m: m["model"]):
        if m_has_data(v):
            ax.plot(t, v, label=label)
    ax.axhline(0.05, color="grey", ls=":", label="alert threshold")
    for a, b in firing("OnnxrsErrorRateHigh", model="gather_alert"):
        ax.axvspan(a, b, color="red", alpha=0.12)
    notified(ax, "OnnxrsErrorRateHigh", model="gather_alert")
    ax.set_title("onnxrs:request_error_ratio:5m; OnnxrsErrorRateHigh{model=gather_alert} firing")
    ax = axes[1][1]
    for label, t, v in lines("pending", lambda m: name[m["instance"]]):
        ax.plot(t, v, label=label)
    ax.axhline(32, color="grey", ls=":", label="alert threshold")
    for a, b in firing("OnnxrsQueueGrowing", model="mlp_queue"):
        ax.axvspan(a, b, color="red", alpha=0.12)
    notified(ax, "OnnxrsQueueGrowing", model="mlp_queue")
    ax.set_title("mlp_queue pending requests; OnnxrsQueueGrowing firing")
    for row in axes:
        for ax in row:
            for i, (t, mark) in enumerate(run["marks"]):
                ax.axvline(t - t0, color="grey", lw=0.6, ls="--")
                ax.text(t - t0, 0.02 + 0.05 * (i % 2), f" {mark}", transform=ax.get_xaxis_transform(), fontsize=7, color="grey")
            ax.set_xlabel("seconds")
            ax.legend(fontsize=7, loc="center left")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=80)
    print(f"wrote {out}")


def m_has_data(values) -> bool:
    """A series worth a line: some value that is a number (a model without traffic has only NaN)."""
    return any(v == v for v in values)


if __name__ == "__main__":
    args = sys.argv[1:]
    main(Path(args[0]) if args else ROOT / "build" / "fleet" / "fleet-run.json",
         Path(args[1]) if len(args) > 1 else ROOT / "build" / "fleet" / "fleet.png")

"""Telemetry: onnxrs's own metrics after a known workload, switching them off, the backend's
activities in Triton's trace file and as OpenTelemetry spans, its lines in Triton's log in the chosen format, the
consistency-check command, and the Prometheus rules and Grafana dashboard checked against a real
server's metric names."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time

import numpy as np
import pytest
import requests

from make_models import GATHER_TABLE
from server import ROOT, OtlpReceiver, json_body

DEPLOY = ROOT / "deploy"
CHECK = DEPLOY / "onnxrs-check"


def gather(s, idx, request_id=None):
    """gather_fail over plain HTTP JSON; the requests.Response."""
    body = json_body({"IDX": (np.asarray(idx, dtype=np.int64), "INT64")})
    if request_id is not None:
        body["id"] = request_id
    return requests.post(f"{s.url}/v2/models/gather_fail/infer", json=body, timeout=30)


# onnxrs's steps in a traced request, in order (execute/reporting.rs).
ACTIVITIES = [
    "ONNXRS_GATHER_START",
    "ONNXRS_GATHER_END",
    "ONNXRS_ORT_RUN_START",
    "ONNXRS_ORT_RUN_END",
    "ONNXRS_SCATTER_START",
    "ONNXRS_SCATTER_END",
]

WORKLOAD_GOOD = [[[0, 1]], [[4], [3]], [[2, 2, 2]], [[1]], [[0], [1], [2]]]
WORKLOAD_BAD = [[[5]], [[0, 9]]]


def run_workload(s):
    for idx in WORKLOAD_GOOD:
        r = gather(s, idx)
        assert r.status_code == 200, r.text
        assert r.json()["outputs"][0]["data"] == GATHER_TABLE[np.array(idx)].flatten().tolist()
    for idx in WORKLOAD_BAD:
        assert gather(s, idx).status_code == 400


def test_backend_metrics_after_a_known_workload(server_for):
    s = server_for(["gather_fail", "mlp_fp32"])
    run_workload(s)
    st = s.stats("gather_fail")
    m = s.metrics()
    lbl = {"model": "gather_fail", "version": "1"}
    runs = len(WORKLOAD_GOOD)  # sent one at a time: one run each
    rows = [len(i) for i in WORKLOAD_GOOD]
    elements = [len(i) * len(i[0]) for i in WORKLOAD_GOOD]
    assert st["execution_count"] == runs
    # Histograms: one observation per run; batch sizes sum to the rows; buckets cumulative.
    assert m.get("onnxrs_ort_run_duration_us_count", **lbl) == runs
    assert m.get("onnxrs_ort_run_duration_us_bucket", le="+Inf", **lbl) == runs
    assert m.get("onnxrs_batch_size_count", **lbl) == runs
    assert m.get("onnxrs_batch_size_sum", **lbl) == sum(rows) == st["inference_count"]
    for le, want in [("1", rows.count(1)), ("2", sum(r <= 2 for r in rows)), ("4", runs), ("+Inf", runs)]:
        assert m.get("onnxrs_batch_size_bucket", le=le, **lbl) == want, le
    for hist in ("onnxrs_ort_run_duration_us", "onnxrs_batch_size"):
        buckets = sorted(
            ((float("inf") if l["le"] == "+Inf" else float(l["le"])), v)
            for n, l, v in m.samples
            if n == hist + "_bucket" and l.get("model") == "gather_fail"
        )
        counts = [v for _, v in buckets]
        assert counts == sorted(counts), (hist, buckets)
    # The run histogram's sum is the ORT time, which Triton's compute_infer contains. The two can
    # be equal (the same timestamps): the histogram adds its observations in floating point, so
    # allow it one nanosecond of rounding.
    run_us = m.get("onnxrs_ort_run_duration_us_sum", **lbl)
    assert 0 < run_us <= st["inference_stats"]["compute_infer"]["ns"] / 1e3 + 1e-3
    # Bytes: int64 indices in, float32 values out, only for the runs that succeeded.
    assert m.get("onnxrs_input_bytes_total", **lbl) == 8 * sum(elements)
    assert m.get("onnxrs_output_bytes_total", **lbl) == 4 * sum(elements)
    gather_us, scatter_us = m.get("onnxrs_gather_duration_us_total", **lbl), m.get("onnxrs_scatter_duration_us_total", **lbl)
    inf = st["inference_stats"]
    assert 0 < gather_us <= inf["compute_input"]["ns"] / 1e3 + 1
    assert 0 < scatter_us <= inf["compute_output"]["ns"] / 1e3 + 1
    # Errors by kind: the two ORT failures, nothing else; and they are Triton's failures.
    errors = {l["kind"]: v for n, l, v in m.samples if n == "onnxrs_request_errors_total" and l.get("model") == "gather_fail"}
    assert errors == {"bad_input": 0, "ort_failure": 2, "output_allocation": 0, "cancelled": 0, "internal": 0}
    assert inf["fail"]["count"] == 2
    # Gauges: memory equals what the statistics show, load times are positive.
    mem = {u["type"]: u["byte_size"] for u in st["memory_usage"]}
    assert m.get("onnxrs_memory_bytes", device="cpu", **lbl) == mem["CPU"]
    assert m.get("onnxrs_model_load_duration_ms", **lbl) > 0
    assert m.get("onnxrs_instance_load_duration_ms", instance="gather_fail_0_0", **lbl) > 0
    # The other model has its own series; the families carry Prometheus help texts.
    assert m.get("onnxrs_batch_size_count", model="mlp_fp32", version="1") == 0
    assert "# HELP onnxrs_ort_run_duration_us Duration of ONNX Runtime session runs in microseconds" in m.text
    assert "# TYPE onnxrs_request_errors_total counter" in m.text


def test_metrics_can_be_switched_off(server_for, tmp_path):
    # Per model: the parameter metrics "0".
    s = server_for(["gather_fail", "mlp_fp32"])
    s.stop()
    cfg = s.repo / "gather_fail" / "config.pbtxt"
    cfg.write_text(cfg.read_text() + 'parameters { key: "metrics" value: { string_value: "0" } }\n')
    s.start()
    run_workload(s)
    names = {(n, l.get("model")) for n, l, _ in s.metrics().samples if n.startswith("onnxrs_")}
    assert not any(model == "gather_fail" for _, model in names), names
    assert ("onnxrs_batch_size_count", "mlp_fp32") in names
    s.stop()
    # For the whole backend: --backend-config=onnxrs,metrics=0.
    s2 = server_for(["mlp_fp32"], "--backend-config=onnxrs,metrics=0")
    assert not [n for n, _, _ in s2.metrics().samples if n.startswith("onnxrs_")]
    assert s2.metrics().get("nv_inference_count", model="mlp_fp32", version="1") == 0


def test_trace_holds_the_backend_activities(server_for, tmp_path):
    trace = tmp_path / "trace.json"
    s = server_for(
        ["gather_fail"],
        "--trace-config=mode=triton",
        f"--trace-config=triton,file={trace}",
        "--trace-config=level=TIMESTAMPS",
        "--trace-config=rate=1",
    )
    # Write each trace as soon as it completes.
    requests.post(f"{s.url}/v2/trace/setting", json={"log_frequency": "1"}, timeout=10).raise_for_status()
    assert gather(s, [[0, 1]]).status_code == 200
    deadline = time.monotonic() + 20
    files = []
    while time.monotonic() < deadline and not files:
        files = sorted(tmp_path.glob("trace.json*"))
        time.sleep(0.2)
    assert files, "no trace file written"
    events = {}
    for f in files:
        for entry in json.loads(f.read_text()):
            for t in entry.get("timestamps", []):
                events[t["name"]] = t["ns"]
    assert all(a in events for a in ACTIVITIES), sorted(events)
    times = [events[a] for a in ACTIVITIES]
    assert times == sorted(times), dict(zip(ACTIVITIES, times))
    # Inside Triton's own compute window, and the ORT run is what Triton calls compute infer.
    assert events["COMPUTE_START"] <= events["ONNXRS_GATHER_START"]
    assert events["ONNXRS_SCATTER_END"] <= events["COMPUTE_END"]
    assert events["ONNXRS_GATHER_END"] == events["ONNXRS_ORT_RUN_START"] == events["COMPUTE_INPUT_END"]
    assert events["ONNXRS_ORT_RUN_END"] == events["ONNXRS_SCATTER_START"] == events["COMPUTE_OUTPUT_START"]


def test_opentelemetry_spans_hold_the_backend_steps(server_for):
    """Triton's OpenTelemetry mode exports OTLP/HTTP to a receiver of ours: each traced request's
    trace holds onnxrs's gather, ORT run and scatter as spans of the request, in order, inside
    the compute span's window, with the model, version and request id on the request span."""
    with OtlpReceiver() as receiver:
        s = server_for(
            ["gather_fail"],
            "--trace-config=mode=opentelemetry",
            f"--trace-config=opentelemetry,url={receiver.url}",
            # Export each span batch at once instead of every 5 s.
            "--trace-config=opentelemetry,bsp_schedule_delay=100",
            "--trace-config=level=TIMESTAMPS",
            "--trace-config=rate=1",
        )
        sent = {f"otel-{i}": idx for i, idx in enumerate([[[0, 1]], [[4], [3]], [[2, 2, 2]]])}
        for request_id, idx in sent.items():
            r = gather(s, idx, request_id)
            assert r.status_code == 200, r.text
            assert r.json()["id"] == request_id
        deadline = time.monotonic() + 30
        while True:
            traces = spans_by_request_id(receiver.snapshot())
            if all(len(traces.get(i, [])) >= 6 for i in sent) or time.monotonic() > deadline:
                break
            time.sleep(0.2)
    assert set(sent) <= set(traces), sorted(traces)
    for request_id in sent:
        spans = {sp.name: sp for sp in traces[request_id]}
        request = spans["gather_fail"]
        attributes = {a.key: a.value for a in request.attributes}
        assert attributes["triton.model_name"].string_value == "gather_fail"
        assert attributes["triton.model_version"].int_value == 1
        assert attributes["triton.request_id"].string_value == request_id
        compute = spans["compute"]
        assert compute.parent_span_id == request.span_id
        compute_events = {e.name: e.time_unix_nano for e in compute.events}
        steps = [spans.get(n) for n in ("ONNXRS_GATHER", "ONNXRS_ORT_RUN", "ONNXRS_SCATTER")]
        assert all(steps), sorted(spans)
        for step in steps:
            # A span of the request (Triton parents every backend span there), bounded by its
            # own _START and _END activities.
            assert step.parent_span_id == request.span_id
            assert [e.name for e in step.events] == [step.name + "_START", step.name + "_END"]
            assert [e.time_unix_nano for e in step.events] == [step.start_time_unix_nano, step.end_time_unix_nano]
        gather_span, ort, scatter = steps
        # In order, back to back, inside the compute span; the ORT run is Triton's compute infer.
        assert compute.start_time_unix_nano <= gather_span.start_time_unix_nano
        assert gather_span.end_time_unix_nano == ort.start_time_unix_nano == compute_events["COMPUTE_INPUT_END"]
        assert ort.end_time_unix_nano == scatter.start_time_unix_nano == compute_events["COMPUTE_OUTPUT_START"]
        assert scatter.end_time_unix_nano <= compute.end_time_unix_nano
        assert compute_events["COMPUTE_END"] == compute.end_time_unix_nano


def spans_by_request_id(spans) -> dict[str, list]:
    """The spans of each trace whose request span carries a triton.request_id."""
    by_trace: dict[bytes, list] = {}
    for sp in spans:
        by_trace.setdefault(sp.trace_id, []).append(sp)
    out = {}
    for trace in by_trace.values():
        for sp in trace:
            for a in sp.attributes:
                if a.key == "triton.request_id":
                    out[a.value.string_value] = trace
    return out


def test_backend_lines_in_tritons_log_in_the_chosen_format(server_for, tmp_path):
    log = tmp_path / "server.log"
    s = server_for(["gather_fail"], "--log-verbose=1", "--log-format=ISO8601", f"--log-file={log}")
    assert gather(s, [[0, 9]], request_id="req-42").status_code == 400
    s.stop()
    lines = log.read_text().splitlines()
    ours = [l for l in lines if "onnxrs:" in l]
    assert ours, lines[-20:]
    iso = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ [IWEV] ")
    assert all(iso.match(l) for l in ours), [l for l in ours if not iso.match(l)][:3]
    text = "\n".join(ours)
    # The resolved session settings, once per model load.
    assert len([l for l in ours if "onnxrs: model 'gather_fail' version 1:" in l and "threads: " in l]) == 1, text
    assert "instance 'gather_fail_0_0' ready" in text
    # A failed request's line names the model, version, instance and the client's request id.
    failed = [l for l in ours if "req-42" in l]
    assert failed and "model 'gather_fail' version 1 instance 'gather_fail_0_0'" in failed[0], text
    assert "out of data bounds" in failed[0]


def test_consistency_check_command(server_for, tmp_path):
    s = server_for(["gather_fail", "mlp_fp32"])
    run_workload(s)
    metrics_url = f"http://127.0.0.1:{s.metrics_port}"
    r = subprocess.run([sys.executable, str(CHECK), f"--url={s.url}", f"--metrics-url={metrics_url}"], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "0 contradictions" in r.stdout
    # A doctored copy: one success counted twice in the metrics, one failure recorded as success.
    stats = requests.get(f"{s.url}/v2/models/stats", timeout=10).json()
    text = requests.get(f"{metrics_url}/metrics", timeout=10).text
    text = re.sub(
        r'(nv_inference_request_success\{model="gather_fail",version="1"\}) (\d+)',
        lambda mm: f"{mm.group(1)} {int(mm.group(2)) + 1}",
        text,
    )
    gf = next(x for x in stats["model_stats"] if x["name"] == "gather_fail")
    gf["inference_stats"]["queue"]["ns"] += gf["inference_stats"]["success"]["ns"]
    (tmp_path / "stats.json").write_text(json.dumps(stats))
    (tmp_path / "metrics.txt").write_text(text)
    r = subprocess.run(
        [sys.executable, str(CHECK), f"--stats={tmp_path / 'stats.json'}", f"--metrics={tmp_path / 'metrics.txt'}"],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 1, r.stdout
    assert "gather_fail v1: successful requests: metrics say 6, stats say 5" in r.stdout
    assert "stage times add up to" in r.stdout


def test_prometheus_rules_check_and_unit_tests(promtool):
    rules = DEPLOY / "prometheus"
    r = subprocess.run([promtool, "check", "rules", "onnxrs-rules.yml"], cwd=rules, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    r = subprocess.run([promtool, "test", "rules", "onnxrs-rules.test.yml"], cwd=rules, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


# Metrics a GPU host exports and this CPU machine cannot.
GPU_ONLY = {"nv_gpu_memory_used_bytes", "nv_gpu_memory_total_bytes"}


def metric_names_in(text: str) -> set[str]:
    return set(re.findall(r"\b((?:nv|onnxrs)_[a-z0-9_]+)\b", text))


def test_dashboard_and_rules_use_only_metrics_the_server_exports(server_for):
    s = server_for(["gather_fail", "decoder_tiny"])
    run_workload(s)
    # A generator's request: the generation families' histograms get their first observations.
    code, body = s.request("POST", "/v2/models/decoder_tiny/generate", {"input_ids": [5, 6], "max_tokens": 3, "stream": False})
    assert code == 200, body
    exported = s.metrics().names()
    dashboard = json.loads((DEPLOY / "grafana" / "onnxrs-dashboard.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    assert len(exprs) >= 10
    used = metric_names_in("\n".join(exprs)) | metric_names_in((DEPLOY / "prometheus" / "onnxrs-rules.yml").read_text())
    missing = sorted(used - exported - GPU_ONLY)
    assert not missing, f"used by the dashboard or rules but not exported: {missing}"
    assert {"onnxrs_ort_run_duration_us_bucket", "nv_inference_count", "onnxrs_memory_bytes"} <= used

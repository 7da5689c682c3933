"""A fleet, watched the way an operator runs it: three tritonserver replicas with onnxrs, a real
Prometheus scraping them with deploy/prometheus/onnxrs-rules.yml loaded, a real Alertmanager
and a webhook receiver behind it. After a scripted workload spread unevenly over the replicas:
the fleet-wide sums in Prometheus equal the replicas' /stats (and, for a generative model, the
tokens and requests its clients got), every recording rule and every dashboard query returns
plausible data, and the alerts (error ratio, growing queue; requests waiting to generate and
time to first token) fire, reach the receiver and resolve.

Prometheus scrapes and evaluates every second. The rules' `for:` durations (minutes) are
shortened to seconds in the copy Prometheus loads, and only they: the recording rules and alert
expressions are the committed ones (checked below)."""

from __future__ import annotations

import json
import math
import re
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from types import SimpleNamespace

import numpy as np
import pytest
import requests
import tritonclient.grpc as grpcclient
import yaml

from fleet import Alertmanager, Prometheus, Webhook, wait_until
from make_models import GATHER_TABLE
from server import ROOT, TritonServer, json_body, make_repo

DEPLOY = ROOT / "deploy"
RULES = DEPLOY / "prometheus" / "onnxrs-rules.yml"
DASHBOARD = DEPLOY / "grafana" / "onnxrs-dashboard.json"
REPLICAS = 3
# The alert rules wait this long instead of their 5 or 10 minutes.
FOR = "2s"
# The models the scripted workload drives; the other two are kept for the alert tests.
WORKLOAD_MODELS = ["mlp_fp32", "gather_fail"]
# The generative model the workload drives, and the one the generation alerts' test holds full.
GEN_MODEL = "decoder_tiny"
GEN_WAIT = "gen_wait"
GEN_MODELS = [GEN_MODEL, GEN_WAIT]
ALL_MODELS = WORKLOAD_MODELS + ["gather_alert", "mlp_queue"] + GEN_MODELS
# mlp_queue forms a batch only when it is full (64 rows), so requests wait in its queue until the
# test sends the last of them: a queue that is exactly as long as the test makes it.
QUEUE_BATCH = 64


def copy_model(repo, src: str, dst: str, edits: list[tuple[str, str]]):
    shutil.copytree(repo / src, repo / dst)
    cfg = repo / dst / "config.pbtxt"
    text = cfg.read_text().replace(f'name: "{src}"', f'name: "{dst}"')
    for old, new in edits:
        assert old in text, (dst, old)
        text = text.replace(old, new)
    cfg.write_text(text)


def rules_with_short_for(dest):
    """The committed rules file with every `for:` shortened to FOR, and nothing else changed."""
    src = RULES.read_text().splitlines(keepends=True)
    out = [re.sub(r"^(\s+for: )\S+$", rf"\g<1>{FOR}", line) for line in src]
    changed = [a for a, b in zip(src, out) if a != b]
    assert changed and all(a.strip().startswith("for:") for a in changed), changed
    dest.write_text("".join(out))
    return dest


# ---- requests

def post(s, model: str, inputs, timeout=60):
    return requests.post(f"{s.url}/v2/models/{model}/infer", json=json_body(inputs), timeout=timeout)


def gather(s, model: str, idx):
    return post(s, model, {"IDX": (np.asarray(idx, dtype=np.int64), "INT64")})


def concurrently(n: int, calls) -> list:
    with ThreadPoolExecutor(n) as pool:
        return list(pool.map(lambda f: f(), calls))


# Per replica, the generator's requests: (prompt, max_tokens) each, over HTTP `generate` with
# ignore_eos, so each ends at its max_tokens (finished_reason "length"). The last replica none.
GEN_WORKLOAD = [
    [([5, 6, 7], 8), ([9], 4), ([3, 4, 5, 6, 7, 8, 9], 6), ([11, 12], 8), ([20], 3), ([30, 31, 32], 5)],
    [([5], 2), ([40, 41], 7), ([8, 8, 8, 8], 1)],
    [],
]


def generate(s, model: str, prompt: list[int], max_tokens: int, timeout=60):
    return requests.post(f"{s.url}/v2/models/{model}/generate", timeout=timeout,
                         json={"input_ids": prompt, "max_tokens": max_tokens, "ignore_eos": True, "stream": False})


def output_ids(answer) -> list[int]:
    """A `generate` answer's tokens (Triton writes a one-element array as a plain number)."""
    ids = answer.json()["output_ids"]
    return ids if isinstance(ids, list) else [ids]


# Per replica: (requests of mlp_fp32 as rows each, concurrency), (good gather_fail index lists,
# bad ones, concurrency). Uneven on purpose: the busiest replica gets most of both, the last one
# no gather_fail traffic at all. Bad indices fail inside ONNX Runtime ("ort_failure"); they are
# sent in the middle of the good ones, so they share dynamic batches with them (gather_fail waits
# 300 ms to fill one) and the backend's one-by-one retry runs too.
WORKLOAD = [
    {"mlp": ([1] * 40 + [2] * 8, 8), "gather": ([[[0, 1]]] * 12 + [[[4], [3]]] * 2, [[[5]]] * 2 + [[[0, 9]]], 8)},
    {"mlp": ([1] * 10 + [3] * 2, 4), "gather": ([[[2, 2, 2]]] * 4, [[[7]]], 5)},
    {"mlp": ([1, 2, 1], 1), "gather": ([], [], 1)},
]


def run_workload(replicas) -> dict[str, dict[str, int]]:
    """Drives WORKLOAD; what it sent per model: successful requests, failed ones, rows."""
    sent = {m: {"success": 0, "fail": 0, "inferences": 0} for m in WORKLOAD_MODELS}
    sent[GEN_MODEL] = {"requests": 0, "prompt_tokens": 0, "tokens": 0}
    for s, gen in zip(replicas, GEN_WORKLOAD):
        answers = concurrently(3, [lambda p=p, n=n: generate(s, GEN_MODEL, p, n) for p, n in gen])
        for (prompt, n), a in zip(gen, answers):
            assert a.status_code == 200, a.text
            assert len(output_ids(a)) == n, a.text
            sent[GEN_MODEL]["requests"] += 1
            sent[GEN_MODEL]["prompt_tokens"] += len(prompt)
            sent[GEN_MODEL]["tokens"] += n
        # A request is counted by the generation loop just after its last response is sent, and
        # its gauges set after that step: the figures are exact once it has (the client may read
        # its answer a moment before).
        def counted(s=s, n=len(gen)):
            m = s.metrics()
            done = m.sum("onnxrs_request_success_total", model=GEN_MODEL) or 0
            return done == n and (m.sum("onnxrs_num_requests_running", model=GEN_MODEL) or 0) == 0

        wait_until(f"{len(gen)} generation requests counted", counted, 30)
    for s, w in zip(replicas, WORKLOAD):
        rows, conc = w["mlp"]
        x = lambda r: np.full((r, 16), 0.5, dtype=np.float32)  # noqa: E731
        answers = concurrently(conc, [lambda r=r: post(s, "mlp_fp32", {"X": (x(r), "FP32")}) for r in rows])
        assert [a.status_code for a in answers] == [200] * len(rows), [a.text for a in answers if a.status_code != 200]
        sent["mlp_fp32"]["success"] += len(rows)
        sent["mlp_fp32"]["inferences"] += sum(rows)
        good, bad, conc = w["gather"]
        half = len(good) // 2
        order = [(i, True) for i in good[:half]] + [(i, False) for i in bad] + [(i, True) for i in good[half:]]
        answers = concurrently(conc, [lambda i=i: gather(s, "gather_fail", i) for i, _ in order])
        for (idx, ok), a in zip(order, answers):
            if ok:
                assert a.status_code == 200, a.text
                assert a.json()["outputs"][0]["data"] == GATHER_TABLE[np.array(idx)].flatten().tolist()
            else:
                assert a.status_code == 400 and "out of data bounds" in a.text, a.text
        sent["gather_fail"]["success"] += len(good)
        sent["gather_fail"]["fail"] += len(bad)
        sent["gather_fail"]["inferences"] += sum(len(idx) for idx in good)
    return sent


# ---- the fleet

@pytest.fixture(scope="module")
def fleet(tmp_path_factory, request):
    tmp = tmp_path_factory.mktemp("fleet")
    repo = make_repo(tmp / "repo", WORKLOAD_MODELS + [GEN_MODEL, "decoder_long"])
    # The generation alerts' model: decoder_long (a context long enough to hold its place for the
    # whole test) with one place, so every other request waits.
    (repo / "decoder_long").rename(repo / GEN_WAIT)
    cfg = repo / GEN_WAIT / "config.pbtxt"
    text = cfg.read_text().replace('name: "decoder_long"', f'name: "{GEN_WAIT}"')
    cfg.write_text(text + 'instance_group [ { kind: KIND_CPU count: 1 } ]\n'
                   'parameters { key: "max_sequences" value: { string_value: "1" } }\n')
    # The error-ratio alert's model: gather_fail without the 300 ms wait for a full batch.
    copy_model(repo, "gather_fail", "gather_alert", [("max_queue_delay_microseconds: 300000", "")])
    copy_model(repo, "mlp_fp32", "mlp_queue", [
        ("max_batch_size: 8", f"max_batch_size: {QUEUE_BATCH}"),
        ("dynamic_batching { }", f"dynamic_batching {{ preferred_batch_size: [ {QUEUE_BATCH} ] max_queue_delay_microseconds: 600000000 }}"),
        ("count: 2", "count: 1"),
    ])
    replicas = [TritonServer(repo, log_dir=tmp) for _ in range(REPLICAS)]
    processes = []
    failed_before = request.session.testsfailed
    # Stopped in reverse order whatever happens: Prometheus, Alertmanager, the webhook, the replicas.
    with ExitStack() as stack:
        for r in replicas:
            stack.callback(r.stop)
        # In parallel: each replica's start is mostly waiting for its models to load.
        concurrently(REPLICAS, [r.start for r in replicas])
        hook = stack.enter_context(Webhook())
        am = stack.enter_context(Alertmanager(tmp / "alertmanager", hook.url))
        processes.append(am)
        targets = [instance_of(r) for r in replicas]
        prom = stack.enter_context(Prometheus(tmp / "prometheus", targets, rules_with_short_for(tmp / "onnxrs-rules.yml"), am.addr))
        processes.append(prom)
        f = SimpleNamespace(replicas=replicas, prom=prom, am=am, hook=hook, tmp=tmp, start=time.time(), marks=[])
        f.logs = lambda: "\n".join([p.log_text() for p in processes] + [r.log_text()[-8000:] for r in replicas])
        try:
            # Every replica scraped once before the workload: its counters' series start at
            # zero, so `rate` counts the workload's first requests too.
            prom.wait_scraped_after(time.time())
            f.marks.append((time.time(), "workload"))
            f.sent = run_workload(replicas)
            prom.wait_scraped_after(time.time())
            f.scraped = time.time()
        except BaseException:
            print_logs(request, processes, replicas)
            raise
        yield f
        if request.session.testsfailed > failed_before:
            print_logs(request, processes, replicas)
        else:
            write_run(f)


# What bench/fleet-plot.py draws, as Prometheus recorded it during the run: the fleet's traffic
# per replica and per model, the error ratio, the queue, the alerts and the notifications.
# Windows of 5 s, not the dashboard's minutes: the whole run lasts well under a minute.
RUN_QUERIES = {
    "requests_by_replica": "sum by (instance) (rate(nv_inference_request_success[5s])) + sum by (instance) (rate(nv_inference_request_failure[5s]))",
    "success_by_model": "sum by (model) (rate(nv_inference_request_success[5s]))",
    "failure_by_model": "sum by (model) (rate(nv_inference_request_failure[5s]))",
    "error_ratio": "onnxrs:request_error_ratio:5m",
    "pending": 'nv_inference_pending_request_count{model="mlp_queue"}',
    "firing": 'ALERTS{alertstate="firing"}',
}
RUN_FILE = ROOT / "build" / "fleet" / "fleet-run.json"


def write_run(f):
    """The run's series and notifications into build/fleet/fleet-run.json (bench/fleet-plot.py)."""
    end = time.time()
    run = {
        "start": f.start,
        "end": end,
        "replicas": [instance_of(r) for r in f.replicas],
        "marks": f.marks,
        "series": {k: f.prom.query_range(q, f.start, end, 0.5) for k, q in RUN_QUERIES.items()},
        "notifications": [{"time": t, **a} for status in ("firing", "resolved") for t, a in f.hook.alerts(status)],
    }
    RUN_FILE.parent.mkdir(parents=True, exist_ok=True)
    RUN_FILE.write_text(json.dumps(run))


def print_logs(request, processes, replicas):
    """Every log of the fleet, past pytest's capture: a failure is explained by all of them."""
    with request.config.pluginmanager.getplugin("capturemanager").global_and_fixture_disabled():
        print("\n" + "\n".join(p.log_text() for p in processes))
        for r in replicas:
            print(f"----- tritonserver log ({r.log_path}) -----\n{r.log_text()[-8000:]}")


def instance_of(s) -> str:
    return f"127.0.0.1:{s.metrics_port}"


def by_model(result, *labels: str) -> dict:
    return {tuple(l.get(k, "") for k in ("model", *labels)) if labels else l.get("model"): v for l, v in result}


# Triton's counters and the /stats fields that hold the same count.
COUNTERS = {
    "nv_inference_request_success": lambda st: st["inference_stats"]["success"]["count"],
    "nv_inference_request_failure": lambda st: st["inference_stats"]["fail"]["count"],
    "nv_inference_count": lambda st: st["inference_count"],
    "nv_inference_exec_count": lambda st: st["execution_count"],
}


def test_fleet_sums_in_prometheus_equal_the_replicas_stats(fleet):
    prom = fleet.prom
    stats = {instance_of(s): {m: s.stats(m) for m in ALL_MODELS} for s in fleet.replicas}
    checked = 0
    for metric, field in COUNTERS.items():
        fleet_sum = by_model(prom.query(f"sum by (model) ({metric})", at=fleet.scraped))
        for m in ALL_MODELS:
            assert fleet_sum[m] == sum(field(st[m]) for st in stats.values()), (metric, m)
            checked += 1
        # Per replica, told apart by `instance` (the failure counter has one series per reason).
        per_replica = by_model(prom.query(f"sum by (model, instance) ({metric})", at=fleet.scraped), "instance")
        assert {i for _, i in per_replica} == set(stats)
        for (m, inst), v in per_replica.items():
            assert v == field(stats[inst][m]), (metric, m, inst)
            checked += 1
    # And the sums are what the workload sent: its successes, failures and rows.
    for m in WORKLOAD_MODELS:
        sent = fleet.sent[m]
        assert sum(COUNTERS["nv_inference_request_success"](st[m]) for st in stats.values()) == sent["success"]
        assert sum(COUNTERS["nv_inference_request_failure"](st[m]) for st in stats.values()) == sent["fail"]
        assert sum(COUNTERS["nv_inference_count"](st[m]) for st in stats.values()) == sent["inferences"]
    # onnxrs's own error counter agrees: every failure was ONNX Runtime's.
    errors = by_model(prom.query('sum by (model) (onnxrs_request_errors_total{kind="ort_failure"})', at=fleet.scraped))
    assert {m: errors[m] for m in WORKLOAD_MODELS} == {m: fleet.sent[m]["fail"] for m in WORKLOAD_MODELS}
    # The unevenness is visible: the last replica served no gather_fail request.
    assert stats[instance_of(fleet.replicas[2])]["gather_fail"]["inference_stats"]["success"]["count"] == 0
    # The generator: fleet sums of onnxrs's generation metrics equal what its clients got.
    gen = fleet.sent[GEN_MODEL]
    want = {
        "onnxrs_time_to_first_token_seconds_count": gen["requests"],
        "onnxrs_e2e_request_latency_seconds_count": gen["requests"],
        "onnxrs_request_queue_time_seconds_count": gen["requests"],
        'onnxrs_request_success_total{finished_reason="length"}': gen["requests"],
        'onnxrs_request_success_total{finished_reason!="length"}': 0,
        "onnxrs_prompt_tokens_total": gen["prompt_tokens"],
        "onnxrs_generation_tokens_total": gen["tokens"],
        # One observation per token after each request's first.
        "onnxrs_time_per_output_token_seconds_count": gen["tokens"] - gen["requests"],
        "nv_inference_request_success": gen["requests"],
    }
    for metric, n in want.items():
        assert by_model(prom.query(f"sum by (model) ({metric})", at=fleet.scraped))[GEN_MODEL] == n, metric
        checked += 1
    assert sum(st[GEN_MODEL]["inference_stats"]["success"]["count"] for st in stats.values()) == gen["requests"]
    print(f"\nfleet sums: {checked} Prometheus values equal to /stats and to what the clients got")


def rule_groups():
    return yaml.safe_load(RULES.read_text())["groups"]


def recording_rules(group: str = "onnxrs.recording") -> list[str]:
    return [r["record"] for g in rule_groups() if g["name"] == group for r in g["rules"] if "record" in r]


def test_every_recording_rule_returns_plausible_data(fleet):
    prom = fleet.prom
    # Loaded as committed: the same expressions, every rule healthy.
    loaded = {r["name"]: r for g in prom.api("rules")["groups"] for r in g["rules"]}
    for g in rule_groups():
        for r in g["rules"]:
            got = loaded[r.get("record") or r["alert"]]
            assert "".join(got["query"].split()) == "".join(r["expr"].split()), (got["query"], r["expr"])
            assert got["health"] == "ok", got
    records = recording_rules()
    generation = recording_rules("onnxrs.generation")
    assert (len(records), len(generation)) == (12, 6)
    # Evaluated after the workload's last scrape.
    for rec in records + generation:
        wait_until(
            f"{rec} evaluated after the workload",
            lambda: (v := prom.query(f"min(timestamp({rec}))")) and v[0][1] > fleet.scraped,
            30,
            fleet.logs,
        )
    at = time.time()
    got = {rec: by_model(prom.query(rec, at=at)) for rec in records if rec != "onnxrs:memory_bytes:sum"}
    for rec, values in got.items():
        # Generators run no batches of their own: the classic figures may leave them out.
        assert set(values) - set(GEN_MODELS) == set(ALL_MODELS) - set(GEN_MODELS), rec
        for m in WORKLOAD_MODELS:
            assert math.isfinite(values[m]) and values[m] >= 0, (rec, m, values[m])
    for m in WORKLOAD_MODELS:
        p = [got[f"onnxrs:ort_run_duration_us:p{q}_5m"][m] for q in (50, 95, 99)]
        assert 0 < p[0] <= p[1] <= p[2], (m, p)
        assert got["onnxrs:inferences_per_second:5m"][m] > 0
        assert got["onnxrs:requests_per_second:5m"][m] > 0
        assert got["onnxrs:compute_infer_us_per_request:5m"][m] > 0
        assert 1 <= got["onnxrs:batch_size:mean_5m"][m] <= 8
    # Only gather_fail failed; a ratio of rates is not an exact count, but it lies strictly between.
    assert got["onnxrs:request_error_ratio:5m"]["mlp_fp32"] == 0
    assert 0 < got["onnxrs:request_error_ratio:5m"]["gather_fail"] < 1
    # Memory is a gauge: the fleet sum is exact.
    memory = by_model(prom.query("onnxrs:memory_bytes:sum", at=at), "device")
    for m in ALL_MODELS:
        want = sum(u["byte_size"] for s in fleet.replicas for u in s.stats(m)["memory_usage"] if u["type"] == "CPU")
        assert want > 0 and memory[(m, "cpu")] == want, m
    # The generation rules: the generator the workload drove, positive and ordered (rates are
    # not exact counts: the exact counts are in the fleet-sums test).
    gen = {rec: by_model(prom.query(rec, at=at)) for rec in generation}
    for rec, values in gen.items():
        assert set(values) <= set(GEN_MODELS), (rec, values)
        assert math.isfinite(values[GEN_MODEL]) and values[GEN_MODEL] > 0, (rec, values)
    for name in ("time_to_first_token", "time_per_output_token"):
        p50, p95 = (gen[f"onnxrs:{name}_seconds:p{q}_5m"][GEN_MODEL] for q in (50, 95))
        assert p50 <= p95, (name, p50, p95)
    series = sum(len(v) for v in got.values()) + len(memory) + sum(len(v) for v in gen.values())
    print(f"\nrecording rules: {len(records) + len(generation)} rules, {series} series")


def dashboard_queries():
    """(row, title, refId, expr) of every query; row: the title of the row the panel is under."""
    dashboard = json.loads(DASHBOARD.read_text())
    out, row = [], ""
    for p in dashboard["panels"]:
        if p["type"] == "row":
            row = p["title"]
        out += [(row, p["title"], t["refId"], t["expr"]) for t in p.get("targets", [])]
    return out


def test_every_dashboard_query_returns_plausible_data(fleet):
    prom = fleet.prom
    dashboard = json.loads(DASHBOARD.read_text())
    # The template variable: Grafana lists its values with label_values(...), and "All" turns
    # $model into the alternation of them.
    (variable,) = [v for v in dashboard["templating"]["list"] if v["name"] == "model"]
    metric, label = re.fullmatch(r"label_values\((\w+), (\w+)\)", variable["query"]).groups()
    values = prom.api(f"label/{label}/values", **{"match[]": metric})
    assert sorted(values) == sorted(ALL_MODELS)
    all_models = "(" + "|".join(values) + ")"
    memory = {m: sum(u["byte_size"] for s in fleet.replicas for u in s.stats(m)["memory_usage"]) for m in ALL_MODELS}
    series = 0
    rows = {row for row, *_ in dashboard_queries()}
    assert rows == {"", "Generation (generative models)"}, rows
    for row, title, ref, expr in dashboard_queries():
        # $__rate_interval is Grafana's; the dashboard's own windows are 1m and 5m.
        q = expr.replace("$model", all_models).replace("$__rate_interval", "1m")
        result = prom.query(q, at=fleet.scraped)
        assert result, (title, ref, q)
        series += len(result)
        what = f"{title} {ref}: {q}"
        for labels, v in result:
            assert labels.get("model") in ALL_MODELS, (what, labels)
        if row.startswith("Generation"):
            check_generation_panel(title, what, result)
            continue
        ours = [(l, v) for l, v in result if l["model"] in WORKLOAD_MODELS]
        assert {l["model"] for l, _ in ours} == set(WORKLOAD_MODELS), what
        assert all(math.isfinite(v) and v >= 0 for _, v in ours), (what, ours)
        if title.startswith("Pending"):
            assert all(v == 0 for _, v in result), (what, result)  # nothing is in flight
        elif title.startswith("Errors by kind"):
            failing = {(l["model"], l["kind"]) for l, v in ours if v > 0}
            assert failing == {("gather_fail", "ort_failure")}, (what, ours)
        elif title.startswith("Requests/s") and ref == "B":  # failures
            assert {l["model"] for l, v in ours if v > 0} == {"gather_fail"}, (what, ours)
        elif title.startswith("Session memory"):
            assert {l["model"]: v for l, v in result} == memory, what
        elif title.startswith("Load time"):
            assert all(v > 0 for _, v in result), (what, result)
        elif title.startswith("Time per request") and ref == "A":  # queue time: may round to 0
            pass
        else:
            assert all(v > 0 for _, v in ours), (what, ours)
    print(f"\ndashboard: {len(dashboard_queries())} queries, {series} series")


def check_generation_panel(title: str, what: str, result):
    """A generation panel after the workload: the generator it drove has positive latencies and
    rates; nothing is running or waiting, no KV cache is held; every request ended at its length."""
    assert all(l["model"] in GEN_MODELS for l, _ in result), (what, result)
    ours = [(l, v) for l, v in result if l["model"] == GEN_MODEL]
    assert ours, what
    assert all(math.isfinite(v) and v >= 0 for _, v in ours), (what, ours)
    if title.startswith(("Generation requests running", "KV cache")):
        assert all(v == 0 for _, v in result), (what, result)
    elif title.startswith("Finished generation requests"):
        assert {l["finished_reason"] for l, v in ours if v > 0} == {"length"}, (what, ours)
    else:
        assert all(v > 0 for _, v in ours), (what, ours)


def test_error_ratio_alert_fires_reaches_the_receiver_and_resolves(fleet):
    prom, am, hook, (r0, r1, r2) = fleet.prom, fleet.am, fleet.hook, fleet.replicas
    model = "gather_alert"

    def send(replica_counts, idx):
        calls = [lambda s=s: gather(s, model, idx) for s, n in replica_counts for _ in range(n)]
        return [a.status_code for a in concurrently(8, calls)]

    # A healthy start: 20 successes over the fleet, a ratio of 0 and no alert.
    assert send([(r0, 10), (r1, 6), (r2, 4)], [[1]]) == [200] * 20
    prom.wait_scraped_after(time.time())
    wait_until("error ratio 0", lambda: [v for l, v in prom.query(f'onnxrs:request_error_ratio:5m{{model="{model}"}}')] == [0], 30, fleet.logs)
    assert not [a for a in prom.alerts() if a["labels"].get("model") == model and a["labels"]["alertname"] == "OnnxrsErrorRateHigh"]
    # A burst of 10 failures on two replicas: a third of the fleet's requests fail.
    burst = time.time()
    fleet.marks.append((burst, "failures"))
    assert send([(r0, 6), (r1, 4)], [[7]]) == [400] * 10
    labels = {"alertname": "OnnxrsErrorRateHigh", "model": model}
    (fired_at, alert), *_ = wait_until("the error-ratio alert at the webhook", lambda: hook.alerts("firing", **labels), 60, fleet.logs)
    assert alert["labels"] == {**labels, "version": "1", "severity": "critical"}
    assert re.fullmatch(r"gather_alert v1: [0-9.]+% of requests fail", alert["annotations"]["summary"]), alert
    active = [a for a in am.alerts() if all(a["labels"].get(k) == v for k, v in labels.items())]
    assert len(active) == 1 and active[0]["status"]["state"] == "active", active
    # The backend's own error counter raised its alert too (it has no `for`), by kind.
    backend = {"alertname": "OnnxrsBackendErrors", "model": model, "kind": "ort_failure"}
    wait_until("the backend-errors alert at the webhook", lambda: hook.alerts("firing", **backend), 60, fleet.logs)
    # The failures stop; 400 successes bring the ratio to 10/430, under the 5 % threshold.
    recovered = time.time()
    fleet.marks.append((recovered, "successes"))
    assert send([(r0, 200), (r1, 100), (r2, 100)], [[2]]) == [200] * 400
    (resolved_at, alert), *_ = wait_until("the resolution at the webhook", lambda: hook.alerts("resolved", **labels), 90, fleet.logs)
    assert alert["endsAt"] > alert["startsAt"]
    assert not [a for a in am.alerts() if all(a["labels"].get(k) == v for k, v in labels.items())]
    # Exact counts across the fleet, from Prometheus, after all this.
    prom.wait_scraped_after(time.time())
    assert by_model(prom.query('sum by (model) (nv_inference_request_success{model="gather_alert"})'))[model] == 420
    assert by_model(prom.query('sum by (model) (nv_inference_request_failure{model="gather_alert"})'))[model] == 10
    print(f"\nerror-ratio alert: at the webhook {fired_at - burst:.1f} s after the burst began, "
          f"resolved there {resolved_at - recovered:.1f} s after the recovery began")


def test_queue_alert_fires_with_the_queue_length_and_resolves_when_it_drains(fleet):
    prom, am, hook, r2 = fleet.prom, fleet.am, fleet.hook, fleet.replicas[2]
    x = np.full((1, 16), 0.5, dtype=np.float32)
    waiting = QUEUE_BATCH - 24  # 40: over the rule's 32
    pool = ThreadPoolExecutor(QUEUE_BATCH)
    queued = [pool.submit(post, r2, "mlp_queue", {"X": (x, "FP32")}, 120) for _ in range(waiting)]
    start = time.time()
    fleet.marks.append((start, "40 queued"))
    labels = {"alertname": "OnnxrsQueueGrowing", "model": "mlp_queue", "instance": instance_of(r2)}
    try:
        (fired_at, alert), *_ = wait_until("the queue alert at the webhook", lambda: hook.alerts("firing", **labels), 60, fleet.logs)
        # The gauge is exact: the summary names the queue's length.
        assert alert["annotations"]["summary"] == f"mlp_queue: {waiting} requests waiting and the queue keeps growing"
        assert alert["labels"]["severity"] == "warning"
        assert [a["labels"]["instance"] for a in am.alerts() if a["labels"]["alertname"] == "OnnxrsQueueGrowing"] == [instance_of(r2)]
        # Only the replica with the queue: the others' gauges stayed at 0.
        pending = {l["instance"]: v for l, v in prom.query('nv_inference_pending_request_count{model="mlp_queue"}')}
        assert pending == {instance_of(s): (waiting if s is r2 else 0) for s in fleet.replicas}
    finally:
        # The last rows fill the batch: it runs and the queue drains.
        drained = time.time()
        fleet.marks.append((drained, "batch filled"))
        queued += [pool.submit(post, r2, "mlp_queue", {"X": (x, "FP32")}, 120) for _ in range(QUEUE_BATCH - waiting)]
        answers = [f.result() for f in queued]
        pool.shutdown()
    assert [a.status_code for a in answers] == [200] * QUEUE_BATCH
    assert r2.stats("mlp_queue")["execution_count"] == 1
    (resolved_at, _), *_ = wait_until("the queue alert's resolution at the webhook", lambda: hook.alerts("resolved", **labels), 60, fleet.logs)
    assert not [a for a in am.alerts() if a["labels"]["alertname"] == "OnnxrsQueueGrowing"]
    print(f"\nqueue alert: at the webhook {fired_at - start:.1f} s after the requests were queued, "
          f"resolved there {resolved_at - drained:.1f} s after the batch was filled")


def gen_input(name: str, dt: str, values) -> grpcclient.InferInput:
    np_type = {"INT64": np.int64, "INT32": np.int32, "BOOL": np.bool_}[dt]
    t = grpcclient.InferInput(name, [len(values)], dt)
    t.set_data_from_numpy(np.array(values, dtype=np_type))
    return t


def test_generation_alerts_requests_waiting_and_time_to_first_token(fleet):
    """gen_wait has one place. One request holds it (a long generation over a gRPC stream, cancelled
    by the test); 10 sent behind it wait. OnnxrsRequestsWaiting fires for that replica, naming 10.
    When each of the 10 has waited past the time-to-first-token threshold (2 s), the holder is
    cancelled: the 10 run, all with a first token later than 2.5 s (a histogram bucket's bound,
    so the quantile cannot be interpolated below it), OnnxrsTimeToFirstTokenHigh fires and the
    waiting alert resolves. Counts on the replica are exact."""
    prom, am, hook, r1 = fleet.prom, fleet.am, fleet.hook, fleet.replicas[1]
    waiting = 10
    gen = {"model": GEN_WAIT, "version": "1"}
    client = grpcclient.InferenceServerClient(r1.grpc_addr)
    # The holder's only answer is the cancellation's error: nothing to read on the stream.
    client.start_stream(callback=lambda result, error: None)
    pool = ThreadPoolExecutor(waiting)
    queued = []
    try:
        # Not streamed: one response at its end (it never gets there), no flood of responses.
        holder = [gen_input("input_ids", "INT64", [5, 6, 7]), gen_input("max_tokens", "INT32", [60000]),
                  gen_input("ignore_eos", "BOOL", [True]), gen_input("stream", "BOOL", [False])]
        client.async_stream_infer(GEN_WAIT, holder, request_id="holder")
        wait_until("the holder running", lambda: r1.metrics().sum("onnxrs_num_requests_running", **gen) == 1, 60, fleet.logs)
        queued = [pool.submit(generate, r1, GEN_WAIT, [5 + i], 4, 120) for i in range(waiting)]
        wait_until(f"{waiting} waiting", lambda: r1.metrics().sum("onnxrs_num_requests_waiting", **gen) == waiting, 60, fleet.logs)
        all_inside = time.monotonic()
        start = time.time()
        fleet.marks.append((start, f"{waiting} waiting to generate"))
        labels = {"alertname": "OnnxrsRequestsWaiting", "model": GEN_WAIT, "instance": instance_of(r1)}
        (fired_at, alert), *_ = wait_until("the waiting alert at the webhook", lambda: hook.alerts("firing", **labels), 60, fleet.logs)
        assert alert["labels"] == {**labels, "version": "1", "severity": "warning"}
        assert alert["annotations"]["summary"] == f"{GEN_WAIT} v1: {waiting} requests waiting for a place to generate"
        assert [a["labels"]["instance"] for a in am.alerts() if a["labels"]["alertname"] == "OnnxrsRequestsWaiting"] == [instance_of(r1)]
        assert r1.metrics().sum("onnxrs_num_requests_running", **gen) == 1, "the holder still holds the place"
        # Each waited past 2.5 s before it can have its first token.
        while time.monotonic() < all_inside + 2.6:
            time.sleep(0.05)
    finally:
        released = time.time()
        fleet.marks.append((released, "holder cancelled"))
        client.stop_stream(cancel_requests=True)
        client.close()
        answers = [f.result() for f in queued]
        pool.shutdown()
    for a in answers:
        assert a.status_code == 200, a.text
        assert len(output_ids(a)) == 4, a.text
    # Counted by the loop just after each last response is sent, and its gauges set after the
    # step: exact once all are.
    def settled():
        m = r1.metrics()
        return ((m.sum("onnxrs_request_success_total", **gen) or 0) == waiting + 1
                and m.sum("onnxrs_num_requests_running", **gen) == 0 and m.sum("onnxrs_num_requests_waiting", **gen) == 0)

    wait_until(f"{waiting + 1} generation requests counted, none running", settled, 30, fleet.logs)
    m = r1.metrics()
    assert m.sum("onnxrs_request_success_total", finished_reason="cancelled", **gen) == 1
    assert m.sum("onnxrs_request_success_total", finished_reason="length", **gen) == waiting
    assert m.sum("onnxrs_time_to_first_token_seconds_count", **gen) == waiting + 1
    # The 10 first tokens: none in a bucket at or under 2.5 s; the holder's (one) was.
    assert m.sum("onnxrs_time_to_first_token_seconds_bucket", le="2.5", **gen) == 1
    assert m.sum("onnxrs_num_requests_waiting", **gen) == 0 and m.sum("onnxrs_num_requests_running", **gen) == 0
    ttft = {"alertname": "OnnxrsTimeToFirstTokenHigh", "model": GEN_WAIT}
    (ttft_at, alert), *_ = wait_until("the time-to-first-token alert at the webhook", lambda: hook.alerts("firing", **ttft), 60, fleet.logs)
    assert alert["labels"] == {**ttft, "version": "1", "severity": "warning"}
    assert re.fullmatch(r"gen_wait v1: time to first token p95 [0-9.]+s", alert["annotations"]["summary"]), alert
    (resolved_at, _), *_ = wait_until("the waiting alert's resolution at the webhook", lambda: hook.alerts("resolved", **labels), 60, fleet.logs)
    print(f"\ngeneration alerts: waiting at the webhook {fired_at - start:.1f} s after {waiting} waited, "
          f"time to first token {ttft_at - released:.1f} s and the waiting alert's resolution "
          f"{resolved_at - released:.1f} s after the holder was cancelled")

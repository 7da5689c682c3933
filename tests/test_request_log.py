"""The structured request log (`--backend-config=onnxrs,request-log=PATH`): one JSON line per
request, every field checked against the requests sent and the statistics of the same requests;
still valid JSON lines after an unload/load cycle and a shutdown; sampling (backend-wide and per
model) keeps every failure; a bad setting is a clear load error."""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from make_models import GATHER_TABLE
from server import TritonServer, json_body, make_repo

MODEL = "gather_fail"
GOOD = {f"good-{i}": idx for i, idx in enumerate([[[0, 1]], [[4], [3]], [[2, 2, 2]], [[1], [0], [4]], [[3]]])}
BAD = {f"bad-{i}": idx for i, idx in enumerate([[[5]], [[0, -6]], [[100], [1]]])}
# Sent together: the model's 300 ms queue delay lets them reach one execute.
FUSED = {f"fused-{i}": idx for i, idx in enumerate([[[0, 1]], [[2, 3]], [[4, 0]]])}


def send(s, request_id: str, idx) -> int:
    body = json_body({"IDX": (np.asarray(idx, dtype=np.int64), "INT64")})
    body["id"] = request_id
    status, text = s.request("POST", f"/v2/models/{MODEL}/infer", body)
    if status == 200:
        out = json.loads(text)
        assert out["id"] == request_id
        assert out["outputs"][0]["data"] == GATHER_TABLE[np.array(idx)].flatten().tolist()
    return status


def read_log(path: Path, expected: int) -> list[dict]:
    """The log's lines once `expected` are there (the writer flushes every half second); each
    must be one JSON object."""
    deadline = time.monotonic() + 30
    while True:
        text = path.read_text() if path.exists() else ""
        if text.count("\n") >= expected or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert text.endswith("\n") or not text, "a partial line"
    lines = [json.loads(line) for line in text.splitlines()]
    assert all(isinstance(line, dict) for line in lines)
    return lines


def stage_sum_agrees(logged_us: list[int], total_ns: int) -> bool:
    """Each line holds its stage's nanoseconds in whole microseconds, truncated; the statistics
    hold the exact sum of the same nanoseconds."""
    return total_ns // 1000 - len(logged_us) <= sum(logged_us) <= total_ns // 1000


def test_every_request_logged_with_the_statistics_figures(server_for, tmp_path):
    path = tmp_path / "requests.jsonl"
    s = server_for(
        [MODEL],
        f"--backend-config=onnxrs,request-log={path}",
        "--model-control-mode=explicit",
        f"--load-model={MODEL}",
    )
    before = datetime.now(timezone.utc)
    for request_id, idx in GOOD.items():
        assert send(s, request_id, idx) == 200
    for request_id, idx in BAD.items():
        assert send(s, request_id, idx) == 400
    with ThreadPoolExecutor(len(FUSED)) as pool:
        assert list(pool.map(lambda kv: send(s, *kv), FUSED.items())) == [200] * len(FUSED)
    after = datetime.now(timezone.utc)
    sent = {**GOOD, **BAD, **FUSED}
    lines = read_log(path, len(sent))
    st = s.stats(MODEL)

    # One line per request, each naming the request, its model, version and instance.
    assert sorted(line["request_id"] for line in lines) == sorted(sent)
    by_id = {line["request_id"]: line for line in lines}
    for line in lines:
        assert (line["model"], line["version"], line["instance"]) == (MODEL, 1, f"{MODEL}_0_0"), line
        assert before <= datetime.fromisoformat(line["time"]) <= after, line
    for request_id, idx in {**GOOD, **FUSED}.items():
        line = by_id[request_id]
        assert line["outcome"] == "success" and "error" not in line, line
        # The three stages make up the execute time (each figure truncated on its own).
        assert 0 <= line["execute_us"] - (line["input_us"] + line["infer_us"] + line["output_us"]) <= 2, line
    for request_id in GOOD:
        # Sent one at a time: a run of its own, of its rows.
        assert (by_id[request_id]["run_requests"], by_id[request_id]["run_rows"]) == (1, len(GOOD[request_id]))
    for request_id in BAD:
        line = by_id[request_id]
        assert line["outcome"] == "error" and line["error_kind"] == "ort_failure", line
        assert "out of data bounds" in line["error"], line
        # ONNX Runtime refused the run: it completed no run.
        assert line["run_requests"] is None and line["run_rows"] is None, line
        assert "input_us" not in line
    # However Triton grouped them, each ran in a run of 1 to 3 requests of 2 rows each.
    for request_id in FUSED:
        assert by_id[request_id]["run_rows"] == by_id[request_id]["run_requests"] in (1, 2, 3), by_id[request_id]

    # The same counts and stage times as the statistics.
    inf = st["inference_stats"]
    ok = [line for line in lines if line["outcome"] == "success"]
    assert inf["success"]["count"] == len(ok)
    assert inf["fail"]["count"] == len(lines) - len(ok)
    for field, stage in [("input_us", "compute_input"), ("infer_us", "compute_infer"), ("output_us", "compute_output")]:
        assert stage_sum_agrees([line[field] for line in ok], inf[stage]["ns"]), (field, inf[stage])
    # Runs: each successful run of k requests appears on k lines; the runs by rows are Triton's
    # batch statistics, and their number its execution count.
    runs: dict[int, float] = {}
    for line in ok:
        runs[line["run_rows"]] = runs.get(line["run_rows"], 0) + 1 / line["run_requests"]
    assert {rows: round(n, 6) for rows, n in runs.items()} == {
        b["batch_size"]: b["compute_infer"]["count"] for b in st["batch_stats"]
    }
    assert round(sum(runs.values()), 6) == st["execution_count"]
    assert st["inference_count"] == sum(line["run_rows"] / line["run_requests"] for line in ok)

    # An unload/load cycle keeps the log open and whole; the last lines are on disk at shutdown.
    s.unload(MODEL)
    s.load(MODEL)
    again = {f"again-{i}": idx for i, idx in enumerate([[[1, 2]], [[7]]])}
    assert [send(s, request_id, idx) for request_id, idx in again.items()] == [200, 400]
    s.stop()
    lines = read_log(path, len(sent) + len(again))
    assert sorted(line["request_id"] for line in lines) == sorted({**sent, **again})
    assert path.read_text().count("\n") == len(lines)
    outcomes = {line["request_id"]: line["outcome"] for line in lines}
    assert (outcomes["again-0"], outcomes["again-1"]) == ("success", "error")


def with_parameter(repo: Path, model: str, key: str, value: str) -> None:
    with open(repo / model / "config.pbtxt", "a") as f:
        f.write(f'parameters {{ key: "{key}" value: {{ string_value: "{value}" }} }}\n')


def test_sampling_keeps_every_nth_success_and_every_failure(tmp_path):
    """The backend's request-log-sample=0.25 for gather_fail; mlp_fp32's own
    request_log_sample=1 keeps all of its successes."""
    path = tmp_path / "sampled.jsonl"
    repo = make_repo(tmp_path / "repo", [MODEL, "mlp_fp32"])
    with_parameter(repo, "mlp_fp32", "request_log_sample", "1")
    with TritonServer(
        repo, f"--backend-config=onnxrs,request-log={path}", "--backend-config=onnxrs,request-log-sample=0.25"
    ) as s:
        good = [f"s-good-{i}" for i in range(8)]
        bad = [f"s-bad-{i}" for i in range(3)]
        for request_id in good:
            assert send(s, request_id, [[0, 1]]) == 200
        for request_id in bad:
            assert send(s, request_id, [[9]]) == 400
        mlp = [f"s-mlp-{i}" for i in range(3)]
        for request_id in mlp:
            body = json_body({"X": (np.full((1, 16), 0.5, np.float32), "FP32")})
            body["id"] = request_id
            assert s.request("POST", "/v2/models/mlp_fp32/infer", body)[0] == 200
        s.stop()
        log_text = s.log_text()
    lines = read_log(path, 2 + len(bad) + len(mlp))
    # Every fourth success of the backend's sampling (deterministic), every failure, and every
    # success of the model with its own share.
    assert [line["request_id"] for line in lines] == ["s-good-3", "s-good-7", *bad, *mlp]
    assert {line["model"] for line in lines[-3:]} == {"mlp_fp32"}
    assert "dropped" not in log_text


def test_a_bad_model_sample_fails_that_model_only(tmp_path):
    repo = make_repo(tmp_path / "repo", [MODEL, "mlp_fp32"])
    with_parameter(repo, "mlp_fp32", "request_log_sample", "2")
    with TritonServer(
        repo, f"--backend-config=onnxrs,request-log={tmp_path / 'r.jsonl'}", "--exit-on-error=false"
    ) as s:
        assert not s.model_ready("mlp_fp32")
        assert s.model_ready(MODEL)
        assert "parameter 'request_log_sample' must be a number from 0 to 1, got '2'" in s.log_text()


def test_an_unwritable_request_log_fails_the_backend_clearly(server_for, tmp_path):
    path = tmp_path / "missing-dir" / "requests.jsonl"
    s = server_for(["mlp_fp32"], f"--backend-config=onnxrs,request-log={path}", "--exit-on-error=false")
    assert not s.model_ready("mlp_fp32")
    assert f"cannot open the request log '{path}'" in s.log_text()

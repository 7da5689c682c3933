"""A request's own timings in its response (`onnxrs_timings`, README "Per-request timings in the
response"): over HTTP and gRPC, only when asked (or with the model's `response_timings:
"always"`), equal to what the request log and the statistics got for the same request, the run
size of fused and retried runs, a generator's per-response figures, and a malformed value
failing only its own request."""

from __future__ import annotations

import json
import queue
import shutil
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import tritonclient.grpc as grpcclient

from make_models import GATHER_TABLE, mlp_reference
from server import TritonServer, json_body, make_repo
from test_request_log import read_log

FIGURES = ("onnxrs_compute_input_ns", "onnxrs_compute_infer_ns", "onnxrs_compute_output_ns")
ALL = (*FIGURES, "onnxrs_run_size", "onnxrs_instance")
# A batch forms only when it is full: exactly BATCH requests fuse into one run.
BATCH = 4
FULL_BATCH = f"dynamic_batching {{ preferred_batch_size: [ {BATCH} ] max_queue_delay_microseconds: 600000000 }}"


def full_batch_copy(repo, src: str, dst: str, old_batching: str):
    shutil.copytree(repo / src, repo / dst)
    cfg = repo / dst / "config.pbtxt"
    text = cfg.read_text().replace(f'name: "{src}"', f'name: "{dst}"')
    assert old_batching in text
    text = text.replace(old_batching, FULL_BATCH).replace("max_batch_size: 8", f"max_batch_size: {BATCH}")
    cfg.write_text(text.replace("count: 2", "count: 1"))


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("timings")
    repo = make_repo(tmp / "repo", ["mlp_fp32", "gather_fail", "decoder_tiny"])
    full_batch_copy(repo, "mlp_fp32", "mlp_full", "dynamic_batching { }")
    full_batch_copy(repo, "gather_fail", "gather_full", "dynamic_batching { max_queue_delay_microseconds: 300000 }")
    shutil.copytree(repo / "mlp_fp32", repo / "mlp_always")
    cfg = repo / "mlp_always" / "config.pbtxt"
    cfg.write_text(cfg.read_text().replace('name: "mlp_fp32"', 'name: "mlp_always"')
                   + 'parameters { key: "response_timings" value: { string_value: "always" } }\n')
    log = tmp / "requests.jsonl"
    with TritonServer(repo, f"--backend-config=onnxrs,request-log={log}") as s:
        s.log_file = log
        s.sent = 0  # requests answered so far: the request log's lines to wait for
        s.sent_lock = threading.Lock()
        yield s


def mlp_body(request_id: str, rows: int = 1, parameters: dict | None = None) -> dict:
    x = np.linspace(0, 1, rows * 16, dtype=np.float32).reshape(rows, 16)
    body = json_body({"X": (x, "FP32")})
    body["id"] = request_id
    if parameters is not None:
        body["parameters"] = parameters
    return body


def post(s, model: str, body: dict) -> tuple[int, dict | str]:
    code, text = s.request("POST", f"/v2/models/{model}/infer", body)
    with s.sent_lock:
        s.sent += 1
    return code, (json.loads(text) if code == 200 else text.decode())


def logged(s, request_id: str) -> dict:
    lines = [line for line in read_log(s.log_file, s.sent) if line.get("request_id") == request_id]
    assert len(lines) == 1, (request_id, lines)
    return lines[0]


def agrees_with_the_log(params: dict, line: dict):
    """The response's nanoseconds are the log line's microseconds, to the microsecond."""
    assert line["outcome"] == "success", line
    for stage in ("input", "infer", "output"):
        assert params[f"onnxrs_compute_{stage}_ns"] // 1000 == line[f"{stage}_us"], (stage, params, line)
    assert params["onnxrs_run_size"] == line["run_requests"]
    assert params["onnxrs_instance"] == line["instance"]


@pytest.mark.parametrize("value", [True, "true", 1])
def test_http_timings_only_when_asked_and_equal_to_the_log_and_stats(server, value):
    s = server
    before = s.stats("mlp_fp32")["inference_stats"]
    rid = f"http-{value!r}"
    code, out = post(s, "mlp_fp32", mlp_body(rid, parameters={"onnxrs_timings": value}))
    assert code == 200, out
    params = out["parameters"]
    assert set(ALL) <= set(params), params
    assert all(isinstance(params[k], int) and params[k] >= 0 for k in (*FIGURES, "onnxrs_run_size")), params
    assert params["onnxrs_run_size"] == 1 and params["onnxrs_instance"].startswith("mlp_fp32_")
    np.testing.assert_allclose(out["outputs"][0]["data"], mlp_reference(np.linspace(0, 1, 16, dtype=np.float32).reshape(1, 16)).flatten(), rtol=1e-5)
    agrees_with_the_log(params, logged(s, rid))
    # The statistics got exactly these nanoseconds for this (lone) request.
    after = s.stats("mlp_fp32")["inference_stats"]
    for stage in ("input", "infer", "output"):
        key = f"compute_{stage}"
        assert after[key]["count"] == before[key]["count"] + 1
        assert after[key]["ns"] - before[key]["ns"] == params[f"onnxrs_{key}_ns"], stage
    # Not asked (or asked not to): the response is as before, no parameters of ours.
    for parameters in (None, {"onnxrs_timings": False}, {"onnxrs_timings": 0}, {"other": "x"}):
        code, out = post(s, "mlp_fp32", mlp_body("quiet", parameters=parameters))
        assert code == 200, out
        assert not [k for k in out.get("parameters", {}) if k.startswith("onnxrs_")], out


@pytest.mark.parametrize("value", [True, "true", 1])
def test_grpc_timings(server, value):
    s = server
    x = np.linspace(0, 1, 32, dtype=np.float32).reshape(2, 16)
    i = grpcclient.InferInput("X", [2, 16], "FP32")
    i.set_data_from_numpy(x)
    with grpcclient.InferenceServerClient(s.grpc_addr) as c:
        r = c.infer("mlp_fp32", [i], request_id=f"grpc-{value!r}", parameters={"onnxrs_timings": value})
        plain = c.infer("mlp_fp32", [i], request_id="grpc-plain")
    s.sent += 2
    np.testing.assert_allclose(r.as_numpy("Y"), mlp_reference(x), rtol=1e-5, atol=1e-5)
    p = r.get_response().parameters
    params = {k: (p[k].string_param if k == "onnxrs_instance" else p[k].int64_param) for k in ALL}
    agrees_with_the_log(params, logged(s, f"grpc-{value!r}"))
    assert not [k for k in plain.get_response().parameters if k.startswith("onnxrs_")]


def test_the_model_parameter_always(server):
    code, out = post(server, "mlp_always", mlp_body("always"))
    assert code == 200, out
    agrees_with_the_log(out["parameters"], logged(server, "always"))


def test_a_fused_run_and_a_retried_one_give_their_sizes(server):
    s = server
    with ThreadPoolExecutor(BATCH) as pool:
        answers = list(pool.map(lambda k: post(s, "mlp_full", mlp_body(f"fused-{k}", parameters={"onnxrs_timings": True})), range(BATCH)))
    for k, (code, out) in enumerate(answers):
        assert code == 200, out
        assert out["parameters"]["onnxrs_run_size"] == BATCH
        agrees_with_the_log(out["parameters"], logged(s, f"fused-{k}"))
    # One bad index among good ones (all of one shape: Triton batches only equal shapes): the
    # fused run fails, each request runs again alone; the good ones carry the retry's figures (a
    # run of 1), the bad one its error.
    idx = {"good-0": [[0]], "good-1": [[2]], "bad": [[7]], "good-2": [[4]]}

    def gather(rid):
        body = json_body({"IDX": (np.asarray(idx[rid], dtype=np.int64), "INT64")})
        body.update(id=rid, parameters={"onnxrs_timings": "true"})
        return post(s, "gather_full", body)

    with ThreadPoolExecutor(BATCH) as pool:
        answers = dict(zip(idx, pool.map(gather, idx)))
    for rid, (code, out) in answers.items():
        if rid == "bad":
            assert code == 400 and "out of data bounds" in out, out
            continue
        assert code == 200, out
        assert out["outputs"][0]["data"] == GATHER_TABLE[np.array(idx[rid])].flatten().tolist()
        assert out["parameters"]["onnxrs_run_size"] == 1, out
        agrees_with_the_log(out["parameters"], logged(s, rid))
    # The batch statistics: the three retries that ran (a run that fails reports none).
    assert s.stats("gather_full")["execution_count"] == BATCH - 1


@pytest.mark.parametrize("value", ["maybe", 2])
def test_a_malformed_value_fails_only_its_request(server, value):
    s = server
    with ThreadPoolExecutor(2) as pool:
        bad = pool.submit(post, s, "mlp_fp32", mlp_body("malformed", parameters={"onnxrs_timings": value}))
        good = pool.submit(post, s, "mlp_fp32", mlp_body("fine", parameters={"onnxrs_timings": True}))
        (bad_code, bad_out), (good_code, good_out) = bad.result(), good.result()
    assert bad_code == 400, bad_out
    assert "request parameter 'onnxrs_timings' must be true or false" in bad_out, bad_out
    assert good_code == 200 and "onnxrs_compute_infer_ns" in good_out["parameters"], good_out


def test_a_bad_model_parameter_fails_the_load(tmp_path):
    repo = make_repo(tmp_path / "repo", ["mlp_fp32"])
    cfg = repo / "mlp_fp32" / "config.pbtxt"
    cfg.write_text(cfg.read_text() + 'parameters { key: "response_timings" value: { string_value: "often" } }\n')
    with TritonServer(repo, "--exit-on-error=false") as s:
        (entry,) = s.index()["mlp_fp32"]
        assert entry["state"] == "UNAVAILABLE"
        assert "parameter 'response_timings' must be \"always\" or \"request\", got \"often\"" in entry["reason"], entry


def test_a_generators_responses_carry_their_own_figures(server):
    s = server
    got: queue.Queue = queue.Queue()
    c = grpcclient.InferenceServerClient(s.grpc_addr)
    c.start_stream(callback=lambda result, error: got.put((result, error)))
    try:
        ids = grpcclient.InferInput("input_ids", [3], "INT64")
        ids.set_data_from_numpy(np.array([5, 6, 7], dtype=np.int64))
        n = grpcclient.InferInput("max_tokens", [1], "INT32")
        n.set_data_from_numpy(np.array([5], dtype=np.int32))
        no_eos = grpcclient.InferInput("ignore_eos", [1], "BOOL")
        no_eos.set_data_from_numpy(np.array([True]))
        c.async_stream_infer("decoder_tiny", [ids, n, no_eos], request_id="gen", enable_empty_final_response=True,
                             parameters={"onnxrs_timings": True})
        responses = []
        while True:
            result, error = got.get(timeout=60)
            assert error is None, error
            p = result.get_response().parameters
            responses.append(p)
            if p["triton_final_response"].bool_param:
                break
    finally:
        c.stop_stream()
        c.close()
    tokens = [r for r in responses if "onnxrs_compute_infer_ns" in r]
    assert len(tokens) == 5, [dict(r) for r in responses]
    for p in tokens:
        assert p["onnxrs_run_size"].int64_param == 1 and p["onnxrs_instance"].string_param.startswith("decoder_tiny_")
        assert p["onnxrs_compute_infer_ns"].int64_param > 0 and p["onnxrs_compute_output_ns"].int64_param >= 0
    # The last token's response carries the request's time to its first response and in all.
    last = tokens[-1]
    first, total = last["onnxrs_time_to_first_response_ns"].int64_param, last["onnxrs_total_ns"].int64_param
    assert 0 < first <= total, (first, total)
    assert all("onnxrs_total_ns" not in p for p in tokens[:-1])
    # Every response's infer and output add up to no more than the request's whole time.
    spent = sum(p["onnxrs_compute_infer_ns"].int64_param + p["onnxrs_compute_output_ns"].int64_param for p in tokens)
    assert spent <= total, (spent, total)

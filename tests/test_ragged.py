"""Ragged batching: requests whose ragged input has different lengths fuse into one ONNX Runtime
run, the input laid end to end as one 1-D tensor, with a batch input of every kind computed by
the backend; an output under batch_output goes back to each request with the shape of its ragged
input, also for requests of several rows. Every output is checked against a reference computed
here."""

from __future__ import annotations

import shutil
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from tritonclient.utils import InferenceServerException

from server import TritonServer, infer, make_repo


def ask(server, proto, values):
    r = infer(server, proto, "ragged_sum", {"INPUT": (np.array([values], np.float32), "FP32")})
    return {n: r.as_numpy(n).tolist() for n in ("SUM", "COUNT_OUT", "ACC_OUT", "SHAPE_OUT", "FLAT_OUT", "MAX_OUT")}


def test_ragged_requests_share_a_run_with_every_batch_input(server_for):
    s = server_for(["ragged_sum"])
    requests = [[1.0, 2.0, 3.0], [10.0], [0.5, 0.25, 4.0, 8.0, 16.0], [-1.0, 7.0]]
    with ThreadPoolExecutor(len(requests)) as pool:
        futures = [pool.submit(ask, s, ("http", "grpc")[i % 2], v) for i, v in enumerate(requests)]
        got = [f.result() for f in futures]
    longest = max(len(v) for v in requests)
    spans = []
    for values, out in zip(requests, got):
        n = len(values)
        assert out["SUM"] == [[sum(values)]], (values, out)
        assert out["COUNT_OUT"] == [[n]] and out["SHAPE_OUT"] == [[n]] and out["FLAT_OUT"] == [[n]], out
        # Preferred batch 4: the four requests ran together, so the largest is the run's.
        assert out["MAX_OUT"] == [[longest]], out
        spans.append((out["ACC_OUT"][0][0] - n, out["ACC_OUT"][0][0]))
    # The accumulated counts tile the run's elements: each request's span follows another's.
    spans.sort()
    assert spans[0][0] == 0 and spans[-1][1] == sum(len(v) for v in requests), spans
    assert all(a[1] == b[0] for a, b in zip(spans, spans[1:])), spans
    st = s.stats("ragged_sum")
    assert st["inference_stats"]["success"]["count"] == 4 and st["execution_count"] == 1, st
    assert {b["batch_size"]: b["compute_infer"]["count"] for b in st["batch_stats"]} == {4: 1}, st
    # Alone, a request's largest count is its own.
    assert ask(s, "http", [2.0, 2.0]) == {
        "SUM": [[4.0]], "COUNT_OUT": [[2.0]], "ACC_OUT": [[2]], "SHAPE_OUT": [[2]], "FLAT_OUT": [[2.0]], "MAX_OUT": [[2]]
    }


def scale(server, proto, values):
    r = infer(server, proto, "ragged_scale", {"INPUT": (np.array(values, np.float32), "FP32")})
    return r.as_numpy("OUT")


def test_batch_output_scatters_with_each_requests_input_shape(server_for):
    s = server_for(["ragged_scale"])
    # 1 + 1 + 2 + 1 rows of different lengths: the preferred batch of 5 rows, one run.
    requests = [[[1.0, 2.0, 3.0]], [[10.0]], [[0.5, 0.25], [4.0, 8.0]], [[-1.0, 7.0, 3.0, 2.0, 9.0]]]
    with ThreadPoolExecutor(len(requests)) as pool:
        futures = [pool.submit(scale, s, ("http", "grpc")[i % 2], v) for i, v in enumerate(requests)]
        got = [f.result() for f in futures]
    for values, out in zip(requests, got):
        want = np.array(values, np.float32) * 2
        assert out.shape == want.shape and out.dtype == np.float32, (values, out)
        np.testing.assert_array_equal(out, want)
    st = s.stats("ragged_scale")
    assert st["inference_stats"]["success"]["count"] == 4 and st["execution_count"] == 1, st
    assert {b["batch_size"]: b["compute_infer"]["count"] for b in st["batch_stats"]} == {5: 1}, st
    assert st["inference_stats"]["fail"]["count"] == 0, st


def test_a_request_of_several_rows_fails_alone_where_outputs_are_split_by_rows(server_for):
    # ragged_sum answers once per request (SUM), but its outputs are split back by rows: a
    # request of two rows cannot be answered. The fused run of 4 rows runs again one request at
    # a time; the one-row requests get their outputs, the two-row one a clear error.
    s = server_for(["ragged_sum"])
    one, two, other = [1.0, 2.0, 3.0], [[1.0, 2.0], [3.0, 4.0]], [5.0]

    def two_rows():
        with pytest.raises(InferenceServerException) as e:
            infer(s, "http", "ragged_sum", {"INPUT": (np.array(two, np.float32), "FP32")})
        return str(e.value)

    with ThreadPoolExecutor(3) as pool:
        a, b, c = pool.submit(ask, s, "grpc", one), pool.submit(two_rows), pool.submit(ask, s, "http", other)
        got_one, message, got_other = a.result(), b.result(), c.result()
    assert "output 'SUM': the model returned 1 rows for a batch of 2" in message, message
    assert "send one row per request, or scatter the output with batch_output" in message, message
    # Each ran alone: its largest count is its own.
    assert got_one["SUM"] == [[6.0]] and got_one["MAX_OUT"] == [[3]], got_one
    assert got_other["SUM"] == [[5.0]] and got_other["MAX_OUT"] == [[1]], got_other
    st = s.stats("ragged_sum")
    assert st["inference_stats"]["success"]["count"] == 2, st
    assert st["inference_stats"]["fail"]["count"] == 1, st
    assert {b["batch_size"]: b["compute_infer"]["count"] for b in st["batch_stats"]} == {1: 2}, st


def test_a_bad_batch_output_fails_the_load_naming_it(tmp_path):
    repo = make_repo(tmp_path / "repo", ["ragged_scale"])
    good = (repo / "ragged_scale" / "config.pbtxt").read_text()
    bad = {
        "scatter_bad_source": ('source_input: "INPUT"', 'source_input: "MISSING"'),
        "scatter_bad_target": ('target_name: "OUT"', 'target_name: "NOPE"'),
    }
    for name, (old, new) in bad.items():
        shutil.copytree(repo / "ragged_scale", repo / name)
        text = good.replace('name: "ragged_scale"', f'name: "{name}"').replace(old, new)
        (repo / name / "config.pbtxt").write_text(text)
    with TritonServer(repo, "--exit-on-error=false") as s:
        idx = s.index()
        source = idx["scatter_bad_source"][0]
        assert source["state"] == "UNAVAILABLE", source
        assert "batch_output 'OUT' has source_input 'MISSING', which is not an input" in source["reason"], source
        target = idx["scatter_bad_target"][0]
        assert target["state"] == "UNAVAILABLE", target
        assert "batch_output 'NOPE' is not an output of the config" in target["reason"], target
        assert idx["ragged_scale"][0]["state"] == "READY"
        np.testing.assert_array_equal(scale(s, "http", [[1.0, 2.0]]), [[2.0, 4.0]])

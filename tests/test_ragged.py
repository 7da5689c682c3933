"""Ragged batching: requests whose ragged input has different lengths fuse into one ONNX Runtime
run, the input laid end to end as one 1-D tensor, with a batch input of every kind computed by
the backend. Every output is checked against a reference computed here."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np

from server import infer


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

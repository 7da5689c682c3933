"""Statistics and metrics: each test starts its own tritonserver so the counts it checks are
exactly the requests it sent."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from tritonclient.utils import InferenceServerException

from make_models import GATHER_TABLE, mlp_reference
from server import infer


def gather(server, idx: np.ndarray):
    return infer(server, "http", "gather_fail", {"IDX": (idx, "INT64")}).as_numpy("Y")


def check_stage_consistency(stats: dict) -> None:
    """Stage times never exceed the request time they are part of."""
    s = stats["inference_stats"]
    n = s["success"]["count"]
    for stage in ("queue", "compute_input", "compute_infer", "compute_output"):
        assert s[stage]["count"] == n, (stage, s)
        assert s[stage]["ns"] > 0 if n else s[stage]["ns"] == 0, (stage, s)
    stages = sum(s[k]["ns"] for k in ("queue", "compute_input", "compute_infer", "compute_output"))
    assert stages <= s["success"]["ns"], s
    for b in stats["batch_stats"]:
        for stage in ("compute_input", "compute_infer", "compute_output"):
            assert b[stage]["count"] >= 1 and b[stage]["ns"] > 0, b


def us_counter_agrees(metric_us: float, total_ns: int, count: int) -> bool:
    """Triton adds each request's duration to the counter in whole microseconds (truncated)."""
    return total_ns // 1000 - count <= metric_us <= total_ns // 1000


def test_exact_success_and_failure_counts_and_metrics(server_for):
    s = server_for(["gather_fail"])
    good = [np.array([[0, 1]]), np.array([[4], [3]]), np.array([[2, 2, 2]]), np.array([[1], [0], [4]]), np.array([[3]])]
    bad = [np.array([[5]]), np.array([[0, -6]]), np.array([[100], [1]])]
    for idx in good:
        np.testing.assert_array_equal(gather(s, idx.astype(np.int64)), GATHER_TABLE[idx])
    for idx in bad:
        with pytest.raises(InferenceServerException, match="out of data bounds"):
            gather(s, idx.astype(np.int64))
    # Refused by Triton before the backend: neither a success nor a backend failure.
    with pytest.raises(InferenceServerException, match="data-type"):
        infer(s, "http", "gather_fail", {"IDX": (np.zeros((1, 1), np.int32), "INT32")})

    n, m = len(good), len(bad)
    rows = [len(g) for g in good]
    st = s.stats("gather_fail")
    inf = st["inference_stats"]
    assert inf["success"]["count"] == n
    assert inf["fail"]["count"] == m
    assert st["inference_count"] == sum(rows), "one per batch row that ran"
    assert st["execution_count"] == n, "requests sent one at a time run one at a time"
    got_batches = {b["batch_size"]: b["compute_infer"]["count"] for b in st["batch_stats"]}
    assert got_batches == {r: rows.count(r) for r in set(rows)}
    check_stage_consistency(st)

    mt = s.metrics()
    lbl = {"model": "gather_fail", "version": "1"}
    assert mt.get("nv_inference_request_success", **lbl) == n
    assert mt.get("nv_inference_request_failure", reason="BACKEND", **lbl) == m
    assert mt.get("nv_inference_count", **lbl) == st["inference_count"]
    assert mt.get("nv_inference_exec_count", **lbl) == st["execution_count"]
    for metric, stage in [
        ("nv_inference_queue_duration_us", "queue"),
        ("nv_inference_compute_input_duration_us", "compute_input"),
        ("nv_inference_compute_infer_duration_us", "compute_infer"),
        ("nv_inference_compute_output_duration_us", "compute_output"),
        ("nv_inference_request_duration_us", "success"),
    ]:
        assert us_counter_agrees(mt.get(metric, **lbl), inf[stage]["ns"], n), (metric, mt.get(metric, **lbl), inf[stage])


def test_dynamic_batching_fuses_requests(server_for):
    s = server_for(["mlp_batching"])
    xs = [np.full((1, 16), i / 8, np.float32) for i in range(8)]

    def one(x):
        return infer(s, "http", "mlp_batching", {"X": (x, "FP32")}).as_numpy("Y")

    with ThreadPoolExecutor(len(xs)) as pool:
        ys = list(pool.map(one, xs))
    for x, y in zip(xs, ys):
        np.testing.assert_allclose(y, mlp_reference(x), rtol=1e-5, atol=1e-5)
    st = s.stats("mlp_batching")
    assert st["inference_stats"]["success"]["count"] == 8
    assert st["inference_count"] == 8
    assert st["execution_count"] < st["inference_count"], st
    sizes = {b["batch_size"]: b["compute_infer"]["count"] for b in st["batch_stats"]}
    assert sum(size * count for size, count in sizes.items()) == 8
    assert max(sizes) > 1, sizes
    check_stage_consistency(st)


def test_a_failing_request_does_not_fail_its_batch(server_for):
    # Sent together, the three reach one execute (queue delay 300 ms) and first run fused; ONNX
    # Runtime rejects the fused run, so the backend runs them one by one: the good ones succeed.
    s = server_for(["gather_fail"])
    reqs = [np.array([[0, 1]]), np.array([[9, 0]]), np.array([[4, 4]])]

    def one(idx):
        try:
            return gather(s, idx.astype(np.int64))
        except InferenceServerException as e:
            return e

    with ThreadPoolExecutor(3) as pool:
        out = list(pool.map(one, reqs))
    np.testing.assert_array_equal(out[0], GATHER_TABLE[reqs[0]])
    assert isinstance(out[1], InferenceServerException) and "out of data bounds" in str(out[1])
    np.testing.assert_array_equal(out[2], GATHER_TABLE[reqs[2]])
    st = s.stats("gather_fail")
    assert st["inference_stats"]["success"]["count"] == 2
    assert st["inference_stats"]["fail"]["count"] == 1
    assert st["inference_count"] == 2, "rows of the runs that succeeded"
    check_stage_consistency(st)


def test_memory_usage_is_reported(server_for):
    s = server_for(["mlp_fp32", "string_concat"])
    infer(s, "http", "mlp_fp32", {"X": (np.ones((8, 16), np.float32), "FP32")})
    sizes = {}
    for model in ("mlp_fp32", "string_concat"):
        mem = s.stats(model)["memory_usage"]
        cpu = [m for m in mem if m["type"] == "CPU"]
        assert len(cpu) == 1, mem
        sizes[model] = cpu[0]["byte_size"]
    # What the sessions' allocators hold: at least the weights of the model that ran (the
    # MLP's 676 floats), and nowhere near a gigabyte for these small models.
    assert 676 * 4 <= sizes["mlp_fp32"] < 1 << 30, sizes
    assert 0 < sizes["string_concat"] < 1 << 30, sizes

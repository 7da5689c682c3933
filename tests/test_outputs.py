"""The two ways outputs reach a response (`src/execute/direct.rs`): a run of one request has ONNX
Runtime write each fixed-size output whose shape is known before the run straight into the
response; everything else (a run of several requests, BYTES, data-dependent shapes, dimensions
the graph leaves symbolic) is copied after the run. Both must give the same bytes, and
`onnxrs_output_bytes_direct_total` says exactly which path each byte took."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from make_models import DTYPES
from output_models import WIDTH
from server import infer
from test_inference import TRITON_TYPE, sample

MODELS = ["identity_fixed", "identity_all", "nonzero"]
FIXED = [(t, np_t) for t, _, np_t in DTYPES if t != "STRING"]


def out_bytes(server, model: str) -> tuple[float, float]:
    """(all output bytes, those written straight into responses) of `model` so far."""
    m = server.metrics()
    labels = {"model": model, "version": "1"}
    return m.get("onnxrs_output_bytes_total", **labels), m.get("onnxrs_output_bytes_direct_total", **labels)


def executions(server, model: str) -> int:
    return int(server.stats(model).get("execution_count", 0))


def inputs_of(rows: int, seed: int) -> dict:
    out = {}
    for t, _, np_t in DTYPES:
        a = sample(t, np_t, (rows + seed, WIDTH))[seed:]
        out[f"IN_{t}"] = (np.ascontiguousarray(a), TRITON_TYPE[t])
    return out


def check_identity(r, inputs: dict) -> None:
    for t, _, np_t in DTYPES:
        got, want = r.as_numpy(f"OUT_{t}"), inputs[f"IN_{t}"][0]
        assert got.shape == want.shape, t
        if t == "STRING":
            assert got.tolist() == want.tolist(), t
        else:
            assert got.dtype == np.dtype(np_t), (t, got.dtype)
            assert got.tobytes() == want.tobytes(), t


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    from server import TritonServer, make_repo

    with TritonServer(make_repo(tmp_path_factory.mktemp("outputs") / "repo", MODELS)) as s:
        yield s


@pytest.mark.parametrize("proto", ["http", "grpc"])
def test_a_lone_request_gets_its_fixed_size_outputs_written_by_the_run(server, proto):
    rows = 2
    inputs = inputs_of(rows, 0)
    total0, direct0 = out_bytes(server, "identity_fixed")
    r = infer(server, proto, "identity_fixed", inputs)
    check_identity(r, inputs)
    total1, direct1 = out_bytes(server, "identity_fixed")
    fixed = sum(rows * WIDTH * np.dtype(np_t).itemsize for _, np_t in FIXED)
    strings = sum(4 + len(e) for e in inputs["IN_STRING"][0].flatten())
    # Every fixed-size output, and only those, written by ONNX Runtime; the strings copied.
    assert direct1 - direct0 == fixed
    assert total1 - total0 == fixed + strings


def test_requests_that_share_a_run_are_copied_and_get_the_same_bytes(server):
    alone = inputs_of(1, 0)
    lone = infer(server, "http", "identity_fixed", alone)
    execs0, (total0, direct0) = executions(server, "identity_fixed"), out_bytes(server, "identity_fixed")
    batches = [inputs_of(1, 0), inputs_of(2, 1), inputs_of(3, 2)]
    # Sent together, they wait in the queue (300 ms) and run as one ONNX Runtime call.
    with ThreadPoolExecutor(len(batches)) as pool:
        results = list(pool.map(lambda i: infer(server, "grpc", "identity_fixed", i), batches))
    for r, i in zip(results, batches):
        check_identity(r, i)
    assert executions(server, "identity_fixed") - execs0 == 1, "the three requests shared one run"
    total1, direct1 = out_bytes(server, "identity_fixed")
    assert direct1 == direct0, "a run of several requests copies every output"
    assert total1 > total0
    # The same request gives the same bytes on either path.
    for t, _, _ in DTYPES:
        a, b = results[0].as_numpy(f"OUT_{t}"), lone.as_numpy(f"OUT_{t}")
        assert (a.tolist() == b.tolist()) if t == "STRING" else (a.tobytes() == b.tobytes()), t


def test_only_the_outputs_asked_for_are_written(server):
    inputs = inputs_of(4, 0)
    _, direct0 = out_bytes(server, "identity_fixed")
    r = infer(server, "http", "identity_fixed", inputs, outputs=["OUT_FP64", "OUT_STRING"])
    assert r.as_numpy("OUT_FP64").tobytes() == inputs["IN_FP64"][0].tobytes()
    assert r.as_numpy("OUT_STRING").tolist() == inputs["IN_STRING"][0].tolist()
    assert r.as_numpy("OUT_FP32") is None
    assert out_bytes(server, "identity_fixed")[1] - direct0 == 4 * WIDTH * 8


def test_data_dependent_and_symbolic_shapes_are_copied(server):
    x = np.array([0, 5, 0, -1, 7, 0], np.int32)
    total0, direct0 = out_bytes(server, "nonzero")
    r = infer(server, "http", "nonzero", {"X": (x, "INT32")})
    np.testing.assert_array_equal(r.as_numpy("Y"), np.array(np.nonzero(x), np.int64))
    total1, direct1 = out_bytes(server, "nonzero")
    assert (total1 - total0, direct1 - direct0) == (3 * 8, 0)

    # The same identity graph with its second dimension symbolic: nothing is known before the run.
    inputs = inputs_of(2, 0)
    _, direct0 = out_bytes(server, "identity_all")
    check_identity(infer(server, "grpc", "identity_all", inputs), inputs)
    assert out_bytes(server, "identity_all")[1] == direct0


def test_a_bad_request_fails_alone_on_the_direct_path(server):
    good = inputs_of(1, 0)
    bad = dict(good)
    bad["IN_FP32"] = (np.zeros((1, WIDTH + 1), np.float32), "FP32")
    with pytest.raises(Exception) as e:
        infer(server, "http", "identity_fixed", bad)
    assert "IN_FP32" in str(e.value)
    check_identity(infer(server, "http", "identity_fixed", good), good)

"""Outputs of the test models served by a real tritonserver with the onnxrs backend, checked
against expected values, through the official tritonclient over HTTP and gRPC and through plain
HTTP (JSON and binary)."""

from __future__ import annotations

import json
import struct
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import requests
from tritonclient.utils import InferenceServerException

from make_models import DTYPES, OPTIONAL_DEFAULT_BIAS, mlp_reference
from server import binary_infer, bytes_elements, infer, json_body


@pytest.mark.parametrize("proto", ["http", "grpc"])
def test_mlp_matches_the_numpy_reference(shared_server, proto):
    x = (np.arange(5 * 16, dtype=np.float32).reshape(5, 16) - 40) / 17
    r = infer(shared_server, proto, "mlp_fp32", {"X": (x, "FP32")})
    y = r.as_numpy("Y")
    assert y.shape == (5, 4) and y.dtype == np.float32
    np.testing.assert_allclose(y, mlp_reference(x), rtol=1e-5, atol=1e-5)


def test_mlp_over_plain_http_json_and_binary(shared_server):
    x = np.linspace(-1, 1, 2 * 16, dtype=np.float32).reshape(2, 16)
    url = f"{shared_server.url}/v2/models/mlp_fp32/infer"
    r = requests.post(url, json=json_body({"X": (x, "FP32")}), timeout=30)
    assert r.status_code == 200, r.text
    out = r.json()["outputs"][0]
    assert (out["name"], out["datatype"], out["shape"]) == ("Y", "FP32", [2, 4])
    np.testing.assert_allclose(np.array(out["data"], np.float32).reshape(2, 4), mlp_reference(x), rtol=1e-5, atol=1e-5)

    # The binary extension: raw little-endian bytes after the JSON header.
    header = {
        "inputs": [{"name": "X", "shape": [2, 16], "datatype": "FP32", "parameters": {"binary_data_size": x.nbytes}}],
        "outputs": [{"name": "Y", "parameters": {"binary_data": True}}],
    }
    r = binary_infer(shared_server, "mlp_fp32", header, x.tobytes())
    assert r.status_code == 200, r.text
    json_len = int(r.headers["Inference-Header-Content-Length"])
    meta = json.loads(r.content[:json_len])
    assert meta["outputs"][0]["parameters"]["binary_data_size"] == 2 * 4 * 4
    y = np.frombuffer(r.content[json_len:], dtype=np.float32).reshape(2, 4)
    np.testing.assert_allclose(y, mlp_reference(x), rtol=1e-5, atol=1e-5)


def sample(t: str, np_t, shape) -> np.ndarray:
    """Distinctive values of each type, covering its extremes."""
    n = int(np.prod(shape))
    if t == "STRING":
        words = [b"", b"a", "\u00e9t\u00e9 \u2603".encode(), b"\x00\xff binary", b"x" * 300]
        return np.array([words[i % len(words)] for i in range(n)], dtype=np.object_).reshape(shape)
    if t == "BOOL":
        return (np.arange(n) % 3 == 0).reshape(shape)
    if np.issubdtype(np.dtype(np_t), np.integer):
        info = np.iinfo(np_t)
        base = np.array([info.min, info.max, 0, 1, 7], dtype=np_t)
        return np.resize(base, n).reshape(shape)
    base = np.array([-1.5, 0.0, 3.25, 65504.0 if t == "FP16" else 1e30, -0.125], dtype=np.float64)
    return np.resize(base, n).astype(np_t).reshape(shape)


TRITON_TYPE = {t: ("BYTES" if t == "STRING" else t) for t, _, _ in DTYPES}


@pytest.mark.parametrize("proto", ["http", "grpc"])
def test_every_data_type_round_trips(shared_server, proto):
    shape = (3, 5)
    inputs = {f"IN_{t}": (sample(t, np_t, shape), TRITON_TYPE[t]) for t, _, np_t in DTYPES}
    r = infer(shared_server, proto, "identity_all", inputs)
    for t, _, np_t in DTYPES:
        got = r.as_numpy(f"OUT_{t}")
        want = inputs[f"IN_{t}"][0]
        assert got.shape == shape, t
        if t == "STRING":
            assert got.tolist() == want.tolist(), t
        else:
            assert got.dtype == np.dtype(np_t), (t, got.dtype)
            assert got.tobytes() == want.tobytes(), t
        out = [o for o in r.get_response(**({"as_json": True} if proto == "grpc" else {}))["outputs"]]
        assert any(o["name"] == f"OUT_{t}" and o["datatype"] == TRITON_TYPE[t] for o in out), t


def test_zero_sized_tensors(shared_server):
    # n = 0: a [1, 0] tensor of every type goes in and comes out.
    inputs = {f"IN_{t}": (sample(t, np_t, (1, 0)), TRITON_TYPE[t]) for t, _, np_t in DTYPES}
    r = infer(shared_server, "http", "identity_all", inputs)
    for t, _, _ in DTYPES:
        assert r.as_numpy(f"OUT_{t}").shape == (1, 0), t
    r = infer(shared_server, "grpc", "two_io_dyn", {"A": (np.zeros((2, 0), np.float32), "FP32"),
                                                    "B": (np.zeros((2, 0), np.int32), "INT32")})
    assert r.as_numpy("SUM").shape == (2, 0) and r.as_numpy("PROD").shape == (2, 0)


@pytest.mark.parametrize("proto", ["http", "grpc"])
def test_bytes_model(shared_server, proto):
    text = np.array([[b"hello", b""], ["gr\u00fc\u00df".encode(), b"\x00\x01\x02"]], dtype=np.object_)
    r = infer(shared_server, proto, "string_concat", {"TEXT": (text, "BYTES")})
    assert r.as_numpy("OUT").tolist() == [[b"hello|ok", b"|ok"], ["gr\u00fc\u00df|ok".encode(), b"\x00\x01\x02|ok"]]
    assert r.as_numpy("ECHO").tolist() == text.tolist()


def test_bytes_over_plain_http_json(shared_server):
    text = np.array([["a", "bb", "\u00e9"]])
    r = requests.post(f"{shared_server.url}/v2/models/string_concat/infer", json=json_body({"TEXT": (text, "BYTES")}), timeout=30)
    assert r.status_code == 200, r.text
    outs = {o["name"]: o for o in r.json()["outputs"]}
    assert outs["OUT"]["data"] == ["a|ok", "bb|ok", "\u00e9|ok"] and outs["OUT"]["shape"] == [1, 3]


@pytest.mark.parametrize("proto", ["http", "grpc"])
def test_two_inputs_two_outputs_dynamic_dims(shared_server, proto):
    a = np.array([[1.5, -2.0, 3.0]], np.float32)
    b = np.array([[2, 3, -4]], np.int32)
    r = infer(shared_server, proto, "two_io_dyn", {"A": (a, "FP32"), "B": (b, "INT32")}, outputs=["PROD"])
    np.testing.assert_array_equal(r.as_numpy("PROD"), a * b)
    assert r.as_numpy("SUM") is None, "only the requested output comes back"
    r = infer(shared_server, proto, "two_io_dyn", {"A": (a, "FP32"), "B": (b, "INT32")})
    np.testing.assert_array_equal(r.as_numpy("SUM"), a + b)
    np.testing.assert_array_equal(r.as_numpy("PROD"), a * b)


def test_requests_that_cannot_share_a_batch_all_succeed(shared_server):
    # Different n per request: the scheduler hands them to one execute (queue delay 200 ms), the
    # backend runs each shape group separately and every request gets its own right answer.
    def one(n):
        a = np.arange(n, dtype=np.float32).reshape(1, n) + n
        b = np.full((1, n), n, np.int32)
        r = infer(shared_server, "http", "two_io_dyn", {"A": (a, "FP32"), "B": (b, "INT32")})
        return n, a, b, r.as_numpy("SUM"), r.as_numpy("PROD")

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(one, [1, 2, 3, 4, 2, 3, 1, 5]))
    for n, a, b, s, p in results:
        assert s.shape == (1, n)
        np.testing.assert_array_equal(s, a + b)
        np.testing.assert_array_equal(p, a * b)


def test_model_without_batching(shared_server):
    x = np.array([[1, 2, 3], [4, 5, 6], [-1, 0, 0.5]], np.float32)
    r = infer(shared_server, "grpc", "nobatch_fp32", {"X": (x, "FP32")})
    np.testing.assert_array_equal(r.as_numpy("Y"), x * 2)
    assert shared_server.config("nobatch_fp32")["max_batch_size"] == 0


def test_onnx_scalars(shared_server):
    # max_batch_size 0: the ONNX scalar travels as dims [1], as with the official backend.
    r = infer(shared_server, "http", "scalar_model", {"X": (np.array([2.5], np.float32), "FP32")})
    assert r.as_numpy("Y").tolist() == [7.5]
    # Batching: per request a scalar (dims [1], reshape []), the model sees [batch].
    x = np.array([[1.0], [-2.0], [4.0]], np.float32)
    r = infer(shared_server, "grpc", "scalar_batch", {"X": (x, "FP32")})
    np.testing.assert_array_equal(r.as_numpy("Y"), x * 3)
    inp = shared_server.config("scalar_batch")["input"][0]
    assert inp["dims"] == [1] and inp["reshape"] == {"shape": []}


def test_optional_input_falls_back_to_the_initializer(shared_server):
    x = np.arange(8, dtype=np.float32).reshape(2, 4)
    r = infer(shared_server, "http", "optional_input", {"X": (x, "FP32")})
    np.testing.assert_array_equal(r.as_numpy("Y"), x + OPTIONAL_DEFAULT_BIAS)
    bias = np.array([-1, -1, 0, 100], np.float32)
    r = infer(shared_server, "grpc", "optional_input", {"X": (x, "FP32"), "BIAS": (bias, "FP32")})
    np.testing.assert_array_equal(r.as_numpy("Y"), x + bias)


def test_several_versions_served_at_once(shared_server):
    x = np.ones((2, 4), np.float32)
    for version, add in [("1", 1), ("2", 2)]:
        assert shared_server.model_ready("multi_version", version)
        r = infer(shared_server, "http", "multi_version", {"X": (x, "FP32")}, version=version)
        np.testing.assert_array_equal(r.as_numpy("Y"), x + add)
    # No version: the highest.
    r = infer(shared_server, "grpc", "multi_version", {"X": (x, "FP32")})
    np.testing.assert_array_equal(r.as_numpy("Y"), x + 2)


def test_autocompleted_config(shared_server):
    c = shared_server.config("autocomplete_mlp")
    assert c["backend"] == "onnxrs"
    assert c["max_batch_size"] == 4, "the official default-max-batch-size for a model with a dynamic batch dim"
    assert "dynamic_batching" in c
    assert [(i["name"], i["data_type"], i["dims"]) for i in c["input"]] == [("X", "TYPE_FP32", [16])]
    assert [(o["name"], o["data_type"], o["dims"]) for o in c["output"]] == [("Y", "TYPE_FP32", [4])]
    x = np.ones((4, 16), np.float32)
    r = infer(shared_server, "http", "autocomplete_mlp", {"X": (x, "FP32")})
    np.testing.assert_allclose(r.as_numpy("Y"), mlp_reference(x), rtol=1e-5, atol=1e-5)


# ---- bad requests: a clear error for that request, the server keeps serving


def expect_error(fn, *fragments):
    with pytest.raises(InferenceServerException) as e:
        fn()
    msg = str(e.value)
    for f in fragments:
        assert f in msg, f"'{f}' not in '{msg}'"
    return msg


@pytest.mark.parametrize("proto", ["http", "grpc"])
def test_bad_requests_get_clear_errors(shared_server, proto):
    s = shared_server
    x = np.ones((1, 16), np.float32)
    expect_error(lambda: infer(s, proto, "mlp_fp32", {"X": (x.astype(np.float64), "FP64")}), "data-type", "FP64")
    expect_error(lambda: infer(s, proto, "mlp_fp32", {"X": (np.ones((1, 15), np.float32), "FP32")}), "shape")
    expect_error(lambda: infer(s, proto, "mlp_fp32", {"X": (np.ones((9, 16), np.float32), "FP32")}), "batch")
    expect_error(lambda: infer(s, proto, "two_io_dyn", {"A": (np.ones((1, 2), np.float32), "FP32")}), "B")
    # Inside the backend: ONNX Runtime rejects the index, the message says why.
    idx = np.array([[0, 7]], np.int64)
    expect_error(lambda: infer(s, proto, "gather_fail", {"IDX": (idx, "INT64")}), "out of data bounds")
    # ... and the server still answers correctly.
    np.testing.assert_allclose(infer(s, proto, "mlp_fp32", {"X": (x, "FP32")}).as_numpy("Y"), mlp_reference(x), rtol=1e-5)


def bytes_request(server, raw: bytes, shape):
    header = {"inputs": [{"name": "TEXT", "shape": shape, "datatype": "BYTES", "parameters": {"binary_data_size": len(raw)}}]}
    return binary_infer(server, "string_concat", header, raw)


def test_malformed_bytes_are_refused(shared_server):
    s = shared_server
    good = bytes_elements(b"abc", b"")
    assert bytes_request(s, good, [1, 2]).status_code == 200
    for raw, shape in [
        (bytes_elements(b"abc") + b"\x05\x00", [1, 2]),  # a cut length prefix
        (struct.pack("<I", 300) + b"abc", [1, 1]),  # a length past the end
        (good + bytes_elements(b"z"), [1, 2]),  # more elements than the shape holds
    ]:
        r = bytes_request(s, raw, shape)
        assert r.status_code == 400 and "TEXT" in r.json()["error"], r.text
    outs = {o["name"]: o["data"] for o in bytes_request(s, good, [1, 2]).json()["outputs"]}
    assert outs == {"OUT": ["abc|ok", "|ok"], "ECHO": ["abc", ""]}

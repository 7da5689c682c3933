"""Memory that comes and goes with dynamic shapes: ONNX Runtime's arena grows to the largest
request it served; with `memory.enable_memory_arena_shrinkage` (the official backend's key) it
gives the memory back after every run, and the figures onnxrs reports follow it down. Unknown
parameters never pass silently.
"""

from __future__ import annotations

import time

import numpy as np
from server import TritonServer, infer, make_repo

MIB = 1 << 20
# The memory figure is re-read at most once a second (instance.rs), after an execute.
REPORT_INTERVAL_S = 1.2


def reference(x: np.ndarray, model_dir) -> np.ndarray:
    import onnx
    from onnx import numpy_helper

    g = onnx.load(str(model_dir / "1" / "model.onnx")).graph
    w = {i.name: numpy_helper.to_array(i) for i in g.initializer}
    return (np.maximum(x @ w["W1"], 0) @ w["W2"]).mean(axis=1)


def ask(s: TritonServer, model: str, batch: int, length: int) -> None:
    x = np.linspace(-1, 1, batch * length * 64, dtype=np.float32).reshape(batch, length, 64)
    y = infer(s, "http", model, {"X": (x, "FP32")}).as_numpy("Y")
    np.testing.assert_allclose(y, reference(x, s.repo / model), rtol=1e-4, atol=1e-5)


def reported(s: TritonServer, model: str) -> int:
    """What the server reports after the next execute re-read the figure."""
    time.sleep(REPORT_INTERVAL_S)
    ask(s, model, 1, 16)
    time.sleep(0.1)
    mem = {u["type"]: u["byte_size"] for u in s.stats(model)["memory_usage"]}
    gauge = s.metrics().get("onnxrs_memory_bytes", model=model, version="1", device="cpu")
    assert gauge == mem["CPU"], (gauge, mem)
    return mem["CPU"]


def growth_after_long_requests(s: TritonServer, model: str) -> tuple[float, float]:
    """Reported memory and server RSS growth, in MiB, from after small requests to after three
    long ones (each followed by a small one that re-reads the figure)."""
    for _ in range(3):
        ask(s, model, 1, 16)
    small, rss_small = reported(s, model), s.rss_kib()
    for _ in range(3):
        ask(s, model, 4, 4096)  # activations 4 x 4096 x 256 floats: 16 MiB per MatMul output
    after, rss_after = reported(s, model), s.rss_kib()
    return (after - small) / MIB, (rss_after - rss_small) / 1024


def test_arena_shrinkage_gives_memory_back(server_for):
    keep = growth_after_long_requests(server_for(["arena_keep"]), "arena_keep")
    s = server_for(["arena_shrink"])
    shrink = growth_after_long_requests(s, "arena_shrink")
    print(f"reported / RSS growth in MiB: kept {keep[0]:.1f} / {keep[1]:.1f}, shrunk {shrink[0]:.1f} / {shrink[1]:.1f}")
    # The arena keeps what the long requests needed, and the figure says so.
    assert keep[0] > 16 and keep[1] > 16, keep
    # Given back after each run: the reported figure is where it was; RSS keeps only what the
    # server itself holds on to (request buffers), far less than the kept arena.
    assert shrink[0] < 1, shrink
    assert shrink[1] < keep[1] / 2, (shrink, keep)
    assert "arena shrinkage after every run on cpu:0" in s.log_text()


def test_unknown_parameters_do_not_pass_silently(server_for):
    s = server_for(["arena_keep", "mlp_fp32"], "--model-control-mode=explicit", "--load-model=*")
    cfg = s.repo / "arena_keep" / "config.pbtxt"
    base = cfg.read_text()
    # A misspelt memory key would change nothing: the load is refused, naming it.
    cfg.write_text(base + 'parameters { key: "memory.enable_arena_shrinkage" value: { string_value: "cpu:0" } }\n')
    status, body = s.request("POST", "/v2/repository/models/arena_keep/load", {})
    assert status == 400, (status, body)
    assert b"'memory.enable_arena_shrinkage' is not a memory setting onnxrs knows" in body, body
    # Any other unknown key loads, with a warning that names it.
    cfg.write_text(base + 'parameters { key: "intra_op_threads" value: { string_value: "2" } }\n')
    status, body = s.request("POST", "/v2/repository/models/arena_keep/load", {})
    assert status == 200, (status, body)
    assert "parameters onnxrs does not know, ignored: intra_op_threads" in s.log_text()
    ask(s, "arena_keep", 2, 8)

"""Memory that comes and goes with dynamic shapes: ONNX Runtime's arena grows to the largest
request it served; with `memory.enable_memory_arena_shrinkage` (the official backend's key) it
gives the memory back after every run, and the figures onnxrs reports follow it down. With
`--backend-config=onnxrs,shared-arena=1` every session allocates from one arena, so instances
hold one peak between them instead of one each; `shared-arena-max-bytes` caps it, and a request
that would need more fails alone. Unknown parameters never pass silently.
"""

from __future__ import annotations

import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from server import TritonServer, infer, make_repo
from tritonclient.utils import InferenceServerException

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


def arena_repo(dest: Path, names: list[str], instances: int, parameters: dict[str, str] | None = None) -> Path:
    """Copies of `arena_keep` under `names`, each with `instances` CPU instances (and `parameters`)."""
    make_repo(dest / "src", ["arena_keep"])
    base = (dest / "src" / "arena_keep" / "config.pbtxt").read_text()
    for n in names:
        shutil.copytree(dest / "src" / "arena_keep", dest / "repo" / n)
        cfg = base.replace('name: "arena_keep"', f'name: "{n}"').replace("count: 1", f"count: {instances}")
        for k, v in (parameters or {}).items():
            cfg += f'parameters {{ key: "{k}" value: {{ string_value: "{v}" }} }}\n'
        (dest / "repo" / n / "config.pbtxt").write_text(cfg)
    return dest / "repo"


def together(calls) -> list:
    """Runs the calls at the same time; their results (or exceptions) in order."""

    def run(call):
        try:
            return call()
        except Exception as e:  # noqa: BLE001 - returned for the caller to assert on
            return e

    with ThreadPoolExecutor(len(calls)) as ex:
        return list(ex.map(run, calls))


def refreshed_instance_figures(s: TritonServer, models: list[str], instances: int) -> dict[str, float]:
    """Each instance's `onnxrs_memory_bytes` after every instance has re-read it: each figure is
    re-read after an execute a second after the last, so small requests go to all instances at
    once (both instances of a model busy) until every instance has reported again."""
    names = [(m, f"{m}_0_{i}") for m in models for i in range(instances)]
    figures: dict[str, float] = {}
    for _ in range(5):
        time.sleep(REPORT_INTERVAL_S)
        for r in together([lambda m=m: ask(s, m, 1, 16) for m in models for _ in range(2 * instances)]):
            assert not isinstance(r, Exception), r
        time.sleep(0.1)
        now = s.metrics()
        figures = {i: now.get("onnxrs_memory_bytes", model=m, instance=i, device="cpu") for m, i in names}
        if all(v > 16 * MIB for v in figures.values()) or now.values("onnxrs_shared_arena_bytes"):
            return figures
    return figures


def long_requests_on_every_instance(s: TritonServer, models: list[str]) -> None:
    """Two long requests at once per model (one on each of its two instances), model after model:
    the peaks of different models never overlap."""
    for m in models:
        for r in together([lambda m=m: ask(s, m, 4, 4096)] * 2):
            assert not isinstance(r, Exception), r


FOUR = ["arena_a", "arena_b", "arena_c", "arena_d"]


def test_shared_arena_holds_one_peak_for_four_models(tmp_path):
    # Each instance its own arena (the default): eight arenas, each grown to its own peak.
    with TritonServer(arena_repo(tmp_path / "own", FOUR, 2)) as s:
        rss_before = s.rss_kib()
        long_requests_on_every_instance(s, FOUR)
        own = refreshed_instance_figures(s, FOUR, 2)
        own_rss = s.rss_kib() - rss_before
        own_reported = sum(s.stats(m)["memory_usage"][0]["byte_size"] for m in FOUR)
        assert "onnxrs_shared_arena_bytes" not in s.metrics().names()
    # Every instance of every model on one arena: it holds the largest set of runs in flight at
    # once (two), not eight peaks.
    with TritonServer(arena_repo(tmp_path / "shared", FOUR, 2), "--backend-config=onnxrs,shared-arena=1") as s:
        rss_before = s.rss_kib()
        long_requests_on_every_instance(s, FOUR)
        figures = refreshed_instance_figures(s, FOUR, 2)
        shared_rss = s.rss_kib() - rss_before
        shared = s.metrics().get("onnxrs_shared_arena_bytes")
        # The arena is nobody's own: instances report none of it, the backend gauge all of it.
        assert all(s.stats(m)["memory_usage"] == [{"type": "CPU", "id": 0, "byte_size": 0}] for m in FOUR)
        assert set(figures.values()) == {0.0}, figures
        assert "sessions allocate from the shared CPU arena" in s.log_text()
    print(
        f"4 models x 2 instances after 2 long requests each: own arenas {own_reported / MIB:.1f} MiB reported "
        f"(per instance {sorted(round(v / MIB, 1) for v in own.values())}), RSS +{own_rss / 1024:.1f} MiB; "
        f"shared arena {shared / MIB:.1f} MiB, RSS +{shared_rss / 1024:.1f} MiB"
    )
    # Every instance grew its own arena to at least one long request's activations (16 MiB each
    # for h and Relu(h)), and the model figures are the sums of their instances'.
    assert all(v > 32 * MIB for v in own.values()), own
    assert own_reported == sum(own.values()), (own_reported, own)
    # One arena holds what two concurrent long runs need: a quarter of eight peaks, and at least
    # one run's worth.
    assert 32 * MIB < shared < own_reported / 3, (shared, own_reported)
    assert shared_rss < own_rss / 2, (shared_rss, own_rss)


CAP = 8 * MIB


def test_shared_arena_cap_fails_the_oversized_request_alone(tmp_path):
    repo = arena_repo(tmp_path / "cap", ["arena_capped"], 2)
    # A model may keep its own arena (uncapped) beside the shared one.
    arena_repo(tmp_path / "own", ["arena_own"], 1, {"memory.shared_arena": "0"})
    shutil.copytree(tmp_path / "own" / "repo" / "arena_own", repo / "arena_own")
    with TritonServer(repo, f"--backend-config=onnxrs,shared-arena-max-bytes={CAP}") as s:
        assert f"one shared CPU arena for the sessions of every model (capped at {CAP} bytes)" in s.log_text()
        # The long request needs 16 MiB at once; small ones keep running beside it, on the other
        # instance and after it.
        results = together([lambda: ask(s, "arena_capped", 4, 4096)] + [lambda: ask(s, "arena_capped", 1, 16)] * 6)
        failed, small = results[0], results[1:]
        assert isinstance(failed, InferenceServerException), failed
        assert failed.status() == "503", failed  # UNAVAILABLE
        msg = failed.message()
        assert msg.startswith("resource exhausted: the run needs more memory than the shared CPU arena's cap"), msg
        assert f"--backend-config=onnxrs,shared-arena-max-bytes={CAP}" in msg, msg
        assert "is smaller than requested bytes of 16777216" in msg, msg
        assert small == [None] * 6, small
        ask(s, "arena_capped", 1, 16)
        ask(s, "arena_capped", 2, 512)
        stats = s.stats("arena_capped")
        assert stats["inference_stats"]["fail"]["count"] == 1, stats
        assert s.metrics().get("onnxrs_request_errors_total", model="arena_capped", kind="ort_failure") == 1
        # The arena stayed under its cap; the instances report none of it as theirs.
        refreshed_instance_figures(s, ["arena_capped"], 2)
        held = s.metrics().get("onnxrs_shared_arena_bytes")
        assert 0 < held <= CAP, held
        assert stats["memory_usage"] == [{"type": "CPU", "id": 0, "byte_size": 0}], stats
        # The model that opted out runs the long request in its own arena, and reports it.
        ask(s, "arena_own", 4, 4096)
        assert reported(s, "arena_own") > 32 * MIB
        assert s.metrics().get("onnxrs_shared_arena_bytes") <= CAP


def shared_figure(s: TritonServer, model: str) -> float:
    """`onnxrs_shared_arena_bytes` after the next execute of `model` re-read it."""
    time.sleep(REPORT_INTERVAL_S)
    ask(s, model, 1, 16)
    time.sleep(0.1)
    return s.metrics().get("onnxrs_shared_arena_bytes")


def test_shrinkage_shrinks_the_shared_arena(tmp_path):
    repo = arena_repo(tmp_path / "k", ["arena_kept"], 1)
    arena_repo(tmp_path / "s", ["arena_shrunk"], 1, {"memory.enable_memory_arena_shrinkage": "cpu:0"})
    shutil.copytree(tmp_path / "s" / "repo" / "arena_shrunk", repo / "arena_shrunk")
    with TritonServer(repo, "--backend-config=onnxrs,shared-arena=1") as s:
        start = shared_figure(s, "arena_kept")
        ask(s, "arena_shrunk", 4, 4096)
        after_shrunk = shared_figure(s, "arena_kept")
        ask(s, "arena_kept", 4, 4096)
        after_kept = shared_figure(s, "arena_kept")
        # A run of the shrinking model frees what no run uses: the other model's leftovers too.
        after_next_shrunk = shared_figure(s, "arena_shrunk")
    print(f"shared arena MiB: start {start / MIB:.1f}, after the shrunk model's long run {after_shrunk / MIB:.1f}, "
          f"after the kept model's {after_kept / MIB:.1f}, after the shrunk model's next run {after_next_shrunk / MIB:.1f}")
    assert after_shrunk <= start + MIB, (start, after_shrunk)
    assert after_kept - start >= 32 * MIB, (start, after_kept)  # h and Relu(h), 16 MiB each
    assert after_next_shrunk <= start + MIB, (start, after_next_shrunk)


def test_reloads_reuse_the_shared_arena(tmp_path):
    # An unloaded model's sessions give their memory back to the shared arena, and the next load
    # runs in it: unload / load cycles do not grow it.
    repo = arena_repo(tmp_path / "r", ["arena_reloaded"], 2)
    args = ["--model-control-mode=explicit", "--load-model=arena_reloaded", "--backend-config=onnxrs,shared-arena=1"]
    with TritonServer(repo, *args) as s:
        figures = []
        for _ in range(5):
            ask(s, "arena_reloaded", 4, 4096)
            figures.append(shared_figure(s, "arena_reloaded"))
            s.unload("arena_reloaded")
            status, body = s.request("POST", "/v2/repository/models/arena_reloaded/load", {})
            assert status == 200, (status, body)
    print(f"shared arena after each of 5 reloads, MiB: {[round(f / MIB, 2) for f in figures]}")
    assert figures[0] >= 32 * MIB, figures
    assert max(figures) <= figures[0], figures


def test_weights_past_the_cap_refuse_the_load(tmp_path):
    # The weights count against the cap (128 KiB per session here): the second model would put
    # the arena past it, where ONNX Runtime would stop enforcing it, so its load is refused.
    cap = 192 << 10
    repo = arena_repo(tmp_path / "w", ["arena_first", "arena_second"], 1)
    with TritonServer(repo, "--model-control-mode=explicit", f"--backend-config=onnxrs,shared-arena-max-bytes={cap}") as s:
        status, body = s.request("POST", "/v2/repository/models/arena_first/load", {})
        assert status == 200, (status, body)
        status, body = s.request("POST", "/v2/repository/models/arena_second/load", {})
        assert status == 400, (status, body)
        assert b"the shared CPU arena holds 262160 bytes with this session's weights, more than its cap" in body, body
        assert f"shared-arena-max-bytes={cap}".encode() in body, body
        # The refused session gave its weights back: the cap still holds for the first model.
        ask(s, "arena_first", 1, 16)
        with pytest.raises(InferenceServerException, match="resource exhausted"):
            ask(s, "arena_first", 4, 4096)
        ask(s, "arena_first", 1, 16)


def test_shared_arena_settings_are_checked(tmp_path):
    # A model asking for a shared arena the backend does not have is refused, naming the fix.
    repo = arena_repo(tmp_path / "a", ["arena_wants"], 1, {"memory.shared_arena": "1"})
    with TritonServer(repo, "--model-control-mode=explicit") as s:
        status, body = s.request("POST", "/v2/repository/models/arena_wants/load", {})
        assert status == 400, (status, body)
        assert b"start the server with --backend-config=onnxrs,shared-arena=1" in body, body


def test_unknown_parameters_do_not_pass_silently(server_for):
    s = server_for(["arena_keep", "mlp_fp32"], "--model-control-mode=explicit", "--load-model=*")
    cfg = s.repo / "arena_keep" / "config.pbtxt"
    base = cfg.read_text()
    # A misspelt memory key would change nothing: the load is refused, naming it.
    cfg.write_text(base + 'parameters { key: "memory.enable_arena_shrinkage" value: { string_value: "cpu:0" } }\n')
    status, body = s.request("POST", "/v2/repository/models/arena_keep/load", {})
    assert status == 400, (status, body)
    assert b"'memory.enable_arena_shrinkage' is not a memory setting onnxrs knows" in body, body
    assert b"(it knows 'memory.enable_memory_arena_shrinkage' and 'memory.shared_arena')" in body, body
    # Any other unknown key loads, with a warning that names it.
    cfg.write_text(base + 'parameters { key: "intra_op_threads" value: { string_value: "2" } }\n')
    status, body = s.request("POST", "/v2/repository/models/arena_keep/load", {})
    assert status == 200, (status, body)
    assert "parameters onnxrs does not know, ignored: intra_op_threads" in s.log_text()
    ask(s, "arena_keep", 2, 8)

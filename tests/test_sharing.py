"""Instances sharing one ONNX Runtime session (`share_session_between_instances`) and the
process-wide operator thread pool (`--backend-config=onnxrs,thread-pools=shared`, the default).

A shared session is run by several instances at once: every response must still be right, the
statistics exact, and its memory counted once (by the instance that made it)."""

from __future__ import annotations

import re
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from make_models import mlp_reference
from server import TritonServer, infer, make_repo

CLIENTS, PER_CLIENT = 8, 40


def memory_gauges(server, model: str) -> dict[str, float]:
    """onnxrs_memory_bytes{device="cpu"} per instance."""
    m = server.metrics()
    return {
        labels["instance"]: value
        for name, labels, value in m.samples
        if name == "onnxrs_memory_bytes" and labels.get("model") == model and labels.get("device") == "cpu"
    }


def test_a_shared_session_serves_every_instance_concurrently(server_for):
    s = server_for(["mlp_shared", "mlp_unshared"])
    log = s.log_text()
    assert "model 'mlp_shared' version 1:" in log and "one session shared by the instances" in log
    before = s.stats("mlp_shared")

    def client(k: int) -> int:
        rng = np.random.default_rng(k)
        for i in range(PER_CLIENT):
            rows = 1 + (k + i) % 3
            x = rng.standard_normal((rows, 16)).astype(np.float32)
            y = infer(s, "grpc" if k % 2 else "http", "mlp_shared", {"X": (x, "FP32")}).as_numpy("Y")
            np.testing.assert_allclose(y, mlp_reference(x), rtol=1e-5, atol=1e-5)
        return sum(1 + (k + i) % 3 for i in range(PER_CLIENT))

    with ThreadPoolExecutor(CLIENTS) as pool:
        rows = sum(pool.map(client, range(CLIENTS)))

    st = s.stats("mlp_shared")
    inf = st["inference_stats"]
    n = CLIENTS * PER_CLIENT
    assert inf["success"]["count"] - before["inference_stats"]["success"]["count"] == n
    assert inf["fail"]["count"] == 0
    assert st["inference_count"] - before["inference_count"] == rows
    # No dynamic batching: one execute, and one run, per request.
    assert st["execution_count"] - before["execution_count"] == n
    stages = sum(inf[k]["ns"] for k in ("compute_input", "compute_infer", "compute_output"))
    assert 0 < stages <= inf["success"]["ns"]

    # Four instances, one session: the instance that made it reports its memory, the others
    # none, so the model's figure is one session's, a quarter of the unshared model's.
    shared, unshared = memory_gauges(s, "mlp_shared"), memory_gauges(s, "mlp_unshared")
    assert len(shared) == 4 and len(unshared) == 4
    assert sorted(v > 0 for v in shared.values()) == [False, False, False, True], shared
    assert all(v > 0 for v in unshared.values()), unshared
    cpu = lambda model: sum(u["byte_size"] for u in s.stats(model)["memory_usage"] if u["type"] == "CPU")  # noqa: E731
    assert cpu("mlp_shared") == max(shared.values())
    assert cpu("mlp_unshared") == sum(unshared.values())
    assert cpu("mlp_shared") < cpu("mlp_unshared")


def threads(server: TritonServer) -> int:
    status = open(f"/proc/{server.proc.pid}/status").read()
    return int(re.search(r"^Threads:\s+(\d+)", status, re.M).group(1))


def test_sessions_share_one_pool_of_operator_threads_by_default(tmp_path):
    # Five sessions with no thread counts of their own (four instances, and one shared session).
    counts = {}
    for pools in ("shared", "per-session"):
        repo = make_repo(tmp_path / pools / "repo", ["mlp_shared", "mlp_unshared"])
        with TritonServer(repo, f"--backend-config=onnxrs,thread-pools={pools}") as s:
            for model in ("mlp_shared", "mlp_unshared"):
                x = np.ones((1, 16), np.float32)
                np.testing.assert_allclose(
                    infer(s, "http", model, {"X": (x, "FP32")}).as_numpy("Y"), mlp_reference(x), rtol=1e-5, atol=1e-5
                )
            log = s.log_text()
            counts[pools] = threads(s)
            if pools == "shared":
                cpus = int(re.search(r"operator threads: Shared \{ threads: (\d+), inter_threads: 1 \}", log).group(1))
                assert "threads: shared pool of" in log
            else:
                assert "operator threads: PerSession" in log
    # A pool of N threads has N - 1 of its own (the caller is the N-th): one such pool in all,
    # against one per session.
    assert counts["per-session"] - counts["shared"] == (5 - 1) * (cpus - 1), (counts, cpus)

"""Stateful models (sequence_batching): control inputs of every kind and type, implicit state
(fixed and variable-shaped, also returned as an output), steps of several sequences fused into
one ONNX Runtime run, many sequences interleaved over HTTP and gRPC, a failing middle step, and
the exact statistics and metrics. Every output is checked against a reference computed here."""

from __future__ import annotations

import shutil
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from tritonclient.utils import InferenceServerException

from sequence_models import ACC_TABLE, CORRID_TYPES
from server import TritonServer, infer, make_repo

NP = {"UINT64": np.uint64, "INT64": np.int64, "UINT32": np.uint32, "INT32": np.int32}


def correlation_ids(corrid: str, n: int, base: int) -> list[int | str]:
    """n distinct ids a CORRID of type `corrid` can carry (strings for TYPE_STRING)."""
    if corrid == "STRING":
        return [f"seq-{base}-{k}" for k in range(n)]
    return [base + k for k in range(n)]


def run_echo_sequence(server, proto, model, sid, values, corrid):
    """Sends one sequence of `values` to a control-echo model, checking each step's outputs."""
    batching = "nobatch" not in model
    for k, v in enumerate(values):
        x = np.array([[v]] if batching else [v], dtype=np.float32)
        start, end = k == 0, k == len(values) - 1
        r = infer(server, proto, model, {"INPUT": (x, "FP32")}, sequence=(sid, start, end))
        assert r.as_numpy("OUTPUT").flatten().tolist() == [v]
        assert r.as_numpy("OUT_START").flatten().tolist() == [int(start)], (model, sid, k)
        assert r.as_numpy("OUT_END").flatten().tolist() == [float(end)], (model, sid, k)
        assert r.as_numpy("OUT_READY").flatten().tolist() == [True], (model, sid, k)
        got = r.as_numpy("OUT_CORRID").flatten()[0]
        if corrid == "STRING":
            assert got == str(sid).encode(), (model, sid, got)
        else:
            assert got == NP[corrid](sid) and r.as_numpy("OUT_CORRID").dtype == NP[corrid], (model, sid, got)
    return len(values)


def interleave(jobs):
    """Runs the sequences (callables) at once, so their steps interleave; their results."""
    with ThreadPoolExecutor(len(jobs)) as pool:
        return [f.result() for f in [pool.submit(j) for j in jobs]]


def stats_of(server, model):
    st = server.stats(model)
    return st["inference_stats"], st["batch_stats"], st


def steps_metric(server, model):
    m = server.metrics()
    return {p: m.get("onnxrs_sequence_steps_total", model=model, position=p) for p in ("start", "middle", "end")}


@pytest.mark.parametrize("corrid", list(CORRID_TYPES))
def test_control_inputs_every_kind_batching_and_not(server_for, corrid):
    models = [f"seq_ctl_{corrid.lower()}", f"seq_ctl_nobatch_{corrid.lower()}"]
    s = server_for(models)
    for i, model in enumerate(models):
        ids = correlation_ids(corrid, 6, 1000 * (i + 1))
        lengths = [3, 4, 2, 5, 3, 1]
        jobs = [
            (lambda sid=sid, n=n, j=j: run_echo_sequence(
                s, ("http", "grpc")[j % 2], model, sid, [float(10 * j + k) for k in range(n)], corrid))
            for j, (sid, n) in enumerate(zip(ids, lengths))
        ]
        total = sum(interleave(jobs))
        inf, batches, st = stats_of(s, model)
        assert inf["success"]["count"] == total and inf["fail"]["count"] == 0, inf
        assert sum(b["batch_size"] * b["compute_infer"]["count"] for b in batches) == total, batches
        if "nobatch" in model:
            assert st["execution_count"] == total
        # One-request sequences count as start; every other sequence has one start and one end.
        starts, ends = len(lengths), sum(1 for n in lengths if n > 1)
        assert steps_metric(s, model) == {"start": starts, "middle": total - starts - ends, "end": ends}


def test_control_inputs_direct_strategy_and_its_null_requests(server_for):
    s = server_for(["seq_ctl_direct"])
    # Sequence 1 takes slot 0, sequence 2 slot 1. While 1 is idle, Triton sends 2's steps in a
    # batch of two whose slot 0 holds a null request (no client, uninitialized inputs): the
    # backend answers it without running it, and counts it in the batch statistic (the batch
    # Triton formed, as the official backend, which runs it, reports it).
    for sid, values in ((1, [1.0]), (2, [2.0, 3.0, 4.0])):
        for k, v in enumerate(values):
            x = np.array([[v]], np.float32)
            r = infer(s, "http", "seq_ctl_direct", {"INPUT": (x, "FP32")}, sequence=(sid, k == 0, sid == 2 and k == 2))
            assert r.as_numpy("OUTPUT").tolist() == [[v]] and r.as_numpy("OUT_CORRID").tolist() == [[sid]]
            assert r.as_numpy("OUT_START").tolist() == [[int(k == 0)]] and r.as_numpy("OUT_READY").tolist() == [[True]]
    r = infer(s, "grpc", "seq_ctl_direct", {"INPUT": (np.array([[5.0]], np.float32), "FP32")}, sequence=(1, False, True))
    assert r.as_numpy("OUT_END").tolist() == [[1.0]] and r.as_numpy("OUT_START").tolist() == [[0]]
    inf, batches, _ = stats_of(s, "seq_ctl_direct")
    assert inf["success"]["count"] == 5 and inf["fail"]["count"] == 0, inf
    # Sequence 1's two steps alone; sequence 2's three beside a null request.
    assert {b["batch_size"]: b["compute_infer"]["count"] for b in batches} == {1: 2, 2: 3}, batches
    assert steps_metric(s, "seq_ctl_direct") == {"start": 2, "middle": 1, "end": 2}
    m = s.metrics()
    assert m.get("nv_inference_request_success", model="seq_ctl_direct", version="1") == 5
    assert m.get("onnxrs_batch_size_sum", model="seq_ctl_direct", version="1") == 5
    assert m.sum("onnxrs_request_errors_total", model="seq_ctl_direct", version="1") == 0
    # Steps of three sequences interleaved: every output still the sequence's own.
    jobs = [(lambda sid=sid, j=j: run_echo_sequence(s, "grpc", "seq_ctl_direct", sid, [1.0 + j, 2.0, 3.0 * j], "UINT64"))
            for j, sid in enumerate([7, 8, 9])]
    assert sum(interleave(jobs)) == 9
    inf, _, _ = stats_of(s, "seq_ctl_direct")
    assert inf["success"]["count"] == 5 + 9 and inf["fail"]["count"] == 0, inf
    assert steps_metric(s, "seq_ctl_direct") == {"start": 5, "middle": 4, "end": 5}


def accumulate(server, proto, model, sid, steps, batching=True):
    """One sequence of (INPUT, IDX) steps on an accumulator; the state after each step, as the
    model returned it (None for a step that failed), checked against the running sum."""
    acc = np.zeros(2, np.float32)
    seen = []
    for k, (x, idx) in enumerate(steps):
        xs = np.array([x] if batching else x, dtype=np.float32)
        ids = np.array([[idx]] if batching else [idx], dtype=np.int64)
        start, end = k == 0, k == len(steps) - 1
        try:
            r = infer(server, proto, model, {"INPUT": (xs, "FP32"), "IDX": (ids, "INT64")}, sequence=(sid, start, end))
        except InferenceServerException as e:
            assert not 0 <= idx < len(ACC_TABLE), (sid, k, e)
            assert "out of bounds" in str(e) or "indices" in str(e), e
            seen.append(None)
            continue
        assert 0 <= idx < len(ACC_TABLE), (sid, k)
        acc = acc + np.asarray(x, np.float32) + ACC_TABLE[idx]
        out = r.as_numpy("OUTPUT").reshape(2)
        np.testing.assert_array_equal(out, acc, err_msg=f"sequence {sid} step {k}")
        if not batching:
            np.testing.assert_array_equal(r.as_numpy("ACC_OUT").reshape(2), acc)
        seen.append(out.tolist())
    return seen


def test_implicit_state_fused_over_sequence_slots_with_a_failing_middle_step(server_for):
    s = server_for(["seq_acc"])
    rng = np.random.default_rng(3)
    n_seq, n_steps = 4, 5
    plans = []
    for j in range(n_seq):
        steps = [(rng.integers(-5, 5, 2).astype(np.float32).tolist(), int(rng.integers(0, 4))) for _ in range(n_steps)]
        if j == 1:
            steps[2] = (steps[2][0], 7)  # a bad index: ONNX Runtime fails this step only
        plans.append(steps)
    ids = [11, "acc-b", 13, "acc-d"]
    jobs = [(lambda p=p, sid=sid, j=j: accumulate(s, ("http", "grpc")[j % 2], "seq_acc", sid, p))
            for j, (p, sid) in enumerate(zip(plans, ids))]
    results = interleave(jobs)
    assert [r.count(None) for r in results] == [0, 1, 0, 0]
    inf, batches, _ = stats_of(s, "seq_acc")
    total = n_seq * n_steps
    assert inf["success"]["count"] == total - 1 and inf["fail"]["count"] == 1, inf
    assert sum(b["batch_size"] * b["compute_infer"]["count"] for b in batches) == total - 1, batches
    # Four sequences step together and the preferred batch is 4: their steps share runs.
    assert max(b["batch_size"] for b in batches) > 1, batches
    m = s.metrics()
    assert m.get("onnxrs_request_errors_total", model="seq_acc", kind="ort_failure") == 1
    assert steps_metric(s, "seq_acc") == {"start": 4, "middle": 4 * 3 - 1, "end": 4}
    runs = sum(b["compute_infer"]["count"] for b in batches)
    assert m.get("nv_inference_request_success", model="seq_acc", version="1") == total - 1
    assert m.get("nv_inference_request_failure", model="seq_acc", version="1", reason="BACKEND") == 1
    assert m.get("onnxrs_batch_size_count", model="seq_acc", version="1") == runs
    assert m.get("onnxrs_batch_size_sum", model="seq_acc", version="1") == total - 1


def test_implicit_state_with_direct_and_null_requests(server_for):
    # Sequence 1 (slot 0) idles while sequence 2 (slot 1) steps: Triton pads slot 0 with null
    # requests, whose garbage inputs never run, so sequence 1's state and 2's run stay intact.
    s = server_for(["seq_acc_direct"])
    steps = [(1, [1, 1], 0, True, False), (2, [5, 5], 1, True, False), (2, [0, 0], 1, False, True),
             (1, [0, 0], 2, False, True)]
    acc = {1: np.zeros(2, np.float32), 2: np.zeros(2, np.float32)}
    for sid, x, idx, start, end in steps:
        ins = {"INPUT": (np.array([x], np.float32), "FP32"), "IDX": (np.array([[idx]], np.int64), "INT64")}
        r = infer(s, "grpc", "seq_acc_direct", ins, sequence=(sid, start, end))
        acc[sid] = acc[sid] + np.array(x, np.float32) + ACC_TABLE[idx]
        np.testing.assert_array_equal(r.as_numpy("OUTPUT"), [acc[sid]])
    inf, batches, _ = stats_of(s, "seq_acc_direct")
    assert inf["success"]["count"] == 4 and inf["fail"]["count"] == 0, inf
    # Sequence 2's two steps ran beside a null request in slot 0: batches of two as Triton formed
    # them; onnxrs's own run metric counts the rows ONNX Runtime ran.
    assert {b["batch_size"]: b["compute_infer"]["count"] for b in batches} == {1: 2, 2: 2}, batches
    m = s.metrics()
    assert m.get("onnxrs_batch_size_sum", model="seq_acc_direct", version="1") == 4
    assert m.sum("onnxrs_request_errors_total", model="seq_acc_direct", version="1") == 0


@pytest.mark.parametrize("proto", ["http", "grpc"])
def test_implicit_state_without_batching_also_returned_as_output(server_for, proto):
    s = server_for(["seq_acc_nobatch"])
    plans = [[([1, 2], 0), ([3, 4], 1), ([0, 0], 3)], [([5, 5], 2)], [([-1, -2], 1), ([1, 1], 0)]]
    jobs = [(lambda p=p, sid=sid: accumulate(s, proto, "seq_acc_nobatch", sid, p, batching=False))
            for p, sid in zip(plans, [101, 102, "c"])]
    interleave(jobs)
    inf, _, st = stats_of(s, "seq_acc_nobatch")
    assert inf["success"]["count"] == 6 and st["execution_count"] == 6, st


def test_variable_shaped_state(server_for):
    s = server_for(["seq_history"])

    def history(sid, values, proto):
        hist = [0.0]  # the initial state: one zero
        for k, v in enumerate(values):
            r = infer(s, proto, "seq_history", {"INPUT": (np.array([[v]], np.float32), "FP32")},
                      sequence=(sid, k == 0, k == len(values) - 1))
            hist.append(v)
            assert r.as_numpy("HIST_OUT").tolist() == [hist], (sid, k)
            assert r.as_numpy("TOTAL").tolist() == [[sum(hist)]], (sid, k)
        return len(values)

    plans = [[1.0, 2.0, 3.0, 4.0], [10.0, 20.0], [0.5, 0.25, 0.125], [7.0, 8.0, 9.0, 10.0, 11.0]]
    jobs = [(lambda p=p, sid=sid, j=j: history(sid, p, ("http", "grpc")[j % 2]))
            for j, (p, sid) in enumerate(zip(plans, [1, 2, "three", 4]))]
    total = sum(interleave(jobs))
    inf, batches, _ = stats_of(s, "seq_history")
    assert inf["success"]["count"] == total and inf["fail"]["count"] == 0, inf
    assert sum(b["batch_size"] * b["compute_infer"]["count"] for b in batches) == total, batches


def test_contradicting_control_and_state_configs_fail_the_load_naming_the_tensor(tmp_path):
    repo = make_repo(tmp_path / "repo", ["seq_ctl_uint64", "seq_acc"])
    shutil.move(repo / "seq_ctl_uint64", repo / "bad_ctl")
    cfg = (repo / "bad_ctl" / "config.pbtxt").read_text()
    (repo / "bad_ctl" / "config.pbtxt").write_text(
        cfg.replace('name: "seq_ctl_uint64"', 'name: "bad_ctl"').replace(
            "CONTROL_SEQUENCE_CORRID data_type: TYPE_UINT64", "CONTROL_SEQUENCE_CORRID data_type: TYPE_INT64"))
    shutil.move(repo / "seq_acc", repo / "bad_state")
    cfg = (repo / "bad_state" / "config.pbtxt").read_text()
    (repo / "bad_state" / "config.pbtxt").write_text(
        cfg.replace('name: "seq_acc"', 'name: "bad_state"').replace("dims: [ 2 ]\n  initial", "dims: [ 3 ]\n  initial")
        .replace("initial_state: { data_type: TYPE_FP32 dims: [ 2 ]", "initial_state: { data_type: TYPE_FP32 dims: [ 3 ]"))
    with TritonServer(repo, "--exit-on-error=false") as s:
        idx = s.index()
        assert "control input 'CORRID' is TYPE_INT64 in the config but TYPE_UINT64" in idx["bad_ctl"][0]["reason"]
        assert "state input 'ACC_IN' has dims [3]" in idx["bad_state"][0]["reason"], idx["bad_state"]


def test_auto_complete_leaves_control_and_state_tensors_out(tmp_path):
    repo = make_repo(tmp_path / "repo", ["seq_acc"])
    shutil.move(repo / "seq_acc", repo / "seq_auto")
    cfg = (repo / "seq_auto" / "config.pbtxt").read_text()
    # Only sequence_batching (without `oldest`: Triton checks its preferred batch size against
    # max_batch_size before the backend completes it): input, output and max_batch_size come
    # from the model.
    sequence = "\n".join(l for l in cfg[cfg.index("sequence_batching"):].splitlines() if not l.startswith("oldest"))
    (repo / "seq_auto" / "config.pbtxt").write_text('name: "seq_auto"\nbackend: "onnxrs"\n' + sequence + "\n")
    with TritonServer(repo) as s:
        c = s.config("seq_auto")
        assert c["max_batch_size"] == 4, c
        assert sorted(i["name"] for i in c["input"]) == ["IDX", "INPUT"], c["input"]
        assert [o["name"] for o in c["output"]] == ["OUTPUT"], c["output"]
        seen = accumulate(s, "http", "seq_auto", "auto-1", [([1, 2], 0), ([3, 4], 3), ([0, 1], 1)])
        assert seen[-1] == [1 + 3 + 0 + 1 + 1000 + 10, 2 + 4 + 1 + 2 + 2000 + 20]

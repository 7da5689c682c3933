"""Reliability against a real tritonserver: a matrix of bad inputs (alone and fused into a
dynamic batch with good requests, over HTTP, gRPC and plain HTTP), models that cannot load or
cannot run, and a load/unload soak under traffic with an RSS bound. Each test adds its table to
the reliability report (see report.py)."""

from __future__ import annotations

import os
import shutil
import struct
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import tritonclient.grpc as tgrpc
import tritonclient.http as thttp
import tritonclient.utils.shared_memory as shm
from tritonclient.utils import InferenceServerException

import report
from make_models import mlp_reference
from server import TritonServer, bare_backend_dir, binary_infer, bytes_elements, infer, make_repo, models_dir


# ---- the bad-input matrix


class Sent:
    """What one request came back with: outputs (name -> array) or an error message."""

    def __init__(self, outputs=None, error=None):
        self.outputs, self.error = outputs, error


def send(server, transport, model, inputs, outputs, shm_inputs=None) -> Sent:
    """`infer` with the error as a value, not raised."""
    try:
        r = infer(server, transport, model, inputs, outputs, shm_inputs=shm_inputs)
        return Sent(outputs={o: r.as_numpy(o) for o in outputs})
    except InferenceServerException as e:
        return Sent(error=str(e))


def send_raw(server, model, header_inputs, raw: bytes) -> Sent:
    r = binary_infer(server, model, {"inputs": header_inputs}, raw)
    if r.status_code == 200:
        return Sent(outputs={o["name"]: o for o in r.json()["outputs"]})
    return Sent(error=f"[{r.status_code}] {r.json().get('error', r.text)}")


def two_io(a, b, dta="FP32", dtb="INT32", extra=None):
    return {"A": (a, dta), "B": (b, dtb), **(extra or {})}


F32 = np.float32
GOOD = {
    # model -> (send(server) -> Sent, check(Sent) -> bool): the good requests fused with each case.
    "two_io_dyn": (
        lambda s: send(s, "http", "two_io_dyn", two_io(np.ones((1, 3), F32), np.full((1, 3), 2, np.int32)), ["SUM"]),
        lambda r: r.outputs is not None and r.outputs["SUM"].tolist() == [[3.0, 3.0, 3.0]],
    ),
    "mlp_batching": (
        lambda s: send(s, "http", "mlp_batching", {"X": (np.ones((1, 16), F32), "FP32")}, ["Y"]),
        lambda r: r.outputs is not None
        and np.allclose(r.outputs["Y"], mlp_reference(np.ones((1, 16), F32)), rtol=1e-5, atol=1e-5),
    ),
    "string_concat": (
        lambda s: send(s, "http", "string_concat", {"TEXT": (np.array([[b"ok"]], object), "BYTES")}, ["OUT"]),
        lambda r: r.outputs is not None and r.outputs["OUT"].tolist() == [[b"ok|ok"]],
    ),
    "gather_fail": (
        lambda s: send(s, "http", "gather_fail", {"IDX": (np.array([[1, 2]], np.int64), "INT64")}, ["Y"]),
        lambda r: r.outputs is not None and r.outputs["Y"].tolist() == [[20.0, 30.0]],
    ),
}


def build_cases(shm_region: str, shm_size: int):
    """(name, model, transports, expected, check, send(server, transport) -> Sent). expected:
    'ok' (correct output), 'refused' (Triton's checks, before the backend) or 'backend error'
    (reaches the backend, fails there, counted as a failure). check: a message fragment for the
    errors, a predicate on the outputs for 'ok'."""
    both = ["http", "grpc"]
    nan_a = np.array([[np.nan, np.inf, -np.inf, 1.0]], F32)
    ones = np.ones((1, 3), F32)
    i3 = np.full((1, 3), 2, np.int32)
    return [
        ("wrong dtype (A as FP64)", "two_io_dyn", both, "refused", "data-type",
         lambda s, t: send(s, t, "two_io_dyn", two_io(ones.astype(np.float64), i3, dta="FP64"), ["SUM"])),
        ("wrong rank (A is [1,3,1])", "two_io_dyn", both, "refused", "shape",
         lambda s, t: send(s, t, "two_io_dyn", two_io(ones.reshape(1, 3, 1), i3), ["SUM"])),
        ("wrong dim (X is [1,15])", "mlp_batching", both, "refused", "shape",
         lambda s, t: send(s, t, "mlp_batching", {"X": (np.ones((1, 15), F32), "FP32")}, ["Y"])),
        ("batch above max_batch_size (33 > 32)", "mlp_batching", both, "refused", "batch-size",
         lambda s, t: send(s, t, "mlp_batching", {"X": (np.ones((33, 16), F32), "FP32")}, ["Y"])),
        ("missing input (no B)", "two_io_dyn", both, "refused", "B",
         lambda s, t: send(s, t, "two_io_dyn", {"A": (ones, "FP32")}, ["SUM"])),
        ("unknown input (C)", "two_io_dyn", both, "refused", "C",
         lambda s, t: send(s, t, "two_io_dyn", two_io(ones, i3, extra={"C": (ones, "FP32")}), ["SUM"])),
        ("A and B of different lengths", "two_io_dyn", both, "backend error", "onnxruntime run failed",
         lambda s, t: send(s, t, "two_io_dyn", two_io(ones, np.full((1, 2), 2, np.int32)), ["SUM"])),
        ("zero-sized tensors ([1,0])", "two_io_dyn", both, "ok",
         lambda r: r.outputs["SUM"].shape == (1, 0),
         lambda s, t: send(s, t, "two_io_dyn", two_io(np.zeros((1, 0), F32), np.zeros((1, 0), np.int32)), ["SUM"])),
        ("NaN and Inf values", "two_io_dyn", both, "ok",
         lambda r: np.array_equal(r.outputs["SUM"], nan_a + 1, equal_nan=True),
         lambda s, t: send(s, t, "two_io_dyn", two_io(nan_a, np.ones((1, 4), np.int32)), ["SUM"])),
        ("non-UTF-8 strings", "string_concat", both, "ok",
         lambda r: r.outputs["OUT"].tolist() == [[b"\xff\xfe\x00z|ok", b"\xc3(|ok"]],
         lambda s, t: send(s, t, "string_concat",
                           {"TEXT": (np.array([[b"\xff\xfe\x00z", b"\xc3("]], object), "BYTES")}, ["OUT"])),
        ("BYTES: truncated length prefix", "string_concat", ["plain http"], "refused", "TEXT",
         lambda s, t: send_raw(s, "string_concat", [{"name": "TEXT", "shape": [1, 2], "datatype": "BYTES",
                                                      "parameters": {"binary_data_size": 9}}],
                               bytes_elements(b"abc") + b"\x05\x00")),
        ("BYTES: length prefix past the end", "string_concat", ["plain http"], "backend error", "TEXT",
         lambda s, t: send_raw(s, "string_concat", [{"name": "TEXT", "shape": [1, 1], "datatype": "BYTES",
                                                      "parameters": {"binary_data_size": 7}}],
                               struct.pack("<I", 1 << 30) + b"abc")),
        ("huge declared shape ([1, 2^40])", "two_io_dyn", ["plain http"], "refused", "byte size mismatch",
         lambda s, t: send_raw(s, "two_io_dyn",
                               [{"name": "A", "shape": [1, 1 << 40], "datatype": "FP32", "parameters": {"binary_data_size": 8}},
                                {"name": "B", "shape": [1, 1 << 40], "datatype": "INT32", "parameters": {"binary_data_size": 8}}],
                               b"\x00" * 16)),
        ("input in system shared memory", "two_io_dyn", both, "ok",
         lambda r: r.outputs["SUM"].tolist() == [[1.0, 3.0, 5.0, 7.0]],
         lambda s, t: send(s, t, "two_io_dyn", {"B": (np.arange(4, dtype=np.int32).reshape(1, 4), "INT32")},
                           ["SUM"], shm_inputs={"A": (shm_region, 16, "FP32", [1, 4])})),
        ("shared memory: size beyond the region", "two_io_dyn", both, "refused", "Invalid offset",
         lambda s, t: send(s, t, "two_io_dyn", {"B": (np.arange(4, dtype=np.int32).reshape(1, 4), "INT32")},
                           ["SUM"], shm_inputs={"A": (shm_region, shm_size * 2, "FP32", [1, shm_size // 2])})),
        ("ONNX Runtime fails (gather index 9 of 5)", "gather_fail", both, "backend error", "out of data bounds",
         lambda s, t: send(s, t, "gather_fail", {"IDX": (np.array([[0, 9]], np.int64), "INT64")}, ["Y"])),
    ]


def outcome(result: Sent, expected: str, check) -> tuple[str, bool]:
    if result.error is not None:
        frag_ok = isinstance(check, str) and check in result.error
        return f"error: {result.error[:160]}", expected != "ok" and frag_ok
    try:
        ok = expected == "ok" and bool(check(result))
    except Exception as e:  # a wrong shape or type in the outputs is a failed check, not a crash
        ok, result = False, Sent(error=f"check raised {e!r}")
    return "ok: outputs correct" if ok else "ok: outputs WRONG", ok


def test_bad_input_matrix(server_for):
    s = server_for(["two_io_dyn", "mlp_batching", "string_concat", "gather_fail"])
    region, size = "onnxrs_matrix", 16
    handle = shm.create_shared_memory_region(region, "/onnxrs_matrix", size)
    try:
        shm.set_shared_memory_region(handle, [np.array([[1, 2, 3, 4]], F32)])
        with thttp.InferenceServerClient(s.http_addr) as c:
            c.register_system_shared_memory(region, "/onnxrs_matrix", size)
        successes, failures = Counter(), Counter()
        rows, bad = [], []
        for name, model, transports, expected, check, fn in build_cases(region, size):
            for transport in transports:
                for mode in ("alone", "in a batch with 2 good"):
                    if mode == "alone":
                        result, good = fn(s, transport), []
                    else:
                        g_send, g_check = GOOD[model]
                        with ThreadPoolExecutor(3) as pool:
                            futs = [pool.submit(g_send, s), pool.submit(fn, s, transport), pool.submit(g_send, s)]
                            good_a, result, good_b = (f.result() for f in futs)
                        good = [good_a, good_b]
                        good_ok = all(g_check(g) for g in good)
                        successes[model] += sum(g.outputs is not None for g in good)
                    observed, passed = outcome(result, expected, check)
                    if expected == "ok" and result.outputs is not None:
                        successes[model] += 1
                    if expected == "backend error" and result.error is not None:
                        failures[model] += 1
                    goods = "" if not good else ("2 correct" if good_ok else "WRONG")
                    passed = passed and (not good or good_ok)
                    rows.append([name, transport, mode, expected, observed, goods or "—", "pass" if passed else "FAIL"])
                    if not passed:
                        bad.append(rows[-1])
        counts = []
        for model in ("two_io_dyn", "mlp_batching", "string_concat", "gather_fail"):
            st = s.stats(model)["inference_stats"]
            counts.append([model, successes[model], st["success"]["count"], failures[model], st["fail"]["count"]])
            if (st["success"]["count"], st["fail"]["count"]) != (successes[model], failures[model]):
                bad.append(counts[-1])
    finally:
        shm.destroy_shared_memory_region(handle)
    report.collected["matrix"] = "\n".join(
        [
            "## Bad-input matrix",
            "",
            "Each case alone and sent at the same moment as two good requests to a model whose scheduler "
            "waits for them (they reach one execute). 'refused': Triton's own checks answer before the "
            "backend; 'backend error': the backend answers that request with an error and counts one failure.",
            "",
            report.table(["case", "transport", "mode", "expected", "observed", "good requests", "result"], rows),
            "",
            "Statistics after the matrix, against what the client saw:",
            "",
            report.table(["model", "successes seen", "success.count", "backend errors seen", "fail.count"], counts),
            "",
        ]
    )
    assert not bad, bad


# ---- models that cannot load or cannot run


def test_bad_models_fail_clearly_and_the_rest_keeps_serving(server_for, tmp_path):
    names = ["mlp_fp32", "bad_model", "truncated_model", "missing_file", "unsupported_op", "mismatch_config", "fails_at_run"]
    s = server_for(names, "--exit-on-error=false")
    idx = s.index()
    expect = {
        "bad_model": "Protobuf parsing failed",
        "truncated_model": "Protobuf parsing failed",
        "missing_file": "model file",
        "unsupported_op": "NoSuchOp",
        "mismatch_config": "input 'X' is TYPE_INT32 in the config but TYPE_FP32",
    }
    rows, bad = [], []
    for model, fragment in expect.items():
        e = idx[model][0]
        ok = e["state"] == "UNAVAILABLE" and fragment in e.get("reason", "")
        rows.append([model, "load fails", f"{e['state']}: {e.get('reason', '')[:300]}", "pass" if ok else "FAIL"])
        bad += [] if ok else [rows[-1]]
    r = send(s, "http", "fails_at_run", {"X": (np.ones((2, 4), F32), "FP32")}, ["Y"])
    ok = r.error is not None and "cannot be reshaped" in r.error and idx["fails_at_run"][0]["state"] == "READY"
    rows.append(["fails_at_run", "loads; the run fails", (r.error or "")[:200], "pass" if ok else "FAIL"])
    bad += [] if ok else [rows[-1]]
    # Missing ONNX Runtime library: a backend directory holding only our library.
    s2 = server_for(["mlp_fp32"], "--exit-on-error=false", backend_dir=bare_backend_dir(tmp_path / "bare"))
    e = s2.index()["mlp_fp32"][0]
    ok = e["state"] == "UNAVAILABLE" and "ONNX Runtime library not found" in e.get("reason", "")
    rows.append(["(no ORT library)", "load fails", f"{e['state']}: {e.get('reason', '')[:200]}", "pass" if ok else "FAIL"])
    bad += [] if ok else [rows[-1]]
    x = np.ones((1, 16), F32)
    r = send(s, "grpc", "mlp_fp32", {"X": (x, "FP32")}, ["Y"])
    ok = r.outputs is not None and np.allclose(r.outputs["Y"], mlp_reference(x), rtol=1e-5, atol=1e-5)
    rows.append(["mlp_fp32 beside them", "serves", "correct output" if ok else str(r.error), "pass" if ok else "FAIL"])
    bad += [] if ok else [rows[-1]]
    for r in rows:
        r[2] = r[2].replace(str(tmp_path), "<tmp>")
    report.collected["models"] = "\n".join(
        ["## Bad models", "", report.table(["model", "expected", "observed (repository index / response)", "result"], rows), ""]
    )
    assert not bad, bad


# ---- load / unload / reload under traffic

# The slow tier (ci/test.sh) raises the cycle count.
SOAK_CYCLES = int(os.environ.get("ONNXRS_SOAK_CYCLES", "12"))
RSS_BOUND_MIB = 32


def test_lifecycle_soak(tmp_path):
    repo = make_repo(tmp_path / "repo", ["mlp_fp32"])
    src_v1 = models_dir() / "multi_version" / "1"
    src_v2 = models_dir() / "multi_version" / "2"
    cycled = repo / "cycled"
    cycled.mkdir()
    shutil.copytree(src_v1, cycled / "1")
    (cycled / "config.pbtxt").write_text(
        (models_dir() / "multi_version" / "config.pbtxt").read_text()
        .replace('"multi_version"', '"cycled"')
        .replace("version_policy: { all { } }", "version_policy: { latest { num_versions: 1 } }")
        .replace("count: 1", "count: 2")
    )
    s = TritonServer(repo, "--model-control-mode=explicit", "--load-model=*").start()
    stop = threading.Event()
    seen: Counter = Counter()
    steady = Counter()
    lock = threading.Lock()

    def cycled_client():
        x = np.ones((2, 4), F32)
        with thttp.InferenceServerClient(s.http_addr) as c:
            while not stop.is_set():
                i = thttp.InferInput("X", [2, 4], "FP32")
                i.set_data_from_numpy(x)
                try:
                    y = c.infer("cycled", [i]).as_numpy("Y")
                    kind = "correct (v1)" if np.array_equal(y, x + 1) else "correct (v2)" if np.array_equal(y, x + 2) else "WRONG"
                except InferenceServerException as e:
                    msg = str(e).lower()
                    kind = "unavailable" if any(w in msg for w in ("unavailable", "not found", "not ready", "unknown model")) else f"other: {e}"
                with lock:
                    seen[kind] += 1

    def steady_client():
        x = np.linspace(-1, 1, 32, dtype=F32).reshape(2, 16)
        want = mlp_reference(x)
        with tgrpc.InferenceServerClient(s.grpc_addr) as c:
            while not stop.is_set():
                i = tgrpc.InferInput("X", [2, 16], "FP32")
                i.set_data_from_numpy(x)
                try:
                    ok = np.allclose(c.infer("mlp_fp32", [i]).as_numpy("Y"), want, rtol=1e-5, atol=1e-5)
                    kind = "correct" if ok else "WRONG"
                except InferenceServerException as e:
                    kind = f"error: {e}"
                with lock:
                    steady[kind] += 1

    try:
        with thttp.InferenceServerClient(s.http_addr) as admin:
            # Warm-up: one full cycle, so the allocator's and Triton's own first-use growth is
            # not counted as a leak.
            admin.unload_model("cycled")
            admin.load_model("cycled")
            rss_before = s.rss_kib()
            threads = [threading.Thread(target=cycled_client) for _ in range(3)] + [threading.Thread(target=steady_client)]
            for t in threads:
                t.start()
            t0 = time.monotonic()
            for cycle in range(SOAK_CYCLES):
                time.sleep(0.2)
                admin.unload_model("cycled")
                time.sleep(0.1)
                if cycle == SOAK_CYCLES // 2:
                    shutil.copytree(src_v2, cycled / "2")  # a new version appears: the reload serves it
                admin.load_model("cycled")
            time.sleep(0.3)
            stop.set()
            for t in threads:
                t.join(timeout=60)
            soak_s = time.monotonic() - t0
            # Idle, then measure: memory given back by unloads must not keep growing.
            admin.unload_model("cycled")
            time.sleep(1)
            rss_after = s.rss_kib()
            steady_stats = s.stats("mlp_fp32")["inference_stats"]
    finally:
        stop.set()
        s.stop()
    growth_mib = (rss_after - rss_before) / 1024
    other = {k: v for k, v in seen.items() if k.startswith("other") or k == "WRONG"}
    steady_bad = {k: v for k, v in steady.items() if k != "correct"}
    rows = [
        ["cycles (unload + load, version 2 added at cycle %d)" % (SOAK_CYCLES // 2), SOAK_CYCLES],
        ["soak duration", f"{soak_s:.1f} s"],
        ["requests to the cycled model (3 HTTP clients)", sum(seen.values())],
        *[[f"  {k}", v] for k, v in sorted(seen.items())],
        ["requests to the steady model (1 gRPC client)", sum(steady.values())],
        ["  its success.count in the statistics", steady_stats["success"]["count"]],
        ["  its fail.count", steady_stats["fail"]["count"]],
        ["server RSS after the warm-up cycle", f"{rss_before / 1024:.1f} MiB"],
        ["server RSS after the soak and an unload", f"{rss_after / 1024:.1f} MiB"],
        ["growth (bound: %d MiB)" % RSS_BOUND_MIB, f"{growth_mib:+.1f} MiB"],
    ]
    report.collected["lifecycle"] = "\n".join(
        [
            "## Lifecycle under load",
            "",
            "Explicit model control; the model `cycled` (2 CPU instances) is unloaded and loaded again "
            "while clients keep sending; another model (`mlp_fp32`, 2 instances) serves steady traffic throughout.",
            "",
            report.table(["measure", "value"], rows),
            "",
        ]
    )
    assert not other, other
    assert not steady_bad, steady_bad
    assert seen["correct (v1)"] > 0 and seen["correct (v2)"] > 0, seen
    assert steady_stats["success"]["count"] == steady["correct"]
    assert steady_stats["fail"]["count"] == 0
    assert growth_mib < RSS_BOUND_MIB, rows

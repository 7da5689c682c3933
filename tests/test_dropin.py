"""onnxrs installed as the official ONNX Runtime backend's drop-in: `cmake
-DONNXRS_BACKEND_NAME=onnxruntime` puts the same library at
backends/onnxruntime/libtriton_onnxruntime.so, and a model repository written for the official
backend (`platform: "onnxruntime_onnx"`, `backend: "onnxruntime"`, folders with no config at all)
is served by onnxrs with no file changed.

The completed configs are compared field by field with what the official backend and Triton
give for the same folder, written down from their sources (triton-inference-server/core
src/model_config_utils.cc and src/constants.h, onnxruntime_backend src/onnxruntime.cc; the
functions are named beside each field).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from make_models import mlp_reference
from server import BACKEND_DIR, ROOT, TritonServer, infer, make_repo

DROPIN = "onnxruntime"


@pytest.fixture(scope="module")
def dropin_dir(tmp_path_factory) -> Path:
    """A backend directory with onnxrs installed under the official backend's name, by the cmake
    install (the library cargo built for the test command; ONNX Runtime from the onnxrs install)."""
    tmp = tmp_path_factory.mktemp("dropin")
    ort = sorted((BACKEND_DIR / "onnxrs").glob("libonnxruntime.so.*"))[-1].resolve()
    target = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))
    configure = ["cmake", "-S", ROOT / "cmake", "-B", tmp / "build", f"-DCMAKE_INSTALL_PREFIX={tmp / 'prefix'}",
                 f"-DONNXRS_BACKEND_NAME={DROPIN}", f"-DONNXRUNTIME_LIBRARY={ort}", f"-DCARGO_TARGET_DIR={target}"]
    for cmd in (configure, ["cmake", "--build", tmp / "build", "--target", "install"]):
        r = subprocess.run([str(c) for c in cmd], capture_output=True, text=True)
        assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-4000:]
    backends = tmp / "prefix" / "backends"
    installed = {p.name for p in (backends / DROPIN).iterdir()}
    assert {"libtriton_onnxruntime.so", "libonnxruntime.so", ort.name} <= installed, installed
    assert not (backends / "onnxrs").exists()
    return backends


def official_repo(dest: Path) -> Path:
    """The official backend's forms: a platform config, a backend config, a folder without a
    config, one whose config the test deletes, and a config that contradicts its model."""
    repo = make_repo(dest, ["mlp_fp32", "autocomplete_mlp", "mismatch_config"])
    forms = {"mlp_platform": 'platform: "onnxruntime_onnx"', "mlp_backend": f'backend: "{DROPIN}"',
             "mlp_deleted": 'platform: "onnxruntime_onnx"'}
    for name, line in forms.items():
        shutil.copytree(repo / "mlp_fp32", repo / name)
        cfg = repo / name / "config.pbtxt"
        cfg.write_text(cfg.read_text().replace('name: "mlp_fp32"', f'name: "{name}"').replace('backend: "onnxrs"', line))
    shutil.rmtree(repo / "mlp_fp32")
    (repo / "autocomplete_mlp").rename(repo / "mlp_bare")
    (repo / "mlp_bare" / "config.pbtxt").unlink()
    cfg = repo / "mismatch_config" / "config.pbtxt"
    cfg.write_text(cfg.read_text().replace('backend: "onnxrs"', 'platform: "onnxruntime_onnx"'))
    for cfg in repo.glob("*/config.pbtxt"):
        assert "onnxrs" not in cfg.read_text(), cfg
    return repo


SERVED = ["mlp_platform", "mlp_backend", "mlp_bare", "mlp_deleted"]


@pytest.fixture(scope="module")
def official(dropin_dir, tmp_path_factory):
    repo = official_repo(tmp_path_factory.mktemp("official") / "repo")
    with TritonServer(repo, "--exit-on-error=false", "--model-control-mode=explicit", "--load-model=*",
                      backend_dir=dropin_dir) as s:
        yield s


def mlp_answers(s: TritonServer, model: str, rows: int = 3):
    x = np.linspace(-1, 1, rows * 16, dtype=np.float32).reshape(rows, 16)
    y = infer(s, "http", model, {"X": (x, "FP32")}).as_numpy("Y")
    np.testing.assert_allclose(y, mlp_reference(x), rtol=1e-5, atol=1e-5)


def test_a_repository_in_the_official_form_is_served_by_onnxrs(official):
    s = official
    assert "backend 'onnxruntime' initialized" in s.log_text() and "onnxrs 0." in s.log_text()
    for model in SERVED:
        assert s.model_ready(model), model
        mlp_answers(s, model)
        meta = s.call("GET", f"/v2/models/{model}")
        assert meta["platform"] == "onnxruntime_onnx", meta
        assert s.config(model)["backend"] == DROPIN
        # onnxrs served it: its own metrics count the run.
        assert s.metrics().get("onnxrs_ort_run_duration_us_count", model=model, version="1") == 1, model
    # A config that contradicts its model fails alone, with onnxrs's words and the official's.
    (entry,) = s.index()["mismatch_config"]
    assert entry["state"] == "UNAVAILABLE", entry
    assert "input 'X' is TYPE_INT32 in the config but TYPE_FP32" in entry["reason"], entry
    assert "configuration expects datatype TYPE_INT32 for input 'X', model provides TYPE_FP32" in entry["reason"], entry


# What Triton and the official backend make of a folder holding only 1/model.onnx (the MLP:
# X [-1, 16] FP32 -> Y [-1, 4] FP32) on a machine without a GPU, field by field.
OFFICIAL_COMPLETED = {
    # core AutoCompleteBackendFields: a version folder with model.onnx gets backend "onnxruntime";
    # with that backend, an empty platform becomes kOnnxRuntimeOnnxPlatform and an empty
    # default_model_filename kOnnxRuntimeOnnxFilename (constants.h).
    "backend": "onnxruntime",
    "platform": "onnxruntime_onnx",
    "default_model_filename": "model.onnx",
    # onnxruntime.cc AutoCompleteMaxBatch: every input and output has a first dimension of -1,
    # so max_batch_size becomes default-max-batch-size (4: core backend_model.cc's default), and
    # dynamic_batching {} is added (max_batch_size > 1, no scheduler in the config).
    "max_batch_size": 4,
    # onnxruntime.cc AutoCompleteIO: the batch dimension stripped.
    "input": [("X", "TYPE_FP32", [16])],
    "output": [("Y", "TYPE_FP32", [4])],
    # core NormalizeInstanceGroup / SetDefaultInstanceCount: KIND_AUTO becomes KIND_CPU without
    # GPUs, and the onnxruntime backend's CPU groups get count 2 (default_cpu_instance_count).
    "instance_group": [("mlp_bare", "KIND_CPU", 2)],
}


def completed(c: dict) -> dict:
    return {
        "backend": c["backend"],
        "platform": c["platform"],
        "default_model_filename": c["default_model_filename"],
        "max_batch_size": c["max_batch_size"],
        "input": [(i["name"], i["data_type"], [int(d) for d in i["dims"]]) for i in c["input"]],
        "output": [(o["name"], o["data_type"], [int(d) for d in o["dims"]]) for o in c["output"]],
        "instance_group": [(g["name"], g["kind"], g["count"]) for g in c["instance_group"]],
    }


def test_the_completed_config_is_the_official_one(official):
    c = official.config("mlp_bare")
    assert completed(c) == OFFICIAL_COMPLETED, json.dumps(c, indent=1)
    # Core's NormalizeModelConfig fills the empty dynamic_batching's preferred size.
    assert "dynamic_batching" in c, c
    assert [int(n) for n in c["dynamic_batching"].get("preferred_batch_size", [])] in ([], [4]), c
    # Two instances, as the completed config says: each reports its session's memory.
    memory = official.metrics().values("onnxrs_memory_bytes", model="mlp_bare", version="1", device="cpu")
    assert len(memory) == 2 and all(v > 0 for v in memory), memory


def test_a_deleted_config_comes_back_completed(official):
    s = official
    folder = s.repo / "mlp_deleted"
    assert s.config("mlp_deleted")["max_batch_size"] == 8
    (folder / "config.pbtxt").unlink()
    code, body = s.request("POST", "/v2/repository/models/mlp_deleted/load", {})
    assert code == 200, body
    c = s.config("mlp_deleted")
    assert completed(c) == {**OFFICIAL_COMPLETED, "instance_group": [("mlp_deleted", "KIND_CPU", 2)]}, c
    mlp_answers(s, "mlp_deleted", rows=4)


def test_the_official_backend_config_keys(dropin_dir, tmp_path):
    repo = official_repo(tmp_path / "repo")
    args = [f"--backend-config={DROPIN},{kv}" for kv in
            ("enable-global-threadpool=1", "intra_op_thread_count=1", "inter_op_thread_count=1", "default-max-batch-size=2")]
    with TritonServer(repo, "--exit-on-error=false", *args, backend_dir=dropin_dir) as s:
        assert "operator threads: Shared { threads: 1, inter_threads: 1 }" in s.log_text(), s.log_text()[-3000:]
        c = s.config("mlp_bare")
        assert (c["max_batch_size"], "dynamic_batching" in c) == (2, True), c
        mlp_answers(s, "mlp_bare", rows=2)


def test_messages_name_the_backend_as_installed(dropin_dir, tmp_path):
    """A setting the message tells the user to pass is spelled with the name the server knows."""
    repo = official_repo(tmp_path / "repo")
    cfg = repo / "mlp_platform" / "config.pbtxt"
    cfg.write_text(cfg.read_text() + 'parameters { key: "memory.shared_arena" value: { string_value: "1" } }\n')
    with TritonServer(repo, "--exit-on-error=false", backend_dir=dropin_dir) as s:
        (entry,) = s.index()["mlp_platform"]
        assert entry["state"] == "UNAVAILABLE", entry
        assert "--backend-config=onnxruntime,shared-arena=1" in entry["reason"], entry


def example_repo(dest: Path, backend: str) -> Path:
    shutil.copytree(ROOT / "model_repository", dest, ignore=shutil.ignore_patterns("model.onnx"))
    subprocess.run([sys.executable, str(ROOT / "tests" / "models" / "make_models.py"), "--example", str(dest)],
                   check=True, capture_output=True)
    for cfg in dest.glob("*/config.pbtxt"):
        cfg.write_text(cfg.read_text().replace('backend: "onnxrs"', f'backend: "{backend}"'))
    return dest


@pytest.mark.parametrize("backend", ["onnxrs", DROPIN])
def test_the_example_repository_both_ways(dropin_dir, tmp_path, backend):
    repo = example_repo(tmp_path / "repo", backend)
    backend_dir = BACKEND_DIR if backend == "onnxrs" else dropin_dir
    with TritonServer(repo, backend_dir=backend_dir) as s:
        mlp_answers(s, "mlp", rows=2)
        text = np.array([[b"a", b"bc"]], dtype=np.object_)
        r = infer(s, "grpc", "strings", {"TEXT": (text, "BYTES")})
        assert r.as_numpy("OUT").tolist() == [[b"a|ok", b"bc|ok"]] and r.as_numpy("ECHO").tolist() == [[b"a", b"bc"]]
        code, body = s.request("POST", "/v2/models/generator/generate", {"input_ids": [5, 6, 7], "max_tokens": 4, "stream": False})
        assert code == 200, body
        ids = json.loads(body)["output_ids"]
        assert len(ids if isinstance(ids, list) else [ids]) == 4
        assert s.config("mlp")["backend"] == backend
        assert f"backend '{backend}' initialized" in s.log_text()

"""Loading: the installed backend directory, where the ONNX Runtime library comes from, models
that fail to load, and a clean unload at shutdown."""

from __future__ import annotations

import shutil
import subprocess

import numpy as np

from make_models import mlp_reference
from server import BACKEND_DIR, TritonServer, bare_backend_dir, infer, make_repo

SO = BACKEND_DIR / "onnxrs" / "libtriton_onnxrs.so"


def ort_library():
    libs = sorted((BACKEND_DIR / "onnxrs").glob("libonnxruntime.so.*"))
    assert libs, f"no libonnxruntime.so.* installed beside {SO}"
    return libs[-1]


def mlp_works(server) -> None:
    x = np.linspace(0, 1, 16, dtype=np.float32).reshape(1, 16)
    y = infer(server, "http", "mlp_fp32", {"X": (x, "FP32")}).as_numpy("Y")
    np.testing.assert_allclose(y, mlp_reference(x), rtol=1e-5, atol=1e-5)


def test_installed_library_exports_only_the_backend_api_and_links_no_triton():
    dynsym = subprocess.run(["nm", "-D", "--defined-only", str(SO)], capture_output=True, text=True, check=True)
    exported = {line.split()[-1] for line in dynsym.stdout.splitlines() if line.split()[1] in "TDBRW"}
    assert exported, dynsym.stdout
    assert all(s.startswith("TRITONBACKEND_") for s in exported), sorted(exported)
    for needed in ("TRITONBACKEND_Initialize", "TRITONBACKEND_ModelInstanceExecute", "TRITONBACKEND_ModelFinalize"):
        assert needed in exported
    dyn = subprocess.run(["readelf", "-d", str(SO)], capture_output=True, text=True, check=True).stdout
    assert "tritonserver" not in dyn and "onnxruntime" not in dyn, dyn


def test_failed_loads_are_clear_and_the_server_keeps_serving(server_for):
    s = server_for(["mlp_fp32", "bad_model", "mismatch_config"], "--exit-on-error=false")
    idx = s.index()
    bad = idx["bad_model"][0]
    assert bad["state"] == "UNAVAILABLE" and "onnxruntime cannot load" in bad["reason"], bad
    assert "bad_model/1/model.onnx" in bad["reason"], bad
    mismatch = idx["mismatch_config"][0]
    assert mismatch["state"] == "UNAVAILABLE", mismatch
    assert "input 'X' is TYPE_INT32 in the config but TYPE_FP32" in mismatch["reason"], mismatch
    assert idx["mlp_fp32"][0]["state"] == "READY"
    mlp_works(s)


def test_clean_unload_at_shutdown(server_for):
    s = server_for(["mlp_fp32"])
    mlp_works(s)
    assert s.stop() == 0
    log = s.log_text()
    assert "successfully unloaded 'mlp_fp32' version 1" in log, log[-3000:]


def test_ort_library_from_backend_config(server_for, tmp_path):
    # A backend directory holding only our library: ONNX Runtime comes from ort-library.
    bare = bare_backend_dir(tmp_path / "bare")
    s = server_for(["mlp_fp32"], f"--backend-config=onnxrs,ort-library={ort_library()}", backend_dir=bare)
    mlp_works(s)
    assert f"loaded ONNX Runtime from {ort_library()}" in s.log_text()


def test_missing_ort_library_is_a_clear_load_error(server_for, tmp_path):
    s = server_for(["mlp_fp32"], "--exit-on-error=false", backend_dir=bare_backend_dir(tmp_path / "bare"))
    entry = s.index()["mlp_fp32"][0]
    assert entry["state"] == "UNAVAILABLE"
    assert "ONNX Runtime library not found" in entry["reason"] and "ort-library" in entry["reason"], entry


def test_backend_dropped_into_the_model_folder(server_for, tmp_path):
    # Triton looks for libtriton_<backend>.so in the model's folder before the backend directory;
    # ONNX Runtime is then found beside it.
    s0 = make_repo(tmp_path / "repo", ["mlp_fp32"])
    shutil.copy(SO, s0 / "mlp_fp32")
    shutil.copy(ort_library(), s0 / "mlp_fp32")
    empty = tmp_path / "no-backends"
    empty.mkdir()
    s = TritonServer(s0, backend_dir=empty).start()
    try:
        mlp_works(s)
        assert f"loaded ONNX Runtime from {s0 / 'mlp_fp32' / ort_library().name}" in s.log_text()
    finally:
        s.stop()

"""GPU: the checks that need a GPU run on a GPU host through ci/gpu-run.sh (which runs
tests/gpu/gpu_check.py). Here, without a GPU, the same script runs against a CPU model so it
keeps working, and the GPU test itself is skipped with the reason, never passed."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

GPU_CHECK = Path(__file__).resolve().parent / "gpu" / "gpu_check.py"


def has_gpu() -> bool:
    if not shutil.which("nvidia-smi"):
        return False
    return subprocess.run(["nvidia-smi", "-L"], capture_output=True, check=False).returncode == 0


def run_check(server, report: Path, *args: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, str(GPU_CHECK), f"--url={server.url}", f"--pid={server.proc.pid}", f"--report={report}"]
    return subprocess.run([*cmd, *args], capture_output=True, text=True, timeout=600)


def test_gpu_check_script_on_cpu(server_for, tmp_path):
    models = ["mlp_fp32", "autocomplete_mlp", "mlp_shared", "decoder_text", "decoder_tiny"]
    s = server_for(models, "--model-control-mode=explicit")
    report = tmp_path / "report.md"
    # decoder_text has decoder_tiny's weights: on a CPU instance it stands in for decoder_gpu.
    r = run_check(s, report, "--cpu", "--model=mlp_fp32", "--cpu-model=autocomplete_mlp", "--requests=8",
                  "--shared-model=mlp_shared", "--generator-model=decoder_text", "--generator-cpu-model=decoder_tiny")
    assert r.returncode == 0, r.stdout + r.stderr
    text = report.read_text()
    assert "| success.count == sent | OK |" in text and "## Result\nPASS" in text, text
    assert "| success.count == 100, fail.count == 0 | OK |" in text, text
    assert "| greedy tokens with 4 at once == the CPU instance's | OK |" in text, text
    assert "| success.count == 8, fail.count == 0 | OK |" in text, text


@pytest.mark.skipif(not has_gpu(), reason="no GPU on this machine: run `bash ci/gpu-run.sh` on a GPU host")
def test_gpu_models(server_for, tmp_path):
    s = server_for(["mlp_gpu", "mlp_fp32", "decoder_gpu", "decoder_tiny"], "--model-control-mode=explicit")
    report = tmp_path / "gpu-report.md"
    r = run_check(s, report, "--generator-model=decoder_gpu", "--generator-cpu-model=decoder_tiny")
    assert r.returncode == 0, r.stdout + r.stderr


@pytest.mark.skipif(not has_gpu(), reason="no GPU on this machine: run `bash ci/gpu-run.sh` on a GPU host")
def test_gpu_instances_share_one_session(server_for):
    """Two GPU instances on one CUDA session: every output right under concurrent requests, and
    the session's GPU memory reported once (by the instance that made it)."""
    from concurrent.futures import ThreadPoolExecutor

    import numpy as np
    from make_models import mlp_reference
    from server import infer

    s = server_for(["mlp_gpu_shared"])

    def client(k: int) -> None:
        rng = np.random.default_rng(k)
        for _ in range(25):
            x = rng.standard_normal((1 + k % 4, 16)).astype(np.float32)
            y = infer(s, "http", "mlp_gpu_shared", {"X": (x, "FP32")}).as_numpy("Y")
            np.testing.assert_allclose(y, mlp_reference(x), rtol=1e-4, atol=1e-4)

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(client, range(4)))
    st = s.stats("mlp_gpu_shared")
    assert st["inference_stats"]["success"]["count"] == 100 and st["inference_stats"]["fail"]["count"] == 0
    gauges = {
        labels["instance"]: value
        for name, labels, value in s.metrics().samples
        if name == "onnxrs_memory_bytes" and labels.get("model") == "mlp_gpu_shared" and labels.get("device") == "gpu0"
    }
    assert len(gauges) == 2 and sorted(v > 0 for v in gauges.values()) == [False, True], gauges

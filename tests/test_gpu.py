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
    s = server_for(["mlp_fp32", "autocomplete_mlp"], "--model-control-mode=explicit")
    report = tmp_path / "report.md"
    r = run_check(s, report, "--cpu", "--model=mlp_fp32", "--cpu-model=autocomplete_mlp", "--requests=8")
    assert r.returncode == 0, r.stdout + r.stderr
    text = report.read_text()
    assert "| success.count == sent | OK |" in text and "## Result\nPASS" in text, text


@pytest.mark.skipif(not has_gpu(), reason="no GPU on this machine: run `bash ci/gpu-run.sh` on a GPU host")
def test_gpu_models(server_for, tmp_path):
    s = server_for(["mlp_gpu", "mlp_fp32"], "--model-control-mode=explicit")
    report = tmp_path / "gpu-report.md"
    r = run_check(s, report)
    assert r.returncode == 0, r.stdout + r.stderr

"""Shared fixtures: the test models (made by tests/models/make_models.py) and real tritonserver
processes on free loopback ports, stopped by PID when their scope ends."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent / "models"))

from server import TritonServer, make_repo  # noqa: E402

# The models most tests share one server for; tests that count statistics start their own.
SHARED_MODELS = [
    "mlp_fp32",
    "identity_all",
    "string_concat",
    "two_io_dyn",
    "nobatch_fp32",
    "scalar_model",
    "scalar_batch",
    "optional_input",
    "autocomplete_mlp",
    "multi_version",
    "gather_fail",
]


@pytest.fixture(scope="session")
def shared_server(tmp_path_factory):
    repo = make_repo(tmp_path_factory.mktemp("shared") / "repo", SHARED_MODELS)
    with TritonServer(repo) as server:
        yield server


@pytest.fixture
def server_for(tmp_path):
    """`server_for(["model", ...], *args)` starts a fresh server on copies of those models."""
    started = []

    def start(names, *args, **kwargs):
        s = TritonServer(make_repo(tmp_path / f"repo{len(started)}", names), *args, **kwargs).start()
        started.append(s)
        return s

    yield start
    for s in started:
        s.stop()


@pytest.fixture(scope="session")
def promtool():
    """Prometheus's promtool (Debian's prometheus package), for the rules' checks and unit tests."""
    path = shutil.which("promtool")
    if path is None:
        pytest.fail("promtool is missing: `bash ci/setup.sh` installs Debian's prometheus package")
    return path


def pytest_sessionfinish(session, exitstatus):
    import report

    if exitstatus == 0:
        report.write_if_complete()

"""A clean shutdown under valgrind memcheck: tritonserver with an onnxrs model and every piece of
the backend's process-wide state on (the shared ONNX Runtime thread pool, the environment's
shared arena, the request log's writer thread, onnxrs's metric families), one inference, then
SIGTERM.

What it proves: the server exits by itself with status 0 (valgrind's `--error-exitcode=99` makes
any reported error a non-zero status), nothing reads or writes freed or unowned memory on the way
out (the backend's finalize, ONNX Runtime's environment and its threads, the static destructors at
exit), no block allocated through libtriton_onnxrs.so is definitely lost, and the request log
holds exactly the one request (the writer flushes at finalize).

The failure message carries the first offending valgrind stack, the ERROR SUMMARY and the logs'
paths.

A second test runs the same server under gdb and stops it at its `exit_group`, after every static
destructor has run: no thread that ONNX Runtime started may still exist then. A thread pool that
outlives the backend's finalize (an environment never released) is what makes the invalid reads
at exit possible, but its parked threads touch nothing while they sleep, so valgrind sees the
race only when a thread happens to be awake; the thread list shows the cause every time.

Run alone: `python -m pytest -q tests/test_shutdown.py -s` (under 30 s for both here, 2 cores).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import time
from pathlib import Path

import numpy as np
import pytest

from make_models import GATHER_TABLE
from server import ROOT, TritonServer, json_body, make_repo

MODEL = "gather_fail"  # one instance, one Gather over a 5-element table: the smallest onnxrs model
IDX = [[0, 4, 2]]
REQUEST_ID = "shutdown-1"
# Under valgrind the server runs tens of times slower: these are deadlines, not expectations
# (here, 2 cores: it answers after about 20 s and exits about 3 s after SIGTERM).
READY_DEADLINE_S = 600.0
STOP_DEADLINE_S = 300.0
# A frame of ours: the library's path (frames without line information) or a symbol of the crate
# (with it, valgrind prints the source file instead of the object).
OUR_FRAME = re.compile(r"libtriton_onnxrs\.so|\btriton_onnxrs::")


def valgrind_blocks(log: str) -> list[list[str]]:
    """The log's `==PID==` lines, prefix removed, as blocks separated by its blank lines."""
    blocks: list[list[str]] = [[]]
    for line in log.splitlines():
        m = re.match(r"==\d+== ?(.*)", line)
        if m is None:
            continue
        if m.group(1).strip():
            blocks[-1].append(m.group(1))
        elif blocks[-1]:
            blocks.append([])
    return [b for b in blocks if b]


def header(block: list[str]) -> str:
    """A block's first line, past the `Thread N:` line valgrind puts before an error when the
    thread changes."""
    return block[1] if re.match(r"Thread \d+", block[0]) and len(block) > 1 else block[0]


def is_error(block: list[str]) -> bool:
    """A block that reports an error: a header (not indented, not a summary) and a stack."""
    head = header(block)
    return (
        not head.startswith(" ")
        and any(line.lstrip().startswith(("at 0x", "by 0x")) for line in block)
        and not head.startswith(("HEAP SUMMARY", "LEAK SUMMARY", "Command:"))
    )


def show(block: list[str]) -> str:
    return "\n".join(block)


def shutdown_server(tmp_path: Path, **kwargs) -> tuple[TritonServer, Path]:
    """A server on `MODEL` with the backend's process-wide state on, and its request log's path."""
    request_log = tmp_path / "requests.jsonl"
    server = TritonServer(
        make_repo(tmp_path / "repo", [MODEL]),
        # Explicit although they are the defaults: the state under test must be on.
        "--backend-config=onnxrs,thread-pools=shared",
        "--allow-metrics=true",
        "--backend-config=onnxrs,shared-arena=1",
        f"--backend-config=onnxrs,request-log={request_log}",
        # The model's unload may run slowly (valgrind, gdb): let Triton wait for it (the default
        # here is 5 s).
        "--exit-timeout-secs=120",
        ready_deadline_s=READY_DEADLINE_S,
        stop_timeout_s=STOP_DEADLINE_S,
        **kwargs,
    )
    return server, request_log


def one_request(s: TritonServer) -> None:
    """The one inference, checked against the table; onnxrs's metric families are there."""
    body = json_body({"IDX": (np.asarray(IDX, dtype=np.int64), "INT64")})
    body["id"] = REQUEST_ID
    status, text = s.request("POST", f"/v2/models/{MODEL}/infer", body, timeout=300)
    assert status == 200, text
    out = json.loads(text)["outputs"][0]
    assert out["shape"] == [1, 3], out
    assert np.array_equal(np.asarray(out["data"], dtype=np.float32), GATHER_TABLE[np.asarray(IDX)].flatten()), out
    # They exist, so their teardown is part of what must shut down cleanly.
    assert s.metrics().values("onnxrs_model_load_duration_ms", model=MODEL), "no onnxrs metrics"


def request_log_problem(request_log: Path) -> str | None:
    """Why the request log is not exactly the one request (None: it is)."""
    lines = request_log.read_text().splitlines() if request_log.exists() else []
    if len(lines) == 1 and json.loads(lines[0]).get("request_id") == REQUEST_ID:
        return None
    return f"the request log {request_log} should hold exactly the one request {REQUEST_ID!r}: {lines}"


@pytest.mark.skipif(shutil.which("valgrind") is None, reason="valgrind is not installed")
def test_shutdown_under_valgrind_is_clean(tmp_path):
    valgrind = [
        "valgrind",
        "--trace-children=no",
        "--error-exitcode=99",
        "--leak-check=full",
        "--show-leak-kinds=definite",
        # Definite leaks count as errors (exit status 99). tritonserver, gRPC, protobuf and ONNX
        # Runtime leaking by themselves would be no bug of ours; today (Triton 2.51) they leak
        # nothing definitely, so the exit status stays a full check. Should one of them start to,
        # the assertions below still pick out the blocks with frames of ours.
        "--errors-for-leak-kinds=definite",
        # Deep enough to reach our frames beneath the allocator and std/ort layers.
        "--num-callers=50",
        # tests/valgrind.supp also silences tritonserver's own startup noise (its re2 and gRPC).
        f"--suppressions={ROOT / 'tests' / 'valgrind.supp'}",
        f"--log-file={tmp_path / 'valgrind.%p.log'}",
    ]
    server, request_log = shutdown_server(tmp_path, wrapper=valgrind)
    t0 = time.monotonic()
    with server as s:
        ready_s = time.monotonic() - t0
        one_request(s)
        t1 = time.monotonic()
        rc = s.stop()  # SIGTERM to the process group, then waits (SIGKILL after STOP_DEADLINE_S)
        stop_s = time.monotonic() - t1
        server_log = s.log_path
    print(f"\nunder valgrind: live after {ready_s:.1f} s, exited {stop_s:.1f} s after SIGTERM with status {rc}")

    logs = sorted(tmp_path.glob("valgrind.*.log"))
    assert len(logs) == 1, f"expected one valgrind log (no children traced), found {logs}"
    text = logs[0].read_text(errors="replace")
    blocks = valgrind_blocks(text)
    errors = [b for b in blocks if is_error(b)]
    invalid = [b for b in errors if header(b).startswith(("Invalid read", "Invalid write", "Invalid free"))]
    our_leaks = [b for b in errors if "definitely lost" in header(b) and any(OUR_FRAME.search(f) for f in b)]
    summary = next((line for line in text.splitlines() if "ERROR SUMMARY" in line), "(no ERROR SUMMARY: valgrind was killed?)")
    where = f"valgrind log {logs[0]}, server log {server_log}; {summary}"

    problems = []
    if invalid:
        problems.append(f"{len(invalid)} invalid accesses; the first:\n{show(invalid[0])}")
    if our_leaks:
        problems.append(f"{len(our_leaks)} definitely lost blocks with frames in libtriton_onnxrs.so; the first:\n{show(our_leaks[0])}")
    if rc != 0:
        first = show(errors[0]) if errors else "(no error reported in the valgrind log)"
        problems.append(f"the server's exit status is {rc}, not 0 (99: valgrind reported errors); the first error:\n{first}")
    if (why := request_log_problem(request_log)) is not None:
        problems.append(why)
    if problems:
        pytest.fail(f"{where}\n\n" + "\n\n".join(problems), pytrace=False)


# Stops the server at its exit_group (static destructors done), prints every thread's stack
# between markers, then lets it exit.
GDB_SCRIPT = """set pagination off
set confirm off
handle SIGTERM nostop noprint pass
handle SIGPIPE nostop noprint pass
catch syscall exit_group
commands
  echo ===== threads at exit_group =====\\n
  thread apply all bt 30
  echo ===== end =====\\n
  continue
end
run
"""


def children(pid: int) -> list[int]:
    """The processes whose parent is `pid`."""
    found = []
    for d in Path("/proc").iterdir():
        try:
            if d.name.isdigit() and int((d / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(d.name))
        except (OSError, IndexError, ValueError):
            pass
    return found


@pytest.mark.skipif(shutil.which("gdb") is None, reason="gdb is not installed")
def test_no_onnx_runtime_thread_is_alive_at_exit(tmp_path):
    script = tmp_path / "exit.gdb"
    script.write_text(GDB_SCRIPT)
    # gdb runs the server as its child: the stop below signals the server itself, not gdb.
    server, request_log = shutdown_server(tmp_path, wrapper=["gdb", "-batch", "-nx", "-x", str(script), "--args"])
    with server as s:
        one_request(s)
        (pid,) = children(s.proc.pid)
        t0 = time.monotonic()
        os.kill(pid, signal.SIGTERM)
        s.proc.wait(timeout=STOP_DEADLINE_S)  # gdb ends when the server has exited
        stop_s = time.monotonic() - t0
        log = s.log_text()
    print(f"\nunder gdb: exited {stop_s:.1f} s after SIGTERM")
    assert "===== threads at exit_group =====" in log, f"the server never reached exit_group:\n{log[-20000:]}"
    assert re.search(r"\[Inferior 1 \(process \d+\) exited normally\]", log), log[-20000:]
    at_exit = log.split("===== threads at exit_group =====", 1)[1].split("===== end =====", 1)[0]
    threads = ["Thread " + t for t in re.split(r"^Thread ", at_exit, flags=re.M)[1:]]
    ort = [t for t in threads if "libonnxruntime" in t]
    if ort:
        pytest.fail(
            f"{len(ort)} of the {len(threads)} threads alive at exit_group (static destructors done) "
            "were started by ONNX Runtime: its environment (and the thread pool it owns) outlived the "
            f"backend's finalize. The first:\n{ort[0]}\n(server log: {s.log_path})",
            pytrace=False,
        )
    assert request_log_problem(request_log) is None, request_log_problem(request_log)

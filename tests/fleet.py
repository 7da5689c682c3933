"""The monitoring side of a fleet, as real processes for tests/test_fleet.py: a Prometheus server
(Debian's `prometheus`) scraping tritonserver replicas with onnxrs's rules loaded, an
Alertmanager (Debian's `prometheus-alertmanager`) it sends alerts to, and a webhook receiver
standing in for whoever gets paged.

Each process runs on a free loopback port with its configuration and storage in a directory of
the test's, prints its log when something fails, and is stopped by PID whatever happened (the
same contract as `server.TritonServer`). Every wait has a deadline.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import threading
import time
import urllib.parse
import urllib.request
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from server import free_port

READY_DEADLINE_S = 60.0


def wait_until(what: str, probe, deadline_s: float, explain=lambda: ""):
    """Calls `probe` every 0.2 s until it returns something truthy, which is returned; after
    `deadline_s` raises with `what` and whatever `explain` says (logs, the last answers)."""
    deadline = time.monotonic() + deadline_s
    while True:
        got = probe()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {deadline_s:.0f} s\n{explain()}")
        time.sleep(0.2)


def find_binary(*names: str) -> str:
    for n in names:
        path = shutil.which(n)
        if path:
            return path
    raise RuntimeError(f"none of {names} is installed: `bash ci/setup.sh` installs Debian's packages")


class Process:
    """One monitoring process on 127.0.0.1:`port`, logging to `workdir`/`name`.log; ready when
    GET `ready_path` answers 200."""

    name = "process"
    ready_path = "/-/ready"

    def __init__(self, workdir: Path):
        self.dir = Path(workdir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.log_path = self.dir / f"{self.name}.log"
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def addr(self) -> str:
        return f"127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        """Writes the process's configuration into `dir`; the command line that starts it."""
        raise NotImplementedError

    def start(self):
        cmd = self.command()
        self.log = open(self.log_path, "w")
        self.log.write("$ " + " ".join(cmd) + "\n")
        self.log.flush()
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True, cwd=self.dir)
        deadline = time.monotonic() + READY_DEADLINE_S
        while True:
            if self.proc.poll() is not None:
                self.fail(f"{self.name} exited with status {self.proc.returncode} before it was ready")
            try:
                with urllib.request.urlopen(self.url + self.ready_path, timeout=2) as r:
                    if r.status == 200:
                        return self
            except OSError:
                pass
            if time.monotonic() > deadline:
                self.fail(f"{self.name} was not ready after {READY_DEADLINE_S:.0f} s")
            time.sleep(0.2)

    def log_text(self) -> str:
        try:
            return f"----- {self.name} log ({self.log_path}) -----\n" + self.log_path.read_text(errors="replace")[-15000:]
        except OSError:
            return f"(no {self.name} log)"

    def fail(self, why: str):
        log = self.log_text()
        self.stop()
        raise RuntimeError(f"{why}\n{log}")

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
        self.log.close()
        self.proc = None

    def get(self, path: str, **params) -> dict | list:
        query = "?" + urllib.parse.urlencode(params, doseq=True) if params else ""
        with urllib.request.urlopen(self.url + path + query, timeout=30) as r:
            return json.loads(r.read())

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


class Prometheus(Process):
    """Prometheus scraping `targets` (host:port of /metrics) every second, evaluating
    `rule_file` every second and sending alerts to `alertmanager` (host:port), if given."""

    name = "prometheus"

    def __init__(self, workdir: Path, targets: list[str], rule_file: Path, alertmanager: str | None = None):
        super().__init__(workdir)
        self.targets = targets
        self.rule_file = Path(rule_file)
        self.alertmanager = alertmanager

    def command(self) -> list[str]:
        alerting = ""
        if self.alertmanager:
            alerting = f"alerting:\n  alertmanagers:\n    - static_configs:\n        - targets: ['{self.alertmanager}']\n"
        targets = ", ".join(f"'{t}'" for t in self.targets)
        (self.dir / "prometheus.yml").write_text(
            # One second: a test's workload takes seconds, and every recording rule and alert
            # should have seen it a few evaluations later.
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n"
            f"rule_files: ['{self.rule_file}']\n"
            f"{alerting}"
            f"scrape_configs:\n  - job_name: tritonserver\n    static_configs:\n      - targets: [{targets}]\n"
        )
        return [
            find_binary("prometheus"),
            f"--config.file={self.dir / 'prometheus.yml'}",
            f"--storage.tsdb.path={self.dir / 'data'}",
            f"--web.listen-address={self.addr}",
            # A state change is sent at once anyway; this also repeats firing alerts every second
            # instead of every minute, so a lost first delivery costs a second, not a minute.
            "--rules.alert.resend-delay=1s",
        ]

    def api(self, path: str, **params):
        body = self.get("/api/v1/" + path, **params)
        assert body["status"] == "success", body
        return body["data"]

    def query(self, expr: str, at: float | None = None) -> list[tuple[dict[str, str], float]]:
        """An instant query (at `at`, Unix seconds; default now): (labels, value) per series."""
        params = {"query": expr}
        if at is not None:
            params["time"] = f"{at:.3f}"
        data = self.api("query", **params)
        assert data["resultType"] == "vector", (expr, data)
        return [(r["metric"], float(r["value"][1])) for r in data["result"]]

    def query_range(self, expr: str, start: float, end: float, step: float) -> list[dict]:
        """A range query: per series, its labels ("metric") and [time, "value"] pairs ("values")."""
        data = self.api("query_range", query=expr, start=f"{start:.3f}", end=f"{end:.3f}", step=f"{step}")
        assert data["resultType"] == "matrix", (expr, data)
        return data["result"]

    def scrapes(self) -> dict[str, dict]:
        """The active targets by `instance` label: health, lastScrape, lastError."""
        return {t["labels"]["instance"]: t for t in self.api("targets", state="active")["activeTargets"]}

    def wait_scraped_after(self, t: float, deadline_s: float = 60.0) -> None:
        """Waits until every target's last successful scrape started after `t` (Unix seconds):
        from then on Prometheus holds every counter as it stood at `t`."""

        def fresh():
            s = self.scrapes()
            return len(s) == len(self.targets) and all(
                x["health"] == "up" and _unix(x["lastScrape"]) > t for x in s.values()
            )

        wait_until("every target scraped", fresh, deadline_s, lambda: json.dumps(self.scrapes(), indent=1) + self.log_text())

    def alerts(self) -> list[dict]:
        """The alerts the rules hold now (pending or firing)."""
        return self.api("alerts")["alerts"]


def _unix(rfc3339: str) -> float:
    """Prometheus's RFC 3339 timestamps (nanoseconds, Z or an offset) as Unix seconds."""
    s = rfc3339.replace("Z", "+00:00")
    head, _, tail = s.partition(".")
    if tail:  # Python takes at most microseconds
        frac, sign, zone = tail[:-6], tail[-6], tail[-5:]
        s = f"{head}.{frac[:6].ljust(6, '0')}{sign}{zone}"
    return datetime.fromisoformat(s).timestamp()


class Alertmanager(Process):
    """Alertmanager routing every alert to a webhook at `webhook_url`, grouped by alert name and
    model, notifying a second after a group's first alert and a second after any change (the
    production defaults are 30 s and 5 min)."""

    name = "alertmanager"

    def __init__(self, workdir: Path, webhook_url: str):
        super().__init__(workdir)
        self.webhook_url = webhook_url

    def command(self) -> list[str]:
        (self.dir / "alertmanager.yml").write_text(
            "route:\n"
            "  receiver: webhook\n"
            "  group_by: [alertname, model, instance]\n"
            "  group_wait: 1s\n  group_interval: 1s\n  repeat_interval: 1h\n"
            "receivers:\n"
            f"  - name: webhook\n    webhook_configs:\n      - url: '{self.webhook_url}'\n        send_resolved: true\n"
        )
        return [
            find_binary("prometheus-alertmanager", "alertmanager"),
            f"--config.file={self.dir / 'alertmanager.yml'}",
            f"--storage.path={self.dir / 'data'}",
            f"--web.listen-address={self.addr}",
            # No gossip: the default listens on every interface at port 9094.
            "--cluster.listen-address=",
        ]

    def alerts(self) -> list[dict]:
        """The active alerts Alertmanager holds (its v2 API; resolved ones are not listed)."""
        return self.get("/api/v2/alerts")


class Webhook:
    """An HTTP receiver on a free loopback port that keeps every JSON notification POSTed to it
    (Alertmanager's webhook payload: status, alerts with labels, startsAt, endsAt)."""

    def __init__(self):
        self.notifications: list[dict] = []
        self.arrived: list[float] = []
        lock = self.lock = threading.Lock()
        received, arrived = self.notifications, self.arrived

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with lock:
                    received.append(body)
                    arrived.append(time.time())
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args):  # quiet: the test prints what it received
                pass

        self.http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.http.server_address[1]}/"
        self.thread = threading.Thread(target=self.http.serve_forever, daemon=True)

    def __enter__(self) -> Webhook:
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.http.shutdown()
        self.http.server_close()

    def alerts(self, status: str, **labels: str) -> list[tuple[float, dict]]:
        """(arrival time, alert) for each alert in a notification with `status` ("firing" or
        "resolved") whose labels include `labels`."""
        with self.lock:
            got = list(zip(self.arrived, self.notifications))
        return [
            (t, a)
            for t, n in got
            for a in n["alerts"]
            if a["status"] == status and all(a["labels"].get(k) == v for k, v in labels.items())
        ]

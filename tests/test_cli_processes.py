"""End to end with real processes: ``fl-async superlink``, 3 ``fl-async supernode`` and ``fl-async server-app``
on 127.0.0.1 over TLS (throwaway CA from ``tests/certs.py``), then SIGTERM: every process exits 0 within 3 s.

Every wait is bounded; every process is ended by its PID in a ``finally``.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from certs import CertFiles, write_certs

FL_ASYNC = str(Path(sys.executable).with_name("fl-async"))
REPO = Path(__file__).resolve().parents[1]
ADDRESSES = re.compile(r"Driver API on (\S+), Fleet API on (\S+),")


class Proc:
    """A child process whose stdout/stderr lines are collected by reader threads (pipes never fill up)."""

    def __init__(self, *args: str, cwd: Path = REPO) -> None:
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self.args = args
        self.popen = subprocess.Popen(
            [FL_ASYNC, *args], cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        self.out: list[str] = []
        self.err: list[str] = []
        self._cond = threading.Condition()
        self._threads = [
            threading.Thread(target=self._read, args=(self.popen.stdout, self.out), daemon=True),
            threading.Thread(target=self._read, args=(self.popen.stderr, self.err), daemon=True),
        ]
        for t in self._threads:
            t.start()

    def _read(self, stream, sink: list[str]) -> None:
        for line in stream:
            with self._cond:
                sink.append(line.rstrip("\n"))
                self._cond.notify_all()
        with self._cond:
            self._cond.notify_all()

    def wait_for(self, pattern: re.Pattern[str] | str, *, stream: str = "err", timeout: float = 30.0) -> re.Match[str]:
        """Block until a line of ``stream`` matches ``pattern`` (bounded by ``timeout``)."""
        rx = re.compile(pattern) if isinstance(pattern, str) else pattern
        lines = self.err if stream == "err" else self.out
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for line in lines:
                    m = rx.search(line)
                    if m:
                        return m
                left = deadline - time.monotonic()
                if left <= 0 or (self.popen.poll() is not None and not any(t.is_alive() for t in self._threads)):
                    raise AssertionError(f"{self.args[0]}: no line matching {rx.pattern!r}; {self.describe()}")
                self._cond.wait(left)

    def finish(self, timeout: float) -> int:
        rc = self.popen.wait(timeout=timeout)
        for t in self._threads:
            t.join(timeout=5)
        return rc

    def describe(self) -> str:
        return f"rc={self.popen.poll()} stdout={self.out[-20:]} stderr={self.err[-20:]}"

    def kill(self) -> None:
        if self.popen.poll() is None:
            self.popen.kill()
            self.popen.wait(timeout=10)


def terminate_all_within(procs: list[Proc], seconds: float) -> None:
    """SIGTERM every process at once; each must exit 0 within ``seconds`` of its signal."""
    sent = {}
    for p in procs:
        p.popen.send_signal(signal.SIGTERM)
        sent[p] = time.monotonic()
    for p in procs:
        left = seconds - (time.monotonic() - sent[p])
        try:
            rc = p.popen.wait(timeout=max(left, 0.01))
        except subprocess.TimeoutExpired:
            raise AssertionError(f"{p.args[0]} still running {seconds} s after SIGTERM; {p.describe()}") from None
        took = time.monotonic() - sent[p]
        assert rc == 0, f"{p.args[0]} exited {rc} after SIGTERM; stderr:\n" + "\n".join(p.err)
        assert took <= seconds, (p.args[0], took)


@pytest.fixture
def procs():
    started: list[Proc] = []
    yield started
    for p in started:  # end whatever is left, by PID
        p.kill()


def tls_link(certs: CertFiles) -> Proc:
    """Start `fl-async superlink` over TLS on free 127.0.0.1 ports."""
    return Proc(
        "superlink",
        "--driver-api-address",
        "127.0.0.1:0",
        "--fleet-api-address",
        "127.0.0.1:0",
        "--ssl-ca-certfile",
        str(certs.ca_cert),
        "--ssl-certfile",
        str(certs.server_cert),
        "--ssl-keyfile",
        str(certs.server_key),
    )


def test_tls_deployment_three_rounds_then_sigterm(tmp_path: Path, procs: list[Proc]) -> None:
    certs = write_certs(tmp_path)
    link = tls_link(certs)
    procs.append(link)
    driver_addr, fleet_addr = link.wait_for(ADDRESSES).groups()
    assert "TLS" in link.err[-1]
    assert re.search(r", blob data path on 127\.0\.0\.1:\d+,", link.err[-1]), link.err[-1]

    nodes = []
    for i in range(3):
        node = Proc(
            "supernode",
            "examples.quickstart.client:app",
            "--superlink",
            fleet_addr,
            "--root-certificates",
            str(certs.ca_cert),
            "--node-config",
            f"partition-id={i} num-partitions=3",
            "--heartbeat-interval",
            "5",
        )
        procs.append(node)
        nodes.append(node)

    server = Proc(
        "server-app",
        "examples.quickstart.server:app",
        "--superlink",
        driver_addr,
        "--root-certificates",
        str(certs.ca_cert),
        "--run-config",
        "num-server-rounds=3 min-nodes=3 local-epochs=1",
    )
    procs.append(server)
    rc = server.finish(timeout=90)
    assert rc == 0, server.describe()
    rounds = [line for line in server.out if re.match(r"round +\d+/3: test accuracy", line)]
    assert len(rounds) == 3, server.out
    trained = [line for line in server.err if "└──> train:" in line]  # the strategy's per-round tally
    assert len(trained) == 3 and "3/3 results, 0 errors, 0 timed out" in trained[-1], server.err
    assert any(line.startswith("final test accuracy") for line in server.out)

    # A second server app that waits for more nodes than exist: it is mid-run when SIGTERM arrives.
    waiting = Proc(
        "server-app",
        "examples.quickstart.server:app",
        "--superlink",
        driver_addr,
        "--root-certificates",
        str(certs.ca_cert),
        "--run-config",
        "min-nodes=10",
    )
    procs.append(waiting)
    waiting.wait_for(r"running examples.quickstart.server:app")
    terminate_all_within([link, *nodes, waiting], 3.0)


def test_plaintext_server_app_against_tls_link_fails_clearly(tmp_path: Path, procs: list[Proc]) -> None:
    certs = write_certs(tmp_path)
    link = tls_link(certs)
    procs.append(link)
    driver_addr, _ = link.wait_for(ADDRESSES).groups()
    server = Proc("server-app", "examples.quickstart.server:app", "--superlink", driver_addr, "--insecure")
    procs.append(server)
    rc = server.finish(timeout=30)
    assert rc == 1, server.describe()
    errors = [line for line in server.err if line.startswith("fl-async server-app: error:")]
    assert len(errors) == 1, server.describe()
    assert "Traceback" not in "\n".join(server.err)
    assert "pass --root-certificates FILE instead of --insecure" in errors[0]
    terminate_all_within([link], 3.0)


def test_superlink_port_in_use_fails_with_one_line(procs: list[Proc]) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        link = Proc(
            "superlink", "--insecure", "--driver-api-address", f"127.0.0.1:{port}", "--fleet-api-address", "127.0.0.1:0"
        )
        procs.append(link)
        rc = link.finish(timeout=30)
    assert rc == 1, link.describe()
    assert len(link.err) == 1 and link.err[0].startswith("fl-async superlink: error:"), link.describe()

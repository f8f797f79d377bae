"""``fl-async run --backend ray``: SuperNodes in Ray actors, the link and the server app in the command's process.

The end-to-end tests share one local Ray instance (2 CPUs) owned by a helper process (``tests/ray_head.py``);
each ``fl-async run`` is a real child process that joins it with ``--ray-address``, and one more test lets the
command start and stop its own local instance. They skip cleanly when Ray is not installed; the option and
error-path tests run without it.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest
from typer.testing import CliRunner

from examples.quickstart import client as qclient
from examples.quickstart import server as qserver
from fl_async._embedded import run_embedded
from fl_async._ray_backend import RAY_INSTALL_HINT, actor_layout, actor_options, parse_node_resources
from fl_async.cli import app

REPO = Path(__file__).resolve().parents[1]
FL_ASYNC = str(Path(sys.executable).with_name("fl-async"))
QUICKSTART = ["examples.quickstart.server:app", "examples.quickstart.client:app"]
NODES_50_IN_5 = ["--num-supernodes", "50", "--nodes-per-actor", "10"]
ACCURACY_LINE = re.compile(r"^round +(\d+)/(\d+): test accuracy +([\d.]+)%")
ROUND_START = re.compile(r"\[ROUND (\d+)/\d+\]")
TRAIN_TALLY = re.compile(r"train: (\d+)/(\d+) results, (\d+) errors")

try:
    import ray  # noqa: F401

    HAVE_RAY = True
except ImportError:
    HAVE_RAY = False
needs_ray = pytest.mark.skipif(not HAVE_RAY, reason="Ray is not installed (pip install 'fl-async[ray]')")


class Lines:
    """A child process whose stdout/stderr lines are collected by reader threads (pipes never fill up)."""

    def __init__(self, argv: list[str], *, stdin: bool = False, env: dict[str, str] | None = None) -> None:
        env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        self.popen = subprocess.Popen(
            argv,
            cwd=REPO,
            env=env,
            stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
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

    def _read(self, stream: object, sink: list[str]) -> None:
        for line in stream:  # type: ignore[attr-defined]
            with self._cond:
                sink.append(line.rstrip("\n"))
                self._cond.notify_all()
        with self._cond:
            self._cond.notify_all()

    def wait_for(self, pattern: str, *, timeout: float, start: int = 0) -> tuple[int, re.Match[str]]:
        """Block until a stdout line at index >= ``start`` matches ``pattern``; return its index and match."""
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for i in range(start, len(self.out)):
                    m = rx.search(self.out[i])
                    if m:
                        return i, m
                left = deadline - time.monotonic()
                if left <= 0 or (self.popen.poll() is not None and not any(t.is_alive() for t in self._threads)):
                    raise AssertionError(f"no stdout line matching {pattern!r}; {self.describe()}")
                self._cond.wait(left)

    def send(self, line: str, reply: str, timeout: float = 30.0) -> str:
        """Write one command line on stdin and wait for the stdout line starting with ``reply``."""
        assert self.popen.stdin is not None
        start = len(self.out)
        self.popen.stdin.write(line + "\n")
        self.popen.stdin.flush()
        return self.wait_for(f"^{reply}", timeout=timeout, start=start)[1].string

    def finish(self, timeout: float) -> int:
        rc = self.popen.wait(timeout=timeout)
        for t in self._threads:
            t.join(timeout=5)
        return rc

    def describe(self) -> str:
        return f"rc={self.popen.poll()} stdout={self.out[-25:]} stderr={self.err[-25:]}"

    def kill(self) -> None:
        if self.popen.poll() is None:
            self.popen.kill()
            self.popen.wait(timeout=10)


@pytest.fixture(scope="module")
def ray_head() -> Iterator[tuple[Lines, str]]:
    """One local Ray instance (2 CPUs) for the module's tests: (the helper process, its GCS address)."""
    head = Lines([sys.executable, "-m", "tests.ray_head"], stdin=True)
    try:
        _, m = head.wait_for(r"^address (\S+)", timeout=120)
        yield head, m.group(1)
    finally:
        if head.popen.stdin is not None:
            head.popen.stdin.close()  # end of input: the helper shuts Ray down and exits
        try:
            head.finish(timeout=30)
        except subprocess.TimeoutExpired:
            head.kill()


def run_cli(*args: str) -> Lines:
    # Ray enables token authentication on the clusters it starts; joining one by address needs it said explicitly.
    return Lines([FL_ASYNC, "run", *QUICKSTART, "--backend", "ray", *args], env={"RAY_AUTH_MODE": "token"})


def rounds(out: list[str], err: list[str]) -> list[tuple[int, float, int, int, int]]:
    """``(round, accuracy 0..1, replies with a model, nodes asked, errors)`` per round.

    The accuracy comes from the quickstart's stdout line; the tally from the strategy's INFO log on stderr
    (``[ROUND k/n]`` then ``train: results/sent results, e errors``).
    """
    accuracy = {int(m.group(1)): float(m.group(3)) / 100 for m in map(ACCURACY_LINE.search, out) if m}
    tally: dict[int, tuple[int, int, int]] = {}
    current = 0
    for line in err:
        if m := ROUND_START.search(line):
            current = int(m.group(1))
        elif (m := TRAIN_TALLY.search(line)) and current:
            tally[current] = (int(m.group(1)), int(m.group(2)), int(m.group(3)))
    return [(r, accuracy[r], *tally.get(r, (0, 0, 0))) for r in sorted(accuracy)]


# ----------------------------------------------------------------------------------- without Ray


def test_node_resources_parse_and_scale_per_actor() -> None:
    assert parse_node_resources("num_cpus=0.5, num_gpus=0.1,memory=1e9,accel=2") == {
        "num_cpus": 0.5,
        "num_gpus": 0.1,
        "memory": 1e9,
        "accel": 2.0,
    }
    assert parse_node_resources("") == {}
    assert actor_options({"num_cpus": 0.5, "num_gpus": 0.1, "memory": 1e9, "accel": 2}, 10) == {
        "num_cpus": 5.0,
        "num_gpus": 1.0,
        "memory": 10_000_000_000,
        "resources": {"accel": 20.0},
    }
    assert actor_options({}, 10) == {}
    for bad, why in [
        ("num_cpus", "NAME=NUMBER"),
        ("num_cpus=x", "must be a number"),
        ("num_cpus=-1", ">= 0"),
        ("num_cpus=nan", ">= 0"),
        ("num_cpus=1,num_cpus=2", "given twice"),
        ("=1", "NAME=NUMBER"),
    ]:
        with pytest.raises(ValueError, match=why):
            parse_node_resources(bad)


def test_actor_layout_gives_k_consecutive_nodes_per_actor() -> None:
    assert actor_layout(50, 10) == [range(i, i + 10) for i in range(0, 50, 10)]
    assert actor_layout(7, 3) == [range(0, 3), range(3, 6), range(6, 7)]
    assert actor_layout(2, 10) == [range(0, 2)]
    with pytest.raises(ValueError):
        actor_layout(0, 1)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--ray-address", "auto"], "--ray-address needs --backend ray"),
        (
            ["--nodes-per-actor", "3", "--node-resources", "num_cpus=1"],
            "--node-resources and --nodes-per-actor need --backend ray",
        ),
        (["--backend", "spark"], "--backend must be 'in-process' or 'ray', got 'spark'"),
        (
            ["--backend", "ray", "--node-resources", "num_cpus=lots"],
            "--node-resources: num_cpus must be a number, got 'lots'",
        ),
    ],
)
def test_misplaced_or_bad_ray_flags_are_refused_with_one_line(args: list[str], message: str) -> None:
    result = CliRunner().invoke(app, ["run", *QUICKSTART, *args])
    assert result.exit_code == 2, result.output
    assert result.stderr.strip().splitlines() == [f"fl-async run: error: {message}"]


def test_ray_not_installed_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now raises ImportError
    result = CliRunner().invoke(app, ["run", *QUICKSTART, "--backend", "ray", "--num-supernodes", "3"])
    assert result.exit_code == 2, result.output
    assert result.stderr.strip().splitlines() == [f"fl-async run: error: {RAY_INSTALL_HINT}"]
    assert "pip install 'fl-async[ray]'" in RAY_INSTALL_HINT


# -------------------------------------------------------------------------------------- with Ray


@needs_ray
@pytest.mark.slow
def test_quickstart_on_ray_matches_in_process_accuracy(ray_head: tuple[Lines, str]) -> None:
    """50 nodes in 5 actors reach the in-process backend's accuracy with the same seed (within 0.5 points)."""
    _, address = ray_head
    # round-timeout: the first round pays for importing scikit-learn in every actor (25 s at a load of 20)
    proc = run_cli(*NODES_50_IN_5, "--ray-address", address, "--run-config", "round-timeout=300")
    try:
        rc = proc.finish(timeout=400)
    finally:
        proc.kill()
    assert rc == 0, proc.describe()
    on_ray = rounds(proc.out, proc.err)
    assert [r[0] for r in on_ray] == list(range(1, 21)), proc.describe()
    assert all(r[2] == r[3] == 50 and r[4] == 0 for r in on_ray), on_ray
    assert "federated evaluation on 50 nodes" in "\n".join(proc.out)

    import io
    from contextlib import redirect_stdout

    buffer = io.StringIO()
    with redirect_stdout(buffer):
        anyio.run(_in_process, 50)
    in_process = rounds(buffer.getvalue().splitlines(), [])
    assert len(in_process) == 20
    assert abs(on_ray[-1][1] - in_process[-1][1]) <= 0.005, (on_ray[-1], in_process[-1])
    assert on_ray[-1][1] >= 0.85, on_ray


async def _in_process(n: int) -> None:
    with anyio.fail_after(120):
        await run_embedded(qserver.app, qclient.app, num_supernodes=n, progress=False)


@needs_ray
@pytest.mark.slow
def test_killing_an_actor_turns_its_nodes_work_into_error_replies(ray_head: tuple[Lines, str]) -> None:
    """ray.kill on one of 5 actors mid-run: its 10 nodes' work comes back as errors; the run completes (exit 0)."""
    head, address = ray_head
    config = "num-server-rounds=8 round-timeout=300"
    proc = run_cli(*NODES_50_IN_5, "--ray-address", address, "--run-config", config)
    try:
        proc.wait_for(r"round +2/8", timeout=400)
        assert head.send("kill fl-async-nodes-2", "killed|missing") == "killed fl-async-nodes-2"
        rc = proc.finish(timeout=120)
    finally:
        proc.kill()
    assert rc == 0, proc.describe()
    seen = rounds(proc.out, proc.err)
    assert [r[0] for r in seen] == list(range(1, 9)), proc.describe()
    hit = [r for r in seen if r[4]]
    assert hit, seen  # the round(s) in flight when the actor died got error replies ...
    assert all(r[4] <= 10 and r[2] + r[4] == r[3] for r in hit), hit
    assert seen[-1][2:] == (40, 40, 0), seen  # ... and later rounds run on the 40 nodes left
    logged = "\n".join(proc.out + proc.err)
    assert "NODE_UNAVAILABLE" in logged or "offline" in logged, proc.describe()
    assert any("Ray actor 2 (nodes 20..29) died" in line for line in proc.err), proc.err


@needs_ray
@pytest.mark.slow
def test_without_an_address_a_local_ray_instance_is_started_and_stopped() -> None:
    proc = run_cli("--num-supernodes", "4", "--nodes-per-actor", "2", "--run-config", "num-server-rounds=2")
    try:
        rc = proc.finish(timeout=300)
    finally:
        proc.kill()
    assert rc == 0, proc.describe()
    assert [r[:1] + r[2:] for r in rounds(proc.out, proc.err)] == [(1, 4, 4, 0), (2, 4, 4, 0)], proc.describe()

"""Workload settings shared by the benchmark apps of both systems (stdlib + numpy only).

The harness passes settings to the ServerApp/ClientApp processes through ``BENCH_*`` environment variables,
so the same app module runs under ``flower-server-app`` / ``flower-supernode`` (Flower's venv, no fl-async) and
under ``fl-async server-app`` / ``fl-async supernode``. The server app writes its measurements as one JSON
object to ``BENCH_OUT``.

Variables:
    BENCH_MODE: ``"rounds"`` (push to N nodes, wait for all replies, repeat), ``"kill"`` (one round, wait
        for an error reply from a node that the harness kills mid-round) or ``"ready"`` (touch
        ``BENCH_OUT + ".ready"`` once connected, then only wait until N nodes are listed: bring-up time).
    BENCH_N: nodes per round.
    BENCH_ROUNDS: rounds (``"rounds"`` mode).
    BENCH_SLEEP: seconds slept between polls in Flower's guide-style loops (3 = the guide).
    BENCH_FLOATS: float32 values in the model array (10 = tiny; 26,214,400 = 100 MiB).
    BENCH_DEADLINE: seconds the server app may spend in total before it gives up and reports a timeout.
    BENCH_OUT: path of the JSON result file.
    BENCH_VICTIM: ``"1"`` on the node process to be killed: its ClientApp touches ``BENCH_MARKER`` and then
        blocks (up to 600 s) instead of replying.
    BENCH_MARKER: path of the file the victim touches when it has received the instruction.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

MIB = 1024 * 1024
#: float32 values in a 100 MiB array
FLOATS_100MIB = 100 * MIB // 4


@dataclass
class AppConfig:
    """Settings read from the ``BENCH_*`` environment (see the module docstring for units)."""

    mode: str = "rounds"
    n: int = 2
    rounds: int = 5
    sleep: float = 3.0
    floats: int = 10
    deadline: float = 120.0
    out: str = ""
    victim: bool = False
    marker: str = ""

    @classmethod
    def from_env(cls) -> AppConfig:
        """Build the settings from ``os.environ`` (defaults for unset variables)."""
        e = os.environ
        return cls(
            mode=e.get("BENCH_MODE", "rounds"),
            n=int(e.get("BENCH_N", "2")),
            rounds=int(e.get("BENCH_ROUNDS", "5")),
            sleep=float(e.get("BENCH_SLEEP", "3")),
            floats=int(e.get("BENCH_FLOATS", "10")),
            deadline=float(e.get("BENCH_DEADLINE", "120")),
            out=e.get("BENCH_OUT", ""),
            victim=e.get("BENCH_VICTIM", "") == "1",
            marker=e.get("BENCH_MARKER", ""),
        )


@dataclass
class AppResult:
    """What a benchmark server app measured (seconds, wall clock or ``time.perf_counter`` deltas).

    Attributes:
        rounds: seconds per round, from selecting nodes to holding every reply.
        replies_ok: replies with content, over all rounds.
        replies_error: error replies, over all rounds.
        wait_nodes: seconds spent waiting until N nodes were connected (before round 1).
        nodes_seen_at: ``time.time()`` when the app first saw N nodes online.
        error_at: ``time.time()`` when the first error reply reached the app (``"kill"`` mode).
        error_code: its error code.
        timed_out: the app hit ``BENCH_DEADLINE`` before finishing.
        note: free text (e.g. an exception).
        self_rss: the server app's own peak RSS (bytes), for apps the harness cannot sample (newest Flower's
            ServerApp runs in a process started by the SuperLink's SuperExec).
        self_cpu: the server app's own CPU seconds, likewise.
        client_rss: largest peak RSS (bytes) a ClientApp process reported in its reply (newest Flower).
        client_cpu: largest CPU seconds a ClientApp process reported in its reply (newest Flower).
    """

    rounds: list[float] = field(default_factory=list)
    replies_ok: int = 0
    replies_error: int = 0
    wait_nodes: float = 0.0
    nodes_seen_at: float | None = None
    error_at: float | None = None
    error_code: int | None = None
    timed_out: bool = False
    note: str = ""
    self_rss: int | None = None
    self_cpu: float | None = None
    client_rss: int | None = None
    client_cpu: float | None = None

    def write(self, path: str) -> None:
        """Write this result as JSON to ``path`` (atomically: temp file, then rename)."""
        if not path:
            return
        tmp = Path(path + ".tmp")
        tmp.write_text(json.dumps(asdict(self)))
        os.replace(tmp, path)

    @classmethod
    def read(cls, path: str | os.PathLike[str]) -> AppResult:
        """Read a result written by :meth:`write`.

        Raises:
            FileNotFoundError: the app wrote nothing.
        """
        return cls(**json.loads(Path(path).read_text()))


def payload(floats: int) -> np.ndarray:
    """The model array: ``floats`` float32 values (4 bytes each)."""
    return np.full(floats, 0.5, dtype=np.float32)


def victim_block(cfg: AppConfig) -> None:
    """On the victim node: touch the marker, then block until killed (at most 600 s)."""
    Path(cfg.marker).touch()
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        time.sleep(1)

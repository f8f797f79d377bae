"""Clusters of real processes on 127.0.0.1: one link, node processes (or one in-process node host), server apps.

A :class:`System` says how to start each piece of one system (fl-async or Flower); a :class:`Cluster` starts
them on free ports, measures them (peak RSS = VmHWM, CPU seconds, see :mod:`benchmarks._proc`), and ends every
process it started, by PID, nodes before the link (a Flower node whose link is gone retries its DeleteNode
forever). Every wait is bounded.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Self

from benchmarks._proc import Proc, free_port, read_vm_hwm, stop_all, wait_for_port, wait_until
from benchmarks.peer.appcfg import AppResult

REPO = Path(__file__).resolve().parents[2]
HOST = "127.0.0.1"


@dataclass(frozen=True)
class System:
    """How to start one system's processes.

    Attributes:
        name: display name.
        link: ``(driver_port, fleet_port) -> argv`` of the link (SuperLink) process.
        node: ``(fleet_port) -> argv`` of one node process running the benchmark ClientApp.
        server: ``(driver_port) -> argv`` of one server app process running the benchmark ServerApp.
        host: ``(fleet_port, n) -> argv`` of one process hosting ``n`` in-process nodes, or ``None``.
        env: extra environment for every process.
        cwd: working directory of every process.
        one_port: the link serves its server-app and node APIs on one port (newest Flower): ``link`` gets
            that port twice and nodes connect to it.
        child_processes: the link and nodes start processes of their own (newest Flower's SuperExec,
            ``flwr-serverapp``, ``flwr-clientapp``): the cluster measures each node's process tree and ends
            every descendant by PID when it closes.
    """

    name: str
    link: Callable[[int, int], list[str]]
    node: Callable[[int], list[str]]
    server: Callable[[int], list[str]]
    host: Callable[[int, int], list[str]] | None = None
    env: Mapping[str, str] = field(default_factory=dict)
    cwd: str = str(REPO)
    one_port: bool = False
    child_processes: bool = False


@dataclass
class ServerRun:
    """One server app run: its measurements and its process (for peak RSS and CPU seconds)."""

    result: AppResult
    proc: Proc
    wall: float


class Cluster:
    """A link plus nodes of one :class:`System`, started on free 127.0.0.1 ports; a context manager.

    Args:
        system: what to start.
        logdir: directory for process logs and result files.
        tag: prefix for file names in ``logdir``.
    """

    def __init__(self, system: System, logdir: Path, tag: str) -> None:
        self.system = system
        self.logdir = logdir
        self.tag = tag
        self.link: Proc | None = None
        self.nodes: list[Proc] = []
        self.hosts: list[Proc] = []
        self.servers: list[Proc] = []
        self.driver_port = 0
        self.fleet_port = 0
        self._count = 0
        #: ``time.time()`` when nodes were last added (wall clock, for bring-up times)
        self.nodes_started_at = 0.0
        #: per node: peak RSS summed over its process tree at close (``child_processes`` systems only)
        self.node_tree_rss: list[int] = []
        #: descendants of nodes killed by :meth:`kill_node` (ended by PID at close)
        self._orphans: list[tuple[int, int]] = []

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _env(self, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        env = {"PYTHONPATH": str(REPO), **self.system.env}
        env.update(extra or {})
        return env

    def _log(self, what: str) -> Path:
        self._count += 1
        return self.logdir / f"{self.tag}-{what}-{self._count}.log"

    def start_link(self, timeout: float = 120.0) -> Proc:
        """Start the link process and wait (bounded) until both its ports accept connections.

        Raises:
            TimeoutError, RuntimeError: the link did not come up (see its log).
        """
        self.driver_port, self.fleet_port = free_port(), free_port()
        while self.fleet_port == self.driver_port:
            self.fleet_port = free_port()
        if self.system.one_port:
            self.fleet_port = self.driver_port
        self.link = Proc(
            f"{self.tag}-link",
            self.system.link(self.driver_port, self.fleet_port),
            env=self._env(),
            cwd=self.system.cwd,
            log_path=self._log("link"),
        )
        wait_for_port(self.driver_port, timeout, self.link)
        if self.fleet_port != self.driver_port:
            wait_for_port(self.fleet_port, timeout, self.link)
        return self.link

    def add_nodes(
        self,
        k: int,
        env: Mapping[str, str] | None = None,
        extra_args: Sequence[str] = (),
    ) -> list[Proc]:
        """Start ``k`` node processes (no wait: the server app waits for them, bounded).

        Args:
            k: how many.
            env: extra environment for these nodes.
            extra_args: appended to the node command line (e.g. ``["--heartbeat-interval", "1"]``).
        """
        self.nodes_started_at = time.time()
        new = [
            Proc(
                f"{self.tag}-node",
                [*self.system.node(self.fleet_port), *extra_args],
                env=self._env(env),
                cwd=self.system.cwd,
                log_path=self._log("node"),
            )
            for _ in range(k)
        ]
        self.nodes += new
        return new

    def add_host(self, n: int) -> Proc:
        """Start one process hosting ``n`` in-process nodes (systems with ``host`` only)."""
        if self.system.host is None:
            raise ValueError(f"{self.system.name} has no in-process node host")
        self.nodes_started_at = time.time()
        proc = Proc(
            f"{self.tag}-host",
            self.system.host(self.fleet_port, n),
            env=self._env(),
            cwd=self.system.cwd,
            log_path=self._log("host"),
        )
        self.hosts.append(proc)
        return proc

    def start_server(self, settings: Mapping[str, object]) -> tuple[Proc, Path]:
        """Start a server app process with ``BENCH_*`` settings; returns it and its result path."""
        out = self.logdir / f"{self.tag}-result-{self._count + 1}.json"
        out.unlink(missing_ok=True)
        env = {f"BENCH_{k.upper()}": str(v) for k, v in settings.items()}
        env["BENCH_OUT"] = str(out)
        proc = Proc(
            f"{self.tag}-server",
            self.system.server(self.driver_port),
            env=self._env(env),
            cwd=self.system.cwd,
            log_path=self._log("server"),
        )
        self.servers.append(proc)
        return proc, out

    def finish_server(self, proc: Proc, out: Path, timeout: float) -> ServerRun:
        """Wait (bounded) for a server app to exit and read its result.

        A server app still running after ``timeout`` seconds is killed and reported as timed out; one that
        wrote no result gets a note with the tail of its log.
        """
        try:
            proc.wait(timeout)
        except TimeoutError:
            proc.kill()
        try:
            result = AppResult.read(out)
        except (FileNotFoundError, ValueError):
            result = AppResult(
                timed_out=True,
                note=f"no result (exit {proc.returncode}); log {proc.log_path}",
            )
        if proc.returncode not in (0, None) and not result.note:
            result.note = f"exit {proc.returncode}; log {proc.log_path}"
        wall = (proc.ended_at or time.monotonic()) - proc.started_at
        return ServerRun(result, proc, wall)

    def run_server(self, settings: Mapping[str, object], timeout: float) -> ServerRun:
        """Start a server app and wait for it (see :meth:`start_server`, :meth:`finish_server`)."""
        proc, out = self.start_server(settings)
        return self.finish_server(proc, out, timeout)

    def sample(self) -> None:
        """Refresh VmHWM and CPU seconds of every live process of this cluster."""
        for p in self._all():
            p.sample()

    def _all(self) -> list[Proc]:
        return [
            *self.nodes,
            *self.hosts,
            *self.servers,
            *([self.link] if self.link else []),
        ]

    def kill_node(self, proc: Proc) -> float:
        """SIGKILL one node process by PID (its descendants are noted first and ended at close).

        Returns:
            ``time.time()`` just before the signal (wall clock, seconds).
        """
        if self.system.child_processes:
            self._orphans += descendants([proc.pid])
        return proc.kill()

    def tree_rss(self, proc: Proc) -> int | None:
        """Sum of the peak RSS (VmHWM, bytes) of ``proc`` and its live descendants, read now (``None``: gone)."""
        total = read_vm_hwm(proc.pid) if proc.returncode is None else None
        if total is None:
            return proc.peak_rss
        for pid, _ in descendants([proc.pid]):
            total += read_vm_hwm(pid) or 0
        return total

    def close(self) -> None:
        """End every process of this cluster by PID: server apps and nodes first, then the link (bounded).

        For systems with ``child_processes``, each node's tree RSS is recorded in :attr:`node_tree_rss` first,
        and any descendant still alive after its parent stopped is SIGKILLed by PID (checked against its start
        time, so a reused PID is never hit).
        """
        children: list[tuple[int, int]] = []
        if self.system.child_processes:
            self.node_tree_rss = [r for r in (self.tree_rss(p) for p in self.nodes) if r is not None]
            children = descendants([p.pid for p in self._all() if p.returncode is None])
        stop_all([*self.servers, *self.nodes, *self.hosts], grace=8.0)
        if self.link is not None:
            stop_all([self.link], grace=5.0)
        kill_leftovers([*children, *self._orphans])


def _stat(pid: int) -> tuple[int, int] | None:
    """``(parent pid, start time in clock ticks)`` of a live process, from ``/proc/<pid>/stat``."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = raw[raw.rindex(")") + 2 :].split()  # after "pid (comm) ": state, ppid, ..., starttime = field 22
    return int(fields[1]), int(fields[19])


def descendants(roots: Sequence[int]) -> list[tuple[int, int]]:
    """Every live descendant of the processes ``roots``, as ``(pid, start time)``, read from ``/proc``."""
    parents: dict[int, list[tuple[int, int]]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            st = _stat(int(entry.name))
            if st is not None:
                parents.setdefault(st[0], []).append((int(entry.name), st[1]))
    out: list[tuple[int, int]] = []
    todo = list(roots)
    while todo:
        for child in parents.get(todo.pop(), []):
            out.append(child)
            todo.append(child[0])
    return out


def kill_leftovers(procs: Sequence[tuple[int, int]]) -> None:
    """SIGKILL each ``(pid, start time)`` that is still the same live process (a reused PID is left alone)."""
    for pid, started in procs:
        st = _stat(pid)
        if st is not None and st[1] == started:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def wait_for_file(path: Path, timeout: float) -> None:
    """Wait (bounded) until ``path`` exists.

    Raises:
        TimeoutError: it did not appear within ``timeout`` seconds.
    """
    wait_until(path.exists, timeout, f"file {path}")


def mib(n: int | None) -> float | None:
    """Bytes to MiB (``None`` stays ``None``)."""
    return None if n is None else n / (1024 * 1024)


def cpu_sum(procs: list[Proc]) -> float | None:
    """Sum of CPU seconds over processes (``None`` if none was measured)."""
    vals = [p.cpu_seconds for p in procs if p.cpu_seconds is not None]
    return sum(vals) if vals else None


def env_flag(name: str) -> bool:
    """True if environment variable ``name`` is set to 1/true/yes."""
    return os.environ.get(name, "").lower() in ("1", "true", "yes")

"""Process helpers for benchmarks: start by PID, measure, wait (bounded), end by PID.

Every benchmark process is started by :class:`Proc` and ended through it, by its own PID only (never by
name). Measurements come from the kernel:

* peak RSS = ``VmHWM`` of ``/proc/<pid>/status`` (the high-water mark of the resident set), sampled while the
  process runs and just before we signal it; the ``ru_maxrss`` that ``wait4(2)`` returns is used only for a
  process never sampled, because Linux starts it from the *parent's* high-water mark at exec (measured:
  a 10 MB child of a 2 GB parent reports ru_maxrss 2.1 GB);
* CPU seconds = ``utime + stime`` of ``/proc/<pid>/stat`` (fields 14 and 15, in clock ticks), or
  ``ru_utime + ru_stime`` from ``wait4(2)`` once the process is reaped.

All waits take a timeout in seconds and raise :class:`TimeoutError` when it passes.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

__all__ = [
    "Proc",
    "free_port",
    "read_cpu_seconds",
    "read_vm_hwm",
    "stop_all",
    "wait_for_port",
    "wait_until",
]

_CLK_TCK = os.sysconf("SC_CLK_TCK")


def free_port(host: str = "127.0.0.1") -> int:
    """Return a TCP port on ``host`` that was free a moment ago (bind port 0, read it back, close).

    Args:
        host: the address to bind; benchmarks only use 127.0.0.1.

    Returns:
        A port number. Another process may take it before the caller binds it (rare on a quiet machine).
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def read_vm_hwm(pid: int) -> int | None:
    """Peak resident set size of a live process, in bytes.

    Args:
        pid: process id.

    Returns:
        ``VmHWM`` from ``/proc/<pid>/status`` in bytes, or ``None`` if the process is gone or is a zombie
        (the kernel drops the memory lines once a process has exited).
    """
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    for line in text.splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return None


def read_cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of a live process so far.

    Args:
        pid: process id.

    Returns:
        ``(utime + stime) / CLK_TCK`` from ``/proc/<pid>/stat``, or ``None`` if the process is gone.
    """
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    # The command name (field 2) is in parentheses and may contain spaces: split after the last ')'.
    fields = text[text.rindex(")") + 2 :].split()
    utime, stime = int(fields[11]), int(fields[12])  # fields 14 and 15 of proc(5)
    return (utime + stime) / _CLK_TCK


def wait_until(predicate, timeout: float, what: str, interval: float = 0.05) -> None:
    """Poll ``predicate()`` until it is true, at most ``timeout`` seconds.

    Args:
        predicate: a callable returning a truthy value when the condition holds.
        timeout: seconds to wait at most.
        what: a short description used in the error message.
        interval: seconds between polls.

    Raises:
        TimeoutError: the condition did not hold within ``timeout`` seconds.
    """
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() >= deadline:
            raise TimeoutError(f"timed out after {timeout:.1f} s waiting for {what}")
        time.sleep(interval)


def wait_for_port(port: int, timeout: float, proc: Proc | None = None, host: str = "127.0.0.1") -> None:
    """Wait until a TCP connect to ``host:port`` succeeds.

    Args:
        port: TCP port.
        timeout: seconds to wait at most.
        proc: if given, fail early when this process exits before the port opens.
        host: address to connect to.

    Raises:
        TimeoutError: the port did not accept a connection within ``timeout`` seconds.
        RuntimeError: ``proc`` exited first (its log path is in the message).
    """

    def _open() -> bool:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(
                f"{proc.name} exited with {proc.returncode} before port {port} opened; see {proc.log_path}"
            )
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return True
        except OSError:
            return False

    wait_until(_open, timeout, f"{host}:{port}")


class Proc:
    """A child process started by a benchmark, measured and ended by its PID.

    Args:
        name: label used in logs and errors.
        argv: the command line.
        env: extra environment variables (merged over ``os.environ``).
        cwd: working directory.
        log_path: file receiving the process's stdout and stderr.

    Attributes:
        pid: the process id.
        returncode: exit status once reaped (negative signal number if killed), else ``None``.
        peak_rss: peak RSS in bytes (``VmHWM`` or ``ru_maxrss``), updated by :meth:`sample` and at reap.
        cpu_seconds: user + system CPU seconds, updated by :meth:`sample` and at reap.
    """

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        cwd: str | os.PathLike[str] | None = None,
        log_path: str | os.PathLike[str],
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.log_path = Path(log_path)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        full_env = dict(os.environ)
        full_env.update(env or {})
        self.started_at = time.monotonic()
        with open(self.log_path, "wb") as log:
            self._popen = subprocess.Popen(
                self.argv,
                env=full_env,
                cwd=cwd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self.pid: int = self._popen.pid
        self.returncode: int | None = None
        self.peak_rss: int | None = None
        self.cpu_seconds: float | None = None
        self.ended_at: float | None = None

    def __repr__(self) -> str:
        return f"Proc({self.name!r}, pid={self.pid}, returncode={self.returncode})"

    def sample(self) -> None:
        """Read VmHWM and CPU seconds from /proc while the process is alive (no-op once reaped)."""
        if self.returncode is not None:
            return
        rss = read_vm_hwm(self.pid)
        cpu = read_cpu_seconds(self.pid)
        if rss is not None:
            self.peak_rss = max(rss, self.peak_rss or 0)
        if cpu is not None:
            self.cpu_seconds = cpu

    def _reaped(self, status: int, rusage) -> int:
        self.returncode = os.waitstatus_to_exitcode(status)
        self._popen.returncode = self.returncode  # keep Popen from waiting on a reaped PID
        self.ended_at = time.monotonic()
        # ru_maxrss is KiB on Linux, and only a fallback: after fork/vfork + exec it starts from the
        # *parent's* resident set at spawn time (Linux carries the old mm's high-water mark across exec),
        # so a child of a large parent would report the parent's size. VmHWM belongs to the new mm.
        if self.peak_rss is None:
            self.peak_rss = rusage.ru_maxrss * 1024
        self.cpu_seconds = rusage.ru_utime + rusage.ru_stime
        return self.returncode

    def poll(self) -> int | None:
        """Reap the process if it has exited.

        Returns:
            The exit code (negative signal number if killed by a signal), or ``None`` while it runs.
        """
        if self.returncode is not None:
            return self.returncode
        try:
            pid, status, rusage = os.wait4(self.pid, os.WNOHANG)
        except ChildProcessError:  # reaped elsewhere: keep what we sampled
            self.returncode = self._popen.returncode if self._popen.returncode is not None else -1
            return self.returncode
        if pid == 0:
            return None
        return self._reaped(status, rusage)

    def wait(self, timeout: float) -> int:
        """Wait for the process to exit by itself, at most ``timeout`` seconds.

        Args:
            timeout: seconds.

        Returns:
            The exit code.

        Raises:
            TimeoutError: still running after ``timeout`` seconds (the process is left running).
        """
        deadline = time.monotonic() + timeout
        while True:
            code = self.poll()
            if code is not None:
                return code
            if time.monotonic() >= deadline:
                raise TimeoutError(f"{self.name} (pid {self.pid}) still running after {timeout:.1f} s")
            self.sample()
            time.sleep(0.02)

    def signal(self, sig: int) -> None:
        """Send ``sig`` to this process by PID (ignored if it is already reaped)."""
        if self.returncode is None:
            try:
                os.kill(self.pid, sig)
            except ProcessLookupError:
                pass

    def kill(self) -> float:
        """SIGKILL the process now (after a last /proc sample) and reap it (bounded, 10 s).

        Returns:
            ``time.time()`` just before the signal was sent (wall clock, seconds).
        """
        self.sample()
        t = time.time()
        self.signal(signal.SIGKILL)
        self.wait(10.0)
        return t

    def stop(self, grace: float = 5.0) -> int:
        """End the process: sample /proc, SIGTERM, wait ``grace`` seconds, then SIGKILL (bounded).

        Args:
            grace: seconds to wait after SIGTERM before SIGKILL.

        Returns:
            The exit code.
        """
        if self.poll() is not None:
            return self.returncode  # type: ignore[return-value]
        self.sample()
        self.signal(signal.SIGTERM)
        try:
            return self.wait(grace)
        except TimeoutError:
            self.signal(signal.SIGKILL)
            return self.wait(10.0)

    def tail(self, lines: int = 20) -> str:
        """The last ``lines`` lines of the process log (for error messages)."""
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return ""


def stop_all(procs: Sequence[Proc], grace: float = 5.0) -> None:
    """Stop many processes quickly: sample each, SIGTERM all, wait ``grace`` s in total, SIGKILL the rest.

    Args:
        procs: processes started by this benchmark.
        grace: seconds to wait in total after SIGTERM.
    """
    live = [p for p in procs if p.poll() is None]
    for p in live:
        p.sample()
    for p in live:
        p.signal(signal.SIGTERM)
    deadline = time.monotonic() + grace
    while live and time.monotonic() < deadline:
        live = [p for p in live if p.poll() is None]
        if live:
            time.sleep(0.05)
    for p in live:
        p.signal(signal.SIGKILL)
    for p in live:
        p.wait(10.0)

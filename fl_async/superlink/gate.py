"""The connection gate of the link's three ports: caps, eviction, setup and idle timeouts, TCP keepalive.

Every accepted connection (Driver API, Fleet API, blob data path) is admitted by one :class:`ConnectionGate`:

* **Caps.** At most ``max_connections`` connections in all and ``max_connections_per_address`` from one
  source address. A new connection over a cap first evicts an idle one (from the same address when that cap is
  hit): one that never started a request, else the one idle longest. Only when every candidate is busy is the
  new connection refused (closed at once). So idle connections cannot keep a node or a driver out.
* **File descriptors.** :func:`raise_fd_limit` raises the soft ``RLIMIT_NOFILE`` to the hard limit at start;
  ``max_connections = 0`` means "the soft limit minus ``fd_reserve``" (descriptors kept for the link itself:
  listening sockets, files, the blob store).
* **Setup timeout.** A connection that has not started a request ``setup_timeout`` seconds after it was
  accepted (raw TCP that never speaks HTTP/2 or the blob protocol) is closed; TLS handshakes get the same
  timeout (``ssl_handshake_timeout``).
* **Idle timeout.** A connection with no request in progress and no byte received for ``idle_timeout`` seconds
  is closed (clients reconnect on their next call).
* **Half-open connections** (the peer vanished without a FIN) are found by TCP keepalive: probes after 60 s of
  silence, every 10 s, 3 tries.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import resource
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field

__all__ = ["ConnectionGate", "GateEntry", "raise_fd_limit"]

log = logging.getLogger("fl_async.superlink")

_KEEPALIVE = (("TCP_KEEPIDLE", 60), ("TCP_KEEPINTVL", 10), ("TCP_KEEPCNT", 3))


def raise_fd_limit() -> int:
    """Raise the soft ``RLIMIT_NOFILE`` to the hard limit where the OS allows; return the soft limit now."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard > soft:
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            log.debug("file descriptor limit raised from %d to %d", soft, target)
            soft = target
        except (ValueError, OSError) as exc:
            log.info("cannot raise the file descriptor limit above %d: %s", soft, exc)
    return soft


@dataclass(eq=False)
class GateEntry:
    """One admitted connection, as the gate sees it.

    Attributes:
        transport: its transport (closed by the gate).
        address: the peer's host.
        busy: returns whether a request is in progress (never evicted or timed out then).
        started: returns whether it has started at least one request.
        received: returns the bytes received so far (progress resets the idle clock).
        on_close: called when the gate itself closes it (timeout or eviction), before the transport is aborted.
    """

    transport: asyncio.BaseTransport
    address: str
    busy: Callable[[], bool]
    started: Callable[[], bool]
    received: Callable[[], int]
    opened_at: float = 0.0
    active_at: float = 0.0
    seen: int = -1
    closed: bool = field(default=False)
    on_close: Callable[[], None] | None = None


class ConnectionGate:
    """Admits, counts and times out the link's connections (see the module docstring).

    Args:
        max_connections: most connections in all (``0``: soft ``RLIMIT_NOFILE`` minus ``fd_reserve``).
        max_connections_per_address: most connections from one source address.
        setup_timeout: seconds a connection gets to start its first request (and a TLS handshake to finish).
        idle_timeout: seconds without a request in progress or a byte received before a connection is closed.
        fd_reserve: file descriptors kept for the link itself when ``max_connections`` is 0.
        clock: monotonic clock, seconds.
    """

    def __init__(
        self,
        *,
        max_connections: int = 0,
        max_connections_per_address: int = 4096,
        setup_timeout: float = 10.0,
        idle_timeout: float = 300.0,
        fd_reserve: int = 256,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_connections = max_connections
        self.max_per_address = max_connections_per_address
        self.setup_timeout = setup_timeout
        self.idle_timeout = idle_timeout
        self.fd_reserve = fd_reserve
        self._clock = clock
        self._entries: dict[asyncio.BaseTransport, GateEntry] = {}
        self._by_address: dict[str, set[GateEntry]] = {}
        self._sweeper: asyncio.Task[None] | None = None
        self.refused = 0
        self.evicted = 0
        self.timed_out = 0

    @property
    def count(self) -> int:
        """Connections admitted and open."""
        return len(self._entries)

    def start(self) -> None:
        """Raise the file descriptor limit, resolve ``max_connections`` and start the timeout sweeper."""
        soft = raise_fd_limit()
        if self.max_connections <= 0:
            self.max_connections = max(64, soft - self.fd_reserve)
        self._sweeper = asyncio.create_task(self._sweep_loop(), name="fl-async-connection-gate")

    async def stop(self) -> None:
        """Stop the sweeper (connections are closed by their servers)."""
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
            self._sweeper = None

    # ---------------------------------------------------------------------------------- admission
    def admit(
        self,
        transport: asyncio.BaseTransport,
        *,
        busy: Callable[[], bool],
        started: Callable[[], bool],
        received: Callable[[], int],
        on_close: Callable[[], None] | None = None,
    ) -> bool:
        """Admit a just-accepted connection, evicting an idle one if a cap is reached; ``False``: it was refused
        and closed (every candidate for eviction is busy). ``on_close`` is called if the gate later closes it."""
        peer = transport.get_extra_info("peername")
        address = str(peer[0]) if isinstance(peer, tuple) and peer else "?"
        same = self._by_address.get(address, set())
        if len(same) >= self.max_per_address and not self._evict(same):
            return self._refuse(transport, address, "max_connections_per_address, --max-connections-per-address")
        full = bool(self.max_connections) and len(self._entries) >= self.max_connections
        if full and not self._evict(self._entries.values()):
            return self._refuse(transport, address, "max_connections, --max-connections")
        now = self._clock()
        entry = GateEntry(transport, address, busy, started, received, opened_at=now, active_at=now, on_close=on_close)
        self._entries[transport] = entry
        self._by_address.setdefault(address, set()).add(entry)
        _keepalive(transport)
        return True

    def release(self, transport: asyncio.BaseTransport) -> None:
        """A connection closed (idempotent)."""
        entry = self._entries.pop(transport, None)
        if entry is None:
            return
        entry.closed = True
        group = self._by_address.get(entry.address)
        if group is not None:
            group.discard(entry)
            if not group:
                del self._by_address[entry.address]

    def _refuse(self, transport: asyncio.BaseTransport, address: str, limit: str) -> bool:
        self.refused += 1
        if self.refused == 1 or self.refused % 1000 == 0:
            log.warning("connection from %s refused: every connection is busy at the limit (%s)", address, limit)
        transport.abort()  # type: ignore[attr-defined]
        return False

    def _evict(self, candidates: object) -> bool:
        """Close the idle connection of ``candidates`` least worth keeping; ``False`` if all are busy."""
        best: GateEntry | None = None
        best_key: tuple[bool, float] = (True, 0.0)
        for entry in candidates:  # type: ignore[attr-defined]
            if entry.closed or entry.busy():
                continue
            key = (entry.started(), entry.active_at)  # never-started first, then idle longest
            if best is None or key < best_key:
                best, best_key = entry, key
        if best is None:
            return False
        self.evicted += 1
        self._close(best)
        return True

    def _close(self, entry: GateEntry) -> None:
        if entry.on_close is not None:
            entry.on_close()
        self.release(entry.transport)
        entry.transport.abort()  # type: ignore[attr-defined]

    # ---------------------------------------------------------------------------------- timeouts
    def sweep(self) -> int:
        """Close connections past their setup or idle timeout; returns how many."""
        now = self._clock()
        closed = 0
        for entry in list(self._entries.values()):
            received = entry.received()
            if received != entry.seen:
                entry.seen, entry.active_at = received, now
            if entry.busy():
                entry.active_at = now
                continue
            if not entry.started() and now - entry.opened_at >= self.setup_timeout:
                reason = "setup"
            elif now - entry.active_at >= self.idle_timeout:
                reason = "idle"
            else:
                continue
            log.debug("closing %s connection from %s", reason, entry.address)
            self._close(entry)
            closed += 1
        self.timed_out += closed
        return closed

    async def _sweep_loop(self) -> None:
        interval = max(0.05, min(self.setup_timeout, self.idle_timeout) / 4)
        while True:
            await asyncio.sleep(interval)  # a periodic sweep: nothing signals that time passed
            try:
                self.sweep()
            except Exception:  # never let a bug stop the sweeps
                log.exception("connection sweep failed")


def _keepalive(transport: asyncio.BaseTransport) -> None:
    sock = transport.get_extra_info("socket")
    if sock is None:
        return
    with contextlib.suppress(OSError, AttributeError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        for name, value in _KEEPALIVE:
            option = getattr(socket, name, None)
            if option is not None:
                sock.setsockopt(socket.IPPROTO_TCP, option, value)

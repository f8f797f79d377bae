"""The HTTP/2 connections of the link's grpclib servers: closed on stop, and connection loss reported per node.

grpclib's ``Server.close()`` only closes the listening sockets and cancels the handlers running at that moment;
connections that are already open stay open and keep being served. :class:`ConnectionTracker` wraps every
protocol the link's servers create (:class:`TrackedServer`), so that:

* :meth:`ConnectionTracker.close_all` closes them when the link stops (after the grace period, so held
  long-polls are answered first), and aborts those that do not close in time;
* a Fleet handler can :meth:`~ConnectionTracker.bind` the node it authenticated to the connection the call came
  in on (read from :data:`CURRENT`, set by :func:`fl_async.superlink.rpc.unary_handler`). When that connection
  is lost (the peer closed or reset it; not when the link itself stops), the ids of the nodes whose latest call
  came in on it are handed to ``on_lost``. The link turns that into :meth:`LinkState.connection_lost`, the
  sans-IO disconnect-grace rule.

A node is bound to the connection of its most recent authenticated call only, so a node that moved to a new
connection (e.g. after a network blip) is not affected when its old connection is finally noticed as dead.

Runs are bound the same way to the connection of their driver's latest authenticated call (and of CreateRun);
when it is lost, their ids go to ``on_runs_lost`` (the link turns that into :meth:`LinkState.driver_lost`, the
driver's disconnect grace). A connection the link closes itself (the gate's idle or setup timeout, eviction, the
link's stop) is not reported for nodes or runs: its clients did not go away.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import time
from collections.abc import Callable
from typing import Any

import grpclib.server

__all__ = ["CURRENT", "ConnectionTracker", "TrackedServer"]

log = logging.getLogger("fl_async.superlink")

CURRENT: contextvars.ContextVar[object | None] = contextvars.ContextVar("fl_async_link_connection", default=None)
"""The connection (grpclib's per-connection ``Connection`` object) of the call the current handler task serves.

Set by the unary handler wrapper in the handler's own task (grpclib runs each call in a new task), so it never
leaks between calls."""


class _TrackedProtocol(asyncio.Protocol):
    """Delegates every callback to grpclib's ``H2Protocol`` and tells the tracker when the connection opens and
    when it is lost."""

    def __init__(self, inner: Any, tracker: ConnectionTracker) -> None:
        self._inner = inner
        self._tracker = tracker
        self.transport: asyncio.BaseTransport | None = None
        self.key: object | None = None
        self.closed_by_link = False  # the gate closed it (timeout, eviction): its losses are not reported
        # the hot callbacks go straight to grpclib's protocol (no extra Python frame per read)
        self.data_received = inner.data_received  # type: ignore[method-assign]
        self.pause_writing = inner.pause_writing  # type: ignore[method-assign]
        self.resume_writing = inner.resume_writing  # type: ignore[method-assign]

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        self._inner.connection_made(transport)
        self.key = getattr(self._inner, "connection", None)  # what handlers see as stream._stream.connection
        self._tracker._opened(self)

    def eof_received(self) -> bool | None:
        return self._inner.eof_received()  # type: ignore[no-any-return]

    def connection_lost(self, exc: Exception | None) -> None:
        try:
            self._inner.connection_lost(exc)
        finally:
            self._tracker._lost(self)


class TrackedServer(grpclib.server.Server):
    """A ``grpclib.server.Server`` whose connections are tracked by a :class:`ConnectionTracker`.

    Args:
        handlers: the services, as for ``grpclib.server.Server``.
        tracker: told about every connection this server accepts.
        **kwargs: passed to ``grpclib.server.Server`` (e.g. ``codec``).
    """

    def __init__(self, handlers: Any, *, tracker: ConnectionTracker, **kwargs: Any) -> None:
        super().__init__(handlers, **kwargs)
        self._fl_tracker = tracker

    def _protocol_factory(self) -> Any:  # grpclib 0.4.9: one H2Protocol per accepted connection
        return _TrackedProtocol(super()._protocol_factory(), self._fl_tracker)

    async def start(  # type: ignore[override]
        self,
        host: str | None = None,
        port: int = 0,
        *,
        backlog: int = 100,
        ssl: Any = None,
        reuse_address: bool | None = None,
        ssl_handshake_timeout: float | None = None,
    ) -> None:
        """As ``grpclib.server.Server.start`` (host and port only), plus ``ssl_handshake_timeout`` (seconds a TLS
        client gets to finish its handshake; asyncio's default is 60 s)."""
        if self._server is not None:
            raise RuntimeError("Server is already started")
        self._server = await self._loop.create_server(
            self._protocol_factory,
            host,
            port,
            backlog=backlog,
            ssl=ssl,
            reuse_address=reuse_address,
            ssl_handshake_timeout=ssl_handshake_timeout if ssl is not None else None,
        )
        self._server_closed_fut = self._loop.create_future()


class ConnectionTracker:
    """Open connections of the link's servers, and which nodes made their latest call on which connection.

    Only touch it from the link's event loop.

    Args:
        on_lost: called with the ids of the nodes bound to a connection when the peer closes or resets it
            (not called while :attr:`closing`, i.e. once the link stops).
        on_runs_lost: called likewise with the ids of the runs bound to it (their driver's latest call).
    """

    def __init__(
        self, on_lost: Callable[[list[int]], None], on_runs_lost: Callable[[list[int]], None] | None = None
    ) -> None:
        self._on_lost = on_lost
        self._on_runs_lost = on_runs_lost
        self._runs: dict[object, set[int]] = {}  # key -> ids of the runs whose driver's latest call came in on it
        self._run_key: dict[int, object] = {}  # run id -> key of its driver's latest connection
        self._open: dict[object, _TrackedProtocol] = {}  # key -> protocol; a key is grpclib's Connection
        self._unkeyed: set[_TrackedProtocol] = set()  # no grpclib Connection seen (not expected)
        self._nodes: dict[object, set[int]] = {}  # key -> ids of the nodes whose latest call came in on it
        self._node_key: dict[int, object] = {}  # node id -> key of its latest connection
        self._all_lost: asyncio.Event | None = None
        self.gate: Any = None
        """The link's :class:`~fl_async.superlink.gate.ConnectionGate` (admits each connection), or ``None``."""
        self.closing = False
        """Set by :meth:`close_all`: losses are the link's own doing and are not reported."""

    @property
    def open_count(self) -> int:
        """How many connections are open."""
        return len(self._open) + len(self._unkeyed)

    def server(self, handlers: Any, **kwargs: Any) -> TrackedServer:
        """A grpclib server whose connections this tracker follows (``kwargs`` as ``grpclib.server.Server``)."""
        return TrackedServer(handlers, tracker=self, **kwargs)

    # ------------------------------------------------------------------------------ nodes
    def bind(self, node_id: int) -> None:
        """Record that ``node_id`` just made an authenticated call on the current handler's connection
        (:data:`CURRENT`). A call outside a handler, or on a connection already lost, binds nothing."""
        key = CURRENT.get()
        if key is None or key not in self._open:
            return
        old = self._node_key.get(node_id)
        if old is key:
            return
        if old is not None:
            nodes = self._nodes.get(old)
            if nodes is not None:
                nodes.discard(node_id)
        self._node_key[node_id] = key
        self._nodes.setdefault(key, set()).add(node_id)

    def unbind(self, node_id: int) -> None:
        """Forget ``node_id`` (it unregistered)."""
        key = self._node_key.pop(node_id, None)
        if key is not None:
            nodes = self._nodes.get(key)
            if nodes is not None:
                nodes.discard(node_id)

    def bind_run(self, run_id: int) -> None:
        """Record that the driver of ``run_id`` just made an authenticated call on the current handler's
        connection (as :meth:`bind` for nodes)."""
        key = CURRENT.get()
        if key is None or key not in self._open:
            return
        old = self._run_key.get(run_id)
        if old is key:
            return
        if old is not None:
            runs = self._runs.get(old)
            if runs is not None:
                runs.discard(run_id)
        self._run_key[run_id] = key
        self._runs.setdefault(key, set()).add(run_id)

    def unbind_run(self, run_id: int) -> None:
        """Forget ``run_id`` (it ended)."""
        key = self._run_key.pop(run_id, None)
        if key is not None:
            runs = self._runs.get(key)
            if runs is not None:
                runs.discard(run_id)

    def nodes_on_current(self) -> set[int]:
        """Ids of the nodes bound to the current handler's connection (for tests and introspection)."""
        return set(self._nodes.get(CURRENT.get(), ()))

    # ------------------------------------------------------------------------------ connections
    def _opened(self, proto: _TrackedProtocol) -> None:
        if self.gate is not None and proto.transport is not None and not self._admit(proto):
            return  # refused and aborted: connection_lost follows
        if proto.key is None:
            self._unkeyed.add(proto)
        else:
            self._open[proto.key] = proto
        if self.closing and isinstance(proto.transport, asyncio.Transport):  # accepted while stopping: not served
            proto.transport.abort()

    def _admit(self, proto: _TrackedProtocol) -> bool:
        gate = self.gate
        if gate is None:
            return True
        inner = proto._inner
        conn = getattr(inner, "connection", None)
        streams = getattr(getattr(inner, "processor", None), "streams", {})

        def closed_by_gate() -> None:
            proto.closed_by_link = True

        return bool(
            gate.admit(
                proto.transport,
                busy=lambda: bool(streams),
                started=lambda: bool(getattr(conn, "streams_started", 1)),
                received=lambda: int(getattr(conn, "data_received", 0)),
                on_close=closed_by_gate,
            )
        )

    def _lost(self, proto: _TrackedProtocol) -> None:
        if self.gate is not None and proto.transport is not None:
            self.gate.release(proto.transport)
        self._unkeyed.discard(proto)
        nodes: set[int] = set()
        runs: set[int] = set()
        if proto.key is not None and self._open.get(proto.key) is proto:
            del self._open[proto.key]
            nodes = self._nodes.pop(proto.key, set())
            for node_id in nodes:
                if self._node_key.get(node_id) is proto.key:
                    del self._node_key[node_id]
            runs = self._runs.pop(proto.key, set())
            for run_id in runs:
                if self._run_key.get(run_id) is proto.key:
                    del self._run_key[run_id]
        if self._all_lost is not None and not self.open_count:
            self._all_lost.set()
        if proto.closed_by_link:
            if nodes or runs:
                log.debug("closed an idle connection of %d node(s) and %d run(s)", len(nodes), len(runs))
            return
        if runs and not self.closing and self._on_runs_lost is not None:
            log.info("connection lost; %d run(s)' driver made its latest call on it: %s", len(runs), sorted(runs))
            try:
                self._on_runs_lost(sorted(runs))
            except Exception:  # a bug here must not break grpclib's connection teardown
                log.exception("handling a lost driver connection failed")
        if nodes and not self.closing:
            log.info("connection lost; %d node(s) made their latest call on it: %s", len(nodes), sorted(nodes))
            try:
                self._on_lost(sorted(nodes))
            except Exception:  # a bug here must not break grpclib's connection teardown
                log.exception("handling a lost connection failed")

    async def close_all(self, timeout: float = 1.0) -> None:
        """Close every open connection (pending writes, e.g. the last responses, are flushed first); abort those
        still open after ``timeout`` seconds. From now on, new connections are dropped at once and losses are
        not reported.

        Args:
            timeout: seconds to wait for the connections to close before aborting them.
        """
        self.closing = True
        protos = [*self._open.values(), *self._unkeyed]
        if not protos:
            return
        started = time.monotonic()
        self._all_lost = asyncio.Event()
        for proto in protos:
            if proto.transport is not None and not proto.transport.is_closing():
                proto.transport.close()
        try:
            await asyncio.wait_for(self._all_lost.wait(), timeout)
        except TimeoutError:
            left = [*self._open.values(), *self._unkeyed]
            log.warning("%d connection(s) did not close within %.3g s: aborting them", len(left), timeout)
            for proto in left:
                if proto.transport is not None:
                    proto.transport.abort()  # type: ignore[attr-defined]
        log.debug("closed %d connection(s) in %.3f s", len(protos), time.monotonic() - started)

"""``SuperLink``: both gRPC APIs over one :class:`LinkState`, its deadline timer, and ``serve()``."""

from __future__ import annotations

import asyncio
import contextlib
import enum
import functools
import hmac
import ipaddress
import logging
import math
import signal
import time
from collections.abc import Callable
from types import TracebackType
from typing import Any, Self

import anyio
import grpclib.server

from fl_async._keys import load_private_key
from fl_async._net import format_address, parse_address, server_ssl_context
from fl_async.superlink.admission import FIELD_CAPS, Admission, SessionCallers
from fl_async.superlink.config import LinkConfig
from fl_async.superlink.connections import ConnectionTracker
from fl_async.superlink.control import LinkControl
from fl_async.superlink.errors import UnauthenticatedError
from fl_async.superlink.events import LinkEvents
from fl_async.superlink.gate import ConnectionGate
from fl_async.superlink.identity import AllowList, DriverTokens, IdentityCallers
from fl_async.superlink.metrics import LinkMetrics
from fl_async.superlink.payloads import LinkBlobs, run_blob_token
from fl_async.superlink.rpc import CallTracker, LimitedProtoCodec
from fl_async.superlink.services import AdminService, DriverService, FleetService, WrongApiService
from fl_async.superlink.state import LinkState, LinkStats, PayloadTracker
from fl_async.superlink.store import LinkStore
from fl_async.superlink.wakeups import Wakeups

__all__ = ["SuperLink", "serve"]

log = logging.getLogger("fl_async.superlink")

_WILDCARDS = {"0.0.0.0": "127.0.0.1", "": "127.0.0.1", "::": "::1"}

ALLOW_LIST_POLL = 2.0
"""Seconds between checks of the allow-list file's modification time."""


def _loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


class _Lifecycle(enum.Enum):
    NEW = "new"
    RUNNING = "running"
    STOPPED = "stopped"


class SuperLink:
    """An asyncio SuperLink: the Driver API and Fleet API served by grpclib over one :class:`LinkState`.

    Use ``async with SuperLink(config) as link:`` or :meth:`start` / :meth:`stop`. A link cannot be restarted
    once stopped (create a new one; with the in-memory store its state is gone).

    Args:
        config: addresses, TLS and limits.
        clock: Unix-time clock for TTLs and liveness (tests may inject one).
        store: storage backend (default: in-memory).
        payloads: hook told which messages the link holds (default: the blob data path,
            :class:`~fl_async.superlink.payloads.LinkBlobs`).

    Attributes:
        state: the sans-IO state (for tests and introspection; only touch it from the link's event loop).
        config: the configuration.
        control: cancel, stop and listings over the state (the Admin API's core).
        metrics: the Prometheus metrics, when ``config.metrics_address`` is set (else ``None``).
    """

    def __init__(
        self,
        config: LinkConfig | None = None,
        *,
        clock: Callable[[], float] = time.time,
        store: LinkStore | None = None,
        payloads: PayloadTracker | None = None,
    ) -> None:
        self.config = config if config is not None else LinkConfig()
        self._clock = clock
        self._wakeups = Wakeups()
        self._calls = CallTracker()
        # connection loss -> the state's disconnect-grace rule (not reported once the link stops)
        self._connections = ConnectionTracker(on_lost=self._connection_lost, on_runs_lost=self._driver_lost)
        # the blob data path (store + server) is the default payload tracker
        cfg = self.config
        self.blobs: LinkBlobs | None = (
            LinkBlobs(
                max_bytes=cfg.blob_store_bytes,
                max_blob_bytes=cfg.max_blob_bytes,
                quota=cfg.blob_quota_bytes,
                min_rate=cfg.blob_min_rate,
                rate_window=cfg.blob_rate_window,
            )
            if payloads is None
            else None
        )
        self.metrics: LinkMetrics | None = LinkMetrics() if self.config.metrics_address is not None else None
        events: LinkEvents | None = self.metrics
        if self.metrics is not None:
            self._calls.observe = self.metrics.observe_rpc
        self.state = LinkState.from_config(
            self.config,
            clock=clock,
            store=store,
            listener=self._wakeups,
            payloads=payloads or self.blobs,
            events=events,
        )
        self.control = LinkControl(self.state)
        self._wakeups.node_count = self.state.store.node_count
        if self.blobs is not None:
            self.blobs.attach(self._node_token)
        self._servers: list[grpclib.server.Server] = []  # TrackedServer: connections closed on stop
        self._addresses: dict[str, str] = {}
        self._timer: asyncio.Task[None] | None = None
        self.gate: ConnectionGate | None = None
        self._lifecycle = _Lifecycle.NEW
        self.codec = LimitedProtoCodec(self.config.max_request_bytes)
        """The codec requests to this link are decoded with (size limit, shape checks, forwarded bytes)."""
        self.identity = IdentityCallers(
            SessionCallers(self._authenticate_node),
            tokens=DriverTokens(cfg.driver_auth_token_file) if cfg.driver_auth_token_file else None,
            allow_list=AllowList(cfg.auth_list_public_keys) if cfg.auth_list_public_keys else None,
            clock=clock,
        )
        """Driver tokens and node keys (:mod:`fl_async.superlink.identity`); files are read here (ValueError)."""
        self.identity.node_lookup = self._node_lookup
        if cfg.auth_superlink_private_key:
            self.identity.link_key = load_private_key(cfg.auth_superlink_private_key)
        self._watcher: asyncio.Task[None] | None = None
        self._sighup = False
        self._policy: tuple[Admission, Callable[[int], bytes]] | None = None
        self.admission: Admission | None = None
        """The request admission policy of both APIs (made with the first :meth:`services`)."""

    # ---------------------------------------------------------------------------- addresses, stats
    @property
    def driver_address(self) -> str:
        """Where to reach the Driver API, e.g. ``"127.0.0.1:9091"`` (the bound port; wildcard hosts become
        loopback). Raises ``RuntimeError`` before :meth:`start`."""
        return self._address("driver")

    @property
    def fleet_address(self) -> str:
        """Where to reach the Fleet API (see :attr:`driver_address`)."""
        return self._address("fleet")

    @property
    def blob_address(self) -> str | None:
        """Where the blob data path listens (``LinkConfig.blob_api_address`` with the bound port; wildcard hosts
        become loopback), or ``None`` when this link has none (a custom ``payloads`` tracker). Raises
        ``RuntimeError`` before :meth:`start`."""
        self._address("driver")
        return self._addresses.get("blob")

    @property
    def metrics_address(self) -> str | None:
        """Where ``/metrics`` is served (``"HOST:PORT"``, the bound port), or ``None`` without metrics."""
        return self.metrics.address if self.metrics is not None else None

    @property
    def connections_open(self) -> int:
        """HTTP/2 connections open on the gRPC APIs."""
        return self._connections.open_count

    def _address(self, which: str) -> str:
        if which not in self._addresses:
            raise RuntimeError("the SuperLink is not started: call `await link.start()` first")
        return self._addresses[which]

    def _port(self, which: str) -> int | None:
        address = self._addresses.get(which)
        return parse_address(address)[1] if address is not None else None

    def stats(self) -> LinkStats:
        """Counts of runs, nodes, queued, in-flight and ready replies, and per node ``(queued, in_flight)``."""
        return self.state.stats()

    # ---------------------------------------------------------------------------- lifecycle
    async def start(self) -> None:
        """Bind and serve both APIs and start the deadline timer.

        Raises:
            RuntimeError: already started or stopped.
            OSError: an address cannot be bound (e.g. the port is in use); nothing stays bound.
            ValueError: the TLS material cannot be loaded.
        """
        if self._lifecycle is not _Lifecycle.NEW:
            raise RuntimeError(f"cannot start a SuperLink that is {self._lifecycle.value}")
        cfg = self.config
        ssl_ctx = server_ssl_context(cfg.tls) if cfg.tls is not None else None  # ValueError: still NEW
        self._lifecycle = _Lifecycle.RUNNING
        self.gate = ConnectionGate(
            max_connections=cfg.max_connections,
            max_connections_per_address=cfg.max_connections_per_address,
            setup_timeout=cfg.connection_setup_timeout,
            idle_timeout=cfg.connection_idle_timeout,
            fd_reserve=cfg.fd_reserve,
        )
        self.gate.start()
        self._connections.gate = self.gate
        codec = self.codec
        try:
            for which, address in (("driver", cfg.driver_api_address), ("fleet", cfg.fleet_api_address)):
                server = self._connections.server(self.services(which), codec=codec)
                host, port = parse_address(address)
                await server.start(
                    host,
                    port,
                    backlog=cfg.backlog,
                    ssl=ssl_ctx,
                    reuse_address=True,
                    ssl_handshake_timeout=cfg.connection_setup_timeout,
                )
                self._servers.append(server)
                bound = server._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]  # no public accessor
                self._addresses[which] = format_address(_WILDCARDS.get(host, host), bound)
            if self.blobs is not None:  # blob data path (default: the Fleet API's host, port 9093), same TLS
                assert cfg.blob_api_address is not None  # resolved by LinkConfig
                host, port = parse_address(cfg.blob_api_address)
                await self.blobs.start(
                    host,
                    port=port,
                    ssl=ssl_ctx,
                    backlog=cfg.backlog,
                    header_timeout=cfg.blob_header_timeout,
                    gate=self.gate,
                    idle_timeout=cfg.connection_idle_timeout,
                )
                self._addresses["blob"] = format_address(_WILDCARDS.get(host, host), self.blobs.port)
            if self.metrics is not None:
                assert cfg.metrics_address is not None
                self.metrics.attach(self)
                self.metrics.serve(cfg.metrics_address)
        except BaseException:
            await self._close_servers(0.0)
            self._lifecycle = _Lifecycle.STOPPED
            raise
        self._timer = asyncio.create_task(self._run_timer(), name="fl-async-superlink-deadlines")
        self._start_identity()
        log.info(
            "SuperLink serving: Driver API on %s, Fleet API on %s, blob data path on %s, metrics on %s (%s)",
            self.driver_address,
            self.fleet_address,
            self._addresses.get("blob", "none"),
            f"http://{self.metrics_address}/metrics" if self.metrics_address else "none",
            "TLS" if ssl_ctx is not None else "insecure",
            extra={"event": "link_listening"},
        )

    def services(self, api: str) -> list[Any]:
        """The grpclib services of one API over this link's state: ``api`` is ``"driver"`` or ``"fleet"``.

        :meth:`start` serves them on the configured addresses; :mod:`fl_async.testing` serves them in memory
        (after :meth:`start_in_memory`). Requests must be decoded with :attr:`codec`; both APIs share one
        request admission policy (:attr:`admission`).
        """
        if api not in ("driver", "fleet"):
            raise ValueError(f"api must be 'driver' or 'fleet', got {api!r}")
        own, other = (DriverService, FleetService) if api == "driver" else (FleetService, DriverService)
        if self._policy is None:
            self._policy = self._admission()
        admission, run_token = self._policy
        cfg = self.config
        service = own(
            self.state,
            self._wakeups,
            self._calls,
            cfg.max_poll_timeout,
            self.codec,
            connections=self._connections,
            admission=admission,
            run_token=run_token,
            run_limits=(cfg.max_fab_id_bytes, cfg.max_run_config_bytes),
            control=self.control,
            identity=self.identity,
        )
        # the other API's methods get a hint instead of grpclib's "Missing content-type header"
        other_api = "fleet" if api == "driver" else "driver"
        wrong = WrongApiService(own._service, other, functools.partial(self._port, other_api))
        handlers: list[Any] = [service, wrong]
        if api == "driver":  # the Admin API (listings, cancel, stop) shares the Driver API's port
            # same admission as the Driver API: run credentials in the headers (a driver's cancel) give the
            # authenticated limit; anonymous calls (fl-async ls/stop) get the small anonymous one
            handlers.append(
                AdminService(
                    self.state,
                    self._wakeups,
                    self._calls,
                    cfg.max_poll_timeout,
                    self.codec,
                    connections=self._connections,
                    admission=admission,
                    control=self.control,
                )
            )
        return handlers

    async def start_in_memory(self) -> None:
        """Start the deadline timer without binding any port: the APIs are then reached only through
        :meth:`services` served in memory (:mod:`fl_async.testing`). Needs a link made with a ``payloads`` tracker
        (the blob data path is TCP only).

        Raises:
            RuntimeError: already started or stopped, or the link has a blob data path.
        """
        if self._lifecycle is not _Lifecycle.NEW:
            raise RuntimeError(f"cannot start a SuperLink that is {self._lifecycle.value}")
        if self.blobs is not None:
            raise RuntimeError("an in-memory SuperLink needs a payloads tracker (the blob data path is TCP only)")
        self._lifecycle = _Lifecycle.RUNNING
        self._timer = asyncio.create_task(self._run_timer(), name="fl-async-superlink-deadlines")

    def _admission(self) -> tuple[Admission, Callable[[int], bytes]]:
        """The request admission policy of both APIs and the function issuing a run's driver token."""
        cfg, state, blobs = self.config, self.state, self.blobs

        callers = self.identity.inner
        assert isinstance(callers, SessionCallers)

        def issued(run_id: int) -> bytes | None:  # the blob token when the run got one (blob path up)
            if state.store.get_run(run_id) is None:
                raise state.unknown_run(run_id)  # NOT_FOUND, naming why for a run that ended
            return (blobs.issued_run_token(run_id) if blobs is not None else None) or callers.derived_run_token(run_id)

        def run_token(run_id: int) -> bytes:
            return run_blob_token(state, run_id) or callers.derived_run_token(run_id)

        callers.run_token = issued
        admission = Admission(
            self.identity,
            max_request_bytes=cfg.max_request_bytes,
            max_anonymous_request_bytes=cfg.max_anonymous_request_bytes,
            max_request_elements=cfg.max_request_elements,
            max_pending_request_bytes=cfg.max_pending_request_bytes,
            request_read_timeout=cfg.request_read_timeout,
            field_caps={field: getattr(cfg, field) for field in set(FIELD_CAPS.values())},
        )

        def driver_called(run_id: int) -> None:  # valid driver credentials in the headers
            self._connections.bind_run(run_id)
            state.driver_back(run_id)

        admission.driver_called = driver_called
        self.admission = admission
        return admission, run_token

    async def stop(self, grace: float = 1.0) -> None:
        """Stop serving: refuse new connections, answer held long-polls at once (with what is ready, usually
        nothing), give other calls in progress up to ``grace`` seconds, cancel what is left, then close every
        connection still open (grpclib alone would keep serving them: clients then get a connection error, and
        reconnect to whatever listens on the port next). Idempotent.

        Args:
            grace: seconds to let calls in progress finish (>= 0).
        """
        if self._lifecycle is not _Lifecycle.RUNNING:
            self._lifecycle = _Lifecycle.STOPPED
            return
        self._lifecycle = _Lifecycle.STOPPED
        await self._stop_identity()
        self._wakeups.close()
        if self._timer is not None:
            self._timer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._timer
        await self._close_servers(grace)
        log.info("SuperLink stopped")

    async def _close_servers(self, grace: float) -> None:
        if self.metrics is not None:
            await asyncio.to_thread(self.metrics.close)
        if self.blobs is not None:
            await self.blobs.stop()
        for server in self._servers:
            if server._server is not None:  # stop listening, keep connections for the answers in progress
                server._server.close()
        if grace > 0 and self._calls.active:
            idle = asyncio.Event()
            self._calls.when_idle(idle.set)
            with anyio.move_on_after(grace):
                await idle.wait()
        for server in self._servers:
            server.close()
        with anyio.move_on_after(max(grace, 0.5)):
            for server in self._servers:
                await server.wait_closed()
        self._servers.clear()
        await self._connections.close_all(timeout=0.5)  # after the answers: they are flushed, then closed
        if self.gate is not None:
            await self.gate.stop()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    def _authenticate_node(self, node_id: int, token: bytes) -> object:
        """The session credentials check of a node's call headers (a lookup only: the handler applies the
        liveness rules when it authenticates the body)."""
        node = self.state.store.get_node(node_id)
        if node is None:
            raise UnauthenticatedError(f"unknown node {node_id}: it is offline or deleted; register again")
        if not hmac.compare_digest(node.token, token):
            raise UnauthenticatedError(f"wrong token for node {node_id}")
        return node

    def _node_lookup(self, node_id: int) -> tuple[bytes, bytes] | None:
        node = self.state.store.get_node(node_id)
        return None if node is None else (node.token, node.public_key)

    def reload_allow_list(self) -> None:
        """Re-read the allow-list (``--auth-list-public-keys``; on SIGHUP and when the file changes): nodes whose
        key is no longer listed are disconnected and their queued and in-flight instructions become
        NODE_UNAVAILABLE error replies. A file that cannot be read or parsed leaves the previous list in force
        (logged)."""
        allow = self.identity.allow_list
        if allow is None:
            return
        try:
            allow.load()
        except ValueError as exc:
            log.error("allow-list not reloaded, the previous one stays in force: %s", exc)
            return
        removed = 0
        for node in list(self.state.store.nodes()):
            if node.public_key and node.public_key not in allow.keys:
                removed += self.state.remove_node(
                    node.node_id, f"node {node.node_id} was disconnected: its key was removed from the allow-list"
                )
        log.info("allow-list reloaded: %d key(s); %d node(s) disconnected", len(allow.keys), removed)

    async def _watch_allow_list(self) -> None:
        """Reload the allow-list when its file's modification time changes (polled every
        :data:`ALLOW_LIST_POLL` seconds)."""
        allow = self.identity.allow_list
        assert allow is not None
        while True:
            await asyncio.sleep(ALLOW_LIST_POLL)
            if allow.changed():
                self.reload_allow_list()

    def _start_identity(self) -> None:
        """Warn about open doors; watch the allow-list (file changes, SIGHUP)."""
        cfg = self.config
        if self.identity.allow_list is None:  # a WARNING when other machines can reach the Fleet API
            fleet_host = parse_address(cfg.fleet_api_address)[0]
            log.log(
                logging.INFO if _loopback(fleet_host) else logging.WARNING,
                "node authentication is off: any client that reaches the Fleet API can register as a node "
                "(pass --auth-list-public-keys FILE)",
            )
        else:
            log.info("node authentication on: %d key(s) allowed", len(self.identity.allow_list.keys))
            self._watcher = asyncio.create_task(self._watch_allow_list(), name="fl-async-allow-list")
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError, AttributeError):
                asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, self.reload_allow_list)
                self._sighup = True
        host = parse_address(cfg.driver_api_address)[0]
        if self.identity.tokens is None and not _loopback(host):
            log.warning(
                "the Driver API listens on %s without driver tokens: anyone who can reach it can run work on every "
                "node (pass --driver-auth-token-file FILE, or bind it to 127.0.0.1)",
                cfg.driver_api_address,
            )

    async def _stop_identity(self) -> None:
        if self._sighup:
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                asyncio.get_running_loop().remove_signal_handler(signal.SIGHUP)
            self._sighup = False
        if self._watcher is not None:
            self._watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watcher
            self._watcher = None

    def _node_token(self, node_id: int) -> bytes | None:
        """The session token of a registered node (``None``: unknown), for the blob path's authorization."""
        node = self.state.store.get_node(node_id)
        return None if node is None else node.token

    def _driver_lost(self, run_ids: list[int]) -> None:
        """A peer closed or reset the connection of these runs' drivers: they get ``driver_disconnect_grace``."""
        if self._lifecycle is _Lifecycle.RUNNING:
            self.state.driver_lost(run_ids)

    def _connection_lost(self, node_ids: list[int]) -> None:
        """A peer closed or reset a connection: its nodes get ``disconnect_grace`` to come back."""
        if self._lifecycle is _Lifecycle.RUNNING:
            self.state.connection_lost(node_ids)

    # ---------------------------------------------------------------------------- deadlines
    async def _run_timer(self) -> None:
        """Sleep until the state's next deadline (node offline / instruction TTL), apply it, re-arm.

        Woken early when an earlier deadline is added (``Wakeups.deadline_added``)."""
        wakeups, state = self._wakeups, self.state
        while not wakeups.closing:
            wakeups.deadline_event = asyncio.Event()
            ended = state.runs_ended
            try:
                state.advance()
            except Exception:
                log.exception("applying deadlines failed")
            if state.runs_ended != ended:  # runs ended (idle TTL, driver gone)
                for node_id, ids in state.take_ended_in_flight().items():  # their nodes stop handling them
                    self.control.notify_cancelled(node_id, ids)
                if self.admission is not None:
                    self.admission.trim_soon()  # return their memory to the OS
            deadline = state.next_deadline()
            wakeups.armed_at = math.inf if deadline is None else deadline
            delay = None if deadline is None else max(0.0, deadline - self._clock()) + 0.001
            with anyio.move_on_after(delay if delay is not None else math.inf):
                await wakeups.deadline_event.wait()


async def serve(config: LinkConfig | None = None, *, shutdown_grace: float = 1.0) -> None:
    """Run a SuperLink until SIGINT or SIGTERM, then shut down within about ``shutdown_grace + 1`` seconds
    (held long-polls are answered at once; as Flower's ``flower-superlink``, which stops with 1 s grace).

    Args:
        config: the link's configuration (default ``LinkConfig()``: 127.0.0.1:9091 / 0.0.0.0:9092, insecure).
        shutdown_grace: seconds calls in progress get to finish after the signal.

    Raises:
        OSError: an address cannot be bound.
    """
    async with SuperLink(config) as link:
        with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async for signum in signals:
                log.info("received %s, shutting down", signal.Signals(signum).name)
                break
        await link.stop(grace=shutdown_grace)

"""``SuperNode``: the node runtime. Registers with a SuperLink's Fleet API, long-polls for instructions,
runs the ClientApp on them and pushes the replies, heartbeating all the while.

Structure (all in one event loop; many SuperNodes may share a loop, each with its own Channel)::

    run()
      _maintain        reconnect loop (tenacity: capped exponential backoff with jitter)
        _session       CreateNode, then until the session is lost:
          _heartbeat_loop   Heartbeat ~0.6 x granted interval after the last completed call
          _pull_loop        PullInstructions(max_messages = free slots) -> one _handle task each
      _handle          (in _messages.py) decode -> Context -> ClientApp -> push reply (outlives a session: a reply made
                       while the link was unreachable is pushed after reconnecting, within its TTL).
                       When no pull is in flight, the push also pulls (PushReplies with
                       pull_max_messages = free slots, one call instead of two); the first instruction
                       it returns runs in the same task, the others in new ones.

At most one pull is in flight per node: the separate long-poll of ``_pull_loop`` or a push that pulls
(``_puller``); it never asks for more instructions than the node has free slots.

Differences from Flower 1.9's ``flower-client-app`` (``client/app.py``): long-polling instead of a 3 s
sleep; up to ``max_concurrency`` messages at once; a node the link forgot registers again instead of
polling forever with a stale id; backoff is capped; shutdown is bounded even when the link is down.
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import ssl
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Self

import anyio
from grpclib.exceptions import ProtocolError, StreamTerminatedError
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception

from fl_async._grpc import ChannelFactory, open_channel
from fl_async._keys import node_key
from fl_async._net import DEFAULT_FLEET_TARGET, check_client_target, client_ssl_context, format_address
from fl_async.blobs import transfer as _blobs
from fl_async.blobs.buffers import default_pool
from fl_async.blobs.protocol import node_blob_token
from fl_async.client.client_app import ClientApp
from fl_async.common.context import Context, UserConfig
from fl_async.common.records import ConfigsRecord
from fl_async.errors import (
    FlAsyncError,
    LinkConnectionError,
    LinkTimeoutError,
    NotAuthorizedError,
)
from fl_async.proto.fl_async import v1 as pb
from fl_async.supernode._fleet import FleetClient
from fl_async.supernode._instructions import InstructionHandler
from fl_async.supernode._session import (
    _Backoff,
    _HealthySessionLost,
    _positive,
    _Session,
    _SessionLost,
    _transient,
)

__all__ = ["SuperNode"]

logger = logging.getLogger("fl_async.supernode")

_HEALTHY_SESSION = 5.0
"""A session that lasted this many seconds resets the reconnect backoff."""
_DELETE_TIMEOUT = 0.5
"""Deadline in seconds of the best-effort DeleteNode on shutdown."""
_POLL_MARGIN = 5.0
"""Seconds added to the long-poll timeout to get the PullInstructions deadline."""
_HEARTBEAT_TIMEOUTS = 3
"""Consecutive heartbeat deadlines missed before the session counts as lost (connection errors end it at once)."""
_RPC_TIMEOUT = 10.0
_PUSH_TIMEOUT = 60.0


class SuperNode:
    """A node running a :class:`ClientApp` for a SuperLink (as Flower 1.9's ``flower-client-app``).

    Use it in-process as an async context manager (runs in the background)::

        async with SuperNode(app, "127.0.0.1:9092", insecure=True) as node:
            await node.wait_registered(timeout=5)

    or run it in the foreground with ``await node.run()`` until ``node.stop()`` or cancellation
    (:func:`fl_async.supernode.run_supernode` adds SIGINT/SIGTERM handling).

    Pulling: one long-poll at a time asks for as many instructions as the node has free slots. When a
    reply is pushed while no pull is in flight (all slots were busy, e.g. always with
    ``max_concurrency=1``), the same ``PushReplies`` call also pulls (``pull_max_messages`` = free slots,
    held up to ``poll_timeout``): a busy node makes one call per instruction instead of two. If that call
    comes back without instructions, the separate long-poll resumes. Stopping while such a call is held
    unregisters the node first (DeleteNode), which makes the link answer it at once.

    Heartbeats: every ~0.6 x the granted interval counted from the last pull, push or heartbeat that
    completed (each is a sign of life for the link), so a node kept busy by instructions sends none.

    Args:
        app: the ClientApp to run.
        superlink: the link's Fleet API address ``"HOST:PORT"``.
        insecure: connect in plaintext. Exactly one of ``insecure=True`` and ``root_certificates``.
        root_certificates: PEM bytes, or a path to a PEM file, of the CAs to trust for TLS.
        max_concurrency: how many instructions run at once (>= 1). The node pulls only as many
            instructions as it has free slots.
        heartbeat_interval: seconds between heartbeats the node asks for; the link may clamp it.
        node_config: this node's settings, given to every run's ``Context.node_config``
            (``key -> int | float | str | bytes | bool``).
        max_backoff: cap in seconds of the reconnect backoff (exponential from 0.1 s, jittered).
        poll_timeout: seconds each long-poll asks the link to hold the call open (the link caps it);
            its deadline is this plus 5 s.
        shutdown_grace: seconds a stopping node waits for running handlers (and their replies)
            before abandoning them.
        channel_factory: makes each grpclib channel to the Fleet API instead of connecting to ``superlink``
            (called at each (re)connection; :mod:`fl_async.testing` passes an in-memory one).
        auth_private_key, auth_public_key: files of the node's ECDSA key pair (OpenSSH or PEM private key, OpenSSH
            public key; as Flower 1.9's ``--auth-supernode-private-key`` / ``--auth-supernode-public-key``). The
            node proves the key when it registers and gets the node id bound to it; requires TLS. A registration
            refused because another live session holds the key is retried with backoff.

    Raises:
        TypeError: ``app`` is not a ClientApp, an argument has the wrong type, or a ``node_config``
            value has an unsupported type.
        ValueError: bad or conflicting arguments (malformed address, both or neither of
            ``insecure`` and ``root_certificates``, unreadable certificates, non-positive numbers,
            an out-of-range ``node_config`` value), or a ``FL_ASYNC_BUFFER_POOL`` environment value
            that is not a non-negative integer (see :func:`fl_async.blobs.default_pool`).
    """

    def __init__(
        self,
        app: ClientApp,
        superlink: str = DEFAULT_FLEET_TARGET,
        *,
        insecure: bool = False,
        root_certificates: bytes | str | Path | None = None,
        max_concurrency: int = 1,
        heartbeat_interval: float = 30.0,
        node_config: Mapping[str, Any] | None = None,
        max_backoff: float = 20.0,
        poll_timeout: float = 10.0,
        shutdown_grace: float = 2.0,
        channel_factory: ChannelFactory | None = None,
        auth_private_key: str | Path | None = None,
        auth_public_key: str | Path | None = None,
    ) -> None:
        if not isinstance(app, ClientApp):
            raise TypeError(f"app must be a ClientApp, got {type(app).__name__}")
        host, port = check_client_target(superlink, insecure=insecure, root_certificates=root_certificates)
        self._key = node_key(auth_private_key, auth_public_key, insecure=insecure)
        self._ssl: ssl.SSLContext | None = None if root_certificates is None else client_ssl_context(root_certificates)
        default_pool()  # reads FL_ASYNC_BUFFER_POOL: a bad value is refused here, not in a background task
        if isinstance(max_concurrency, bool) or not isinstance(max_concurrency, int):
            raise TypeError(f"max_concurrency must be an int, got {type(max_concurrency).__name__}")
        if max_concurrency < 1:
            raise ValueError(f"max_concurrency must be >= 1, got {max_concurrency}")
        self._app = app
        self._channel_factory = channel_factory
        self._host, self._port = host, port
        self.superlink = superlink
        self._max_concurrency = max_concurrency
        self._requested_interval = _positive("heartbeat_interval", heartbeat_interval)
        self._max_backoff = _positive("max_backoff", max_backoff)
        self._poll_timeout = _positive("poll_timeout", poll_timeout)
        self._shutdown_grace = _positive("shutdown_grace", shutdown_grace, allow_zero=True)
        self._node_config: UserConfig = dict(ConfigsRecord(dict(node_config or {})))

        self._state = "new"  # new -> running -> stopped
        self._stopping = False
        self._fatal: BaseException | None = None
        self._interval = self._requested_interval
        self._free = max_concurrency
        self._active = 0
        self._puller = ""  # "" | "pull" (the separate long-poll) | "push" (a push that also pulls)
        self._calls = {"PullInstructions": 0, "PushReplies": 0, "PushReplies+pull": 0, "Heartbeat": 0}
        self._last_ok = -float("inf")  # time.monotonic() of the latest pull/push/heartbeat that completed
        self._deleted = False  # unregistered on the way out: no re-registration, no second DeleteNode
        self._registrations = 0
        self._registration_id = b""  # CreateNodeRequest.registration_id of the registration being attempted
        self._hinted: set[str] = set()  # connection hints already logged (each once)
        self._contexts: dict[int, Context] = {}
        self._context_locks: dict[int, anyio.Lock] = {}
        self._session: _Session | None = None
        self._last_session: _Session | None = None
        self._resumable: _Session | None = None
        self._conn: FleetClient | None = None
        self._blob_port = 0
        self._blob_client: Any = None  # BlobClient of the current session (None: no blob path)
        self._pull_scope: anyio.CancelScope | None = None
        self._prims = False
        self._owner_tg: Any = None
        self._instructions = InstructionHandler(self)

    # ------------------------------------------------------------------ public API

    @property
    def node_id(self) -> int | None:
        """The id the link gave this node, or ``None`` while not registered."""
        return self._session.node_id if self._session is not None else None

    @property
    def registrations(self) -> int:
        """How many times this node has registered (a re-registration after link loss adds one)."""
        return self._registrations

    @property
    def running_handlers(self) -> int:
        """How many instructions are being handled right now."""
        return self._active

    @property
    def fleet_calls(self) -> dict[str, int]:
        """How many Fleet calls the node has made, by kind (a copy; for monitoring and benchmarks).

        Keys: ``"PullInstructions"`` (separate long-polls), ``"PushReplies"`` (pushes that do not pull),
        ``"PushReplies+pull"`` (pushes that also pulled, see the class docstring) and ``"Heartbeat"``
        (heartbeats of the session loop). Failed attempts count too.
        """
        return dict(self._calls)

    def contexts(self) -> dict[int, Context]:
        """The kept ``run_id -> Context`` map (live objects)."""
        return self._contexts

    def stop(self) -> None:
        """Ask the node to stop gracefully: stop pulling, finish or abandon handlers within
        ``shutdown_grace`` seconds, delete the node. Idempotent; call it from the node's event loop.
        """
        self._stopping = True
        if self._prims:
            self._stop_evt.set()
        if self._pull_scope is not None:
            self._pull_scope.cancel()

    async def wait_registered(self, timeout: float | None = None) -> int:
        """Wait until the node is registered with the link and return its node id.

        Args:
            timeout: seconds to wait at most; ``None`` = no limit.

        Raises:
            TimeoutError: not registered within ``timeout``.
            FlAsyncError: the node stopped on a fatal error (e.g. the link refused to register it).
            RuntimeError: the node has stopped.
        """
        self._ensure_primitives()
        with anyio.fail_after(timeout):
            while self._session is None:
                if self._fatal is not None:
                    raise self._fatal
                if self._state == "stopped":
                    raise RuntimeError("the SuperNode has stopped")
                await self._session_evt.wait()
            return self._session.node_id

    async def run(self) -> None:
        """Run the node until :meth:`stop` is called (graceful) or the calling task is cancelled.

        Either way the node is deleted on the link on the way out (best effort, 0.5 s deadline).
        A node can run once.

        Raises:
            RuntimeError: the node already ran.
            NotAuthorizedError, InvalidRequestError: the link refused to register the node (fatal).
        """
        if self._state != "new":
            raise RuntimeError("a SuperNode can run only once; create a new one")
        self._state = "running"
        self._ensure_primitives()
        self._limiter = anyio.CapacityLimiter(self._max_concurrency * self._app.max_thread_depth)
        try:
            async with anyio.create_task_group() as tg:
                self._tg = tg
                tg.start_soon(self._maintain)
                await self._stop_evt.wait()
                self.stop()
                with anyio.move_on_after(self._shutdown_grace):
                    while self._active:
                        await self._idle_evt.wait()
                if self._active:
                    logger.warning("node %s: abandoning %d running handler(s) on shutdown", self.node_id, self._active)
                if self._puller == "push":
                    await self._end_pulling_push()
                tg.cancel_scope.cancel()
        finally:
            with anyio.CancelScope(shield=True):
                await self._goodbye()
            self._state = "stopped"
            self._session_evt.set()  # wake wait_registered()
        if self._fatal is not None:
            raise self._fatal

    async def __aenter__(self) -> Self:
        """Start :meth:`run` in the background (in a task group owned by the calling task)."""
        self._ensure_primitives()
        self._owner_tg = anyio.create_task_group()
        await self._owner_tg.__aenter__()
        self._owner_tg.start_soon(self._run_in_background)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        """Stop gracefully (see :meth:`stop`) and wait until the node has stopped.

        Raises:
            FlAsyncError: the node had stopped on a fatal error (only if the block itself did not raise).
        """
        self.stop()
        await self._owner_tg.__aexit__(None, None, None)
        if self._fatal is not None and exc_info[0] is None:
            raise self._fatal

    def __repr__(self) -> str:
        return f"SuperNode(superlink={self.superlink!r}, node_id={self.node_id}, state={self._state})"

    # ------------------------------------------------------------------ lifecycle internals

    def _ensure_primitives(self) -> None:
        if self._prims:
            return
        self._stop_evt = anyio.Event()
        self._session_evt = anyio.Event()
        self._slot_evt = anyio.Event()
        self._idle_evt = anyio.Event()
        self._prims = True
        if self._stopping:
            self._stop_evt.set()

    async def _run_in_background(self) -> None:
        with contextlib.suppress(FlAsyncError):  # kept in self._fatal, raised by __aexit__ / wait_registered
            await self.run()

    async def _end_pulling_push(self) -> None:
        """Shutdown with a push still waiting for instructions: unregister now, which makes the link answer
        that call at once (with the reply accepted, or refused as from a deleted node, which the link has
        then answered NODE_UNAVAILABLE), instead of cancelling it without knowing whether the reply arrived.
        """
        sess = self._session
        if sess is None:
            return  # link unreachable: the call fails on its own or is cancelled
        self._deleted = True  # from here on, a lost session is not re-registered
        if not await self._delete_node(sess):
            return
        with anyio.move_on_after(_DELETE_TIMEOUT):
            while self._puller == "push":
                await self._slot_evt.wait()

    async def _delete_node(self, sess: _Session) -> bool:
        """DeleteNode for ``sess``, best effort within ``_DELETE_TIMEOUT``; whether the link confirmed it."""
        try:
            with anyio.fail_after(_DELETE_TIMEOUT):
                await sess.conn.delete_node(sess.auth, timeout=_DELETE_TIMEOUT)
        except (FlAsyncError, TimeoutError) as exc:
            logger.info("node %s: DeleteNode failed (best effort): %s", sess.node_id, exc)
            return False
        logger.info(
            "node %s: deleted on the SuperLink", sess.node_id, extra={"event": "node_left", "node_id": sess.node_id}
        )
        return True

    async def _goodbye(self) -> None:
        if self._blob_client is not None:  # close the blob path's idle connections
            await self._blob_client.aclose()
        sess = self._last_session
        if sess is not None and not self._deleted:
            await self._delete_node(sess)
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _log_retry(self, retry_state: RetryCallState) -> None:
        exc = retry_state.outcome.exception() if retry_state.outcome is not None else None
        delay = retry_state.next_action.sleep if retry_state.next_action is not None else 0.0
        hint = self._mismatch_hint(exc)
        if hint in self._hinted:
            hint = ""  # said once (the first such failure); the retries repeat only the failure
        self._hinted.add(hint)
        logger.warning(
            "node: SuperLink %s not usable (%s); retrying in %.2f s%s",
            self.superlink,
            exc,
            delay,
            f" (hint: {hint})" if hint else "",
        )

    def _mismatch_hint(self, exc: BaseException | None) -> str:
        """A hint for a connection failure that looks like a TLS mismatch with the link (``""``: none).

        A refused connection (link not up yet) gets none, nor does a dropped connection after the node has
        registered once (the link going away). Each hint is logged once per node (see :meth:`_log_retry`).
        """
        if not isinstance(exc, LinkConnectionError):
            return ""
        cause = exc.__cause__
        if isinstance(cause, ssl.SSLError):
            if "CERTIFICATE_VERIFY_FAILED" in str(cause):
                return (
                    "the SuperLink's certificate is not trusted: root_certificates (--root-certificates) must "
                    "hold the CA that signed it"
                )
            return (
                "TLS handshake failed: if the SuperLink serves plaintext (--insecure), connect with "
                "insecure=True (--insecure) too"
            )
        if self._registrations:
            return ""  # it worked before: a dropped connection is the link going away, not a mismatch
        if self._ssl is None and isinstance(cause, (StreamTerminatedError, ProtocolError)):
            return (
                "the connection was accepted, then dropped: if the SuperLink uses TLS, pass root_certificates "
                "(--root-certificates FILE) instead of insecure=True (--insecure)"
            )
        if self._ssl is not None and isinstance(cause, (StreamTerminatedError, ProtocolError, ConnectionResetError)):
            return (
                "the TLS connection was dropped: if the SuperLink serves plaintext (--insecure), connect with "
                "insecure=True (--insecure) too"
            )
        return ""

    async def _maintain(self) -> None:
        try:
            while not self._stopping or self._active:
                retrying = AsyncRetrying(
                    retry=retry_if_exception(lambda exc: _transient(exc) and not self._deleted),
                    wait=_Backoff(0.1, self._max_backoff),
                    sleep=anyio.sleep,
                    before_sleep=self._log_retry,
                    reraise=True,
                )
                try:
                    async for attempt in retrying:
                        with attempt:
                            await self._run_session()
                except _HealthySessionLost as exc:
                    if self._deleted:
                        return
                    logger.warning("node: %s; registering again", exc)
        except FlAsyncError as exc:
            if self._deleted:
                return  # unregistered on the way out (see _end_pulling_push): not a failure
            logger.error("node: giving up: %s", exc)
            self._fatal = exc
            self._stop_evt.set()
            self._session_evt.set()

    async def _connect(self) -> FleetClient:
        if self._conn is not None:
            self._conn.close()
        if self._channel_factory is None:
            channel = open_channel(self._host, self._port, self._ssl)
        else:
            channel = await self._channel_factory()
        self._conn = FleetClient(
            channel,
            format_address(self._host, self._port),
            rpc_timeout=_RPC_TIMEOUT,
            push_timeout=_PUSH_TIMEOUT,
            poll_margin=_POLL_MARGIN,
        )
        self._conn.on_cancelled = self._instructions.cancelled_by_link
        return self._conn

    async def _resume(self, conn: FleetClient) -> _Session | None:
        """After a transport failure, try the last registration again (a heartbeat with its credentials).

        Keeping the node id across a network blip keeps its in-flight instructions valid, so replies
        finished meanwhile are still accepted. Returns ``None`` when the link has forgotten the node.
        """
        prev = self._resumable
        if prev is None:
            return None
        timeout = max(1.0, min(self._interval, 5.0))
        conn.signer = prev.signer  # a keyed session's calls carry their proof
        try:
            granted = await conn.heartbeat(prev.auth, self._requested_interval, timeout=timeout)
        except NotAuthorizedError:
            self._resumable = None  # the link forgot it: register again
            return None
        if granted > 0:
            self._interval = granted
        logger.info(
            "node %s: connection to SuperLink %s restored; same registration",
            prev.node_id,
            self.superlink,
            extra={"event": "node_reconnected", "node_id": prev.node_id},
        )
        return _Session(conn=conn, auth=prev.auth, signer=prev.signer)

    async def _run_session(self) -> None:
        conn = await self._connect()
        sess = await self._resume(conn)
        if sess is None:
            if not self._registration_id:  # kept across retries: a retry of a late CreateNode gets the same node
                self._registration_id = os.urandom(16)
            resp, signer = await conn.create_node(self._requested_interval, self._key, self._registration_id)
            self._registration_id = b""
            sess = _Session(conn=conn, auth=pb.NodeAuth(node_id=resp.node_id, token=resp.token), signer=signer)
            self._interval = resp.heartbeat_interval if resp.heartbeat_interval > 0 else self._requested_interval
            self._blob_port = resp.blob_port
            if self._blob_client is not None:
                await self._blob_client.aclose()
            self._blob_client = _blobs.client_for(
                self._host, resp.blob_port, ssl=self._ssl, token=node_blob_token(resp.node_id, resp.token)
            )
            self._registrations += 1
            for ctx in self._contexts.values():
                ctx.node_id = sess.node_id
            if self._last_session is None:
                logger.info(
                    "node %s: registered with SuperLink %s (heartbeat every %.3g s)",
                    sess.node_id,
                    self.superlink,
                    self._interval,
                    extra={"event": "node_registered", "node_id": sess.node_id},
                )
            else:  # the operator sees that the node recovered (e.g. after a link restart)
                logger.info(
                    "node %s: registered again as node %s with SuperLink %s (the link forgot node %s; "
                    "heartbeat every %.3g s)",
                    sess.node_id,
                    sess.node_id,
                    self.superlink,
                    self._last_session.node_id,
                    self._interval,
                )
        self._resumable = None
        self._session = self._last_session = sess
        self._session_evt.set()
        started = anyio.current_time()
        try:
            with sess.scope:
                async with anyio.create_task_group() as tg:
                    tg.start_soon(self._heartbeat_loop, sess)
                    tg.start_soon(self._pull_loop, sess)
        finally:
            self._session = None
            self._session_evt = anyio.Event()
        cause = sess.lost or LinkConnectionError("session ended")
        if isinstance(cause, (LinkConnectionError, LinkTimeoutError)):
            self._resumable = sess  # the link may still know the node: try to resume it first
        text = f"node {sess.node_id}: session lost: {cause}"
        if anyio.current_time() - started >= _HEALTHY_SESSION:
            raise _HealthySessionLost(text) from cause
        raise _SessionLost(text) from cause

    async def _heartbeat_loop(self, sess: _Session) -> None:
        timeouts = 0  # consecutive heartbeats that hit their deadline (a busy link is not a lost link)
        while True:
            wait = self._interval * random.uniform(0.55, 0.65)
            await anyio.sleep(wait)
            # A pull or push that completed meanwhile was a sign of life for the link (and proof it is
            # reachable): count from it. A busy node so sends no heartbeats; the longest silence stays ~wait.
            while (since := time.monotonic() - self._last_ok) < wait:
                timeouts = 0
                await anyio.sleep(wait - since)
            self._calls["Heartbeat"] += 1
            timeout = max(1.0, min(self._interval, 5.0))
            try:
                granted = await sess.conn.heartbeat(sess.auth, self._requested_interval, timeout=timeout)
            except LinkTimeoutError as exc:
                timeouts += 1
                if timeouts >= _HEARTBEAT_TIMEOUTS:
                    sess.fail(exc)
                    return
                logger.warning("node %s: heartbeat timed out (%d in a row)", sess.node_id, timeouts)
                continue
            except FlAsyncError as exc:
                sess.fail(exc)
                return
            timeouts = 0
            self._last_ok = time.monotonic()
            if granted > 0:
                self._interval = granted

    async def _pull_loop(self, sess: _Session) -> None:
        quick_empty = 0  # consecutive pulls answered at once with nothing (e.g. a closing link)
        with anyio.CancelScope() as scope:
            self._pull_scope = scope
            while not self._stopping:
                while self._free <= 0 or self._puller:
                    await self._slot_evt.wait()
                started = anyio.current_time()
                self._puller = "pull"
                self._calls["PullInstructions"] += 1
                try:
                    wires = await sess.conn.pull(sess.wire_auth, self._free, self._poll_timeout)
                except FlAsyncError as exc:
                    sess.fail(exc)
                    return
                finally:
                    self._puller = ""
                self._last_ok = time.monotonic()
                if not wires and anyio.current_time() - started < min(0.05, self._poll_timeout / 2):
                    quick_empty += 1
                    if quick_empty > 1:  # the link does not hold polls open: do not spin
                        await anyio.sleep(min(1.0, 0.01 * 2 ** min(quick_empty, 7)))
                else:
                    quick_empty = 0
                for wire in wires:
                    self._take_slot()
                    self._tg.start_soon(self._instructions.handle, wire, sess)
        if self._pull_scope is scope:
            self._pull_scope = None

    def _take_slot(self) -> None:
        self._free -= 1
        self._active += 1
        if self._idle_evt.is_set():
            self._idle_evt = anyio.Event()

    def _release_slot(self) -> None:
        self._free += 1
        self._active -= 1
        if not self._puller:  # else whoever pulls now wakes the loop when done
            self._wake_puller()
        if self._active == 0:
            self._idle_evt.set()

    def _wake_puller(self) -> None:
        """Tell the pull loop (and shutdown) that slots or the pull role changed."""
        self._slot_evt.set()
        self._slot_evt = anyio.Event()

    async def _current_session(self) -> _Session:
        while self._session is None:
            await self._session_evt.wait()
        return self._session

"""``AsyncDriver``: the server app's asyncio client of the SuperLink's Driver API.

Semantics follow Flower 1.9's ``Driver`` (``create_message``, ``get_node_ids``, ``push_messages``,
``pull_messages``, ``send_and_receive``) with one change that matters: waiting happens on the link.
``pull_messages`` and ``send_and_receive`` hold a long-poll open until every outstanding reply is in
(or the timeout ends), so no call sleeps against a link that holds polls, and a round ends the moment its
last reply arrives. (Against a link that answers polls at once, e.g. one shutting down, polls are paced
:data:`~fl_async.server._base.POLL_PAUSE` apart.)
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, Self

from fl_async._credentials import AUTH_TOKEN_ENV, Metadata, run_metadata, token_metadata
from fl_async._grpc import ChannelFactory
from fl_async._net import DEFAULT_DRIVER_TARGET, client_ssl_context
from fl_async.blobs import transfer as _blobs
from fl_async.common.message import Message
from fl_async.common.records import RecordSet
from fl_async.common.run import Run
from fl_async.errors import LinkTimeoutError
from fl_async.proto.fl_async import v1 as pb
from fl_async.server._base import (
    DEFAULT_CALL_TIMEOUT,
    DEFAULT_PULL_TIMEOUT,
    ConnectArgs,
    Deadline,
    DriverState,
    build_message,
    check_connect_args,
    check_number,
    check_timeout,
    decode_replies,
    make_run,
    normalize_ids,
    poll_pause,
    push_request,
    read_push_response,
    run_from_proto,
    still_waiting,
    validate_for_push,
)
from fl_async.server._transport import DriverTransport
from fl_async.server.reply_stream import MAX_CONCURRENT_POLLS, MAX_READ_AHEAD, READ_AHEAD_BYTES, ReplyStream

__all__ = ["MAX_CONCURRENT_POLLS", "MAX_READ_AHEAD", "READ_AHEAD_BYTES", "AsyncDriver", "ReplyStream"]

logger = logging.getLogger("fl_async.server")


class AsyncDriver:
    """Asyncio client of the SuperLink's Driver API; one instance drives one run.

    Use it as an async context manager, which connects (creating the run on the link) and closes::

        async with AsyncDriver("127.0.0.1:9091", insecure=True) as driver:
            nodes = await driver.wait_for_nodes(3, timeout=30)
            msgs = [driver.create_message(rs, MessageType.TRAIN, n, group_id="1") for n in nodes]
            replies = await driver.send_and_receive(msgs, timeout=60)

    or call :meth:`connect` and :meth:`aclose` yourself. Construction does no I/O, so it may happen
    anywhere; every other method must run in the event loop that connected (grpclib binds its
    channel to that loop). Only asyncio is supported (grpclib is asyncio-only).

    Args:
        superlink: ``"HOST:PORT"`` of the link's Driver API (IPv6 as ``"[::1]:9091"``).
        insecure: ``True`` to talk plaintext (prototyping only).
        root_certificates: PEM bytes, or the path of a PEM file, of the CA(s) to trust for TLS.
            Exactly one of ``insecure=True`` and ``root_certificates`` must be given.
        run_config: the run's settings (``key -> int | float | str | bytes | bool`` or homogeneous
            lists of those), stored with the run and passed to every node's ``Context.run_config``.
        fab_id, fab_version: free-form identity of the app, stored with the run (as Flower's CreateRun).
        call_timeout: seconds any call may take beyond the wait it asks the link to hold it open;
            bounds every call against an unresponsive link.
        channel_factory: makes the grpclib channel to the Driver API instead of connecting to ``superlink``
            (called once, in :meth:`connect`; :mod:`fl_async.testing` passes an in-memory one).
        auth_token: the driver token, when the link has ``--driver-auth-token-file`` (sent with every call);
            default: the ``FL_ASYNC_AUTH_TOKEN`` environment variable, if set. Without a token such a link refuses
            every call: :class:`~fl_async.errors.NotAuthorizedError` naming this option.

    Raises:
        ValueError: malformed address; both or neither of ``insecure``/``root_certificates``; bad
            run config value or ``call_timeout``.
        TypeError: an argument has the wrong type.
    """

    def __init__(
        self,
        superlink: str = DEFAULT_DRIVER_TARGET,
        *,
        insecure: bool = False,
        root_certificates: bytes | str | Path | None = None,
        run_config: Mapping[str, Any] | None = None,
        fab_id: str = "",
        fab_version: str = "",
        call_timeout: float = DEFAULT_CALL_TIMEOUT,
        channel_factory: ChannelFactory | None = None,
        auth_token: str | None = None,
    ) -> None:
        self._channel_factory = channel_factory
        if auth_token is None:
            auth_token = os.environ.get(AUTH_TOKEN_ENV) or None
        if auth_token is not None and (not isinstance(auth_token, str) or not auth_token.strip()):
            raise ValueError("auth_token must be a non-empty str (the driver token of --driver-auth-token-file)")
        self._auth: Metadata = token_metadata(auth_token.strip() if auth_token else None)
        self._args: ConnectArgs = check_connect_args(
            superlink,
            insecure=insecure,
            root_certificates=root_certificates,
            run_config=run_config,
            fab_id=fab_id,
            fab_version=fab_version,
        )
        self._call_timeout = check_timeout(call_timeout, "call_timeout", positive=True)
        self._state = DriverState.UNOPENED
        self._transport: DriverTransport | None = None
        self._run: Run | None = None
        self._unclaimed: dict[str, pb.Message] = {}  # pulled by a stream closed early; decoded when pulled again
        self._streams: set[ReplyStream] = set()
        self._blob_client: Any = None  # BlobClient for the link's blob data path (None: none)
        self._ended: list[Message] | None = None  # end_run's answer once the run ended

    # ----------------------------------------------------------------------------------------
    # lifecycle

    @property
    def superlink(self) -> str:
        """The ``HOST:PORT`` this driver talks to."""
        return self._args.address

    @property
    def state(self) -> DriverState:
        """Where the driver is in its lifecycle (unopened, connecting, opened, closed)."""
        return self._state

    @property
    def run(self) -> Run:
        """The run this driver created (as Flower 1.10's ``Driver.run``).

        Raises:
            RuntimeError: the driver is not connected.
        """
        self._require_open()
        assert self._run is not None
        return self._run

    @property
    def run_id(self) -> int:
        """Id of the run this driver created.

        Raises:
            RuntimeError: the driver is not connected.
        """
        return self.run.run_id

    async def connect(self) -> AsyncDriver:
        """Open the channel and create the run on the link. Returns ``self``.

        Raises:
            RuntimeError: already connected, connecting or closed.
            ValueError: the root certificates cannot be read.
            LinkConnectionError: the link cannot be reached (or TLS fails).
            LinkTimeoutError: the link did not answer in time.
            RefusedByLinkError: the link refused to create the run.
        """
        if self._state is not DriverState.UNOPENED:
            raise RuntimeError(f"cannot connect an AsyncDriver that is {self._state.value}")
        self._state = DriverState.CONNECTING
        try:
            if self._channel_factory is None:
                self._transport = DriverTransport.connect(self._args, call_timeout=self._call_timeout)
            else:
                channel = await self._channel_factory()
                self._transport = DriverTransport(channel, self._args.address, call_timeout=self._call_timeout)
            self._transport.credentials = self._auth or None
            req = pb.CreateRunRequest(
                fab_id=self._args.fab_id,
                fab_version=self._args.fab_version,
                run_config=self._args.run_config_wire,
            )
            resp = await self._transport.call("CreateRun", req)
        except BaseException:
            if self._transport is not None:
                self._transport.close()
                self._transport = None
            self._state = DriverState.UNOPENED
            raise
        self._run = make_run(self._args, resp.run_id)
        if resp.blob_token:  # the run's credentials, sent in the headers of every later call
            self._transport.credentials = self._auth + run_metadata(resp.run_id, resp.blob_token)
        roots = self._args.root_certificates
        self._blob_client = _blobs.client_for(
            self._args.host,
            resp.blob_port,
            ssl=client_ssl_context(roots) if roots is not None else None,
            token=resp.blob_token,
        )
        self._state = DriverState.OPENED
        logger.debug("connected to %s, run %d", self._args.address, resp.run_id)
        return self

    async def aclose(self) -> None:
        """Stop open :meth:`receive` streams and close the channel. Idempotent.

        Closing does not end the run: call :meth:`end_run` first to free it on the link at once; otherwise the link
        ends it when this connection has been gone for its ``driver_disconnect_grace`` (default 120 s).

        Calls still in flight in other tasks fail with :class:`~fl_async.common.LinkConnectionError`.
        """
        if self._state is DriverState.CLOSED:
            return
        self._state = DriverState.CLOSED
        for stream in list(self._streams):
            await stream.aclose()
        if self._transport is not None:
            self._transport.close()
        if self._blob_client is not None:
            await self._blob_client.aclose()

    async def __aenter__(self) -> Self:
        if self._state is not DriverState.OPENED:
            await self.connect()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        run = f", run_id={self._run.run_id}" if self._run is not None else ""
        return f"{type(self).__name__}(superlink={self._args.address!r}, state={self._state.value}{run})"

    def _require_open(self) -> DriverTransport:
        if self._state is not DriverState.OPENED:
            if self._state is DriverState.CLOSED:
                raise RuntimeError("this driver is closed; create a new one")
            raise RuntimeError(
                "this AsyncDriver is not connected: use `async with AsyncDriver(...) as driver:` "
                "or `await driver.connect()` first"
            )
        assert self._transport is not None
        return self._transport

    # ----------------------------------------------------------------------------------------
    # Driver API

    def create_message(
        self,
        content: RecordSet,
        message_type: str,
        dst_node_id: int,
        group_id: str,
        ttl: float | None = None,
    ) -> Message:
        """Build an instruction for one node (as Flower 1.9's ``Driver.create_message``).

        Args:
            content: the RecordSet to send.
            message_type: ``MessageType.TRAIN``, ``EVALUATE``, ``QUERY`` or a custom type.
            dst_node_id: the receiving node's id.
            group_id: free label, e.g. the round number as a string.
            ttl: seconds the instruction stays valid; ``None`` = ``DEFAULT_TTL`` (3600). The link
                enforces it: an instruction not answered in time gets a ``MESSAGE_EXPIRED`` error reply.

        Raises:
            RuntimeError: the driver is not connected.
            TypeError, ValueError: bad argument (e.g. ``ttl <= 0``).
        """
        return build_message(self.run_id, content, message_type, dst_node_id, group_id, ttl)

    async def get_run(self) -> Run:
        """Fetch this run's description from the link (``GetRun``).

        Raises:
            FlAsyncError: a subclass, if the call fails.
        """
        transport = self._require_open()
        resp = await transport.call("GetRun", pb.GetRunRequest(run_id=self.run_id))
        return run_from_proto(resp.run, self.run_id)

    async def get_node_ids(self) -> list[int]:
        """Ids of the nodes online now (as Flower 1.9's ``Driver.get_node_ids``).

        Raises:
            RuntimeError: the driver is not connected.
            FlAsyncError: a subclass, if the call fails.
        """
        transport = self._require_open()
        resp = await transport.call("GetNodes", pb.GetNodesRequest(run_id=self.run_id))
        return list(resp.node_ids)

    async def wait_for_nodes(self, min_nodes: int, timeout: float | None = None) -> list[int]:
        """Wait on the link until at least ``min_nodes`` nodes are online; return their ids.

        Returns as soon as enough nodes are online (a long-poll, no sleeping).

        Args:
            min_nodes: how many nodes to wait for (0..2**31 - 1, the link's bound).
            timeout: seconds to wait at most; ``None`` = no limit.

        Raises:
            LinkTimeoutError: fewer than ``min_nodes`` nodes were online when ``timeout`` ended
                (the message says how many were).
            TypeError, ValueError: bad argument.
            FlAsyncError: a subclass, if a call fails.
        """
        if isinstance(min_nodes, bool) or not isinstance(min_nodes, int):
            raise TypeError(f"min_nodes must be an int, got {type(min_nodes).__name__}")
        if not 0 <= min_nodes < 2**31:
            raise ValueError(f"min_nodes must be in 0..{2**31 - 1}, got {min_nodes}")
        transport = self._require_open()
        deadline = Deadline(timeout)
        while True:
            wait = deadline.wait_slice()
            started = time.monotonic()
            req = pb.WaitForNodesRequest(run_id=self.run_id, min_nodes=min_nodes, timeout=wait)
            resp = await transport.call("WaitForNodes", req, wait=wait)
            ids = list(resp.node_ids)
            if len(ids) >= min_nodes:
                return ids
            if deadline.expired():
                raise LinkTimeoutError(f"only {len(ids)} of {min_nodes} nodes were online after waiting {timeout} s")
            pause = poll_pause(time.monotonic() - started, wait, deadline.remaining())
            if pause:  # the link answered at once without enough nodes: do not spin against it
                await asyncio.sleep(pause)

    async def push_messages(self, messages: Iterable[Message]) -> list[str]:
        """Queue messages on the link (as Flower 1.9's ``Driver.push_messages``).

        All messages are checked first (``"Invalid message: ..."`` ``ValueError`` and nothing is
        sent if any fails: foreign run id, ``src_node_id != 0``, message id or ``reply_to_message``
        already set, ``ttl <= 0``), then sent in one request. Messages are not changed, except that one
        built without a run (``run_id`` 0, newest Flower's ``Message(content, dst_node_id, message_type)``)
        gets this run's id.

        Returns:
            One id per message, in order; ``""`` where the link did not queue the message (e.g. its
            node is unknown or offline); the link's reason is logged as a warning.

        Raises:
            TypeError, ValueError: see above.
            RuntimeError: the driver is not connected.
            FlAsyncError: a subclass, if the call fails (nothing was queued).
        """
        transport = self._require_open()
        batch = validate_for_push(self.run_id, messages)
        if not batch:
            return []
        blobs: dict[bytes, Any] | None = {} if self._blob_client is not None else None
        request = await _blobs.encode_beside_loop(push_request, batch, blobs, self.run_id, batch, blobs)
        await _blobs.upload_blobs(self._blob_client, blobs or {})  # payloads before the push
        resp = await transport.call("PushMessages", request)
        return read_push_response(resp, batch)

    async def pull_messages(
        self, message_ids: Iterable[str], timeout: float = DEFAULT_PULL_TIMEOUT, *, max_messages: int | None = None
    ) -> list[Message]:
        """Collect replies to the given instructions (as Flower 1.9's ``Driver.pull_messages``, long-polling).

        Waits on the link until every requested instruction that is still outstanding has a reply
        (or an error reply: ``NODE_UNAVAILABLE``, ``MESSAGE_EXPIRED``, ...), or until ``timeout``
        seconds have passed, and returns what is there. Each reply is returned once: ids already
        answered are simply not outstanding any more. ``""`` and unknown ids are ignored. The link
        says which ids are still outstanding on every pull, so ignored ids never make it wait, and a
        link that holds polls for less than ``timeout`` (its ``max_poll_timeout``) is simply polled again.

        Memory: the returned list holds the whole batch, every reply decoded with its arrays downloaded (N
        replies of an M-byte model take about N x M bytes). To bound it, pass ``max_messages`` and call again
        for the rest (replies not returned stay on the link), or consume replies one at a time with
        :meth:`receive`::

            while ids:
                batch = await driver.pull_messages(ids, timeout=60, max_messages=4)
                if not batch:
                    break  # timeout
                for reply in batch:
                    ids.remove(reply.metadata.reply_to_message)
                    ...  # use and drop the reply

        Args:
            message_ids: ids returned by :meth:`push_messages`.
            timeout: seconds to wait at most (0 = return what is ready now; default
                :data:`~fl_async.server.DEFAULT_PULL_TIMEOUT`).
            max_messages: return at most this many replies (``>= 1``); the call then returns as soon as that
                many are in (or all outstanding ones are, or ``timeout`` ends). ``None`` = no limit.

        Returns:
            The replies, in arrival order; match them with ``reply.metadata.reply_to_message``.

        Raises:
            TypeError, ValueError: bad argument.
            RuntimeError: the driver is not connected.
            FlAsyncError: a subclass, if a call fails.

        If the call is cancelled while a poll is in flight, replies the link was sending in that
        moment are lost (the link delivers each reply once).
        """
        ids = normalize_ids(message_ids)
        deadline = Deadline(check_timeout(timeout, "timeout"))
        limit = _check_max_messages(max_messages)
        self._require_open()
        out: list[Message] = []
        await self._pull_loop(ids, deadline, out.extend, limit)
        return out

    async def cancel(self, message_ids: Iterable[str]) -> list[str]:
        """Cancel instructions of this run that have no reply yet (fl-async's; Flower 1.9 has no cancel).

        A queued instruction is removed and never runs; an in-flight one is signalled to its node with the
        next response the link sends it (an ``async def`` handler is cancelled there; a sync handler can poll
        :attr:`Context.cancelled <fl_async.common.Context.cancelled>`). Either way the link answers it at once
        with an error reply of code :attr:`~fl_async.common.ErrorCode.CANCELLED`, which a pull returns as the
        instruction's one reply. An instruction already answered keeps its reply (the real one is pulled);
        ``""``, unknown and already pulled ids are ignored.

        Args:
            message_ids: ids returned by :meth:`push_messages`.

        Returns:
            The ids that were cancelled (each now has a CANCELLED error reply waiting).

        Raises:
            TypeError: ``message_ids`` is not an iterable of str.
            RuntimeError: the driver is not connected.
            FlAsyncError: a subclass, if the call fails (on a stopped run, nothing is left to cancel: ``[]``).
        """
        ids = normalize_ids(message_ids)
        transport = self._require_open()
        wanted = [i for i in ids if i]
        if not wanted:
            return []
        resp = await transport.call("CancelMessages", pb.CancelMessagesRequest(run_id=self.run_id, message_ids=wanted))
        return list(resp.cancelled)

    async def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None) -> list[Message]:
        """Push messages and wait for their replies (as Flower 1.9's ``Driver.send_and_receive``, minus its sleeps).

        Returns as soon as every pushed message has a reply, or when ``timeout`` seconds (counted
        from the call) have passed, with the replies that arrived by then. It never sleeps; against a
        healthy link it returns within a few milliseconds of ``timeout``.

        Args:
            messages: instructions made with :meth:`create_message`.
            timeout: seconds to wait at most; ``None`` = until every reply is in (each pushed message
                eventually gets a reply or an error reply from the link). ``<= 0`` pushes and returns
                ``[]`` at once, as Flower.

        Memory: it returns every reply at once, decoded with its arrays downloaded, so N replies of an M-byte
        model hold about N x M bytes when it returns. For large models, push with :meth:`push_messages` and
        consume the replies with :meth:`receive` (a small constant number of replies in memory).

        Raises:
            same as :meth:`push_messages` and :meth:`pull_messages`.
        """
        deadline = Deadline(None if timeout is None else max(0.0, check_number(timeout, "timeout")))
        ids = await self.push_messages(messages)
        if timeout is not None and timeout <= 0:
            return []
        out: list[Message] = []
        await self._pull_loop([i for i in ids if i], deadline, out.extend)
        return out

    def receive(self, message_ids: Iterable[str], *, timeout: float | None = None) -> ReplyStream:
        """Yield replies to the given instructions one by one, as they arrive.

        Usage::

            async with driver.receive(ids, timeout=60) as replies:
                async for reply in replies:
                    ...

        (``async for reply in driver.receive(ids)`` works too; the stream closes itself when it ends.)
        The iteration ends when every requested instruction has been answered, or ``timeout`` seconds
        after the first iteration starts.

        Memory: each reply is yielded as soon as it is ready on the link, and its external (blob) arrays are
        downloaded only when it is about to be yielded, so consuming N large replies one at a time holds a
        small constant number of them (the one yielded, plus the one you still hold), not N. The stream pulls
        replies from the link only when asked for the next one: small replies come several per poll (up to
        :data:`READ_AHEAD_BYTES` of them), large ones one per poll; the others wait on the link.

        If you stop iterating early, close the stream (leave the ``async with``, or ``await
        stream.aclose()``): replies pulled but not yielded are then kept by the driver (without their
        external arrays) and returned by a later :meth:`pull_messages` of their ids (their arrays are then
        downloaded, within the link's lease on them, 600 s by default).

        Args:
            message_ids: ids returned by :meth:`push_messages` (``""`` ignored).
            timeout: seconds to wait at most; ``None`` = until every reply is in.

        Raises:
            TypeError, ValueError: bad argument.
            RuntimeError: the driver is not connected.
        """
        ids = normalize_ids(message_ids)
        if timeout is not None:
            check_timeout(timeout, "timeout")
        self._require_open()
        return ReplyStream(self, ids, timeout)

    async def end_run(self) -> list[Message]:
        """End this run on the link (``EndRun``): its queues, unpulled replies and blobs are freed at once
        instead of after the link's idle TTL. :func:`~fl_async.server.run_server_app` calls it when the app's
        main returns or raises.

        Every instruction still queued or in flight gets a ``CANCELLED`` error reply, returned here, so each
        pushed instruction still ends in exactly one reply; replies that were ready but never pulled are dropped
        (logged at INFO with their count). Afterwards the driver stays open, but calls about the run fail with
        :class:`~fl_async.errors.NotFoundError` "run N ended". Idempotent: later calls return ``[]``.

        Returns:
            The CANCELLED error replies, in no particular order.

        Raises:
            RuntimeError: the driver is not connected.
            FlAsyncError: a subclass, if the call fails (the run then ends by the link's
                ``driver_disconnect_grace`` once this driver disconnects, or by its idle TTL).
        """
        transport = self._require_open()
        if self._ended is not None:
            return []
        resp = await transport.call("EndRun", pb.EndRunRequest(run_id=self.run_id))
        self._ended = decode_replies(resp.messages, {})
        if resp.unpulled:
            logger.info("run %d ended with %d reply(ies) never pulled (dropped)", self.run_id, len(resp.unpulled))
        return self._ended

    # ----------------------------------------------------------------------------------------
    # internals

    def _stash(self, wires: Iterable[pb.Message]) -> None:
        """Keep pulled replies nobody read (a stream closed early) for a later pull of their ids."""
        for wire in wires:
            if wire.metadata is not None:
                self._unclaimed[wire.metadata.reply_to_message] = wire

    def _take_stashed(self, ids: Iterable[str], limit: int = 0) -> list[pb.Message]:
        """Remove and return stashed replies to ``ids`` (at most ``limit``, 0 = all)."""
        out: list[pb.Message] = []
        for mid in ids:
            if limit and len(out) >= limit:
                break
            wire = self._unclaimed.pop(mid, None)
            if wire is not None:
                out.append(wire)
        return out

    async def _materialize(self, wires: list[pb.Message]) -> list[Message]:
        """Download the external arrays of pulled replies and decode them (undecodable ones become error
        replies, see :func:`~fl_async.server._base.decode_replies`)."""
        fetched, _ = await _blobs.fetch_blobs(self._blob_client, wires)
        return decode_replies(wires, fetched)

    async def _pull_loop(
        self, ids: list[str], deadline: Deadline, sink: Callable[[list[Message]], None], limit: int = 0
    ) -> None:
        """Long-poll the link for replies to ``ids`` until all are in, none is outstanding any more (as the
        link lists in ``PullMessagesResponse.outstanding``), ``limit`` replies were collected (0: no limit), or
        the deadline passes; hand each batch of replies to ``sink`` as it arrives."""
        transport = self._require_open()
        wanted = dict.fromkeys(ids)
        got = 0
        stashed = self._take_stashed(ids, limit)
        if stashed:
            for wire in stashed:
                wanted.pop(wire.metadata.reply_to_message, None)  # type: ignore[union-attr]
            got += len(stashed)
            sink(await self._materialize(stashed))
        while wanted and not (limit and got >= limit):
            wait = deadline.wait_slice()
            started = time.monotonic()
            req = pb.PullMessagesRequest(
                run_id=self.run_id, message_ids=list(wanted), timeout=wait, max_messages=limit - got if limit else 0
            )
            resp = await transport.call("PullMessages", req, wait=wait)
            replies = await self._materialize(resp.messages)
            got += len(resp.messages)
            if replies:
                sink(replies)
            # the link's explicit answer: ids not listed as outstanding (delivered now, delivered before,
            # unknown, another run's) will never get a reply through this loop
            wanted = dict.fromkeys(still_waiting(wanted, resp))
            if not wanted or deadline.expired():
                return
            if not replies:
                pause = poll_pause(time.monotonic() - started, wait, deadline.remaining())
                if pause:  # the link did not hold the call (tiny max_poll_timeout, or shutting down)
                    await asyncio.sleep(pause)


def _check_max_messages(max_messages: Any) -> int:
    """``max_messages`` of :meth:`AsyncDriver.pull_messages` as the wire's count (0 = no limit)."""
    if max_messages is None:
        return 0
    if isinstance(max_messages, bool) or not isinstance(max_messages, int):
        raise TypeError(f"max_messages must be an int or None, got {type(max_messages).__name__}")
    if not 1 <= max_messages < 2**32:
        raise ValueError(f"max_messages must be in 1..{2**32 - 1} (or None for no limit), got {max_messages}")
    return max_messages

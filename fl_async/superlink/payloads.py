"""The link's side of the blob data path: one store, one server, references from held messages.

:class:`LinkBlobs` is the SuperLink's :class:`~fl_async.superlink.state.PayloadTracker`: the link
calls :meth:`LinkBlobs.retain` when it queues an instruction or stores a reply, and
:meth:`LinkBlobs.release` when the instruction is answered (or expires) and when the reply is
delivered to the driver. Each external array a held message names (``codec.external_arrays``) is a
reference ``(message_id, digest)`` in the :class:`~fl_async.blobs.store.BlobStore`:

* an instruction's blobs stay while it is queued or in flight, i.e. until its reply arrives (the
  node downloads them before running the ClientApp);
* a reply's blobs stay while it waits to be pulled; when the driver pulls it, the references become
  a download lease of the run's driver token, dropped when the driver has downloaded the blob (or
  after ``lease`` seconds);
* blobs uploaded but never referenced (a push that did not happen) are freed after ``linger``
  seconds.

Authorization (``authorize(token)``): a node presents :func:`node_blob_token` (its node id and
session token, checked against the link state: :func:`fl_async.blobs.protocol.node_blob_token`); a driver presents
the ``blob_token`` of
``CreateRunResponse`` (:meth:`LinkBlobs.run_token`). Reading (GET, and what HAS answers) is narrower
(:meth:`LinkBlobs.readable`): a node reads only the arrays of instructions addressed to it, a driver only those of
its run's replies.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import secrets
import ssl as _ssl
import time
from collections.abc import Callable
from typing import Any

from fl_async.blobs.protocol import DEFAULT_CHUNK_SIZE
from fl_async.blobs.protocol import TOKEN_ID as _ID
from fl_async.blobs.protocol import TOKEN_NODE as _NODE
from fl_async.blobs.protocol import TOKEN_RUN as _RUN
from fl_async.blobs.server import BlobServer
from fl_async.blobs.store import BlobState, BlobStore, BlobStoreStatistics
from fl_async.codec import external_arrays
from fl_async.proto.fl_async import v1 as pb

__all__ = ["LinkBlobs", "blob_port_of", "run_blob_token"]

log = logging.getLogger("fl_async.superlink.blobs")


class LinkBlobs:
    """Blob store + blob server of a SuperLink, and its payload tracker.

    Args:
        max_bytes: capacity of the store in bytes (``None``: unbounded); uploads beyond it are refused.
        max_blob_bytes: largest single blob accepted, in bytes.
        linger: seconds an uploaded but unreferenced blob (or a stalled upload) is kept.
        lease: seconds a pulled reply's blobs are kept for the driver to download them.
        chunk_size: bytes per chunk the server sends on downloads.
        sweep_interval: seconds between sweeps of expired leases and idle blobs.
        clock: monotonic clock (seconds).
        quota: most bytes each node or run may have uploaded that no pushed message names yet (``None``: none).
        min_rate: bytes per second an upload must keep up over each ``rate_window`` seconds (0: no floor).
        rate_window: seconds over which ``min_rate`` is measured.
    """

    def __init__(
        self,
        *,
        max_bytes: int | None = None,
        max_blob_bytes: int = 1 << 40,
        linger: float = 120.0,
        lease: float = 600.0,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        sweep_interval: float = 5.0,
        clock: Any = time.monotonic,
        quota: int | None = None,
        min_rate: float = 0.0,
        rate_window: float = 10.0,
    ) -> None:
        self.store = BlobStore(max_bytes=max_bytes, max_blob_bytes=max_blob_bytes, linger=linger, quota=quota)
        self.min_rate = min_rate
        self.rate_window = rate_window
        self.lease = lease
        self.chunk_size = chunk_size
        self.sweep_interval = sweep_interval
        self._clock = clock
        self._node_token: Callable[[int], bytes | None] | None = None
        self._run_tokens: dict[int, bytes] = {}
        self._pending: list[tuple[str, bytes | None]] = []
        # who may read a held message's arrays: its addressee, (b"N", node id) or a reply's (b"D", run id)
        self._readers: dict[str, tuple[tuple[bytes, int], list[bytes]]] = {}  # message id -> (reader, digests)
        self._access: dict[bytes, dict[tuple[bytes, int], int]] = {}  # digest -> {reader: held messages}
        self._flush_scheduled = False
        self.server: BlobServer | None = None
        self._sweeper: asyncio.Task[None] | None = None

    def attach(self, node_token: Callable[[int], bytes | None]) -> None:
        """Check node tokens with ``node_token(node_id)``: the session token of a registered node, else ``None``
        (called once by the SuperLink, with its state's lookup)."""
        self._node_token = node_token

    # ------------------------------------------------------------------------------ tokens

    def run_token(self, run_id: int) -> bytes:
        """The driver token of ``run_id`` (created on first use; given out in CreateRunResponse)."""
        tok = self._run_tokens.get(run_id)
        if tok is None:
            tok = self._run_tokens[run_id] = _RUN + _ID.pack(run_id) + secrets.token_bytes(32)
        return tok

    def run_ended(self, run_id: int) -> None:
        """The run ended: forget its driver token (its blobs are released with its messages)."""
        self._run_tokens.pop(run_id, None)

    def issued_run_token(self, run_id: int) -> bytes | None:
        """The driver token of ``run_id`` if one was given out (``None`` otherwise; nothing is created)."""
        return self._run_tokens.get(run_id)

    def authorize(self, token: bytes) -> bool:
        """Whether ``token`` is a registered node's (:func:`fl_async.blobs.protocol.node_blob_token`) or a run's
        driver token."""
        if len(token) < 1 + _ID.size:
            return False
        kind, (ident,), secret = token[:1], _ID.unpack(token[1 : 1 + _ID.size]), token[1 + _ID.size :]
        if kind == _RUN:
            known = self._run_tokens.get(ident)
            return known is not None and hmac.compare_digest(known, token)
        if kind == _NODE and self._node_token is not None:
            known = self._node_token(ident)
            return known is not None and hmac.compare_digest(known, secret)
        return False

    # ------------------------------------------------------------------------------ tracker

    def retain(self, message: pb.Message) -> None:
        """Reference the external arrays of a message the link now holds (owner: its message id)."""
        refs = list(external_arrays(message))
        if not refs or message.metadata is None:
            return
        md = message.metadata
        try:
            self.store.acquire_many(md.message_id, refs, now=self._clock())
            if md.message_id not in self._readers:  # who may read these arrays: the addressee
                reader = (_NODE, md.dst_node_id) if md.dst_node_id else (_RUN, md.run_id)
                digests = [digest for digest, _ in refs]
                self._readers[md.message_id] = (reader, digests)
                for digest in digests:
                    counts = self._access.setdefault(digest, {})
                    counts[reader] = counts.get(reader, 0) + 1
        except Exception as exc:
            # The receiver will not get the payload and answers PAYLOAD_UNAVAILABLE when decoding.
            log.warning("message %s: cannot reference its payloads: %s", message.metadata.message_id, exc)

    def unavailable(self, message: pb.Message) -> str:
        """Why the link cannot accept ``message``: an external array payload it names is not held (``""`` if all are).

        A payload is held when its upload is complete and verified. Senders upload before they push (the SDK's
        driver and the SuperNode do), so a digest that is unknown, only declared, still uploading or discarded
        (failed integrity check) means the upload never happened or failed: queueing the message would leave its
        receiver waiting for bytes that may never come. The reason names the digest (hex) and its size.
        """
        store = self.store
        for digest, nbytes in external_arrays(message):
            state = store.state(digest)
            name = digest.hex() if isinstance(digest, (bytes, bytearray)) else repr(digest)
            if state is None or state is BlobState.DECLARED:
                return (
                    f"external array payload {name} ({nbytes} bytes) is not held by the link: it was never "
                    f"uploaded to the blob data path, or its upload failed; upload it before pushing"
                )
            if state is not BlobState.COMPLETE:
                return (
                    f"external array payload {name} ({nbytes} bytes) is still being uploaded "
                    f"({store.received(digest)} of {store.nbytes(digest)} bytes received); push after the "
                    f"upload completes"
                )
            held = store.nbytes(digest)
            if held != nbytes:
                return f"external array payload {name} is announced with {nbytes} bytes but held with {held} bytes"
        return ""

    def release(self, message: pb.Message) -> None:
        """The link no longer holds ``message``: drop its references (deferred to the next loop turn).

        A reply (``reply_to_message`` set) is released when the driver pulls it: its blobs become a
        download lease of the run's driver token instead of being freed at once.

        The drop is deferred with ``call_soon`` so that a release followed at once by a retain of the
        same digest (the link answering an instruction with a reply that echoes its array) keeps the
        bytes instead of freeing and re-declaring them.
        """
        md = message.metadata
        if md is None:
            return
        holder = self._run_tokens.get(md.run_id) if md.reply_to_message else None
        self._pending.append((md.message_id, holder))
        if not self._flush_scheduled:
            try:
                asyncio.get_running_loop().call_soon(self._flush)
                self._flush_scheduled = True
            except RuntimeError:  # no loop (sans-IO use): release now
                self._flush()

    def _flush(self) -> None:
        self._flush_scheduled = False
        pending, self._pending = self._pending, []
        now = self._clock()
        for owner, holder in pending:
            if holder is not None:
                self.store.hand_over(owner, holder, expires_at=now + self.lease, now=now)
            else:
                self.store.release(owner, now=now)
            if not self.store.holds(owner):  # (retained again meanwhile: a reply put back for its driver)
                self._forget_reader(owner)

    def _forget_reader(self, owner: str) -> None:
        entry = self._readers.pop(owner, None)
        if entry is None:
            return
        reader, digests = entry
        for digest in digests:
            counts = self._access.get(digest)
            if counts is None:
                continue
            left = counts.get(reader, 0) - 1
            if left > 0:
                counts[reader] = left
            else:
                counts.pop(reader, None)
                if not counts:
                    del self._access[digest]

    def readable(self, token: bytes, digest: bytes) -> bool:
        """Whether the holder of ``token`` (authorized already) may read ``digest`` (GET, and HAS answers): a node
        only the arrays of instructions addressed to it; a run's driver only the arrays of its run's replies
        (waiting to be pulled, or pulled and leased to its token)."""
        if len(token) < 1 + _ID.size:
            return False
        kind, (ident,) = token[:1], _ID.unpack(token[1 : 1 + _ID.size])
        counts = self._access.get(digest)
        if counts is not None and counts.get((kind, ident), 0) > 0:
            return True
        return kind == _RUN and self.store.leased_to(digest, token)

    def statistics(self) -> BlobStoreStatistics:
        """The store's counts (blobs, bytes held, references, leases)."""
        return self.store.statistics()

    # ------------------------------------------------------------------------------ serving

    @property
    def port(self) -> int:
        """The blob server's port (0 before :meth:`start`)."""
        return self.server.port if self.server is not None else 0

    async def start(
        self,
        host: str,
        *,
        ssl: _ssl.SSLContext | None = None,
        port: int = 0,
        backlog: int = 1024,
        header_timeout: float = 10.0,
        gate: Any = None,
        idle_timeout: float = 300.0,
    ) -> None:
        """Serve the store on ``host:port`` (same TLS as the link's APIs) and start sweeping.

        Args:
            host, port: where to listen (port 0: any free port, read back from :attr:`port`).
            ssl: server TLS context, or ``None`` for plain TCP.
            backlog: listen backlog.
            header_timeout: seconds a connection may take to send a whole request header (see
                :class:`~fl_async.blobs.server.BlobServer`).
            gate: the link's :class:`~fl_async.superlink.gate.ConnectionGate` (caps and timeouts), or ``None``.
            idle_timeout: seconds an idle keep-alive connection is kept open.

        Raises:
            OSError: the address cannot be bound.
        """
        self.server = BlobServer(
            self.store,
            authorize=self.authorize,
            ssl=ssl,
            chunk_size=self.chunk_size,
            backlog=backlog,
            clock=self._clock,
            header_timeout=header_timeout,
            min_rate=self.min_rate,
            rate_window=self.rate_window,
            idle_timeout=idle_timeout,
        )
        self.server.uploader_of = uploader_of
        self.server.readable = self.readable
        if gate is not None:
            self.server.gate = gate
            self.server.handshake_timeout = gate.setup_timeout
        await self.server.start(host, port)
        self._sweeper = asyncio.create_task(self._sweep_loop(), name="fl-async-blob-sweeper")
        log.info("blob data path on %s:%d", host, self.server.port)

    async def stop(self) -> None:
        """Stop serving (idempotent)."""
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
            self._sweeper = None
        if self.server is not None:
            await self.server.stop()

    async def _sweep_loop(self) -> None:
        while True:
            await asyncio.sleep(self.sweep_interval)
            try:
                self.store.sweep(self._clock())
            except Exception:
                log.exception("blob sweep failed")


def uploader_of(token: bytes) -> bytes | None:
    """The quota key of a blob token: its kind and id (a node, or a run's driver), not its secret."""
    return token[: 1 + _ID.size] if len(token) > _ID.size else None


def blob_port_of(state: Any) -> int:
    """The blob port to advertise for a link state (0 when the link has no blob data path)."""
    payloads = getattr(state, "payloads", None)
    return payloads.port if isinstance(payloads, LinkBlobs) else 0


def run_blob_token(state: Any, run_id: int) -> bytes:
    """The driver's blob token for ``run_id`` (``b""`` when the link has no blob data path)."""
    payloads = getattr(state, "payloads", None)
    return payloads.run_token(run_id) if isinstance(payloads, LinkBlobs) and payloads.port else b""

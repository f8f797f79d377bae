"""The blob data path's server: streams blobs into and out of a :class:`~fl_async.blobs.store.BlobStore`.

A plain asyncio server (TLS when given an :class:`ssl.SSLContext`, normally the link's own) speaking
:mod:`fl_async.blobs.protocol`. Uploads are received straight into the store's preallocated buffer
and hashed chunk by chunk on the event loop as each chunk completes (while it is still in the CPU's
cache: measured here, that is ~30 % faster than hashing on a worker thread, which on 2 cores competes
with the sender and the loop for the same cores; a 4 MiB chunk holds the loop ~1 ms); downloads write views of
the stored buffer. Every request is authorized by the ``authorize(token)`` callback (the link checks
node and driver tokens) and every length is checked before anything is allocated.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import ssl as _ssl
import time
from collections.abc import Awaitable, Callable
from typing import Any, Self

from fl_async.blobs import protocol as p
from fl_async.blobs._stream import WRITE_HIGH_WATER, BufferedStream
from fl_async.blobs.store import (
    BlobBusyError,
    BlobQuotaError,
    BlobState,
    BlobStore,
    BlobStoreFullError,
    UnknownBlobError,
)
from fl_async.errors import IntegrityError

__all__ = ["Authorize", "BlobServer"]

log = logging.getLogger(__name__)

Authorize = Callable[[bytes], "bool | Awaitable[bool]"]
"""``authorize(token) -> bool`` (or an awaitable of it): whether a request carrying ``token`` is allowed."""


class _Handle:
    """Cancels the latest timer of a re-arming chain."""

    def __init__(self, handles: list[asyncio.TimerHandle]) -> None:
        self._handles = handles

    def cancel(self) -> None:
        self._handles[0].cancel()


class BlobServer:
    """Serve a :class:`BlobStore` over the blob protocol.

    Args:
        store: where blobs live.
        authorize: ``authorize(token) -> bool`` (sync or async), called once per request; ``None``
            allows every request (tests, trusted networks only).
        ssl: server TLS context (e.g. the link's, from :func:`fl_async._net.server_ssl_context`).
        max_blob_bytes: largest blob accepted in bytes (default: the store's ``max_blob_bytes``).
        chunk_size: bytes per chunk sent on downloads.
        max_chunk: largest chunk accepted on uploads, in bytes.
        wait_timeout: seconds a download of an incomplete blob (or a second writer of the same blob)
            waits for the upload in progress before getting ``NOT_READY`` (``BUSY``).
        io_timeout: seconds without progress after which a connection in the middle of a request is
            dropped.
        header_timeout: seconds a connection may take to send a whole request header and token once it
            has sent its first byte (a slow or partial header, e.g. a slow-loris client, is dropped then).
        idle_timeout: seconds an idle keep-alive connection is kept open.
        min_rate: bytes per second an upload body must keep up, measured over each ``rate_window`` seconds;
            a slower upload is dropped and the bytes it sent are freed at once (``0``: no floor).
        rate_window: seconds over which ``min_rate`` is measured.
        backlog: listen backlog.
        clock: monotonic clock in seconds (for the store's ``now``).
    """

    def __init__(
        self,
        store: BlobStore,
        *,
        authorize: Authorize | None,
        ssl: _ssl.SSLContext | None = None,
        max_blob_bytes: int | None = None,
        chunk_size: int = p.DEFAULT_CHUNK_SIZE,
        max_chunk: int = p.MAX_CHUNK_SIZE,
        wait_timeout: float = 60.0,
        io_timeout: float = 60.0,
        header_timeout: float = 10.0,
        idle_timeout: float = 300.0,
        min_rate: float = 0.0,
        rate_window: float = 10.0,
        backlog: int = 128,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not 0 < chunk_size <= max_chunk:
            raise ValueError(f"chunk_size must be in 1..{max_chunk} bytes, got {chunk_size}")
        self.store = store
        self._authorize = authorize
        self._ssl = ssl
        self.max_blob_bytes = min(max_blob_bytes or store.max_blob_bytes, store.max_blob_bytes)
        self.chunk_size = chunk_size
        self.max_chunk = max_chunk
        self.wait_timeout = wait_timeout
        self.io_timeout = io_timeout
        self.header_timeout = header_timeout
        self.idle_timeout = idle_timeout
        self.min_rate = min_rate
        self.rate_window = rate_window
        self.backlog = backlog
        self._clock = clock
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._streams: set[BufferedStream] = set()
        self._events: dict[bytes, asyncio.Event] = {}
        store.add_listener(self._on_store_change)
        self.port = 0
        """The bound TCP port (after :meth:`start`)."""
        self.bytes_in = 0
        """Payload bytes received by uploads since start (for metrics)."""
        self.bytes_out = 0
        """Payload bytes sent by downloads since start (for metrics)."""
        self.too_large = 0
        """Uploads refused for exceeding a size limit (blob or store capacity), for metrics."""
        self.handshake_timeout = io_timeout
        """Seconds a TLS client gets to finish its handshake (the link sets its connection setup timeout)."""
        self.gate: Any = None
        """The link's :class:`~fl_async.superlink.gate.ConnectionGate`, or ``None`` (every connection admitted)."""
        self.uploader_of: Callable[[bytes], object | None] = lambda token: token or None
        """Quota key of an upload's token (the store's ``uploader``); the link maps node and run tokens."""
        self.readable: Callable[[bytes, bytes], bool] = lambda token, digest: True
        """``readable(token, digest)``: whether an authorized caller may read the blob (GET) and learn whether the
        server holds it (HAS); the link allows a node only its instructions' arrays, a driver only its replies'."""

    # ------------------------------------------------------------------------------ lifecycle

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> None:
        """Listen on ``host:port`` (``port`` 0 picks a free port; read it back from :attr:`port`).

        Raises:
            OSError: the address cannot be bound.
            RuntimeError: already started.
        """
        if self._server is not None:
            raise RuntimeError("BlobServer already started")
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: BufferedStream(self._on_connect),
            host,
            port,
            ssl=self._ssl,
            backlog=self.backlog,
            ssl_handshake_timeout=self.handshake_timeout if self._ssl is not None else None,
        )
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        """Stop listening, drop open connections and wait (bounded) for their handlers to end."""
        if self._server is None:
            return
        self._server.close()
        for s in list(self._streams):
            s.abort()
        for t in list(self._tasks):
            t.cancel()
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=5.0)
        try:
            await asyncio.wait_for(self._server.wait_closed(), 5.0)
        except TimeoutError:  # pragma: no cover
            log.warning("blob server: wait_closed timed out")
        self._server = None

    async def __aenter__(self) -> Self:
        if self._server is None:
            await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # ------------------------------------------------------------------------------ plumbing

    def _on_store_change(self, digest: bytes, state: BlobState | None) -> None:
        ev = self._events.pop(digest, None)
        if ev is not None:
            ev.set()

    async def _wait_change(self, digest: bytes, deadline: float) -> bool:
        """Wait until the store reports a change of ``digest``; False when ``deadline`` passed."""
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        ev = self._events.setdefault(digest, asyncio.Event())
        try:
            await asyncio.wait_for(ev.wait(), remaining)
        except TimeoutError:
            return False
        return True

    def _on_connect(self, stream: BufferedStream) -> None:
        if self.gate is not None and stream.transport is not None:
            admitted = self.gate.admit(
                stream.transport,
                busy=lambda: stream.in_request,
                started=lambda: stream.received > 0,
                received=lambda: stream.received,
            )
            if not admitted:
                return
            transport = stream.transport
            stream.closed.add_done_callback(lambda _: self.gate.release(transport))
        self._streams.add(stream)
        stream.transport.set_write_buffer_limits(high=WRITE_HIGH_WATER)  # type: ignore[union-attr]
        task = asyncio.ensure_future(self._serve(stream))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _allowed(self, token: bytes) -> bool:
        if self._authorize is None:
            return True
        ok = self._authorize(token)
        if inspect.isawaitable(ok):
            ok = await ok
        return bool(ok)

    @staticmethod
    def _reply(stream: BufferedStream, status: p.Status, message: str = "", *, offset: int = 0, total: int = 0) -> None:
        stream.write(p.encode_reply(status, offset=offset, total=total, message=message))

    async def _serve(self, stream: BufferedStream) -> None:
        try:
            while True:
                stream.release_staging()  # an idle connection holds no buffer
                stream.in_request = False
                try:
                    async with asyncio.timeout(self.idle_timeout):
                        if not await stream.wait_readable():
                            return
                except TimeoutError:
                    return
                stream.in_request = True
                async with asyncio.timeout(self.header_timeout):
                    header = await stream.readexactly(p.REQUEST_HEADER_SIZE)
                    try:
                        req = p.decode_request_header(header, max_total=self.max_blob_bytes)
                    except p.FrameError as exc:
                        flag = " (max_blob_bytes, --max-blob-bytes)" if exc.status is p.Status.TOO_LARGE else ""
                        self._reply(stream, exc.status, f"{exc}{flag}")
                        await stream.drain()
                        return  # the stream cannot be trusted any more
                    token = await stream.readexactly(req.token_len)
                if not await self._allowed(token):
                    self._reply(stream, p.Status.UNAUTHORIZED, "token refused by the link")
                    await stream.drain()
                    return
                if req.op is p.Op.HAS:
                    if self.readable(token, req.digest):
                        nb = self.store.nbytes(req.digest)
                        self._reply(stream, p.Status.OK, offset=self.store.received(req.digest), total=nb or 0)
                    else:  # as for a blob the server does not hold: HAS is no oracle for what others sent
                        self._reply(stream, p.Status.OK, offset=0, total=0)
                elif req.op is p.Op.PUT:
                    if not await self._put(stream, req, token):
                        return
                else:
                    if not await self._get(stream, req, token):
                        return
                await stream.drain()
        except (asyncio.IncompleteReadError, ConnectionError, TimeoutError, _ssl.SSLError):
            pass  # the peer went away or stalled: nothing to answer
        except asyncio.CancelledError:
            raise
        except Exception:  # the server never dies on a request
            log.exception("blob server: unexpected error")
            with contextlib.suppress(ConnectionError):
                self._reply(stream, p.Status.INTERNAL, "internal error in the blob server")
        finally:
            stream.close()
            self._streams.discard(stream)

    # ------------------------------------------------------------------------------ PUT

    def _watch_rate(self, stream: BufferedStream, slow: list[bool]) -> _Handle | None:
        """Every ``rate_window`` s, drop ``stream`` (and set ``slow[0]``) if it received less than
        ``min_rate * rate_window`` bytes in that window."""
        if self.min_rate <= 0:
            return None
        loop = asyncio.get_running_loop()
        floor = self.min_rate * self.rate_window
        mark = [stream.received]
        handle: list[asyncio.TimerHandle] = []

        def check() -> None:
            if stream.received - mark[0] < floor:
                slow[0] = True
                stream.close()
                if stream.transport is not None:
                    stream.transport.abort()
                return
            mark[0] = stream.received
            handle[0] = loop.call_later(self.rate_window, check)

        handle.append(loop.call_later(self.rate_window, check))
        return _Handle(handle)

    async def _put(self, stream: BufferedStream, req: p.Request, token: bytes = b"") -> bool:
        """Handle a PUT; returns whether the connection can carry another request."""
        deadline = time.monotonic() + self.wait_timeout
        while True:
            try:
                up = self.store.begin_upload(
                    req.digest, req.total, stream, now=self._clock(), uploader=self.uploader_of(token)
                )
                break
            except BlobBusyError as exc:
                if not await self._wait_change(req.digest, deadline):
                    self._reply(stream, p.Status.BUSY, str(exc))
                    return True
            except BlobQuotaError as exc:
                self._reply(stream, p.Status.STORE_FULL, f"{exc} (blob_quota_bytes, --blob-quota-bytes)")
                return True
            except BlobStoreFullError as exc:
                self._reply(stream, p.Status.STORE_FULL, f"{exc} (blob_store_bytes, --blob-store-bytes)")
                return True
            except IntegrityError as exc:
                self._reply(stream, p.Status.SIZE_MISMATCH, str(exc))
                return True
            except ValueError as exc:
                self.too_large += 1
                self._reply(stream, p.Status.TOO_LARGE, f"{exc} (max_blob_bytes, --max-blob-bytes)")
                return True
        if up is None:
            self._reply(stream, p.Status.EXISTS, offset=req.total, total=req.total)
            return True
        self._reply(stream, p.Status.CONTINUE, offset=up.received, total=up.nbytes)
        done = False
        slow = [False]
        watch = self._watch_rate(stream, slow)
        try:
            remaining = up.nbytes - up.received
            while remaining:
                async with asyncio.timeout(self.io_timeout):
                    hdr = await stream.readexactly(p.CHUNK_HEADER_SIZE)
                    n = p.decode_chunk_header(hdr, remaining=remaining, max_chunk=self.max_chunk)
                    await stream.readinto(up.next_view(n))
                up.advance(n)
                self.bytes_in += n
                remaining -= n
                up.hasher.update(up.take_unhashed())  # on the loop, while the chunk is in cache
            done = True
            try:
                self.store.finish_upload(up, now=self._clock())
            except IntegrityError as exc:
                self._reply(stream, p.Status.INTEGRITY, str(exc))
                return True
            self._reply(stream, p.Status.OK, offset=up.nbytes, total=up.nbytes)
            return True
        except p.FrameError as exc:
            self._reply(stream, exc.status, str(exc))
            return False
        finally:
            if watch is not None:
                watch.cancel()
            if slow[0] and not done:  # too slow: free what it sent at once (no resume)
                log.warning(
                    "blob upload %s… dropped: below %d bytes/s over %g s (blob_min_rate, --blob-min-rate)",
                    req.digest.hex()[:16],
                    self.min_rate,
                    self.rate_window,
                )
                self.store.discard_upload(up, now=self._clock())
            elif not done:
                self.store.abort_upload(up, now=self._clock())

    # ------------------------------------------------------------------------------ GET

    async def _get(self, stream: BufferedStream, req: p.Request, token: bytes) -> bool:
        """Handle a GET; returns whether the connection can carry another request."""
        store = self.store
        if not self.readable(token, req.digest):
            self._reply(
                stream, p.Status.NOT_FOUND, f"blob {req.digest.hex()[:16]}… is not held by the link for this caller"
            )
            return True
        deadline = time.monotonic() + self.wait_timeout
        while True:
            state = store.state(req.digest)
            if state is None:
                self._reply(stream, p.Status.NOT_FOUND, f"blob {req.digest.hex()[:16]}… is not held by the link")
                return True
            nbytes = store.nbytes(req.digest)
            if nbytes != req.total:
                self._reply(
                    stream, p.Status.SIZE_MISMATCH, f"blob is {nbytes} bytes, not {req.total}", total=nbytes or 0
                )
                return True
            if state is BlobState.COMPLETE:
                break
            if not await self._wait_change(req.digest, deadline):
                self._reply(stream, p.Status.NOT_READY, f"blob upload did not complete within {self.wait_timeout:g} s")
                return True
        try:
            view = store.open_read(req.digest)
        except UnknownBlobError:  # pragma: no cover - freed between the check and here (same task: cannot)
            self._reply(stream, p.Status.NOT_FOUND, "blob was freed")
            return True
        try:
            self._reply(stream, p.Status.OK, offset=req.offset, total=req.total)
            pos, end, chunk = req.offset, req.total, self.chunk_size
            while pos < end:
                n = min(chunk, end - pos)
                stream.write(p.encode_chunk_header(n))
                await stream.write_all(view[pos : pos + n], timeout=self.io_timeout)
                self.bytes_out += n
                pos += n
        finally:
            del view  # the transport may still hold slices; the buffer lives as long as they do
            store.close_read(req.digest, now=self._clock())
        store.downloaded(token, req.digest, count=req.count, now=self._clock())
        return True

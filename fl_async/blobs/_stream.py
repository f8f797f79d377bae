"""A minimal asyncio byte stream that reads straight into caller-provided buffers.

:class:`asyncio.StreamReader` copies every received byte twice (into its internal buffer, then into
the ``bytes`` it returns). :class:`BufferedStream` is an :class:`asyncio.BufferedProtocol`: while a
:meth:`BufferedStream.readinto` is pending, the transport (plain TCP or TLS) writes received bytes
directly into the caller's memoryview; small reads (headers) go through a small staging buffer.
"""

from __future__ import annotations

import asyncio
import ssl as _ssl
from collections.abc import Callable

__all__ = ["BufferedStream", "open_stream"]

_STAGING = 256 * 1024
WRITE_PIECE = 1 << 20
"""Bytes handed to the transport at a time by :meth:`BufferedStream.write_all`."""
WRITE_HIGH_WATER = 256 * 1024
"""Transport write-buffer high-water mark: what the kernel does not take at once is copied into the
transport's buffer, so this bounds the per-connection copy (memory independent of payload size)."""
_MAX_PENDING = 1 << 20  # pause reading when this many unread bytes pile up in the staging area


class BufferedStream(asyncio.BufferedProtocol):
    """Protocol + stream API: :meth:`readexactly`, :meth:`readinto`, :meth:`write`, :meth:`drain`, :meth:`close`."""

    def __init__(self, on_connect: Callable[[BufferedStream], None] | None = None) -> None:
        self._on_connect = on_connect
        self.transport: asyncio.Transport | None = None
        # Allocated when bytes arrive with no read target (lazily: an idle connection holds none), and given
        # back by release_staging(). A memoryview, not the bytearray: asyncio's TLS reader fills
        # ``buf[offset:]``, which would be a copy for a bytearray (the bytes would be lost).
        self._staging_view: memoryview | None = None
        self.received = 0
        """Bytes received on this connection so far (a progress counter for rate checks)."""
        self.in_request = False
        """Set by the server while it serves a request on this connection."""
        self._pending = bytearray()  # received bytes nobody asked for yet
        self._target: memoryview | None = None
        self._filled = 0
        self._waiter: asyncio.Future[None] | None = None
        self._eof = False
        self._exc: BaseException | None = None
        self._paused_reading = False
        self._write_paused = False
        self._drain_waiter: asyncio.Future[None] | None = None
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    # ---------------------------------------------------------------- protocol callbacks
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        if self._on_connect is not None:
            self._on_connect(self)

    def get_buffer(self, sizehint: int) -> memoryview:
        if self._target is not None and not self._pending:
            return self._target[self._filled :]
        if self._staging_view is None:
            self._staging_view = memoryview(bytearray(_STAGING))
        return self._staging_view

    def release_staging(self) -> None:
        """Give back the staging buffer (e.g. while the connection is idle); it is allocated again when needed."""
        self._staging_view = None

    def buffer_updated(self, nbytes: int) -> None:
        self.received += nbytes
        if self._target is not None and not self._pending:
            self._filled += nbytes
            if self._filled >= len(self._target):
                self._target = None  # full: later bytes go to staging
                self._wake()
            return
        assert self._staging_view is not None
        self._pending += self._staging_view[:nbytes]
        if len(self._pending) > _MAX_PENDING and not self._paused_reading and self.transport is not None:
            self._paused_reading = True
            self.transport.pause_reading()
        self._wake()

    def eof_received(self) -> bool:
        self._eof = True
        self._wake()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._eof = True
        self._exc = exc
        self._wake()
        if self._drain_waiter is not None and not self._drain_waiter.done():
            self._drain_waiter.set_exception(ConnectionResetError("connection lost"))
        if not self.closed.done():
            self.closed.set_result(None)

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        if self._drain_waiter is not None and not self._drain_waiter.done():
            self._drain_waiter.set_result(None)

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def _eof_error(self, missing: int) -> BaseException:
        if self._exc is not None:
            return ConnectionResetError(f"connection lost with {missing} bytes still expected: {self._exc}")
        return asyncio.IncompleteReadError(b"", missing)

    async def _wait(self) -> None:
        self._waiter = asyncio.get_running_loop().create_future()
        try:
            await self._waiter
        finally:
            self._waiter = None

    # ---------------------------------------------------------------- stream API
    async def readinto(self, view: memoryview) -> None:
        """Fill ``view`` completely with the next received bytes.

        Raises:
            asyncio.IncompleteReadError: the peer closed the stream first.
            ConnectionResetError: the connection broke first.
        """
        n = len(view)
        take = min(n, len(self._pending))
        if take:
            view[:take] = memoryview(self._pending)[:take]
            del self._pending[:take]
            self._maybe_resume()
        if take == n:
            return
        self._target, self._filled = view, take
        try:
            while self._filled < n:
                if self._pending:  # bytes landed in staging meanwhile (should not happen with a target)
                    more = min(n - self._filled, len(self._pending))
                    view[self._filled : self._filled + more] = memoryview(self._pending)[:more]
                    del self._pending[:more]
                    self._filled += more
                    continue
                if self._eof:
                    raise self._eof_error(n - self._filled)
                self._maybe_resume()
                await self._wait()
        finally:
            self._target = None

    async def readexactly(self, n: int) -> bytes:
        """Read exactly ``n`` bytes (for small frames: headers, tokens, messages)."""
        buf = bytearray(n)
        await self.readinto(memoryview(buf))
        return bytes(buf)

    def _maybe_resume(self) -> None:
        if self._paused_reading and len(self._pending) <= _MAX_PENDING // 2 and self.transport is not None:
            self._paused_reading = False
            self.transport.resume_reading()

    def write(self, data: bytes | bytearray | memoryview) -> None:
        """Queue ``data`` for sending (the transport sends what it can at once, buffers the rest)."""
        if self.transport is None or self.transport.is_closing():
            raise ConnectionResetError("connection is closed")
        self.transport.write(data)

    async def write_all(self, data: memoryview, *, timeout: float) -> None:
        """Send ``data`` in :data:`WRITE_PIECE` pieces, waiting for the transport to drain in between.

        Raises:
            TimeoutError: a piece could not be handed over within ``timeout`` seconds.
            ConnectionResetError: the connection broke.
        """
        for pos in range(0, len(data), WRITE_PIECE):
            self.write(data[pos : pos + WRITE_PIECE])
            if self._write_paused:
                async with asyncio.timeout(timeout):
                    await self.drain()

    async def drain(self) -> None:
        """Wait until the transport's write buffer is below its high-water mark."""
        if self._exc is not None or (self.transport is not None and self.transport.is_closing() and self._eof):
            raise ConnectionResetError("connection lost")
        if not self._write_paused:
            return
        self._drain_waiter = asyncio.get_running_loop().create_future()
        try:
            await self._drain_waiter
        finally:
            self._drain_waiter = None

    @property
    def at_eof(self) -> bool:
        """Whether the peer closed and nothing unread remains."""
        return self._eof and not self._pending

    async def wait_readable(self) -> bool:
        """Wait until a byte is available or the peer closes; returns False on a clean EOF."""
        while not self._pending:
            if self._eof:
                return False
            await self._wait()
        return True

    def close(self) -> None:
        """Close the connection (idempotent)."""
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()

    def abort(self) -> None:
        """Drop the connection at once, discarding buffered output."""
        if self.transport is not None:
            self.transport.abort()


async def open_stream(
    host: str,
    port: int,
    *,
    ssl: _ssl.SSLContext | None = None,
    server_hostname: str | None = None,
    write_buffer: int = WRITE_HIGH_WATER,
) -> BufferedStream:
    """Connect to ``host:port`` (TLS when ``ssl`` is given) and return a :class:`BufferedStream`.

    Raises:
        OSError, ssl.SSLError: the connection or handshake failed.
    """
    loop = asyncio.get_running_loop()
    kw = {}
    if ssl is not None:
        kw["server_hostname"] = server_hostname if server_hostname is not None else host
    _transport, proto = await loop.create_connection(BufferedStream, host, port, ssl=ssl, **kw)
    proto.transport.set_write_buffer_limits(high=write_buffer)  # type: ignore[union-attr]
    return proto

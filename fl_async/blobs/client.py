"""The blob data path's client: upload and download blobs by digest, resuming interrupted transfers.

Used by the driver and the node runtime to move external array payloads (see :mod:`fl_async.codec`)
to and from the SuperLink's :class:`~fl_async.blobs.server.BlobServer`. Downloads are written into
one preallocated buffer and verified against their BLAKE3 digest; nothing unverified is returned.
"""

from __future__ import annotations

import asyncio
import ssl as _ssl
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Self, TypeVar

from fl_async._digest import new_hasher
from fl_async.blobs import protocol as p
from fl_async.blobs._stream import BufferedStream, open_stream
from fl_async.blobs.buffers import BufferPool, default_pool
from fl_async.errors import (
    FlAsyncError,
    IntegrityError,
    InvalidRequestError,
    LinkConnectionError,
    LinkTimeoutError,
    NotAuthorizedError,
    RefusedByLinkError,
    ResourceExhaustedError,
)

__all__ = ["BlobClient"]

Buffer = bytes | bytearray | memoryview

T = TypeVar("T")


class _Retryable(FlAsyncError):
    """An I/O failure worth retrying (the connection broke or stalled)."""


def _first(group: BaseExceptionGroup) -> BaseException:
    exc: BaseException = group
    while isinstance(exc, BaseExceptionGroup):
        exc = exc.exceptions[0]
    return exc


def _status_error(reply: p.Reply, message: str, what: str) -> FlAsyncError:
    s = reply.status
    text = f"{what}: {s.name}" + (f": {message}" if message else "")
    if s in (p.Status.INTEGRITY, p.Status.SIZE_MISMATCH):
        return IntegrityError(text)
    if s is p.Status.UNAUTHORIZED:
        return NotAuthorizedError(text, status=s.name, detail=message)
    if s in (p.Status.TOO_LARGE, p.Status.STORE_FULL):
        return ResourceExhaustedError(text, status=s.name, detail=message)
    if s in (p.Status.NOT_READY, p.Status.BUSY):
        return LinkTimeoutError(text)
    if s in (p.Status.BAD_REQUEST, p.Status.NOT_FOUND):
        return InvalidRequestError(text, status=s.name, detail=message)
    return RefusedByLinkError(text, status=s.name, detail=message)


class BlobClient:
    """Client of a blob server (one per link; keeps a few keep-alive connections).

    Args:
        host: the link's host.
        port: the blob port (``blob_port`` from CreateNodeResponse / CreateRunResponse).
        ssl: client TLS context (the same as for the link's gRPC APIs), or ``None`` for plain TCP.
        server_hostname: TLS name to verify (default: ``host``).
        token: authorization token sent with every request (node session token, driver token).
        chunk_size: bytes per chunk on uploads.
        max_retries: reconnections attempted per transfer after an I/O failure; each resumes from the
            bytes already transferred.
        timeout: seconds without progress (connect, reply, chunk) before a transfer attempt fails.
        max_connections: idle connections kept for reuse.
        pool: where download buffers come from (default: the process-wide
            :func:`~fl_async.blobs.buffers.default_pool`): a buffer whose arrays the application has
            dropped is reused by a later download of the same size.
    """

    def __init__(
        self,
        host: str,
        port: int,
        *,
        ssl: _ssl.SSLContext | None = None,
        server_hostname: str | None = None,
        token: bytes = b"",
        chunk_size: int = p.DEFAULT_CHUNK_SIZE,
        max_retries: int = 3,
        timeout: float = 60.0,
        max_connections: int = 8,
        pool: BufferPool | None = None,
    ) -> None:
        if not 0 < chunk_size <= p.MAX_CHUNK_SIZE:
            raise ValueError(f"chunk_size must be in 1..{p.MAX_CHUNK_SIZE} bytes, got {chunk_size}")
        if len(token) > p.MAX_TOKEN_SIZE:
            raise ValueError(f"token of {len(token)} bytes exceeds {p.MAX_TOKEN_SIZE} bytes")
        self.host, self.port = host, port
        self._ssl = ssl
        self._server_hostname = server_hostname
        self.token = bytes(token)
        self.chunk_size = chunk_size
        self.max_retries = max_retries
        self.timeout = timeout
        self.max_connections = max_connections
        self.pool = pool if pool is not None else default_pool()
        self._idle: list[BufferedStream] = []
        self._closed = False

    @property
    def address(self) -> str:
        """``host:port`` of the blob server."""
        return f"{self.host}:{self.port}"

    # ------------------------------------------------------------------------------ connections

    async def _connect(self) -> BufferedStream:
        if self._closed:
            raise RuntimeError("BlobClient is closed")
        while self._idle:
            s = self._idle.pop()
            if not s.at_eof and s.transport is not None and not s.transport.is_closing():
                return s
            s.close()
        try:
            async with asyncio.timeout(self.timeout):
                return await open_stream(self.host, self.port, ssl=self._ssl, server_hostname=self._server_hostname)
        except _ssl.SSLError as exc:
            raise LinkConnectionError(f"blob server {self.address}: TLS failure: {exc}") from exc
        except (OSError, TimeoutError) as exc:
            raise _Retryable(f"cannot connect: {type(exc).__name__}: {exc}") from exc

    def _recycle(self, s: BufferedStream) -> None:
        if self._closed or len(self._idle) >= self.max_connections or s.at_eof:
            s.close()
        else:
            self._idle.append(s)

    async def aclose(self) -> None:
        """Close idle connections; the client cannot be used afterwards."""
        self._closed = True
        for s in self._idle:
            s.close()
        self._idle.clear()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def _read_reply(self, s: BufferedStream, what: str) -> tuple[p.Reply, str]:
        async with asyncio.timeout(self.timeout):
            hdr = await s.readexactly(p.REPLY_HEADER_SIZE)
            try:
                reply = p.decode_reply_header(hdr)
            except p.FrameError as exc:
                raise LinkConnectionError(f"{what}: malformed reply from {self.address}: {exc}") from None
            msg = (await s.readexactly(reply.message_len)).decode("utf-8", "replace") if reply.message_len else ""
        return reply, msg

    async def _attempts(self, what: str, fn: Callable[[BufferedStream], Awaitable[T]]) -> T:
        """Run ``fn(stream)`` with retries on I/O failures; map them to LinkConnectionError at the end."""
        last: BaseException | None = None
        for attempt in range(self.max_retries + 1):
            if attempt:
                await asyncio.sleep(min(0.05 * 2 ** (attempt - 1), 1.0))  # backoff before reconnecting
            s: BufferedStream | None = None
            try:
                s = await self._connect()
                result = await fn(s)
            except _Retryable as exc:
                last = exc
            except FlAsyncError:  # a definite answer (LinkTimeoutError is also a TimeoutError): no retry
                if s is not None:
                    s.abort()
                raise
            except (asyncio.IncompleteReadError, ConnectionError, TimeoutError, OSError) as exc:
                last = exc
            except _ssl.SSLError as exc:
                if s is not None:
                    s.abort()
                raise LinkConnectionError(f"{what} at {self.address}: TLS failure: {exc}") from exc
            except BaseException:
                if s is not None:
                    s.abort()
                raise
            else:
                self._recycle(s)
                return result
            if s is not None:
                s.abort()
        if isinstance(last, TimeoutError):
            raise LinkTimeoutError(f"{what} at {self.address}: no progress within {self.timeout:g} s") from last
        raise LinkConnectionError(
            f"{what} at {self.address}: failed after {self.max_retries + 1} attempts: {type(last).__name__}: {last}"
        ) from last

    # ------------------------------------------------------------------------------ operations

    async def has(self, digest: bytes) -> int:
        """How many bytes of ``digest`` the server holds (its length when complete, 0 when unknown).

        Raises:
            NotAuthorizedError: the token was refused.
            LinkConnectionError, LinkTimeoutError: the server could not be reached.
        """
        what = f"HAS {digest.hex()[:16]}…"
        req = p.encode_request(p.Op.HAS, digest, token=self.token)

        async def run(s: BufferedStream) -> int:
            s.write(req)
            reply, msg = await self._read_reply(s, what)
            if reply.status is not p.Status.OK:
                raise _status_error(reply, msg, what)
            return reply.offset

        return await self._attempts(what, run)

    async def put(self, digest: bytes, buffer: Buffer) -> int:
        """Upload ``buffer`` as blob ``digest`` (BLAKE3 digest of the buffer, see :mod:`fl_async._digest`), unless
        the server has it.

        The server answers whether it holds the blob before any byte is sent (a blob already stored is
        skipped); an interrupted upload resumes from the bytes the server kept.

        Returns:
            Bytes actually sent (0 when the server already had the blob).

        Raises:
            IntegrityError: the server found the bytes do not hash to ``digest`` (nothing stored), or it
                knows the digest with another length.
            NotAuthorizedError, ResourceExhaustedError (too large, store full), LinkTimeoutError (another
                writer's upload of the same blob stalled), InvalidRequestError.
            LinkConnectionError: I/O failed on every attempt.
        """
        view = memoryview(buffer).cast("B") if not isinstance(buffer, memoryview) or buffer.format != "B" else buffer
        total = view.nbytes
        what = f"PUT {digest.hex()[:16]}… ({total} bytes)"
        req = p.encode_request(p.Op.PUT, digest, total=total, token=self.token)
        sent = 0

        async def run(s: BufferedStream) -> int:
            nonlocal sent
            s.write(req)
            reply, msg = await self._read_reply(s, what)
            if reply.status is p.Status.EXISTS:
                return sent
            if reply.status is not p.Status.CONTINUE:
                raise _status_error(reply, msg, what)
            pos, chunk = reply.offset, self.chunk_size
            while pos < total:
                n = min(chunk, total - pos)
                s.write(p.encode_chunk_header(n))
                await s.write_all(view[pos : pos + n], timeout=self.timeout)
                pos += n
                sent += n
            reply, msg = await self._read_reply(s, what)
            if reply.status is not p.Status.OK:
                raise _status_error(reply, msg, what)
            return sent

        return await self._attempts(what, run)

    async def get(
        self, digest: bytes, nbytes: int, *, out: bytearray | memoryview | None = None, count: int = 1
    ) -> bytearray | memoryview:
        """Download blob ``digest`` of ``nbytes`` bytes into one preallocated buffer and verify it.

        An interrupted download resumes from the bytes already received (at most ``max_retries``
        times); the digest is computed incrementally while receiving.

        Args:
            digest: BLAKE3 digest of the payload (32 bytes).
            nbytes: its length in bytes, as announced by the message (``Array.nbytes``).
            out: optional destination of exactly ``nbytes`` bytes (default: a writable ``memoryview``
                of format ``"B"`` from the client's :attr:`pool`, new or reused; fully overwritten).
            count: how many pulled messages this download serves (settles that many download leases
                on the link; see :meth:`fl_async.blobs.store.BlobStore.downloaded`).

        Returns:
            The buffer holding the verified payload (``out`` when given).

        Raises:
            IntegrityError: the bytes do not hash to ``digest``, or the server knows another length.
            InvalidRequestError: the server does not hold the blob (``NOT_FOUND``).
            LinkTimeoutError: the blob's upload did not complete in time (``NOT_READY``), or no progress.
            NotAuthorizedError, LinkConnectionError.
        """
        if nbytes < 0:
            raise ValueError(f"nbytes must be >= 0, got {nbytes}")
        buf = out
        dest = None if out is None else memoryview(out).cast("B")
        if dest is not None and dest.nbytes != nbytes:
            raise ValueError(f"out has {dest.nbytes} bytes, expected {nbytes}")
        what = f"GET {digest.hex()[:16]}… ({nbytes} bytes)"
        hasher = new_hasher()
        received = 0  # bytes received and hashed (a retry resumes here)

        async def run(s: BufferedStream) -> None:
            nonlocal received, buf, dest
            s.write(p.encode_request(p.Op.GET, digest, offset=received, total=nbytes, token=self.token, count=count))
            reply, msg = await self._read_reply(s, what)
            if reply.status is not p.Status.OK:
                raise _status_error(reply, msg, what)
            if reply.offset != received or reply.total != nbytes:
                raise LinkConnectionError(f"{what}: server answered range {reply.offset}..{reply.total}")
            if dest is None:  # allocated once the server has agreed to send (kept across retries)
                buf = self.pool.allocate(nbytes)
                dest = memoryview(buf).cast("B")
            while received < nbytes:
                async with asyncio.timeout(self.timeout):
                    hdr = await s.readexactly(p.CHUNK_HEADER_SIZE)
                    try:
                        n = p.decode_chunk_header(hdr, remaining=nbytes - received, max_chunk=p.MAX_CHUNK_SIZE)
                    except p.FrameError as exc:
                        raise LinkConnectionError(f"{what}: malformed chunk: {exc}") from None
                    await s.readinto(dest[received : received + n])
                # Hashed on the loop while the chunk is still in cache (faster than a worker thread on
                # 2 cores, see fl_async/blobs/server.py); a 4 MiB chunk takes ~1 ms.
                hasher.update(dest[received : received + n])
                received += n

        await self._attempts(what, run)
        assert buf is not None  # run() allocated it on the server's OK
        if hasher.digest() != digest:
            raise IntegrityError(f"{what}: received bytes do not match the digest (got {hasher.hexdigest()[:16]}…)")
        return buf

    async def put_many(self, blobs: Mapping[bytes, Buffer], *, concurrency: int = 4) -> int:
        """:meth:`put` every ``digest -> buffer``, at most ``concurrency`` at a time.

        Returns:
            Total bytes sent. Raises the first error (the other transfers are cancelled).
        """
        sem = asyncio.Semaphore(max(1, concurrency))

        async def one(d: bytes, b: Buffer) -> int:
            async with sem:
                return await self.put(d, b)

        try:
            async with asyncio.TaskGroup() as tg:
                tasks = [tg.create_task(one(d, b)) for d, b in blobs.items()]
        except BaseExceptionGroup as eg:  # raise the first failure itself, not a group
            raise _first(eg) from None
        return sum(t.result() for t in tasks)

    async def get_many(
        self, refs: Iterable[tuple[bytes, int]], *, concurrency: int = 4
    ) -> dict[bytes, bytearray | memoryview]:
        """:meth:`get` every distinct ``(digest, nbytes)``, at most ``concurrency`` at a time.

        Returns:
            ``digest -> buffer`` (each digest downloaded once). Raises the first error.
        """
        wanted = dict(refs)
        sem = asyncio.Semaphore(max(1, concurrency))

        async def one(d: bytes, n: int) -> bytearray | memoryview:
            async with sem:
                return await self.get(d, n)

        try:
            async with asyncio.TaskGroup() as tg:
                tasks = {d: tg.create_task(one(d, n)) for d, n in wanted.items()}
        except BaseExceptionGroup as eg:
            raise _first(eg) from None
        return {d: t.result() for d, t in tasks.items()}

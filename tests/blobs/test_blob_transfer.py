"""The blob data path end to end on 127.0.0.1: real BlobServer, real BlobClients, small chunks."""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import AsyncIterator

import anyio
import pytest

from fl_async._digest import digest_of
from fl_async._net import ServerTLS, client_ssl_context, server_ssl_context
from fl_async.blobs import BlobClient, BlobServer, BlobStore
from fl_async.blobs import protocol as p
from fl_async.errors import (
    IntegrityError,
    InvalidRequestError,
    LinkConnectionError,
    LinkTimeoutError,
    NotAuthorizedError,
    ResourceExhaustedError,
)
from fl_async.testing.certs import make_certs

CHUNK = 64 * 1024
TOKEN = b"node-token"


def payload(n: int, seed: int = 0) -> tuple[bytes, bytes]:
    data = os.urandom(n) if seed == 0 else bytes((seed + i) % 256 for i in range(n))
    return digest_of(data), data


@pytest.fixture
async def server() -> AsyncIterator[BlobServer]:
    srv = BlobServer(
        BlobStore(),
        authorize=lambda t: t == TOKEN,
        chunk_size=CHUNK,
        max_chunk=CHUNK,
        wait_timeout=5.0,
        max_blob_bytes=64 << 20,
    )
    await srv.start("127.0.0.1", 0)
    try:
        yield srv
    finally:
        await srv.stop()


def client(srv: BlobServer, **kw: object) -> BlobClient:
    kw.setdefault("token", TOKEN)
    kw.setdefault("chunk_size", CHUNK)
    kw.setdefault("timeout", 5.0)
    return BlobClient("127.0.0.1", srv.port, **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize("n", [1, 2, CHUNK - 1, CHUNK, CHUNK + 1, 3 * CHUNK + 17, 3 << 20])
async def test_round_trip_exact(server: BlobServer, n: int) -> None:
    d, data = payload(n)
    async with client(server) as c:
        assert await c.put(d, data) == n
        assert await c.put(d, data) == 0  # already held: nothing sent
        assert await c.has(d) == n
        out = await c.get(d, n)
    assert isinstance(out, memoryview) and not out.readonly and out == data
    assert server.store.statistics().complete == 1


async def test_many_blobs_concurrently(server: BlobServer) -> None:
    blobs = dict(payload(n) for n in (10, CHUNK * 2 + 5, 300_000, 1 << 20))
    async with client(server) as c:
        assert await c.put_many(blobs, concurrency=3) == sum(len(b) for b in blobs.values())
        got = await c.get_many([(d, len(b)) for d, b in blobs.items()], concurrency=3)
    assert {d: bytes(b) for d, b in got.items()} == blobs


async def test_corrupted_upload_refused_and_not_stored(server: BlobServer) -> None:
    d, data = payload(5 * CHUNK)
    bad = bytearray(data)
    bad[3 * CHUNK + 9] ^= 0xFF
    async with client(server) as c:
        with pytest.raises(IntegrityError, match="does not match its digest"):
            await c.put(d, bad)
        assert await c.has(d) == 0
        assert server.store.statistics().bytes_held == 0
        with pytest.raises(InvalidRequestError, match="NOT_FOUND"):
            await c.get(d, len(data))
        assert await c.put(d, data) == len(data)  # the good payload still goes through
        assert await c.get(d, len(data)) == data


async def test_download_verifies_digest(server: BlobServer) -> None:
    d, data = payload(2 * CHUNK)
    server.store.put(d, data)
    server.store._blobs[d].buffer[CHUNK] ^= 1  # type: ignore[index]  # bit rot inside the link
    async with client(server) as c:
        with pytest.raises(IntegrityError, match="do not match the digest"):
            await c.get(d, len(data))
        with pytest.raises(IntegrityError, match="SIZE_MISMATCH"):
            await c.get(d, len(data) + 1)


async def raw_request(port: int, data: bytes, read: int = p.REPLY_HEADER_SIZE) -> tuple[p.Reply, str]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        await writer.drain()
        rep = p.decode_reply_header(await reader.readexactly(p.REPLY_HEADER_SIZE))
        msg = (await reader.readexactly(rep.message_len)).decode()
        return rep, msg
    finally:
        writer.close()


async def test_truncated_upload_resumes_from_offset(server: BlobServer) -> None:
    d, data = payload(10 * CHUNK)
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(p.encode_request(p.Op.PUT, d, total=len(data), token=TOKEN))
    rep = p.decode_reply_header(await reader.readexactly(p.REPLY_HEADER_SIZE))
    assert rep.status is p.Status.CONTINUE and rep.offset == 0
    for i in range(4):  # four whole chunks, then half of the fifth, then the connection drops
        writer.write(p.encode_chunk_header(CHUNK) + data[i * CHUNK : (i + 1) * CHUNK])
    writer.write(p.encode_chunk_header(CHUNK) + data[4 * CHUNK : 4 * CHUNK + CHUNK // 2])
    await writer.drain()
    with anyio.fail_after(5):
        while server.store.received(d) < 4 * CHUNK:
            await asyncio.sleep(0.01)
    writer.transport.abort()
    async with client(server) as c:
        with anyio.fail_after(10):
            sent = await c.put(d, data)  # waits (bounded) for the server to notice the dead writer
        assert sent == 6 * CHUNK
        assert await c.get(d, len(data)) == data


class CuttingProxy:
    """A TCP relay that cuts the first ``cuts`` server->client connections after ``after`` bytes."""

    def __init__(self, target_port: int, *, after: int, cuts: int) -> None:
        self.target_port, self.after, self.cuts = target_port, after, cuts
        self.connections = 0
        self._server: asyncio.Server | None = None
        self.port = 0

    async def __aenter__(self) -> CuttingProxy:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()

    async def _handle(self, cr: asyncio.StreamReader, cw: asyncio.StreamWriter) -> None:
        self.connections += 1
        cut = self.connections <= self.cuts
        sr, sw = await asyncio.open_connection("127.0.0.1", self.target_port)

        async def pump(r: asyncio.StreamReader, w: asyncio.StreamWriter, limit: int | None) -> None:
            sent = 0
            try:
                while data := await r.read(65536):
                    if limit is not None and sent + len(data) >= limit:
                        w.write(data[: limit - sent])
                        await w.drain()
                        raise ConnectionResetError
                    w.write(data)
                    sent += len(data)
                    await w.drain()
            finally:
                cw.transport.abort()
                sw.transport.abort()

        await asyncio.gather(pump(cr, sw, None), pump(sr, cw, self.after if cut else None), return_exceptions=True)


async def test_truncated_download_resumes(server: BlobServer) -> None:
    d, data = payload(20 * CHUNK)
    server.store.put(d, data)
    async with CuttingProxy(server.port, after=7 * CHUNK + 100, cuts=2) as proxy:
        c = BlobClient("127.0.0.1", proxy.port, token=TOKEN, timeout=5.0, max_retries=3)
        assert await c.get(d, len(data)) == data
        assert proxy.connections == 3  # two cut attempts, one resume that finished
        await c.aclose()
    async with CuttingProxy(server.port, after=3 * CHUNK, cuts=10) as proxy:
        c = BlobClient("127.0.0.1", proxy.port, token=TOKEN, timeout=5.0, max_retries=1)
        with pytest.raises(LinkConnectionError, match="failed after 2 attempts"):
            await c.get(d, len(data))
        await c.aclose()


async def test_same_blob_from_ten_clients_stored_once(server: BlobServer) -> None:
    d, data = payload(6 * CHUNK)
    clients = [client(server) for _ in range(10)]
    sent = await asyncio.gather(*(c.put(d, data) for c in clients))
    assert sum(sent) == len(data)  # one writer uploaded, nine were told it is stored
    st = server.store.statistics()
    assert (st.blobs, st.complete, st.bytes_held) == (1, 1, len(data))
    outs = await asyncio.gather(*(c.get(d, len(data)) for c in clients))
    assert all(o == data for o in outs)
    for c in clients:
        await c.aclose()


async def test_references_return_to_zero_and_memory_is_freed(server: BlobServer) -> None:
    store = server.store
    d, data = payload(4 * CHUNK)
    for i in range(10):  # the link references the blob once per message that names it, before upload
        store.acquire(f"msg-{i}", d, len(data))
    async with client(server) as up, client(server) as down:
        waiting = asyncio.ensure_future(down.get(d, len(data)))  # waits for the upload in progress
        await up.put(d, data)
        assert await waiting == data
    assert store.statistics().references == 10
    for i in range(10):
        store.release(f"msg-{i}")
    st = store.statistics()
    assert (st.blobs, st.bytes_held, st.references, st.leases) == (0, 0, 0, 0)


async def test_unauthorized_and_oversized_refused_before_allocation(server: BlobServer) -> None:
    d, data = payload(100)
    c = client(server, token=b"wrong")
    with pytest.raises(NotAuthorizedError, match="UNAUTHORIZED"):
        await c.put(d, data)
    with pytest.raises(NotAuthorizedError):
        await c.get(d, 100)
    await c.aclose()
    rep, msg = await raw_request(server.port, p.encode_request(p.Op.PUT, d, total=1 << 50, token=TOKEN))
    assert rep.status is p.Status.TOO_LARGE and "exceeds the limit" in msg
    rep, msg = await raw_request(server.port, b"GET / HTTP/1.1\r\n" + bytes(p.REQUEST_HEADER_SIZE))
    assert rep.status is p.Status.BAD_REQUEST and "magic" in msg
    rep, msg = await raw_request(
        server.port, p.encode_request(p.Op.PUT, d, total=100, token=TOKEN) + p.encode_chunk_header(1 << 30)
    )
    assert rep.status is p.Status.CONTINUE
    assert server.store.statistics().bytes_held <= 100
    async with client(server) as ok:
        with pytest.raises(ResourceExhaustedError, match="TOO_LARGE"):
            await ok.put(d, memoryview(bytearray(65 << 20)))
    assert server.store.statistics().bytes_held <= 100


async def test_download_of_missing_or_stalled_blob(server: BlobServer) -> None:
    server.wait_timeout = 0.2
    d, data = payload(10)
    async with client(server) as c:
        with pytest.raises(InvalidRequestError, match="NOT_FOUND"):
            await c.get(d, 10)
        server.store.acquire("m", d, 10)  # declared, never uploaded
        with pytest.raises(LinkTimeoutError, match="NOT_READY"):
            await c.get(d, 10)


async def test_server_down_maps_to_link_connection_error() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    c = BlobClient("127.0.0.1", port, max_retries=1, timeout=2.0)
    with pytest.raises(LinkConnectionError, match="failed after 2 attempts"):
        await c.has(bytes(32))


async def test_tls_round_trip() -> None:
    certs = make_certs()
    sctx = server_ssl_context(ServerTLS(certs.ca_cert, certs.server_cert, certs.server_key))
    srv = BlobServer(BlobStore(), authorize=lambda t: t == TOKEN, ssl=sctx, chunk_size=CHUNK)
    await srv.start("127.0.0.1", 0)
    try:
        d, data = payload(5 * CHUNK + 3)
        async with BlobClient(
            "127.0.0.1", srv.port, ssl=client_ssl_context(certs.ca_cert), token=TOKEN, chunk_size=CHUNK, timeout=5.0
        ) as c:
            assert await c.put(d, data) == len(data)
            assert await c.get(d, len(data)) == data
        wrong = client_ssl_context(make_certs("another CA").ca_cert)
        async with BlobClient("127.0.0.1", srv.port, ssl=wrong, token=TOKEN, timeout=5.0) as c:
            with pytest.raises(LinkConnectionError, match="TLS"):
                await c.has(d)
    finally:
        await srv.stop()

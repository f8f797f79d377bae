"""Interrupted uploads and downloads resumed into reused (dirty) pool buffers. A proxy cuts each
connection after a budget of bytes (mid-chunk); the dirty buffers hold a pattern that must never show."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from fl_async._digest import digest_of
from fl_async.blobs import BlobClient, BlobServer, BlobStore, BufferPool

MiB = 1 << 20
SIZE = 8 * MiB + 12345


class CuttingProxy:
    """Forwards to ``target``; the i-th connection is aborted after ``budgets[i]`` bytes in ``direction``."""

    def __init__(self, port: int, budgets: list[int], direction: str) -> None:
        self.port_to, self.budgets, self.direction = port, list(budgets), direction
        self.connections = 0

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        return self.server.sockets[0].getsockname()[1]

    async def _handle(self, cr: asyncio.StreamReader, cw: asyncio.StreamWriter) -> None:
        budget = self.budgets[self.connections] if self.connections < len(self.budgets) else 1 << 62
        self.connections += 1
        sr, sw = await asyncio.open_connection("127.0.0.1", self.port_to)

        async def pipe(r: asyncio.StreamReader, w: asyncio.StreamWriter, limited: bool) -> None:
            nonlocal budget
            try:
                while data := await r.read(65536):
                    if limited:
                        if len(data) >= budget:
                            w.write(data[:budget])
                            await w.drain()
                            cw.transport.abort()
                            sw.transport.abort()
                            return
                        budget -= len(data)
                    w.write(data)
                    await w.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                w.close()

        down = self.direction == "down"
        await asyncio.gather(pipe(cr, sw, not down), pipe(sr, cw, down))

    async def aclose(self) -> None:
        self.server.close()


def payload(seed: int) -> bytes:
    return np.random.default_rng(seed).integers(0, 256, SIZE, dtype=np.uint8).tobytes()


def dirty(pool: BufferPool, value: int) -> None:
    v = pool.allocate(SIZE)
    np.frombuffer(v, dtype=np.uint8)[:] = value
    del v
    assert pool.statistics().idle >= 1


async def test_download_resumed_into_dirty_buffer() -> None:
    store = BlobStore(pool=BufferPool(max_idle_bytes=0))
    data = payload(1)
    store.put(digest_of(data), data)
    srv = BlobServer(store, authorize=None, chunk_size=1 * MiB)
    await srv.start("127.0.0.1", 0)
    proxy = CuttingProxy(srv.port, [3 * MiB + 777, 2 * MiB + 5], "down")
    port = await proxy.start()
    pool = BufferPool(max_idle_bytes=64 * MiB)
    dirty(pool, 0xAA)
    try:
        async with BlobClient("127.0.0.1", port, pool=pool, max_retries=3, timeout=10) as c:
            got = await c.get(digest_of(data), SIZE)
        assert proxy.connections == 3 and pool.statistics().reused == 1
        assert bytes(got) == data
    finally:
        await proxy.aclose()
        await srv.stop()


async def test_upload_resumed_into_dirty_store_buffer() -> None:
    pool = BufferPool(max_idle_bytes=64 * MiB)
    dirty(pool, 0x55)
    store = BlobStore(pool=pool)
    data = payload(2)
    d = digest_of(data)
    srv = BlobServer(store, authorize=None)
    await srv.start("127.0.0.1", 0)
    proxy = CuttingProxy(srv.port, [3 * MiB + 777, 2 * MiB + 5], "up")
    port = await proxy.start()
    try:
        async with BlobClient(
            "127.0.0.1", port, pool=BufferPool(max_idle_bytes=0), max_retries=3, timeout=10, chunk_size=1 * MiB
        ) as c:
            sent = await c.put(d, data)
        assert proxy.connections == 3 and pool.statistics().reused == 1
        assert bytes(store.get(d)) == data
        print("upload bytes handed to the transport:", sent)
    finally:
        await proxy.aclose()
        await srv.stop()


async def test_lying_server_stale_bytes_refused() -> None:
    """A server that skips the tail (sends fewer bytes, then closes; then on resume claims nothing is left by
    answering an offset past what was received) must not make the client accept the dirty tail."""
    pool = BufferPool(max_idle_bytes=64 * MiB)
    data = payload(3)
    d = digest_of(data)
    # stale buffer = the right payload except the last MiB: only the tail is stale
    v = pool.allocate(SIZE)
    v[:] = data[:-MiB] + bytes(MiB)
    del v
    from fl_async.blobs import protocol as p

    async def handle(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        hdr = await r.readexactly(p.REQUEST_HEADER_SIZE)
        req = p.decode_request_header(hdr, max_total=1 << 40)
        await r.readexactly(req.token_len)
        # claim the whole range is being sent, then send the head only and close
        w.write(p.encode_reply(p.Status.OK, offset=req.offset, total=req.total))
        end = SIZE - MiB
        pos = req.offset
        while pos < end:
            n = min(MiB, end - pos)
            w.write(p.encode_chunk_header(n) + data[pos : pos + n])
            pos += n
        await w.drain()
        w.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        async with BlobClient("127.0.0.1", port, pool=pool, max_retries=2, timeout=5) as c:
            with pytest.raises(Exception) as ei:
                await c.get(d, SIZE)
        assert not isinstance(ei.value, AssertionError)
        print("lying server ->", type(ei.value).__name__, ei.value)
    finally:
        server.close()

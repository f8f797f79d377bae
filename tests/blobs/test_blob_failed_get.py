"""A download the server refuses at once (NOT_FOUND, UNAUTHORIZED, SIZE_MISMATCH) allocates no buffer of the
announced size (which, >= 16 MiB, would also be prefaulted in full): BlobClient.get allocates on OK only."""

from __future__ import annotations

import pytest

from fl_async.blobs import BlobClient, BlobServer, BlobStore, BufferPool
from fl_async.errors import InvalidRequestError, NotAuthorizedError

MiB = 1 << 20


@pytest.mark.parametrize("token", [b"good", b"bad"])
async def test_refused_download_allocates_nothing(token: bytes) -> None:
    srv = BlobServer(BlobStore(pool=BufferPool(max_idle_bytes=0)), authorize=lambda t: t == b"good")
    await srv.start("127.0.0.1", 0)
    pool = BufferPool(max_idle_bytes=64 * MiB)
    try:
        async with BlobClient("127.0.0.1", srv.port, token=token, pool=pool) as c:
            with pytest.raises((InvalidRequestError, NotAuthorizedError)):
                await c.get(b"\x01" * 32, 32 * MiB)
        assert pool.statistics().fresh == 0, "a 32 MiB buffer was allocated (and prefaulted) for a refused download"
    finally:
        await srv.stop()

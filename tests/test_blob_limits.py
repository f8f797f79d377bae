"""Blob path bounds: lazy buffers, a rate floor that frees slow uploads, per-uploader quotas, store capacity."""

from __future__ import annotations

import asyncio
import time

import pytest

from fl_async._digest import digest_of
from fl_async._net import parse_address
from fl_async.blobs import protocol as p
from fl_async.blobs._stream import BufferedStream
from fl_async.blobs.link import node_blob_token
from fl_async.blobs.store import BlobQuotaError, BlobStore
from fl_async.proto.fl_async import v1 as pb
from fl_async.superlink import SuperLink
from tests.link_stubs import RawNode, channel

DIGEST = bytes(range(32))


def test_upload_buffer_allocated_when_bytes_arrive() -> None:
    store = BlobStore(max_bytes=64 << 30, max_blob_bytes=64 << 30)
    up = store.begin_upload(DIGEST, 10 << 30, object())  # 10 GiB announced
    assert up is not None and store._blobs[DIGEST].buffer is None  # nothing allocated yet
    assert store.bytes_held == 10 << 30  # but the capacity is reserved
    view = up.next_view(3)
    view[:] = b"abc"
    up.advance(3)
    store.discard_upload(up)
    assert store.state(DIGEST) is None and store.bytes_held == 0


def test_uploader_quota_counts_unreferenced_uploads() -> None:
    store = BlobStore(quota=100)
    data = b"x" * 60
    d1, d2 = digest_of(data), digest_of(b"y" * 60)
    up = store.begin_upload(d1, 60, object(), uploader="node-1")
    assert up is not None
    up.next_view(60)[:] = data
    up.advance(60)
    up.hasher.update(up.take_unhashed())
    store.finish_upload(up)  # complete, and no message names it yet
    assert store.unclaimed("node-1") == 60
    with pytest.raises(BlobQuotaError):
        store.begin_upload(d2, 60, object(), uploader="node-1")
    assert store.begin_upload(d2, 60, object(), uploader="node-2") is not None  # another uploader
    store.acquire("msg", d1, 60)  # a pushed message names it: no longer counted
    assert store.unclaimed("node-1") == 0


def test_idle_stream_holds_no_staging_buffer() -> None:
    async def main() -> None:
        stream = BufferedStream()
        assert stream._staging_view is None
        stream.get_buffer(-1)
        assert stream._staging_view is not None
        stream.release_staging()
        assert stream._staging_view is None

    asyncio.run(main())


async def _put_prefix(
    address: str, token: bytes, total: int, chunk: int, prefix: bytes, digest: bytes = DIGEST
) -> tuple[p.Reply, str, tuple]:
    """Start a PUT of ``total`` bytes, send one chunk header and ``prefix``: (reply, message, (reader, writer))."""
    host, port = parse_address(address)
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(p.encode_request(p.Op.PUT, digest, total=total, token=token))
    reply = p.decode_reply_header(await reader.readexactly(p.REPLY_HEADER_SIZE))
    text = (await reader.readexactly(reply.message_len)).decode()
    if reply.status is p.Status.CONTINUE:
        writer.write(p.encode_chunk_header(chunk) + prefix)
        await writer.drain()
    return reply, text, (reader, writer)


async def test_slow_upload_dropped_and_freed(superlink_factory) -> None:  # type: ignore[no-untyped-def]
    link: SuperLink = await superlink_factory(blob_min_rate=1 << 20, blob_rate_window=0.5)
    ch = channel(link.fleet_address)
    try:
        node = await RawNode.create(pb.FleetStub(ch))
        token = node_blob_token(node.node_id, node.token)
        assert link.blobs is not None and link.blob_address is not None
        store = link.blobs.store
        start = time.monotonic()
        reply, _, (reader, writer) = await _put_prefix(link.blob_address, token, 1 << 30, 64 << 20, b"z" * 10)
        assert reply.status is p.Status.CONTINUE
        assert await reader.read() == b""  # dropped
        assert 0.4 < time.monotonic() - start < 5
        writer.close()
        assert store.state(DIGEST) is None and store.bytes_held == 0
        assert store.unclaimed(token[:9]) == 0
    finally:
        ch.close()


async def test_blob_limits_name_their_flags(superlink_factory) -> None:  # type: ignore[no-untyped-def]
    link: SuperLink = await superlink_factory(
        max_blob_bytes=8 << 20, blob_store_bytes=12 << 20, blob_quota_bytes=6 << 20
    )
    ch = channel(link.fleet_address)
    try:
        node = await RawNode.create(pb.FleetStub(ch))
        token = node_blob_token(node.node_id, node.token)
        assert link.blob_address is not None
        for i, (total, statuses, needle) in enumerate(
            (
                (10 << 40, (p.Status.TOO_LARGE,), "--max-blob-bytes"),  # 10 TiB: refused from the header
                (9 << 20, (p.Status.TOO_LARGE,), "--max-blob-bytes"),
                (7 << 20, (p.Status.STORE_FULL,), "--blob-quota-bytes"),
            )
        ):
            reply, text, (_reader, writer) = await _put_prefix(
                link.blob_address, token, total, 0, b"", digest=bytes([i + 1]) * 32
            )
            writer.close()
            assert reply.status in statuses and needle in text, (total, reply, text)
        other = await RawNode.create(pb.FleetStub(ch))
        held = []
        for i, n in enumerate((node, other)):  # 2 x 6 MiB in progress: the 12 MiB store is full
            r, _, conn = await _put_prefix(
                link.blob_address, node_blob_token(n.node_id, n.token), 6 << 20, 0, b"", digest=bytes([10 + i]) * 32
            )
            assert r.status is p.Status.CONTINUE
            held.append(conn)
        third = await RawNode.create(pb.FleetStub(ch))
        reply, text, (_reader, writer) = await _put_prefix(
            link.blob_address, node_blob_token(third.node_id, third.token), 1 << 20, 0, b"", digest=b"\x20" * 32
        )
        assert reply.status is p.Status.STORE_FULL and "--blob-store-bytes" in text
        for _r, w in held:
            w.close()
        assert link.blobs is not None and link.blobs.store.statistics().uploading <= 2
    finally:
        ch.close()

"""grpclib streaming variant of the blob transfer, for comparison (``benchmarks/large_payload.py stream --grpc``).

The most favourable grpclib setup for bulk bytes: a raw-bytes codec (no protobuf), 4 MiB messages,
a client-streaming upload whose server *discards* the chunks, and a server-streaming download sent
from one buffer (no hashing, no storing: an upper bound for a gRPC chunk stream).
"""

from __future__ import annotations

import asyncio
import struct
import time
from typing import Any

import grpclib.const
import grpclib.server
from grpclib.client import Channel
from grpclib.encoding.base import CodecBase

__all__ = ["download", "serve", "upload"]

_CHUNK = 4 << 20


class RawCodec(CodecBase):
    """Messages are ``bytes``, sent as they are."""

    __content_subtype__ = "proto"

    def encode(self, message: Any, message_type: Any) -> bytes:
        return bytes(message) if not isinstance(message, bytes) else message

    def decode(self, data: bytes, message_type: Any) -> Any:
        return data


class _Service:
    def __init__(self) -> None:
        self.payload = memoryview(bytearray(_CHUNK))

    async def put(self, stream: grpclib.server.Stream[bytes, bytes]) -> None:
        total = 0
        async for chunk in stream:
            total += len(chunk)
        await stream.send_message(struct.pack(">Q", total))

    async def get(self, stream: grpclib.server.Stream[bytes, bytes]) -> None:
        req = await stream.recv_message()
        assert req is not None
        (left,) = struct.unpack(">Q", req)
        while left:
            k = min(left, _CHUNK)
            await stream.send_message(self.payload[:k])
            left -= k

    def __mapping__(self) -> dict[str, grpclib.const.Handler]:
        return {
            "/bench.Blob/Put": grpclib.const.Handler(self.put, grpclib.const.Cardinality.STREAM_UNARY, bytes, bytes),
            "/bench.Blob/Get": grpclib.const.Handler(self.get, grpclib.const.Cardinality.UNARY_STREAM, bytes, bytes),
        }


async def serve(host: str, port: int) -> None:
    """Serve until cancelled."""
    server = grpclib.server.Server([_Service()], codec=RawCodec())
    await server.start(host, port)
    print("READY", flush=True)
    await server.wait_closed()


async def upload(channel: Channel, buffer: bytes | bytearray | memoryview) -> float:
    """Stream ``buffer`` in 4 MiB messages; returns seconds until the server's reply."""
    view = memoryview(buffer).cast("B")
    t0 = time.perf_counter()
    async with channel.request("/bench.Blob/Put", grpclib.const.Cardinality.STREAM_UNARY, bytes, bytes) as stream:
        for pos in range(0, view.nbytes, _CHUNK):
            await stream.send_message(view[pos : pos + _CHUNK])
        await stream.end()
        reply = await stream.recv_message()
    assert reply is not None and struct.unpack(">Q", reply)[0] == view.nbytes
    return time.perf_counter() - t0


async def download(channel: Channel, nbytes: int) -> float:
    """Receive ``nbytes`` as 4 MiB messages (dropped); returns seconds."""
    t0 = time.perf_counter()
    got = 0
    async with channel.request("/bench.Blob/Get", grpclib.const.Cardinality.UNARY_STREAM, bytes, bytes) as stream:
        await stream.send_message(struct.pack(">Q", nbytes), end=True)
        async for chunk in stream:
            got += len(chunk)
    assert got == nbytes
    return time.perf_counter() - t0


def make_channel(host: str, port: int) -> Channel:
    """A channel using the raw codec (create inside the running loop)."""
    return Channel(host, port, codec=RawCodec())


if __name__ == "__main__":
    import sys

    asyncio.run(serve("127.0.0.1", int(sys.argv[1])))

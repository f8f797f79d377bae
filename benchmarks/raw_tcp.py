"""Baseline: how fast plain asyncio TCP moves a large payload on this machine (loopback).

The reference for the blob data path (``benchmarks/large_payload.py``): a server process sinks or
sources ``N`` bytes over asyncio streams (``StreamReader.read`` of up to 4 MiB, ``write`` of 4 MiB
memoryview slices + ``drain``), with no framing, hashing or storing. Payload bytes are sent from and
received into process-local buffers; nothing is retained.

Run standalone::

    python -m benchmarks.raw_tcp                   # 100 and 400 MiB, 3 repetitions, both directions
    python -m benchmarks.raw_tcp serve --port P    # the server half (started by the benchmarks)

Wire: the client sends ``op u8 | nbytes u64`` (op 1 = upload to the server, 2 = download, 3 = upload
that the server stores into a new anonymous ``mmap``, i.e. into fresh memory as a blob store must);
the server answers an upload with one byte once it has read (and stored) everything.
"""

from __future__ import annotations

import argparse
import asyncio
import mmap
import struct
import sys
import time

__all__ = ["download", "serve", "start_server_process", "upload"]

_HDR = struct.Struct(">BQ")
_CHUNK = 4 << 20
_LIMIT = 4 << 20
MiB = 1 << 20


async def _handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    payload = memoryview(bytearray(_CHUNK))
    try:
        while True:
            try:
                op, n = _HDR.unpack(await reader.readexactly(_HDR.size))
            except asyncio.IncompleteReadError:
                return
            if op in (1, 3):
                store = (
                    memoryview(mmap.mmap(-1, n, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)) if op == 3 and n else None
                )
                left = n
                while left:
                    data = await reader.read(min(left, _LIMIT))
                    if not data:
                        return
                    if store is not None:
                        store[n - left : n - left + len(data)] = data
                    left -= len(data)
                del store
                writer.write(b"\x01")
                await writer.drain()
            else:
                left = n
                while left:
                    k = min(left, _CHUNK)
                    writer.write(payload[:k])
                    left -= k
                    await writer.drain()
    finally:
        writer.close()


async def serve(host: str, port: int) -> None:
    """Serve uploads/downloads on ``host:port`` until cancelled (prints ``READY <port>``)."""
    server = await asyncio.start_server(_handle, host, port, limit=_LIMIT)
    print("READY", server.sockets[0].getsockname()[1], flush=True)
    async with server:
        await server.serve_forever()


async def _connect(host: str, port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection(host, port, limit=_LIMIT)
    writer.transport.set_write_buffer_limits(high=_CHUNK)
    return reader, writer


async def upload(host: str, port: int, buffer: bytes | bytearray | memoryview, *, store: bool = False) -> float:
    """Send ``buffer`` to the server; returns seconds from first byte sent to the server's ack.

    With ``store`` the server copies what it reads into a new anonymous memory map (fresh pages), the
    part of a blob upload's work that is not protocol: the reference for a blob PUT into fresh memory.
    """
    view = memoryview(buffer).cast("B")
    reader, writer = await _connect(host, port)
    try:
        t0 = time.perf_counter()
        writer.write(_HDR.pack(3 if store else 1, view.nbytes))
        for pos in range(0, view.nbytes, _CHUNK):
            writer.write(view[pos : pos + _CHUNK])
            await writer.drain()
        await reader.readexactly(1)
        return time.perf_counter() - t0
    finally:
        writer.close()


async def download(host: str, port: int, nbytes: int) -> float:
    """Receive ``nbytes`` from the server (read and dropped); returns seconds."""
    reader, writer = await _connect(host, port)
    try:
        t0 = time.perf_counter()
        writer.write(_HDR.pack(2, nbytes))
        left = nbytes
        while left:
            data = await reader.read(min(left, _LIMIT))
            if not data:
                raise ConnectionError(f"server closed with {left} bytes left")
            left -= len(data)
        return time.perf_counter() - t0
    finally:
        writer.close()


def start_server_process(log_path: str):  # type: ignore[no-untyped-def]
    """Start ``python -m benchmarks.raw_tcp serve`` as a :class:`benchmarks._proc.Proc`; returns ``(proc, port)``."""
    from benchmarks._proc import Proc, free_port, wait_for_port

    port = free_port()
    proc = Proc(
        "raw-tcp-server", [sys.executable, "-m", "benchmarks.raw_tcp", "serve", "--port", str(port)], log_path=log_path
    )
    wait_for_port(port, 20.0, proc)
    return proc, port


async def _main(sizes: list[int], reps: int) -> None:
    import tempfile

    proc, port = start_server_process(tempfile.mktemp(prefix="raw_tcp_", suffix=".log"))
    try:
        for size in sizes:
            buf = bytearray(size * MiB)
            up = [size / await upload("127.0.0.1", port, buf) for _ in range(reps)]
            down = [size / await download("127.0.0.1", port, size * MiB) for _ in range(reps)]
            print(
                f"raw asyncio TCP {size:4d} MiB: upload best {max(up):7.0f} MiB/s (all {', '.join(f'{x:.0f}' for x in up)}), "
                f"download best {max(down):7.0f} MiB/s (all {', '.join(f'{x:.0f}' for x in down)})"
            )
    finally:
        proc.stop()


def main(argv: list[str] | None = None) -> None:
    """Command line: ``serve --port P`` or the standalone measurement."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd")
    s = sub.add_parser("serve")
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=int, default=0)
    ap.add_argument("--sizes", default="100,400", help="payload sizes in MiB, comma-separated")
    ap.add_argument("--reps", type=int, default=3)
    args = ap.parse_args(argv)
    if args.cmd == "serve":
        asyncio.run(serve(args.host, args.port))
    else:
        asyncio.run(_main([int(x) for x in args.sizes.split(",")], args.reps))


if __name__ == "__main__":
    main()

"""Large payloads: the blob data path's stream throughput, and large models through a real link.

Part 1, ``stream`` (issue 7's "one chunk stream >= 50 % of raw asyncio TCP, same run"): a blob server
runs in its own process (``BlobServer`` over a ``BlobStore``, as inside the link); this process
uploads one blob (``BlobClient.put``: chunks received straight into the store's preallocated buffer,
SHA-256 verified) and downloads it back (``BlobClient.get``: into one preallocated buffer, verified),
next to ``benchmarks.raw_tcp`` (plain asyncio streams, nothing stored or hashed) measured in the same
run against its own server process.

Part 2, ``rounds``: N in-process SuperNodes and a driver against a SuperLink in a subprocess; see
:func:`rounds` (added with the link integration).

Run::

    python -m benchmarks.large_payload stream [--sizes 100,400] [--reps 3] [--tls]
    python -m benchmarks.large_payload rounds [--sizes 100,400] [--nodes 2,5,20]
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import statistics
import sys
import tempfile
import time

MiB = 1 << 20


# ------------------------------------------------------------------------------------------ stream

async def _blob_server_main(port: int, tls_dir: str | None) -> None:
    from fl_async.blobs import BlobServer, BlobStore

    ssl = None
    if tls_dir:
        from fl_async._net import ServerTLS, server_ssl_context

        ssl = server_ssl_context(ServerTLS(f"{tls_dir}/ca.crt", f"{tls_dir}/server.pem", f"{tls_dir}/server.key"))
    store = BlobStore(linger=30.0)
    server = BlobServer(store, authorize=lambda t: t == b"bench", ssl=ssl)
    await server.start("127.0.0.1", port)
    print("READY", server.port, flush=True)
    while True:  # free what the benchmark is done with
        await asyncio.sleep(0.5)
        store.sweep(time.monotonic())


def _start_blob_server(tls_dir: str | None):  # type: ignore[no-untyped-def]
    from benchmarks._proc import Proc, free_port, wait_for_port

    port = free_port()
    argv = [sys.executable, "-m", "benchmarks.large_payload", "blob-server", "--port", str(port)]
    if tls_dir:
        argv += ["--tls-dir", tls_dir]
    proc = Proc("blob-server", argv, log_path=tempfile.mktemp(prefix="blob_server_", suffix=".log"))
    wait_for_port(port, 20.0, proc)
    return proc, port


async def stream(sizes: list[int], reps: int, tls: bool, chunk_size: int) -> None:
    """Print MiB/s of one blob upload/download vs raw asyncio TCP, best and median of ``reps``."""
    from benchmarks import raw_tcp
    from fl_async.blobs import BlobClient

    tls_dir = None
    cctx = None
    if tls:
        from fl_async._net import client_ssl_context
        from tests.certs import write_certs
        from pathlib import Path

        tls_dir = tempfile.mkdtemp(prefix="blob_tls_")
        files = write_certs(Path(tls_dir))
        tls_dir = str(files.ca_cert.parent)
        cctx = client_ssl_context(files.ca_cert)
    raw_proc, raw_port = raw_tcp.start_server_process(tempfile.mktemp(prefix="raw_tcp_", suffix=".log"))
    blob_proc, blob_port = _start_blob_server(tls_dir)
    print(f"# {time.strftime('%Y-%m-%d %H:%M:%S')}  python {sys.version.split()[0]}  cores {os.cpu_count()}  "
          f"chunk {chunk_size // MiB} MiB  tls {tls} (raw TCP baseline is plain TCP)")
    try:
        client = BlobClient("127.0.0.1", blob_port, token=b"bench", ssl=cctx, chunk_size=chunk_size, timeout=120)
        for size in sizes:
            n = size * MiB
            buf = bytearray(os.urandom(MiB)) * size
            raw_up, raw_down, put, get, dig = [], [], [], [], []
            for rep in range(reps):
                raw_up.append(size / await raw_tcp.upload("127.0.0.1", raw_port, buf))
                raw_down.append(size / await raw_tcp.download("127.0.0.1", raw_port, n))
                buf[0] = rep  # a new blob each repetition (content-addressed: same bytes are not resent)
                t = time.perf_counter()
                d = hashlib.sha256(buf).digest()
                dig.append(size / (time.perf_counter() - t))
                t = time.perf_counter()
                sent = await client.put(d, buf)
                put.append(size / (time.perf_counter() - t))
                assert sent == n, sent
                t = time.perf_counter()
                out = await client.get(d, n)
                get.append(size / (time.perf_counter() - t))
                assert out == buf
                del out

            def fmt(xs: list[float]) -> str:
                return f"best {max(xs):6.0f} median {statistics.median(xs):6.0f}"

            print(f"{size:4d} MiB  raw TCP upload   {fmt(raw_up)} MiB/s")
            print(f"{size:4d} MiB  blob PUT         {fmt(put)} MiB/s   ratio (median) {statistics.median(put) / statistics.median(raw_up):.2f}")
            print(f"{size:4d} MiB  raw TCP download {fmt(raw_down)} MiB/s")
            print(f"{size:4d} MiB  blob GET         {fmt(get)} MiB/s   ratio (median) {statistics.median(get) / statistics.median(raw_down):.2f}")
            print(f"{size:4d} MiB  (sender-side SHA-256, done by the codec at encode time: {statistics.median(dig):.0f} MiB/s)")
            del buf
        await client.aclose()
    finally:
        raw_proc.stop()
        blob_proc.stop()


def main(argv: list[str] | None = None) -> None:
    """Command line (see the module docstring)."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("stream")
    s.add_argument("--sizes", default="100,400")
    s.add_argument("--reps", type=int, default=3)
    s.add_argument("--tls", action="store_true")
    s.add_argument("--chunk-mib", type=int, default=4)
    b = sub.add_parser("blob-server")
    b.add_argument("--port", type=int, required=True)
    b.add_argument("--tls-dir", default=None)
    r = sub.add_parser("rounds")
    r.add_argument("--sizes", default="100,400")
    r.add_argument("--nodes", default="2,5,20")
    args = ap.parse_args(argv)
    if args.cmd == "stream":
        asyncio.run(stream([int(x) for x in args.sizes.split(",")], args.reps, args.tls, args.chunk_mib * MiB))
    elif args.cmd == "blob-server":
        asyncio.run(_blob_server_main(args.port, args.tls_dir))
    else:
        raise SystemExit("rounds: see docs/large-models.md (link integration)")


if __name__ == "__main__":
    main()

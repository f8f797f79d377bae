"""Large payloads: the blob data path's stream throughput, and large models through a real link.

Part 1, ``stream`` (the target "one chunk stream >= 50 % of raw asyncio TCP, same run"): a blob server
runs in its own process (``BlobServer`` over a ``BlobStore``, as inside the link); this process
uploads one blob (``BlobClient.put``: chunks received straight into the store's preallocated buffer,
BLAKE3 verified) and downloads it back (``BlobClient.get``: into one preallocated buffer, verified),
next to ``benchmarks.raw_tcp`` (plain asyncio streams, nothing stored or hashed) measured in the same
run against its own server process. The server frees each blob soon after its download and the
benchmark drops its downloaded buffer, so repetition 1 receives into fresh memory on both sides
("first") and later repetitions into buffers reused from the pools ("reused buffers", as in round 2
onwards of a federated run); both are printed.

Part 2, ``rounds``: a SuperLink in a subprocess, N in-process SuperNodes and an AsyncDriver; each round
pushes a new float32 model of ``size`` MiB to every node, each node adds 1 in place and replies with
it, and the driver receives every reply (probed for exactness). In round 1 every node waits until all
nodes hold the model, and the link's VmHWM is sampled then (the broadcast peak); later rounds have no
barrier (steady state). Prints round seconds, MiB/s through
the link (``size * (1 + 3N)``: driver upload, N node downloads, N reply uploads, N driver
downloads), the link's VmHWM when every node holds the model (broadcast peak) and at the end.
``big``: one 2.5 GiB float16 array to a node and back, checked bit for bit.

Run::

    python -m benchmarks.large_payload stream [--sizes 100,400] [--reps 3] [--tls] [--grpc]
    python -m benchmarks.large_payload rounds [--sizes 100,400] [--nodes 2,5,20] [--rounds 3]
    python -m benchmarks.large_payload big [--gib 2.5]
    python -m benchmarks.large_payload costs [--mib 400]     # hash and fresh-memory rates
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
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
    store = BlobStore(linger=0.5)  # free a blob soon after its download (as the link does at the end of a round)
    server = BlobServer(store, authorize=lambda t: t == b"bench", ssl=ssl)
    await server.start("127.0.0.1", port)
    print("READY", server.port, flush=True)
    while True:  # free what the benchmark is done with
        await asyncio.sleep(0.02)
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


def _start_grpc_server():  # type: ignore[no-untyped-def]
    from benchmarks._proc import Proc, free_port, wait_for_port

    port = free_port()
    proc = Proc(
        "grpc-stream-server",
        [sys.executable, "-m", "benchmarks._grpc_stream", str(port)],
        log_path=tempfile.mktemp(prefix="grpc_stream_", suffix=".log"),
    )
    wait_for_port(port, 20.0, proc)
    return proc, port


async def stream(sizes: list[int], reps: int, tls: bool, chunk_size: int, grpc: bool = False) -> None:
    """Print MiB/s of one blob upload/download vs raw asyncio TCP, best and median of ``reps``
    (and, with ``grpc``, vs a grpclib client/server-streaming variant with a raw-bytes codec)."""
    from benchmarks import raw_tcp
    from fl_async._digest import digest_of
    from fl_async.blobs import BlobClient

    tls_dir = None
    cctx = None
    if tls:
        from pathlib import Path

        from fl_async._net import client_ssl_context
        from fl_async.testing.certs import write_certs

        tls_dir = tempfile.mkdtemp(prefix="blob_tls_")
        files = write_certs(Path(tls_dir))
        tls_dir = str(files.ca_cert.parent)
        cctx = client_ssl_context(files.ca_cert)
    raw_proc, raw_port = raw_tcp.start_server_process(tempfile.mktemp(prefix="raw_tcp_", suffix=".log"))
    blob_proc, blob_port = _start_blob_server(tls_dir)
    grpc_proc = grpc_channel = None
    if grpc:
        from benchmarks import _grpc_stream

        grpc_proc, grpc_port = _start_grpc_server()
        grpc_channel = _grpc_stream.make_channel("127.0.0.1", grpc_port)
    print(
        f"# {time.strftime('%Y-%m-%d %H:%M:%S')}  python {sys.version.split()[0]}  cores {os.cpu_count()}  "
        f"chunk {chunk_size // MiB} MiB  tls {tls} (raw TCP baseline is plain TCP)"
    )
    try:
        client = BlobClient("127.0.0.1", blob_port, token=b"bench", ssl=cctx, chunk_size=chunk_size, timeout=120)
        for size in sizes:
            n = size * MiB
            buf = bytearray(os.urandom(MiB)) * size
            raw_up, raw_down, put, get, dig, g_up, g_down, raw_store = [], [], [], [], [], [], [], []
            for rep in range(reps):
                if grpc_channel is not None:
                    g_up.append(size / await _grpc_stream.upload(grpc_channel, buf))
                    g_down.append(size / await _grpc_stream.download(grpc_channel, n))
                raw_up.append(size / await raw_tcp.upload("127.0.0.1", raw_port, buf))
                raw_down.append(size / await raw_tcp.download("127.0.0.1", raw_port, n))
                raw_store.append(size / await raw_tcp.upload("127.0.0.1", raw_port, buf, store=True))
                buf[0] = rep  # a new blob each repetition (content-addressed: same bytes are not resent)
                t = time.perf_counter()
                d = digest_of(buf)
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
                # Wait until the server freed the blob (it lingers 0.5 s, sweeps every 20 ms), so that the
                # next repetition finds its buffer idle in the server's pool, as in round 2 of a run.
                async with asyncio.timeout(10):
                    while await client.has(d):
                        await asyncio.sleep(0.02)

            def fmt(xs: list[float]) -> str:
                return f"best {max(xs):6.0f} median {statistics.median(xs):6.0f}"

            def line(what: str, xs: list[float], base: list[float]) -> str:
                # ratio = blob median / raw TCP median of the same direction; "vs best" divides by raw
                # TCP's best repetition instead (conservative: raw TCP varies 2x between repetitions here)
                first, warm = xs[0], xs[1:] or xs
                med, best = statistics.median(base), max(base)
                return (
                    f"{size:4d} MiB  {what:8s} first (fresh memory) {first:6.0f} MiB/s ratio {first / med:.2f} "
                    f"(vs best {first / best:.2f});  reused buffers {fmt(warm)} MiB/s ratio "
                    f"{statistics.median(warm) / med:.2f} (vs best {statistics.median(warm) / best:.2f})"
                )

            print(f"{size:4d} MiB  raw TCP upload   {fmt(raw_up)} MiB/s")
            print(
                f"{size:4d} MiB  raw TCP upload stored into fresh memory {fmt(raw_store)} MiB/s "
                f"(blob PUT first / this median: {put[0] / statistics.median(raw_store):.2f})"
            )
            print(line("blob PUT", put, raw_up))
            print(f"{size:4d} MiB  raw TCP download {fmt(raw_down)} MiB/s")
            print(line("blob GET", get, raw_down))
            if g_up:
                print(
                    f"{size:4d} MiB  grpclib stream up  {fmt(g_up)} MiB/s   ratio (median) {statistics.median(g_up) / statistics.median(raw_up):.2f}"
                )
                print(
                    f"{size:4d} MiB  grpclib stream dn  {fmt(g_down)} MiB/s   ratio (median) {statistics.median(g_down) / statistics.median(raw_down):.2f}"
                )
            print(
                f"{size:4d} MiB  (sender-side BLAKE3 digest, done by the codec at encode time: {statistics.median(dig):.0f} MiB/s)"
            )
            del buf
        await client.aclose()
    finally:
        raw_proc.stop()
        blob_proc.stop()
        if grpc_channel is not None:
            grpc_channel.close()
        if grpc_proc is not None:
            grpc_proc.stop()


# ------------------------------------------------------------------------------------------ rounds


async def _link_main(driver_port: int, fleet_port: int) -> None:
    from fl_async.superlink import LinkConfig, SuperLink

    cfg = LinkConfig(
        driver_api_address=f"127.0.0.1:{driver_port}",
        fleet_api_address=f"127.0.0.1:{fleet_port}",
        max_poll_timeout=30.0,
    )
    async with SuperLink(cfg):
        print("READY", flush=True)
        await asyncio.Event().wait()  # until SIGTERM


def _start_link():  # type: ignore[no-untyped-def]
    from benchmarks._proc import Proc, free_port, wait_for_port

    dport, fport = free_port(), free_port()
    proc = Proc(
        "superlink",
        [
            sys.executable,
            "-m",
            "benchmarks.large_payload",
            "link",
            "--driver-port",
            str(dport),
            "--fleet-port",
            str(fport),
        ],
        log_path=tempfile.mktemp(prefix="link_", suffix=".log"),
    )
    wait_for_port(dport, 30.0, proc)
    wait_for_port(fport, 30.0, proc)
    return proc, f"127.0.0.1:{dport}", f"127.0.0.1:{fport}"


def _random_array(nbytes: int, dtype: str) -> "np.ndarray":  # noqa: F821 - numpy is imported lazily, below
    import numpy as np

    out = np.empty(nbytes, dtype=np.uint8)
    block = np.frombuffer(os.urandom(MiB), dtype=np.uint8)
    for pos in range(0, nbytes, MiB):
        k = min(MiB, nbytes - pos)
        out[pos : pos + k] = block[:k]
        block = np.roll(block, 1)
    return out.view(dtype)


async def _round_config(size: int, n: int, rounds: int) -> dict[str, float]:
    """One link process, ``n`` in-process SuperNodes, an AsyncDriver; ``rounds`` rounds of ``size`` MiB."""
    import numpy as np

    from benchmarks._proc import read_vm_hwm
    from fl_async.client.client_app import ClientApp
    from fl_async.common import Context, Message, RecordSet
    from fl_async.common.records import Array, ParametersRecord
    from fl_async.server.async_driver import AsyncDriver
    from fl_async.supernode import SuperNode

    proc, driver_addr, fleet_addr = _start_link()
    received = 0
    gate = asyncio.Event()
    broadcast_hwm = 0

    app = ClientApp()

    @app.train()
    async def train(message: Message, context: Context) -> Message:
        nonlocal received, broadcast_hwm
        arr = message.content.parameters_records["model"]["w"]
        w = arr.numpy()  # the node's own buffer (downloaded into it): updated in place, no copy
        received += 1
        if not broadcast_hwm:  # first round: hold every node until all hold the model, then sample the
            if received == n:  # link's peak (the broadcast's); later rounds run without this barrier
                broadcast_hwm = read_vm_hwm(proc.pid) or 0
                gate.set()
            await gate.wait()
        w += np.float32(1 + int(context.node_config["k"]))  # a distinct update per node (and per round)
        return message.create_reply(RecordSet(parameters_records={"model": ParametersRecord({"w": arr})}))

    out: dict[str, float] = {}
    try:
        async with contextlib.AsyncExitStack() as stack:
            nodes = [
                await stack.enter_async_context(
                    SuperNode(
                        app, fleet_addr, insecure=True, heartbeat_interval=30.0, poll_timeout=20.0, node_config={"k": k}
                    )
                )
                for k in range(n)
            ]
            for node in nodes:
                await node.wait_registered(timeout=60)
            async with AsyncDriver(driver_addr, insecure=True, call_timeout=120) as driver:
                ids_nodes = await driver.wait_for_nodes(n, timeout=60)
                base = np.random.default_rng(0).random(size * MiB // 4, dtype=np.float32)
                times = []
                for r in range(rounds):
                    received = 0
                    gate = asyncio.Event()
                    model = base + np.float32(1000 * r)  # a new model each round (new digest, no collision)
                    content = RecordSet(parameters_records={"model": ParametersRecord({"w": Array.from_numpy(model)})})
                    msgs = [driver.create_message(content, "train", nid, f"round-{r}") for nid in ids_nodes]
                    t0 = time.perf_counter()
                    ids = await driver.push_messages(msgs)
                    ok = 0
                    probe = [0, model.size // 2, model.size - 1]
                    expect = dict.fromkeys(ids_nodes)
                    async with driver.receive(ids, timeout=600) as replies:
                        async for reply in replies:
                            got = reply.content.parameters_records["model"]["w"].numpy()
                            step = np.rint(got[probe].astype(np.float64) - model[probe])
                            assert np.all(step >= 1) and np.all(step <= n) and len(set(step.tolist())) == 1, step
                            expect.pop(reply.metadata.src_node_id)
                            ok += 1
                            del got, reply
                    times.append(time.perf_counter() - t0)
                    assert ok == n, f"{ok} of {n} replies"
                out["first"] = times[0]
                out["best"] = min(times)
                out["steady"] = statistics.median(times[1:]) if len(times) > 1 else times[0]
            out["broadcast_hwm"] = broadcast_hwm
            for node in nodes:
                node.stop()
    finally:
        proc.stop()
    out["link_hwm"] = proc.peak_rss or 0
    return out


async def rounds(sizes: list[int], ns: list[int], n_rounds: int) -> None:
    """Print round seconds, MiB/s through the link and link peak RSS for each size and node count."""
    print(
        f"# {time.strftime('%Y-%m-%d %H:%M:%S')}  python {sys.version.split()[0]}  cores {os.cpu_count()}  "
        f"rounds per config {n_rounds}  (link in a subprocess; nodes and driver in this process; plaintext)"
    )
    print(
        "size_MiB  nodes  round1_s  best_s  steady_s  link_MiB/s(best)  broadcast_peak_RSS_MB  link_peak_RSS_MB  "
        "limit_MB(1.5x+150)"
    )
    for size in sizes:
        for n in ns:
            avail = _mem_available()
            need = size * MiB * (3 * n + 4)
            if avail is not None and need > avail:
                print(
                    f"{size:8d}  {n:5d}  skipped: needs ~{need / 1e9:.1f} GB (in-process nodes), "
                    f"{avail / 1e9:.1f} GB available"
                )
                continue
            r = await _round_config(size, n, n_rounds)
            moved = size * (1 + 3 * n)
            print(
                f"{size:8d}  {n:5d}  {r['first']:8.2f}  {r['best']:6.2f}  {r['steady']:8.2f}  "
                f"{moved / r['best']:16.0f}  {r['broadcast_hwm'] / 1e6:21.0f}  {r['link_hwm'] / 1e6:16.0f}  "
                f"{1.5 * size * MiB / 1e6 + 150:18.0f}",
                flush=True,
            )


def _mem_available() -> int | None:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


async def big(gib: float) -> None:
    """One float16 array of ``gib`` GiB to one node and back (sign bits flipped by the node), checked exactly."""
    import numpy as np

    from fl_async.client.client_app import ClientApp
    from fl_async.common import Context, Message, RecordSet
    from fl_async.common.records import Array, ParametersRecord
    from fl_async.server.async_driver import AsyncDriver
    from fl_async.supernode import SuperNode

    nbytes = int(gib * (1 << 30)) // 2 * 2
    proc, driver_addr, fleet_addr = _start_link()
    app = ClientApp()

    @app.train()
    def train(message: Message, context: Context) -> Message:
        arr = message.content.parameters_records["m"]["x"]
        arr.numpy().view(np.uint16)[...] ^= np.uint16(0x8000)  # in place: exact, reversible
        return message.create_reply(RecordSet(parameters_records={"m": ParametersRecord({"x": arr})}))

    try:
        x = _random_array(nbytes, "float16")
        async with (
            SuperNode(app, fleet_addr, insecure=True, heartbeat_interval=30.0) as node,
            AsyncDriver(driver_addr, insecure=True, call_timeout=600) as driver,
        ):
            await node.wait_registered(timeout=60)
            [nid] = await driver.wait_for_nodes(1, timeout=60)
            content = RecordSet(parameters_records={"m": ParametersRecord({"x": Array.from_numpy(x)})})
            t0 = time.perf_counter()
            [reply] = await driver.send_and_receive([driver.create_message(content, "train", nid, "big")], timeout=900)
            dt = time.perf_counter() - t0
            assert reply.has_content(), reply.error
            got = reply.content.parameters_records["m"]["x"].numpy()
            exact = got.dtype == np.float16 and got.shape == x.shape
            step = 64 * MiB
            xu, gu = x.view(np.uint16), got.view(np.uint16)
            for pos in range(0, xu.size, step):
                exact = exact and bool(np.array_equal(gu[pos : pos + step] ^ np.uint16(0x8000), xu[pos : pos + step]))
            node.stop()
        print(
            f"# {time.strftime('%Y-%m-%d %H:%M:%S')}  float16 array of {nbytes / (1 << 30):.2f} GiB "
            f"({x.size} elements) to 1 node and back: {dt:.1f} s, exact: {exact}"
        )
    finally:
        proc.stop()
    print(f"  link peak RSS {proc.peak_rss / 1e6:.0f} MB (holds the instruction's and the reply's arrays once each)")


# ------------------------------------------------------------------------------------------- costs


def costs(mib: int, reps: int) -> None:
    """Print what the receive path's per-byte costs run at on this machine: hashes (from memory and from
    cache) and fresh memory (how fast new pages can be had), next to a write into warm pages."""
    import ctypes
    import hashlib
    import mmap

    import blake3

    from fl_async.blobs import buffers

    n = mib * MiB
    data = bytearray(os.urandom(MiB)) * mib
    hot = os.urandom(4 * MiB)

    def rate(fn, nbytes: int) -> float:  # type: ignore[no-untyped-def]
        best = float("inf")
        for _ in range(reps):
            t = time.perf_counter()
            fn()
            best = min(best, time.perf_counter() - t)
        return nbytes / best / MiB

    def in_cache(make) -> float:  # type: ignore[no-untyped-def]
        def run() -> None:
            h = make()
            for _ in range(64):
                h.update(hot)

        return rate(run, 64 * len(hot))

    print(
        f"# {time.strftime('%Y-%m-%d %H:%M:%S')}  python {sys.version.split()[0]}  cores {os.cpu_count()}  "
        f"{mib} MiB, best of {reps}"
    )
    for name, make in [
        ("BLAKE3 (blake3)", blake3.blake3),
        ("SHA-256 (hashlib)", hashlib.sha256),
        ("BLAKE2b (hashlib)", hashlib.blake2b),
    ]:
        print(
            f"hash {name:18s} from memory {rate(lambda: make(data).digest(), n):6.0f} MiB/s   "
            f"4 MiB pieces from cache {in_cache(make):6.0f} MiB/s"
        )
    piece = bytes(4 * MiB)

    def first_write(flags: int) -> None:
        m = mmap.mmap(-1, n, flags=flags)
        v = memoryview(m)
        for pos in range(0, n, len(piece)):
            v[pos : pos + len(piece)] = piece
        v.release()
        m.close()

    anon = mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS
    warm = memoryview(bytearray(n))

    def warm_write() -> None:
        for pos in range(0, n, len(piece)):
            warm[pos : pos + len(piece)] = piece

    def populate() -> None:
        m = mmap.mmap(-1, n, flags=anon)
        anchor = ctypes.c_char.from_buffer(m)
        assert buffers._madvise is not None
        buffers._madvise(ctypes.addressof(anchor), n, buffers._MADV_POPULATE_WRITE)
        del anchor
        m.close()

    print(f"memory bytearray(n) (memset + faults)           {rate(lambda: bytearray(n), n):6.0f} MiB/s")
    print(f"memory first write into a new mmap (faults)     {rate(lambda: first_write(anon), n):6.0f} MiB/s")
    print(
        f"memory mmap MAP_POPULATE                        {rate(lambda: mmap.mmap(-1, n, flags=anon | mmap.MAP_POPULATE).close(), n):6.0f} MiB/s"
    )
    if buffers._madvise is not None:
        print(f"memory madvise(MADV_POPULATE_WRITE)             {rate(populate, n):6.0f} MiB/s")
    print(f"memory write into warm pages (reused buffer)    {rate(warm_write, n):6.0f} MiB/s")


def main(argv: list[str] | None = None) -> None:
    """Command line (see the module docstring)."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("stream")
    s.add_argument("--sizes", default="100,400")
    s.add_argument("--reps", type=int, default=3)
    s.add_argument("--tls", action="store_true")
    s.add_argument("--chunk-mib", type=int, default=4)
    s.add_argument("--grpc", action="store_true", help="also measure a grpclib streaming variant")
    b = sub.add_parser("blob-server")
    b.add_argument("--port", type=int, required=True)
    b.add_argument("--tls-dir", default=None)
    r = sub.add_parser("rounds")
    r.add_argument("--sizes", default="100,400")
    r.add_argument("--nodes", default="2,5,20")
    r.add_argument("--rounds", type=int, default=3)
    g = sub.add_parser("big")
    g.add_argument("--gib", type=float, default=2.5)
    c = sub.add_parser("costs")
    c.add_argument("--mib", type=int, default=400)
    c.add_argument("--reps", type=int, default=3)
    k = sub.add_parser("link")
    k.add_argument("--driver-port", type=int, required=True)
    k.add_argument("--fleet-port", type=int, required=True)
    args = ap.parse_args(argv)
    if args.cmd == "stream":
        asyncio.run(
            stream([int(x) for x in args.sizes.split(",")], args.reps, args.tls, args.chunk_mib * MiB, args.grpc)
        )
    elif args.cmd == "blob-server":
        asyncio.run(_blob_server_main(args.port, args.tls_dir))
    elif args.cmd == "rounds":
        asyncio.run(
            rounds([int(x) for x in args.sizes.split(",")], [int(x) for x in args.nodes.split(",")], args.rounds)
        )
    elif args.cmd == "big":
        asyncio.run(big(args.gib))
    elif args.cmd == "costs":
        costs(args.mib, args.reps)
    else:
        asyncio.run(_link_main(args.driver_port, args.fleet_port))


if __name__ == "__main__":
    main()

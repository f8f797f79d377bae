"""SuperLink round latency: N responders that answer at once, one driver, real gRPC on 127.0.0.1.

A round = one ``PushMessages`` with N instructions (one per node) -> every node's held ``PullInstructions``
returns -> each node pushes its reply -> the driver's held ``PullMessages`` returns once all N replies are
there (it may take several pulls). Latency is measured from just before the push to the last reply pulled.

Layout (2-core box): the SuperLink runs in its own process (started and ended by PID); this process runs the
driver and the N responders (raw pb stubs, one grpclib Channel -- one TCP connection -- per node, as real
nodes). ``--inproc`` puts the link in this process too, for comparison.

Responders answer with ``PushReplies(pull_max_messages, pull_timeout)``, which also waits for their next
instruction (one call per instruction); ``--separate-pull`` uses PushReplies then PullInstructions (two).

``--sdk`` measures the SDK instead of raw stubs, in the same layout: N :class:`fl_async.supernode.SuperNode`
(an ``async def`` ClientApp answering at once with an empty RecordSet, ``max_concurrency=1``) and an
:class:`fl_async.server.AsyncDriver` (``send_and_receive`` of N messages per round) in this process.
``--sdk-nodes`` drives the same SuperNodes with the raw-stub driver (the node side alone is SDK).
``--profile FILE`` writes a cProfile of this process over the measured rounds (``.prof``, per N: FILE with
``-N`` inserted before the suffix); read it with ``python -m pstats``.

Prints, per N: median and p99 round latency, replies/s (N x rounds / total time), link CPU and client CPU
(this process: driver + responders) per round, link RSS growth per held poll, and the time for all N nodes to
connect and register at once. Run::

    python -m benchmarks.link_roundtrip [--nodes 10,100,1000] [--rounds 0] [--inproc] [--separate-pull]
                                        [--sdk | --sdk-nodes] [--profile FILE] [--metrics-compare]
                                        [--auth-compare]

``--metrics-compare`` runs each N with the link's Prometheus metrics off and on (``/metrics`` scraped every
second from a thread of the link process), alternating off/on/off/on, and prints the ratios.

``--auth-compare`` runs each N over TLS without and with node authentication (an allow-list of the N nodes' keys:
signed registration, then a counter + HMAC-SHA256 on every Fleet call), SuperNodes driven by the raw-stub driver,
alternating twice, and prints the ratios.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from benchmarks._proc import read_cpu_seconds

LINK_MAIN = """
import asyncio, signal, sys, threading, time, urllib.request
from fl_async.superlink import LinkConfig, SuperLink

def scrape_every_second(address):
    while True:
        time.sleep(1.0)
        try:
            urllib.request.urlopen(f"http://{address}/metrics", timeout=5).read()
        except OSError:
            return

async def main():
    args = sys.argv[1:]
    metrics = "127.0.0.1:0" if args == ["metrics"] else None
    tls = allow = None
    if args[:1] == ["tls"]:  # tls CERT_DIR [ALLOW_LIST]: TLS, and node authentication with an allow-list
        from pathlib import Path
        from fl_async._net import ServerTLS
        d = Path(args[1])
        tls = ServerTLS(d / "ca.crt", d / "server.pem", d / "server.key")
        allow = args[2] if len(args) > 2 else None
    cfg = LinkConfig(
        driver_api_address="127.0.0.1:0", fleet_api_address="127.0.0.1:0", max_poll_timeout=30, metrics_address=metrics,
        tls=tls, auth_list_public_keys=allow,
    )
    async with SuperLink(cfg) as link:
        if link.metrics_address:
            threading.Thread(target=scrape_every_second, args=(link.metrics_address,), daemon=True).start()
        print("ADDR", link.driver_address, link.fleet_address, flush=True)
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        await stop.wait()

asyncio.run(main())
"""


def read_rss(pid: int) -> int | None:
    """Current resident set size of ``pid`` in bytes (``VmRSS``), or ``None``."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def _profile_path(profile: str | None, n: int) -> Path | None:
    if not profile:
        return None
    p = Path(profile)
    return p.with_name(f"{p.stem}-{n}{p.suffix or '.prof'}")


class _Measure:
    """CPU and wall-clock accounting over the measured rounds (link process + this process), optional cProfile."""

    def __init__(self, link_pid: int, profile: Path | None) -> None:
        self.link_pid = link_pid
        self.profile = profile
        self.prof = cProfile.Profile() if profile else None

    def _link_cpu(self) -> float:
        return (read_cpu_seconds(self.link_pid) or 0.0) if self.link_pid != os.getpid() else time.process_time()

    def start(self) -> None:
        self.cpu0, self.own0, self.t0 = self._link_cpu(), time.process_time(), time.perf_counter()
        if self.prof is not None:
            self.prof.enable()

    def stop(self) -> None:
        if self.prof is not None:
            self.prof.disable()
            self.prof.dump_stats(str(self.profile))
        self.total = time.perf_counter() - self.t0
        self.cpu = self._link_cpu() - self.cpu0
        self.own = time.process_time() - self.own0


def _figures(n: int, lat: list[float], m: _Measure, register_s: float, rss: tuple[int | None, int | None]) -> dict:
    rounds = len(lat)
    lat = sorted(lat)
    p99 = lat[min(len(lat) - 1, round(0.99 * (len(lat) - 1)))]
    before, held = rss
    return {
        "n": n,
        "rounds": rounds,
        "median_ms": statistics.median(lat) * 1e3,
        "p99_ms": p99 * 1e3,
        "replies_per_s": n * rounds / m.total,
        "link_cpu_ms_per_round": m.cpu / rounds * 1e3,
        "register_s": register_s,
        "client_cpu_ms_per_round": m.own / rounds * 1e3,
        "rss_per_poll_kb": (held - before) / n / 1024 if before and held else float("nan"),
    }


async def run_n(
    n: int,
    rounds: int,
    driver_address: str,
    fleet_address: str,
    link_pid: int,
    combined: bool = True,
    profile: Path | None = None,
) -> dict[str, float]:
    from fl_async.proto.fl_async import v1 as pb
    from fl_async.testing.wire import RawDriver, RawNode, channel, instruction, reply_to

    rss_before = read_rss(link_pid)
    dch = channel(driver_address)
    drv = await RawDriver.create(pb.DriverStub(dch))
    channels = [channel(fleet_address) for _ in range(n)]
    t_reg = time.perf_counter()  # all N connect and register at once (the listen backlog matters here)
    nodes = await asyncio.gather(*(RawNode.create(pb.FleetStub(ch), interval=60.0) for ch in channels))
    register_s = time.perf_counter() - t_reg

    async def respond(node: RawNode) -> None:
        msgs: list = []
        while True:
            if not msgs:
                msgs = await node.pull(timeout=30, max_messages=8)
            elif combined:  # reply and wait for the next instruction in the same call
                msgs = list((await node.reply_and_pull([reply_to(m) for m in msgs], 30, 8)).instructions)
            else:
                await node.reply([reply_to(m) for m in msgs])
                msgs = []

    tasks = [asyncio.create_task(respond(node)) for node in nodes]
    # all N polls held: wait until the link has nothing queued and every node is registered
    res = await drv.stub.wait_for_nodes(
        pb.WaitForNodesRequest(run_id=drv.run_id, min_nodes=n, timeout=30), metadata=drv.metadata
    )
    assert len(res.node_ids) >= n, f"only {len(res.node_ids)} of {n} nodes registered"
    await asyncio.sleep(0.5)  # let the first pulls reach the link (benchmark only; tests never sleep)
    rss_held = read_rss(link_pid)

    async def one_round() -> float:
        msgs = [instruction(drv.run_id, node.node_id) for node in nodes]
        t0 = time.perf_counter()
        ids = [i for i in (await drv.push(msgs)).message_ids if i]
        assert len(ids) == n
        got = 0
        while got < n:
            got += len(await drv.pull(ids, timeout=30))
        return time.perf_counter() - t0

    for _ in range(2):
        await one_round()
    m = _Measure(link_pid, profile)
    m.start()
    lat = [await one_round() for _ in range(rounds)]
    m.stop()
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    for ch in channels:
        ch.close()
    dch.close()
    return _figures(n, lat, m, register_s, (rss_before, rss_held))


def _sdk_app():  # type: ignore[no-untyped-def]
    from fl_async.client import ClientApp
    from fl_async.common import Context, Message, RecordSet

    app = ClientApp()

    @app.train()
    async def train(msg: Message, ctx: Context) -> Message:
        return msg.create_reply(RecordSet())

    return app


async def run_n_sdk(
    n: int,
    rounds: int,
    driver_address: str,
    fleet_address: str,
    link_pid: int,
    profile: Path | None = None,
    raw_driver: bool = False,
    roots: bytes | None = None,
    keys: list[tuple[Path, Path]] | None = None,
) -> dict[str, float]:
    """As :func:`run_n` with SDK nodes: N SuperNodes (async ClientApp answering at once), driven by an
    AsyncDriver (``send_and_receive``), or with ``raw_driver`` by the raw-stub driver of :func:`run_n`."""
    import anyio

    from fl_async.common import MessageType, RecordSet
    from fl_async.proto.fl_async import v1 as pb
    from fl_async.server import AsyncDriver
    from fl_async.supernode import SuperNode
    from fl_async.testing.wire import RawDriver, channel, instruction

    app = _sdk_app()
    rss_before = read_rss(link_pid)
    tls = {"insecure": True} if roots is None else {"root_certificates": roots}
    nodes = [
        SuperNode(
            app,
            fleet_address,
            heartbeat_interval=60.0,
            poll_timeout=30.0,
            **tls,  # type: ignore[arg-type]
            **({"auth_private_key": keys[i][0], "auth_public_key": keys[i][1]} if keys else {}),  # type: ignore[arg-type]
        )
        for i in range(n)
    ]
    if raw_driver and roots is not None:
        from fl_async._grpc import open_channel
        from fl_async._net import client_ssl_context

        host, port = driver_address.rsplit(":", 1)
        dch = open_channel(host, int(port), client_ssl_context(roots))
    else:
        dch = channel(driver_address) if raw_driver else None
    async with AsyncDriver(driver_address, **tls) as driver, anyio.create_task_group() as tg:  # type: ignore[arg-type]
        raw = await RawDriver.create(pb.DriverStub(dch)) if dch is not None else None
        t_reg = time.perf_counter()  # all N connect and register at once
        for node in nodes:
            tg.start_soon(node.run)
        node_ids = await driver.wait_for_nodes(n, timeout=60)
        register_s = time.perf_counter() - t_reg
        assert len(node_ids) >= n, f"only {len(node_ids)} of {n} nodes registered"
        await asyncio.sleep(0.5)  # let the first pulls reach the link (benchmark only; tests never sleep)
        rss_held = read_rss(link_pid)

        async def one_round(group: int) -> float:
            msgs = [driver.create_message(RecordSet(), MessageType.TRAIN, nid, str(group)) for nid in node_ids]
            t0 = time.perf_counter()
            replies = await driver.send_and_receive(msgs, timeout=60)
            dt = time.perf_counter() - t0
            assert len(replies) == n and all(r.has_content() for r in replies), "missing or error replies"
            return dt

        async def one_raw_round(group: int) -> float:
            assert raw is not None
            msgs = [instruction(raw.run_id, nid, group_id=str(group)) for nid in node_ids]
            t0 = time.perf_counter()
            ids = [i for i in (await raw.push(msgs)).message_ids if i]
            assert len(ids) == n
            got = 0
            while got < n:
                got += len(await raw.pull(ids, timeout=30))
            return time.perf_counter() - t0

        measure_round = one_raw_round if raw is not None else one_round
        for i in range(2):
            await measure_round(i)
        m = _Measure(link_pid, profile)
        m.start()
        lat = [await measure_round(2 + i) for i in range(rounds)]
        m.stop()
        calls = [getattr(node, "fleet_calls", None) for node in nodes]  # (absent before the counters existed)
        for node in nodes:
            node.stop()
        tg.cancel_scope.deadline = anyio.current_time() + 10  # graceful stop, bounded
    if dch is not None:
        dch.close()
    out = _figures(n, lat, m, register_s, (rss_before, rss_held))
    if all(c is not None for c in calls):
        pulls_pushes = ("PullInstructions", "PushReplies", "PushReplies+pull")
        out["calls_per_reply"] = sum(c[k] for c in calls for k in pulls_pushes) / (n * (rounds + 2))  # type: ignore[index]
    return out


async def _run_mode(mode: str, n: int, rounds: int, driver: str, fleet: str, pid: int, profile: str | None) -> dict:
    path = _profile_path(profile, n)
    if mode in ("sdk", "sdk-nodes"):
        return await run_n_sdk(n, rounds, driver, fleet, pid, path, raw_driver=mode == "sdk-nodes")
    return await run_n(n, rounds, driver, fleet, pid, mode == "combined", path)


def default_rounds(n: int) -> int:
    return max(10, min(50, 3000 // n))


async def bench_inproc(ns: list[int], rounds: int, mode: str, profile: str | None = None) -> list[dict[str, float]]:
    from fl_async.superlink import LinkConfig, SuperLink

    out = []
    for n in ns:
        cfg = LinkConfig(driver_api_address="127.0.0.1:0", fleet_api_address="127.0.0.1:0", max_poll_timeout=30)
        async with SuperLink(cfg) as link:
            addresses = link.driver_address, link.fleet_address
            out.append(await _run_mode(mode, n, rounds or default_rounds(n), *addresses, os.getpid(), profile))
    return out


def bench_subprocess(
    ns: list[int], rounds: int, mode: str, profile: str | None = None, metrics: bool = False
) -> list[dict[str, float]]:
    """One link process per N; with ``metrics``, the link serves ``/metrics`` and is scraped every second."""
    out = []
    for n in ns:
        argv = [sys.executable, "-c", LINK_MAIN, *(["metrics"] if metrics else [])]
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
        try:
            line = proc.stdout.readline()  # type: ignore[union-attr]
            if not line.startswith("ADDR"):
                raise RuntimeError(f"link did not start: {line!r}")
            _, driver, fleet = line.split()
            out.append(asyncio.run(_run_mode(mode, n, rounds or default_rounds(n), driver, fleet, proc.pid, profile)))
        finally:
            proc.terminate()  # our own child, by PID
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nodes", default="10,100,1000", help="comma-separated N values")
    parser.add_argument("--rounds", type=int, default=0, help="measured rounds per N (0: 50 / 30 / 10 by N)")
    parser.add_argument("--inproc", action="store_true", help="run the link in this process")
    parser.add_argument(
        "--separate-pull", action="store_true", help="responders reply, then pull (2 calls), not one combined call"
    )
    parser.add_argument(
        "--sdk", action="store_true", help="SuperNodes (async ClientApp) + AsyncDriver instead of raw pb stubs"
    )
    parser.add_argument(
        "--sdk-nodes", action="store_true", help="SuperNodes (async ClientApp) driven by the raw-stub driver"
    )
    parser.add_argument("--profile", default=None, help="write a cProfile of this process per N (FILE-N.prof)")
    parser.add_argument(
        "--metrics-compare",
        action="store_true",
        help="per N, run with the link's Prometheus metrics off and on (scraped every 1 s), alternating "
        "off/on/off/on, and print the ratios (best median of each)",
    )
    parser.add_argument(
        "--auth-compare",
        action="store_true",
        help="per N, over TLS: without and with node authentication (keys on an allow-list), alternating "
        "twice, SuperNodes + raw pb driver; print the ratios (best median of each)",
    )
    args = parser.parse_args()
    if (args.sdk or args.sdk_nodes) and args.separate_pull:
        parser.error("--separate-pull applies to raw responders only")
    if args.sdk and args.sdk_nodes:
        parser.error("choose one of --sdk and --sdk-nodes")
    ns = [int(x) for x in args.nodes.split(",")]
    mode = "sdk" if args.sdk else "sdk-nodes" if args.sdk_nodes else "separate" if args.separate_pull else "combined"
    if args.auth_compare:
        _auth_compare(ns, args.rounds)
        return
    if args.metrics_compare:
        if args.inproc:
            parser.error("--metrics-compare runs the link in its own process")
        _metrics_compare(ns, args.rounds, mode)
        return
    if args.inproc:
        results = asyncio.run(bench_inproc(ns, args.rounds, mode, args.profile))
    else:
        results = bench_subprocess(ns, args.rounds, mode, args.profile)
    where = "link in this process" if args.inproc else "link in its own process"
    what = {
        "sdk": "SDK: SuperNode + async ClientApp, AsyncDriver.send_and_receive",
        "sdk-nodes": "SuperNode + async ClientApp, raw pb driver",
        "combined": "raw pb stubs; PushReplies+pull in one call",
        "separate": "raw pb stubs; PushReplies then PullInstructions",
    }[mode]
    print(f"link_roundtrip ({where}; nodes + driver in one process; {what}; 127.0.0.1)")
    print(
        f"{'N':>6} {'rounds':>6} {'median ms':>10} {'p99 ms':>9} {'replies/s':>10} {'link CPU ms/round':>18} "
        f"{'client CPU ms/round':>20} {'link KB/held poll':>18} {'register all s':>15} {'node calls/reply':>17}"
    )
    for r in results:
        print(
            f"{r['n']:>6} {r['rounds']:>6} {r['median_ms']:>10.2f} {r['p99_ms']:>9.2f} {r['replies_per_s']:>10.0f} "
            f"{r['link_cpu_ms_per_round']:>18.1f} {r['client_cpu_ms_per_round']:>20.1f} "
            f"{r['rss_per_poll_kb']:>18.1f} {r['register_s']:>15.2f} {r.get('calls_per_reply', float('nan')):>17.2f}"
        )


def _auth_compare(ns: list[int], rounds: int) -> None:
    """TLS alone vs TLS + node authentication (allow-list of N keys; signed registration, per-call HMAC), with N
    SuperNodes (async ClientApp) and the raw-stub driver, alternating twice per N; prints the best medians and the
    ratios."""
    import tempfile

    from fl_async.testing.certs import write_certs, write_node_keys

    print("link_roundtrip --auth-compare (link in its own process over TLS; SuperNodes + raw pb driver; 127.0.0.1)")
    print(
        f"{'N':>6} {'median ms TLS':>14} {'median ms TLS+auth':>19} {'ratio':>6} "
        f"{'link CPU ms TLS':>16} {'link CPU ms TLS+auth':>21} {'ratio':>6}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        certs = write_certs(tmp)
        roots = certs.ca_cert.read_bytes()
        for n in ns:
            keys = [write_node_keys(tmp, f"node{i}") for i in range(n)]
            allow = Path(tmp) / f"allow-{n}.csv"
            allow.write_text("".join(pub.read_text() for _, pub in keys))
            runs: dict[bool, list[dict[str, float]]] = {False: [], True: []}
            for auth in (False, True, False, True):
                argv = ["tls", tmp, str(allow)] if auth else ["tls", tmp]
                runs[auth] += _bench_link_args(
                    n, rounds, argv, roots=roots, keys=keys if auth else None, mode="sdk-nodes"
                )
            off = min(runs[False], key=lambda r: r["median_ms"])
            on = min(runs[True], key=lambda r: r["median_ms"])
            cpu_off = min(r["link_cpu_ms_per_round"] for r in runs[False])
            cpu_on = min(r["link_cpu_ms_per_round"] for r in runs[True])
            print(
                f"{n:>6} {off['median_ms']:>14.2f} {on['median_ms']:>19.2f} {on['median_ms'] / off['median_ms']:>6.2f} "
                f"{cpu_off:>16.1f} {cpu_on:>21.1f} {cpu_on / cpu_off:>6.2f}",
                flush=True,
            )


def _bench_link_args(
    n: int, rounds: int, link_args: list[str], *, roots: bytes, keys: list[tuple[Path, Path]] | None, mode: str
) -> list[dict[str, float]]:
    """One link process started with ``link_args`` (see ``LINK_MAIN``), one measurement of N SDK nodes."""
    proc = subprocess.Popen([sys.executable, "-c", LINK_MAIN, *link_args], stdout=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()  # type: ignore[union-attr]
        if not line.startswith("ADDR"):
            raise RuntimeError(f"link did not start: {line!r}")
        _, driver, fleet = line.split()
        coro = run_n_sdk(
            n,
            rounds or default_rounds(n),
            driver,
            fleet,
            proc.pid,
            raw_driver=mode == "sdk-nodes",
            roots=roots,
            keys=keys,
        )
        return [asyncio.run(coro)]
    finally:
        proc.terminate()  # our own child, by PID
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def _metrics_compare(ns: list[int], rounds: int, mode: str) -> None:
    """Metrics off vs on, alternating twice per N; prints each configuration's best median and the ratios."""
    print(f"link_roundtrip --metrics-compare (link in its own process; {mode}; 127.0.0.1; off/on/off/on per N)")
    print(
        f"{'N':>6} {'median ms off':>14} {'median ms on':>13} {'on/off':>7} "
        f"{'link CPU ms off':>16} {'link CPU ms on':>15} {'on/off':>7}"
    )
    for n in ns:
        runs: dict[bool, list[dict[str, float]]] = {False: [], True: []}
        for metrics in (False, True, False, True):
            runs[metrics] += bench_subprocess([n], rounds, mode, metrics=metrics)
        off = min(runs[False], key=lambda r: r["median_ms"])
        on = min(runs[True], key=lambda r: r["median_ms"])
        cpu_off = min(r["link_cpu_ms_per_round"] for r in runs[False])
        cpu_on = min(r["link_cpu_ms_per_round"] for r in runs[True])
        print(
            f"{n:>6} {off['median_ms']:>14.2f} {on['median_ms']:>13.2f} {on['median_ms'] / off['median_ms']:>7.2f} "
            f"{cpu_off:>16.1f} {cpu_on:>15.1f} {cpu_on / cpu_off:>7.2f}"
        )


if __name__ == "__main__":
    main()

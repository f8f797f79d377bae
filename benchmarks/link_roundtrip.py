"""SuperLink round latency: N responders that answer at once, one driver, real gRPC on 127.0.0.1.

A round = one ``PushMessages`` with N instructions (one per node) -> every node's held ``PullInstructions``
returns -> each node pushes its reply -> the driver's held ``PullMessages`` returns once all N replies are
there (it may take several pulls). Latency is measured from just before the push to the last reply pulled.

Layout (2-core box): the SuperLink runs in its own process (started and ended by PID); this process runs the
driver and the N responders (raw pb stubs, one grpclib Channel -- one TCP connection -- per node, as real
nodes). ``--inproc`` puts the link in this process too, for comparison.

Responders answer with ``PushReplies(pull_max_messages, pull_timeout)``, which also waits for their next
instruction (one call per instruction); ``--separate-pull`` uses PushReplies then PullInstructions (two).

Prints, per N: median and p99 round latency, replies/s (N x rounds / total time), link CPU and client CPU
(this process: driver + responders) per round, link RSS growth per held poll, and the time for all N nodes to
connect and register at once. Run::

    python -m benchmarks.link_roundtrip [--nodes 10,100,1000] [--rounds 0] [--inproc] [--separate-pull]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import time

from benchmarks._proc import read_cpu_seconds

LINK_MAIN = """
import asyncio, signal, sys
from fl_async.superlink import LinkConfig, SuperLink

async def main():
    cfg = LinkConfig(driver_api_address="127.0.0.1:0", fleet_api_address="127.0.0.1:0", max_poll_timeout=30)
    async with SuperLink(cfg) as link:
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


async def run_n(
    n: int, rounds: int, driver_address: str, fleet_address: str, link_pid: int, combined: bool = True
) -> dict[str, float]:
    from fl_async.proto.fl_async import v1 as pb
    from tests.link_stubs import RawDriver, RawNode, channel, instruction, reply_to

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
    res = await drv.stub.wait_for_nodes(pb.WaitForNodesRequest(run_id=drv.run_id, min_nodes=n, timeout=30))
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
    cpu0 = read_cpu_seconds(link_pid) if link_pid != os.getpid() else time.process_time()
    own0 = time.process_time()
    t_all = time.perf_counter()
    lat = [await one_round() for _ in range(rounds)]
    total = time.perf_counter() - t_all
    cpu1 = read_cpu_seconds(link_pid) if link_pid != os.getpid() else time.process_time()
    own1 = time.process_time()
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    for ch in channels:
        ch.close()
    dch.close()
    lat.sort()
    p99 = lat[min(len(lat) - 1, int(round(0.99 * (len(lat) - 1))))]
    return {
        "n": n,
        "rounds": rounds,
        "median_ms": statistics.median(lat) * 1e3,
        "p99_ms": p99 * 1e3,
        "replies_per_s": n * rounds / total,
        "link_cpu_ms_per_round": ((cpu1 or 0) - (cpu0 or 0)) / rounds * 1e3,
        "register_s": register_s,
        "client_cpu_ms_per_round": (own1 - own0) / rounds * 1e3,
        "rss_per_poll_kb": (rss_held - rss_before) / n / 1024 if rss_before and rss_held else float("nan"),
    }


def default_rounds(n: int) -> int:
    return max(10, min(50, 3000 // n))


async def bench_inproc(ns: list[int], rounds: int, combined: bool) -> list[dict[str, float]]:
    from fl_async.superlink import LinkConfig, SuperLink

    out = []
    for n in ns:
        cfg = LinkConfig(driver_api_address="127.0.0.1:0", fleet_api_address="127.0.0.1:0", max_poll_timeout=30)
        async with SuperLink(cfg) as link:
            addresses = link.driver_address, link.fleet_address
            out.append(await run_n(n, rounds or default_rounds(n), *addresses, os.getpid(), combined))
    return out


def bench_subprocess(ns: list[int], rounds: int, combined: bool) -> list[dict[str, float]]:
    out = []
    for n in ns:
        proc = subprocess.Popen([sys.executable, "-c", LINK_MAIN], stdout=subprocess.PIPE, text=True)
        try:
            line = proc.stdout.readline()  # type: ignore[union-attr]
            if not line.startswith("ADDR"):
                raise RuntimeError(f"link did not start: {line!r}")
            _, driver, fleet = line.split()
            out.append(asyncio.run(run_n(n, rounds or default_rounds(n), driver, fleet, proc.pid, combined)))
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
    args = parser.parse_args()
    ns = [int(x) for x in args.nodes.split(",")]
    combined = not args.separate_pull
    if args.inproc:
        results = asyncio.run(bench_inproc(ns, args.rounds, combined))
    else:
        results = bench_subprocess(ns, args.rounds, combined)
    where = "link in this process" if args.inproc else "link in its own process"
    calls = "PushReplies+pull in one call" if combined else "PushReplies then PullInstructions"
    print(f"link_roundtrip ({where}; responders + driver in one process; raw pb stubs; {calls}; 127.0.0.1)")
    print(f"{'N':>6} {'rounds':>6} {'median ms':>10} {'p99 ms':>9} {'replies/s':>10} {'link CPU ms/round':>18} "
          f"{'client CPU ms/round':>20} {'link KB/held poll':>18} {'register all s':>15}")
    for r in results:
        print(f"{r['n']:>6} {r['rounds']:>6} {r['median_ms']:>10.2f} {r['p99_ms']:>9.2f} {r['replies_per_s']:>10.0f} "
              f"{r['link_cpu_ms_per_round']:>18.1f} {r['client_cpu_ms_per_round']:>20.1f} "
              f"{r['rss_per_poll_kb']:>18.1f} {r['register_s']:>15.2f}")


if __name__ == "__main__":
    main()

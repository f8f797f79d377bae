"""Durable link state (``--database``) against the in-memory link, in one run: the cost of writing through to SQLite.

* **tiny rounds**: ``link_roundtrip``'s raw-stub round (N responders, one driver, link in its own process) at
  N = 10 and 100, with the link in memory and with ``database=FILE`` (``--sync normal``); prints median/p99 and
  the ratio.
* **large payload**: one ``send_and_receive`` of a 100 MiB float32 array to 5 SuperNodes that echo it back (SDK
  driver and nodes in this process, link in its own), memory vs database; one warm-up round of 1 MiB first.
* **restart**: a link with a database holding 10,000 queued instructions for 10 nodes is killed with SIGKILL and
  started again; prints the time from the new process's start to "serving" and to all 10 nodes (reusing their
  old credentials) having received their first instructions.

Each link with a database prints its worst commit (the longest time one write held its event loop) and worst
blob-file write when it stops. Run::

    python -m benchmarks.durable_link [--nodes 10,100] [--rounds 0] [--skip-large] [--skip-restart]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.link_roundtrip import default_rounds, run_n

LINK_MAIN = """
import asyncio, signal, sys
from fl_async.superlink import LinkConfig, SuperLink

async def main(database, driver, fleet, blob):
    cfg = LinkConfig(driver_api_address=driver, fleet_api_address=fleet, blob_api_address=blob,
                     max_poll_timeout=30, database=database)
    link = SuperLink(cfg)
    async with link:
        print("ADDR", link.driver_address, link.fleet_address, flush=True)
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        await stop.wait()
        store, blobs = link.state.store, link.blob_directory
        if hasattr(store, "worst_commit"):
            print("WORST", store.worst_commit * 1e3, store.worst_transaction * 1e3,
                  blobs.worst_write * 1e3 if blobs is not None else 0.0, store.commits, flush=True)

asyncio.run(main(*sys.argv[1:]))
"""


class Link:
    """A SuperLink child process (ended by its PID)."""

    def __init__(self, database: str, addresses: tuple[str, str, str] = ("127.0.0.1:0",) * 3) -> None:
        self.started = time.perf_counter()
        self.proc = subprocess.Popen(
            [sys.executable, "-c", LINK_MAIN, database, *addresses], stdout=subprocess.PIPE, text=True
        )
        line = self.proc.stdout.readline()  # type: ignore[union-attr]
        self.serving = time.perf_counter()
        if not line.startswith("ADDR"):
            raise RuntimeError(f"link did not start: {line!r}")
        _, self.driver, self.fleet = line.split()

    def stop(self) -> str:
        """SIGTERM, wait; returns the WORST line (or "")."""
        self.proc.send_signal(signal.SIGTERM)
        out, _ = self.proc.communicate(timeout=30)
        return next((line for line in out.splitlines() if line.startswith("WORST")), "")

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait(timeout=10)


def _worst(line: str) -> str:
    if not line:
        return ""
    _, commit, txn, blob, commits = line.split()
    return (
        f"worst commit {float(commit):.2f} ms, worst SQLite time per transaction {float(txn):.2f} ms, worst blob write "
        + (f"{float(blob):.1f} ms, {int(commits)} commits")
    )


def bench_rounds(ns: list[int], rounds: int, tmp: Path) -> None:
    for n in ns:
        r = rounds or default_rounds(n)
        figures: dict[str, dict[str, float]] = {}
        for mode in ("memory", "database"):
            database = ":memory:" if mode == "memory" else str(tmp / f"rounds-{n}.db")
            link = Link(database)
            try:
                figures[mode] = asyncio.run(run_n(n, r, link.driver, link.fleet, link.proc.pid))
            finally:
                worst = link.stop()
            print(
                f"rounds N={n:<4d} {mode:8s} median {figures[mode]['median_ms']:7.2f} ms  p99 "
                f"{figures[mode]['p99_ms']:7.2f} ms  link CPU {figures[mode]['link_cpu_ms_per_round']:6.2f} "
                f"ms/round  ({r} rounds) {_worst(worst)}",
                flush=True,
            )
        ratio = figures["database"]["median_ms"] / figures["memory"]["median_ms"]
        print(f"rounds N={n:<4d} database/memory median ratio {ratio:.2f}x", flush=True)


async def _large_round(driver_address: str, fleet_address: str, mib: int, nodes: int = 5) -> float:
    import numpy as np

    from fl_async.client import ClientApp
    from fl_async.common import Context, Message, MessageType, ParametersRecord, RecordSet
    from fl_async.common.arrays import Array
    from fl_async.server import AsyncDriver
    from fl_async.supernode import SuperNode

    app = ClientApp()

    @app.query()
    async def echo(msg: Message, ctx: Context) -> Message:
        return msg.create_reply(msg.content)

    def content(n_bytes: int) -> RecordSet:
        arr = np.arange(n_bytes // 4, dtype=np.float32)
        return RecordSet(parameters_records={"p": ParametersRecord({"w": Array.from_numpy(arr)})})

    async with contextlib.AsyncExitStack() as stack:
        for _ in range(nodes):
            await stack.enter_async_context(SuperNode(app, fleet_address, insecure=True))
        driver = await stack.enter_async_context(AsyncDriver(driver_address, insecure=True))
        ids = await driver.wait_for_nodes(nodes, timeout=60)
        warm = [driver.create_message(content(2**20), MessageType.QUERY, i, "w") for i in ids]
        await driver.send_and_receive(warm, timeout=120)
        msgs = [driver.create_message(content(mib * 2**20), MessageType.QUERY, i, "1") for i in ids]
        t0 = time.perf_counter()
        replies = await driver.send_and_receive(msgs, timeout=300)
        took = time.perf_counter() - t0
        assert len(replies) == nodes and not any(r.has_error() for r in replies)
        return took


def bench_large(tmp: Path, mib: int = 100) -> None:
    took: dict[str, float] = {}
    for mode in ("memory", "database"):
        database = ":memory:" if mode == "memory" else str(tmp / "large.db")
        link = Link(database)
        try:
            took[mode] = asyncio.run(_large_round(link.driver, link.fleet, mib))
        finally:
            worst = link.stop()
        print(f"large {mib} MiB x 5 nodes and back, {mode:8s} {took[mode]:.2f} s {_worst(worst)}", flush=True)
    print(f"large database/memory ratio {took['database'] / took['memory']:.2f}x", flush=True)


async def _fill(driver_address: str, fleet_address: str, nodes: int, total: int) -> list[Any]:
    from fl_async.proto.fl_async import v1 as pb
    from fl_async.testing.wire import RawDriver, RawNode, channel, instruction

    dch = channel(driver_address)
    drv = await RawDriver.create(pb.DriverStub(dch))
    fch = channel(fleet_address)
    raw = [await RawNode.create(pb.FleetStub(fch), interval=60.0) for _ in range(nodes)]
    per = total // nodes
    for node in raw:
        for start in range(0, per, 1000):
            msgs = [instruction(drv.run_id, node.node_id, ttl=3600.0) for _ in range(min(1000, per - start))]
            assert all((await drv.push(msgs)).message_ids)
    dch.close()
    fch.close()
    return [(node.node_id, node.token) for node in raw]


async def _served(fleet_address: str, creds: list[Any]) -> float:
    """Seconds until every node (old credentials, fresh connections) has pulled its first instructions."""
    from fl_async.proto.fl_async import v1 as pb
    from fl_async.testing.wire import RawNode, channel

    async def one(node_id: int, token: bytes) -> None:
        ch = channel(fleet_address)
        node = RawNode(pb.FleetStub(ch), node_id, token, 60.0)
        try:
            while not await node.pull(timeout=5, max_messages=1):
                pass
        finally:
            ch.close()

    t0 = time.perf_counter()
    await asyncio.gather(*(one(nid, tok) for nid, tok in creds))
    return time.perf_counter() - t0


def bench_restart(tmp: Path, nodes: int = 10, total: int = 10_000) -> None:
    from tests.node_driver import free_port

    database = str(tmp / "restart.db")
    addresses = tuple(f"127.0.0.1:{free_port()}" for _ in range(3))
    link = Link(database, addresses)  # type: ignore[arg-type]
    creds = asyncio.run(_fill(link.driver, link.fleet, nodes, total))
    link.kill()  # SIGKILL, our own child by PID
    size = os.path.getsize(database) + os.path.getsize(database + "-wal")
    again = Link(database, addresses)  # type: ignore[arg-type]
    try:
        to_serving = again.serving - again.started
        served = asyncio.run(_served(again.fleet, creds))
    finally:
        again.stop()
    print(
        f"restart with {total} queued instructions ({size / 2**20:.1f} MiB database+WAL): process start to serving "
        f"{to_serving:.2f} s, then all {nodes} nodes pulled again after {served:.2f} s: total "
        f"{to_serving + served:.2f} s",
        flush=True,
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("--nodes", default="10,100")
    ap.add_argument("--rounds", type=int, default=0)
    ap.add_argument("--skip-large", action="store_true")
    ap.add_argument("--skip-restart", action="store_true")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        bench_rounds([int(x) for x in args.nodes.split(",") if x], args.rounds, tmp)
        if not args.skip_large:
            bench_large(tmp)
        if not args.skip_restart:
            bench_restart(tmp)


if __name__ == "__main__":
    main()

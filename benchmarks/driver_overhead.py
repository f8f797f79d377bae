"""Driver SDK overhead: AsyncDriver vs the blocking Driver (portal) vs the guide's loop, real gRPC on 127.0.0.1.

Layout (2-core box): the SuperLink runs in its own process (started and ended by PID); N SuperNodes with a
ClientApp that answers at once run in one background thread of this process (their own event loop); the
driver runs in the main thread. Node and driver share this process's GIL, so absolute figures are
pessimistic; compare the rows with each other.

Prints:
* call latency of ``get_node_ids`` (median / p99 over ``--calls`` calls): AsyncDriver direct vs Driver;
* round latency with N nodes (push N instructions -> all N replies in), median / p99 over ``--rounds``:
  ``AsyncDriver.send_and_receive``, ``AsyncDriver.receive``, ``Driver.send_and_receive`` and the guide's
  ``push_messages`` + ``pull_messages`` loop (which never reaches its ``time.sleep(3)`` here).

Run::

    python -m benchmarks.driver_overhead [--nodes 10] [--rounds 30] [--calls 500]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

LINK_MAIN = """
import asyncio, signal
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


def _stats(samples: list[float]) -> str:
    samples = sorted(samples)
    p99 = samples[min(len(samples) - 1, int(round(0.99 * (len(samples) - 1))))]
    return f"median {statistics.median(samples) * 1e3:8.2f} ms   p99 {p99 * 1e3:8.2f} ms"


@contextlib.contextmanager
def _link_process() -> Any:
    proc = subprocess.Popen(
        [sys.executable, "-c", LINK_MAIN],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()  # blocks until the link prints its addresses (or exits)
        if not line.startswith("ADDR"):
            raise RuntimeError(f"link did not start: {line!r}")
        _, driver_address, fleet_address = line.split()
        yield driver_address, fleet_address
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


@contextlib.asynccontextmanager
async def _nodes(fleet_address: str, n: int) -> Any:
    from fl_async.client import ClientApp
    from fl_async.common import Context, Message, RecordSet
    from fl_async.supernode import SuperNode

    app = ClientApp()

    @app.train()
    async def train(msg: Message, context: Context) -> Message:
        return msg.create_reply(RecordSet())

    async with contextlib.AsyncExitStack() as stack:
        nodes = [
            await stack.enter_async_context(SuperNode(app, fleet_address, insecure=True, heartbeat_interval=5))
            for _ in range(n)
        ]
        for node in nodes:
            await node.wait_registered(timeout=30)
        yield nodes


async def _timed(fn: Callable[[], Awaitable[Any]], count: int) -> list[float]:
    out = []
    for _ in range(count):
        started = time.perf_counter()
        await fn()
        out.append(time.perf_counter() - started)
    return out


def _timed_sync(fn: Callable[[], Any], count: int) -> list[float]:
    out = []
    for _ in range(count):
        started = time.perf_counter()
        fn()
        out.append(time.perf_counter() - started)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--calls", type=int, default=500)
    args = parser.parse_args(argv)

    from anyio.from_thread import start_blocking_portal

    from fl_async.common import MessageType, RecordSet
    from fl_async.server import AsyncDriver, Driver

    with _link_process() as (driver_address, fleet_address), start_blocking_portal(name="bench-nodes") as portal:
        with portal.wrap_async_context_manager(_nodes(fleet_address, args.nodes)):
            print(
                f"driver overhead: {args.nodes} nodes, {args.rounds} rounds, {args.calls} calls "
                f"(link in its own process; nodes in a thread of this one)"
            )

            async def async_part() -> dict[str, list[float]]:
                res: dict[str, list[float]] = {}
                async with AsyncDriver(driver_address, insecure=True) as d:
                    ids = await d.get_node_ids()
                    res["AsyncDriver get_node_ids"] = await _timed(d.get_node_ids, args.calls)

                    def msgs(rnd: str) -> list[Any]:
                        return [d.create_message(RecordSet(), MessageType.TRAIN, n, rnd) for n in ids]

                    async def sr() -> None:
                        assert len(await d.send_and_receive(msgs("sr"), timeout=30)) == len(ids)

                    async def rcv() -> None:
                        mids = await d.push_messages(msgs("rcv"))
                        assert len([r async for r in d.receive(mids, timeout=30)]) == len(ids)

                    await sr()  # warm-up
                    res["AsyncDriver send_and_receive round"] = await _timed(sr, args.rounds)
                    res["AsyncDriver receive() round"] = await _timed(rcv, args.rounds)
                return res

            results = asyncio.run(async_part())

            with Driver(driver_address, insecure=True) as d:
                ids = d.get_node_ids()
                results["Driver get_node_ids"] = _timed_sync(d.get_node_ids, args.calls)

                def msgs(rnd: str) -> list[Any]:
                    return [d.create_message(RecordSet(), MessageType.TRAIN, n, rnd) for n in ids]

                def sr() -> None:
                    assert len(d.send_and_receive(msgs("sr"), timeout=30)) == len(ids)

                def guide() -> None:
                    message_ids = [m for m in d.push_messages(msgs("guide")) if m != ""]
                    all_replies: list[Any] = []
                    while True:
                        all_replies += d.pull_messages(message_ids=message_ids)
                        if len(all_replies) == len(message_ids):
                            break
                        raise AssertionError("the guide's loop would have slept 3 s")

                results["Driver send_and_receive round"] = _timed_sync(sr, args.rounds)
                results["Driver guide loop round"] = _timed_sync(guide, args.rounds)

    for name, samples in results.items():
        print(f"  {name:38s} {_stats(samples)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Idle dispatch latency of a SuperNode: driver push -> ClientApp handler starts, real gRPC on 127.0.0.1.

The node is idle (its long-poll is held on the link) when each instruction is pushed; the time is taken just
before the driver's ``PushMessages`` call and as the first statement of the handler (both
``time.perf_counter()``, CLOCK_MONOTONIC, so comparable across processes). Also reported: push -> reply
pulled by the driver (the driver's ``PullMessages`` is a long-poll, issued right after the push).

Layout (2-core box): the SuperLink runs in its own process (started and ended by PID); this process runs
the SuperNode and the driver (raw pb stubs), each with its own grpclib Channel. ``--inproc`` puts the link
in this process too. Handlers: ``async def`` (awaited on the loop) and plain ``def`` (run in a worker
thread, so the figure includes starting that thread).

Run::

    python -m benchmarks.dispatch_latency [--iterations 300] [--inproc]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path

from benchmarks._proc import Proc, free_port, wait_for_port

LINK_MAIN = """
import asyncio, signal, sys
from fl_async.superlink import LinkConfig, SuperLink

async def main():
    cfg = LinkConfig(
        driver_api_address=sys.argv[1], fleet_api_address=sys.argv[2], blob_api_address="127.0.0.1:0", max_poll_timeout=30
    )
    async with SuperLink(cfg):
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        await stop.wait()

asyncio.run(main())
"""

IDLE_GAP = 0.02
"""Seconds between iterations, so that the node's next long-poll is held on the link (idle node)."""


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def _bench_app(started: dict[str, float]):  # type: ignore[no-untyped-def]
    from fl_async.client import ClientApp
    from fl_async.common import Context, Message, RecordSet

    app = ClientApp()

    @app.train()
    async def train(msg: Message, ctx: Context) -> Message:
        started[msg.metadata.message_id] = time.perf_counter()
        return msg.create_reply(RecordSet())

    @app.evaluate()
    def evaluate(msg: Message, ctx: Context) -> Message:
        started[msg.metadata.message_id] = time.perf_counter()
        return msg.create_reply(RecordSet())

    return app


async def measure(driver_address: str, fleet_address: str, iterations: int, warmup: int) -> dict[str, dict[str, float]]:
    """Run both handler kinds; returns per kind the median/p90/p99 figures in milliseconds."""
    from fl_async.supernode._fleet import FleetClient

    started: dict[str, float] = {}
    arrived: dict[str, float] = {}
    # Instrumentation only: note when each instruction reaches the node (in a PullInstructions response, or in
    # the response of a reply's push that also pulled), to split the latency into a link+network part and a
    # node-side part (decode, context, scheduling, thread start).
    original_pull, original_push = FleetClient.pull, FleetClient.push

    async def timed_pull(self, auth, max_messages, timeout):  # type: ignore[no-untyped-def]
        wires = await original_pull(self, auth, max_messages, timeout)
        now = time.perf_counter()
        for w in wires:
            arrived[w.metadata.message_id] = now
        return wires

    async def timed_push(self, request, pull_timeout=0.0):  # type: ignore[no-untyped-def]
        resp = await original_push(self, request, pull_timeout)
        now = time.perf_counter()
        for w in resp.instructions:
            arrived[w.metadata.message_id] = now
        return resp

    FleetClient.pull, FleetClient.push = timed_pull, timed_push  # type: ignore[method-assign]
    try:
        return await _measure(_bench_app(started), started, arrived, driver_address, fleet_address, iterations, warmup)
    finally:
        FleetClient.pull, FleetClient.push = original_pull, original_push  # type: ignore[method-assign]


async def _measure(app, started, arrived, driver_address, fleet_address, iterations, warmup):  # type: ignore[no-untyped-def]
    import anyio

    from fl_async.codec import message_from_proto, message_to_proto
    from fl_async.common import Message, Metadata, RecordSet
    from fl_async.proto.fl_async import v1 as pb
    from fl_async.supernode import SuperNode
    from fl_async.testing.wire import RawDriver, channel

    results: dict[str, dict[str, float]] = {}
    driver_channel = channel(driver_address)
    async with SuperNode(app, fleet_address, insecure=True, poll_timeout=30.0) as node:
        node_id = await node.wait_registered(timeout=10)
        drv = await RawDriver.create(pb.DriverStub(driver_channel))
        run = drv.run_id
        unary: list[float] = []  # reference in the same run: one small unary call (Driver.GetNodes)
        for i in range(warmup + iterations):
            t0 = time.perf_counter()
            await drv.stub.get_nodes(pb.GetNodesRequest(run_id=run), timeout=5, metadata=drv.metadata)
            if i >= warmup:
                unary.append((time.perf_counter() - t0) * 1e3)
        results["unary GetNodes"] = {
            "dispatch_median_ms": statistics.median(unary),
            "dispatch_p90_ms": _percentile(unary, 0.9),
            "dispatch_p99_ms": _percentile(unary, 0.99),
        }

        for kind, mtype in (("async handler", "train"), ("sync handler", "evaluate")):
            dispatch: list[float] = []
            roundtrip: list[float] = []
            node_side: list[float] = []
            for i in range(warmup + iterations):
                md = Metadata(run, "", 0, node_id, "", "bench", 60.0, mtype)
                wire = message_to_proto(Message(md, content=RecordSet()))
                await anyio.sleep(IDLE_GAP)
                t0 = time.perf_counter()
                resp = await drv.stub.push_messages(
                    pb.PushMessagesRequest(run_id=run, messages=[wire]), timeout=5, metadata=drv.metadata
                )
                mid = resp.message_ids[0]
                got: list[Message] = []
                with anyio.fail_after(10):
                    while not got:
                        got = [message_from_proto(m) for m in await drv.pull([mid], timeout=5.0)]
                t1 = time.perf_counter()
                assert got[0].has_content(), got[0].error
                if i >= warmup:
                    start = started.pop(mid)
                    dispatch.append((start - t0) * 1e3)
                    node_side.append((start - arrived.pop(mid)) * 1e3)
                    roundtrip.append((t1 - t0) * 1e3)
            results[kind] = {
                "dispatch_median_ms": statistics.median(dispatch),
                "dispatch_p90_ms": _percentile(dispatch, 0.9),
                "dispatch_p99_ms": _percentile(dispatch, 0.99),
                "node_side_median_ms": statistics.median(node_side),
                "roundtrip_median_ms": statistics.median(roundtrip),
                "roundtrip_p99_ms": _percentile(roundtrip, 0.99),
            }
        results["node calls"] = node.fleet_calls  # type: ignore[assignment]
    driver_channel.close()
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=300)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--inproc", action="store_true", help="run the SuperLink in this process too")
    args = parser.parse_args(argv)
    driver_address, fleet_address = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"

    if args.inproc:

        async def with_link() -> dict[str, dict[str, float]]:
            from fl_async.superlink import LinkConfig, SuperLink

            cfg = LinkConfig(
                driver_api_address=driver_address,
                fleet_api_address=fleet_address,
                blob_api_address="127.0.0.1:0",  # a free port: 9093 may be taken on a shared machine
                max_poll_timeout=30,
            )
            async with SuperLink(cfg):
                return await measure(driver_address, fleet_address, args.iterations, args.warmup)

        results = asyncio.run(with_link())
        layout = "link, node and driver in one process"
    else:
        log = Path("/tmp") / f"fl-async-dispatch-link-{driver_address.rsplit(':', 1)[1]}.log"
        link = Proc("superlink", [sys.executable, "-c", LINK_MAIN, driver_address, fleet_address], log_path=log)
        try:
            wait_for_port(int(fleet_address.rsplit(":", 1)[1]), 20, link)
            wait_for_port(int(driver_address.rsplit(":", 1)[1]), 20, link)
            results = asyncio.run(measure(driver_address, fleet_address, args.iterations, args.warmup))
        finally:
            link.stop()
        layout = "link in its own process; node and driver in this process"

    print(f"dispatch latency, idle node ({layout}); {args.iterations} iterations after {args.warmup} warm-up")
    print(
        f"{'handler':<14} {'push->start median':>19} {'p90':>8} {'p99':>8}   {'of which node-side':>18}"
        f"   {'push->reply median':>19} {'p99':>8}"
    )
    reference = results.pop("unary GetNodes")
    calls = results.pop("node calls")
    for kind, r in results.items():
        print(
            f"{kind:<14} {r['dispatch_median_ms']:>16.2f} ms {r['dispatch_p90_ms']:>5.2f} ms {r['dispatch_p99_ms']:>5.2f} ms"
            f"   {r['node_side_median_ms']:>15.2f} ms"
            f"   {r['roundtrip_median_ms']:>16.2f} ms {r['roundtrip_p99_ms']:>5.2f} ms"
        )
    print(
        f"{'reference':<14} {reference['dispatch_median_ms']:>16.2f} ms {reference['dispatch_p90_ms']:>5.2f} ms "
        f"{reference['dispatch_p99_ms']:>5.2f} ms   (one small unary call, Driver.GetNodes, same run)"
    )
    for kind, r in results.items():
        print(
            f"ratio {kind}: push->start median = {r['dispatch_median_ms'] / reference['dispatch_median_ms']:.1f} x "
            "one unary call"
        )
    print(
        "node calls: "
        + ", ".join(f"{k} {v}" for k, v in calls.items())
        + " (an instruction pushed while a reply's push+pull is held arrives in that call's response)"
    )
    worst = max(r["dispatch_median_ms"] for r in results.values())
    print(f"target: median push->start <= 5 ms: {'met' if worst <= 5.0 else 'NOT met'} (worst median {worst:.2f} ms)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

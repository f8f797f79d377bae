"""CPU cost of the link's Prometheus instrumentation, without I/O: one process, no sockets, no scheduling noise.

A round on the sans-IO :class:`~fl_async.superlink.state.LinkState`: the driver pushes N instructions, each of N
nodes pulls its one, pushes its reply, the driver takes the N replies; plus the RPC observations the I/O layer
would make (1 push, N pulls, N reply pushes, 1 driver pull). Measured with the default null observer (metrics
off) and with :class:`~fl_async.superlink.metrics.LinkMetrics` (metrics on), interleaved off/on in blocks, best
block of each. Also times one scrape (all families computed and rendered as Prometheus text) with N nodes and N
instructions held. Run::

    python -m benchmarks.metrics_overhead [--nodes 10,100,1000] [--blocks 7]
"""

from __future__ import annotations

import argparse
import asyncio
import time

from prometheus_client import generate_latest

from fl_async.proto.fl_async import v1 as pb
from fl_async.superlink.events import LinkEvents
from fl_async.superlink.metrics import LinkMetrics
from fl_async.superlink.state import LinkState


def _instruction(run_id: int, node_id: int) -> pb.Message:
    md = pb.Metadata(run_id=run_id, dst_node_id=node_id, group_id="1", ttl=3600.0, message_type="train")
    md.created_at = time.time()
    return pb.Message(metadata=md, content=pb.RecordSet())


def _setup(n: int, events: LinkEvents | None) -> tuple[LinkState, int, list[pb.NodeAuth]]:
    state = LinkState(events=events)
    run_id = state.create_run()
    auths = []
    for _ in range(n):
        node_id, token, _ = state.create_node(60.0)
        auths.append(pb.NodeAuth(node_id=node_id, token=token))
    return state, run_id, auths


def _rounds(state: LinkState, run_id: int, auths: list[pb.NodeAuth], metrics: LinkMetrics | None, k: int) -> float:
    observe = metrics.observe_rpc if metrics is not None else None
    t0 = time.perf_counter()
    for _ in range(k):
        ids, _ = state.push_instructions(run_id, [_instruction(run_id, a.node_id) for a in auths])
        if observe:
            observe("Driver.PushMessages", 0.001, "OK")
        for auth in auths:
            (ins,) = state.pull_instructions(auth, 1)
            if observe:
                observe("Fleet.PullInstructions", 0.001, "OK")
            md = ins.metadata
            assert md is not None
            reply = pb.Message(
                metadata=pb.Metadata(
                    run_id=run_id,
                    src_node_id=auth.node_id,
                    reply_to_message=md.message_id,
                    group_id="1",
                    ttl=3600.0,
                    message_type="train",
                    created_at=time.time(),
                ),
                content=pb.RecordSet(),
            )
            state.push_replies(auth, [reply])
            if observe:
                observe("Fleet.PushReplies", 0.001, "OK")
        assert len(state.take_replies(run_id, ids)) == len(auths)
        if observe:
            observe("Driver.PullMessages", 0.001, "OK")
    return (time.perf_counter() - t0) / k


async def _scrape_ms(n: int) -> float:
    from fl_async.superlink import LinkConfig, SuperLink

    config = LinkConfig(
        driver_api_address="127.0.0.1:0",
        fleet_api_address="127.0.0.1:0",
        blob_api_address="127.0.0.1:0",
        metrics_address="127.0.0.1:0",
    )
    link = SuperLink(config)
    await link.start()
    try:
        state = link.state
        run_id = state.create_run()
        for _ in range(n):
            node_id, _, _ = state.create_node(60.0)
            state.push_instructions(run_id, [_instruction(run_id, node_id)])
        assert link.metrics is not None
        registry = link.metrics.registry
        generate_latest(registry)
        t0 = time.perf_counter()
        for _ in range(20):
            generate_latest(registry)  # on the loop's thread: the collector computes directly
        return (time.perf_counter() - t0) / 20 * 1e3
    finally:
        await link.stop(grace=0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nodes", default="10,100,1000", help="comma-separated N values")
    parser.add_argument("--blocks", type=int, default=7, help="off/on blocks per N (best block of each is kept)")
    args = parser.parse_args()
    print("metrics_overhead (sans-IO LinkState rounds; metrics off = null observer, on = LinkMetrics + RPC observer)")
    print(f"{'N':>6} {'us/round off':>13} {'us/round on':>12} {'on/off':>7} {'us/msg added':>13} {'scrape ms':>10}")
    for n in (int(x) for x in args.nodes.split(",")):
        k = max(3, 3000 // n)
        best = {False: float("inf"), True: float("inf")}
        for _ in range(args.blocks):
            for on in (False, True):
                metrics = LinkMetrics() if on else None
                state, run_id, auths = _setup(n, metrics)
                _rounds(state, run_id, auths, metrics, 2)  # warm-up
                best[on] = min(best[on], _rounds(state, run_id, auths, metrics, k))
        scrape = asyncio.run(_scrape_ms(n))
        off, on_ = best[False] * 1e6, best[True] * 1e6
        print(f"{n:>6} {off:>13.1f} {on_:>12.1f} {on_ / off:>7.3f} {(on_ - off) / n:>13.2f} {scrape:>10.2f}")


if __name__ == "__main__":
    main()

"""``python -m benchmarks.peer.flasync_host --superlink H:P --nodes N``: N in-process fl-async SuperNodes.

All N nodes run the benchmark ClientApp (:mod:`benchmarks.peer.flasync_apps.client`) in one asyncio event
loop, each with its own gRPC connection to the link (real gRPC over 127.0.0.1). Runs until SIGTERM/SIGINT,
then stops every node gracefully (bounded: 10 s, then exits anyway).
"""

from __future__ import annotations

import argparse
import signal
import sys

import anyio

from benchmarks.peer.flasync_apps.client import app
from fl_async.supernode import SuperNode


async def _serve(superlink: str, n: int) -> None:
    nodes = [SuperNode(app, superlink, insecure=True) for _ in range(n)]
    async with anyio.create_task_group() as tg:
        for node in nodes:
            tg.start_soon(node.run)
        with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            async for _ in signals:
                break
        for node in nodes:
            node.stop()
        tg.cancel_scope.deadline = anyio.current_time() + 10  # graceful stop, bounded


def main(argv: list[str] | None = None) -> int:
    """Parse arguments and run the nodes until a stop signal; returns the exit code."""
    p = argparse.ArgumentParser(prog="python -m benchmarks.peer.flasync_host")
    p.add_argument("--superlink", required=True, help="link Fleet API HOST:PORT")
    p.add_argument("--nodes", type=int, required=True, help="how many in-process SuperNodes")
    args = p.parse_args(argv)
    anyio.run(_serve, args.superlink, args.nodes)
    return 0


if __name__ == "__main__":
    sys.exit(main())

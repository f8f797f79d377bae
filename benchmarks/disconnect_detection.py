"""How long after a SuperNode process is SIGKILLed does the driver get ``NODE_UNAVAILABLE``?

A SuperLink runs in this process (default ``LinkConfig`` except the ports: ``disconnect_grace`` 3 s, heartbeat
patience 2); a real SuperNode runs in a child process with 30 s heartbeats (a 60 s heartbeat window) and a
ClientApp whose handler never returns. The driver (raw pb stub) pushes one instruction and holds a
``PullMessages`` long-poll for its reply. Two cases:

* ``busy``: the node is inside the handler (with ``max_concurrency=1`` it holds no pull and sends no heartbeat);
* ``polling``: the node is idle, holding a pull open (no instruction: the time is until the link removes it).

Before the connection-loss rule the ``busy`` case took the heartbeat window (60 s); Flower 1.10 takes ~27 s.

Run::

    python -m benchmarks.disconnect_detection [--repeats 3] [--grace 3.0]
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import subprocess
import sys
import time

import anyio
from grpclib.client import Channel

from fl_async._net import parse_address
from fl_async.proto.fl_async import v1 as pb
from fl_async.superlink import LinkConfig, SuperLink

NODE = """
import sys, anyio
from fl_async.client import ClientApp
from fl_async.supernode import SuperNode

app = ClientApp()

@app.train()
async def train(msg, ctx):
    print("busy", flush=True)
    await anyio.sleep_forever()

async def main():
    async with SuperNode(app, sys.argv[1], insecure=True, heartbeat_interval=30.0) as node:
        print("node", await node.wait_registered(timeout=30), flush=True)
        await anyio.sleep_forever()

anyio.run(main)
"""


class _Lines:
    def __init__(self, stream: anyio.abc.ByteReceiveStream) -> None:
        self._stream = stream
        self._buf = b""

    async def until(self, pattern: str) -> re.Match[str]:
        while True:
            while b"\n" in self._buf:
                line, self._buf = self._buf.split(b"\n", 1)
                m = re.search(pattern, line.decode())
                if m:
                    return m
            self._buf += await self._stream.receive()


async def _spawn(address: str) -> tuple[anyio.abc.Process, _Lines, int]:
    proc = await anyio.open_process([sys.executable, "-c", NODE, address], stdout=subprocess.PIPE)
    out = _Lines(proc.stdout)  # type: ignore[arg-type]
    with anyio.fail_after(60):
        node_id = int((await out.until(r"^node (-?\d+)")).group(1))
    return proc, out, node_id


def _instruction(run_id: int, dst: int) -> pb.Message:
    md = pb.Metadata(run_id=run_id, dst_node_id=dst, ttl=600.0, message_type="train", created_at=time.time())
    return pb.Message(metadata=md, content=pb.RecordSet())


async def measure(case: str, grace: float) -> float:
    """One kill; returns seconds from SIGKILL to NODE_UNAVAILABLE (``busy``) or to the node's removal
    (``polling``: it has no instruction, so the link's state is watched, every 5 ms)."""
    cfg = LinkConfig(driver_api_address="127.0.0.1:0", fleet_api_address="127.0.0.1:0", disconnect_grace=grace)
    async with SuperLink(cfg) as link:
        channel = Channel(*parse_address(link.driver_address))
        victim, out, victim_id = await _spawn(link.fleet_address)
        try:
            driver = pb.DriverStub(channel)
            run_id = (await driver.create_run(pb.CreateRunRequest())).run_id
            if case == "busy":
                [mid] = (
                    await driver.push_messages(
                        pb.PushMessagesRequest(run_id=run_id, messages=[_instruction(run_id, victim_id)])
                    )
                ).message_ids
                with anyio.fail_after(30):
                    await out.until(r"^busy")
            with anyio.fail_after(30):  # busy: its pull came back with the instruction; polling: a pull is held
                while bool(link.state.nodes.active_pulls.get(victim_id)) != (case == "polling"):
                    await anyio.sleep(0.005)
            os.kill(victim.pid, signal.SIGKILL)  # only the process this run started, by PID
            killed = time.monotonic()
            if case == "busy":
                replies: list[pb.Message] = []
                with anyio.fail_after(120):
                    while not replies:  # held up to the link's max_poll_timeout (30 s) each
                        resp = await driver.pull_messages(
                            pb.PullMessagesRequest(run_id=run_id, message_ids=[mid], timeout=90), timeout=100
                        )
                        replies = list(resp.messages)
                [reply] = replies
                assert reply.error is not None and reply.error.code == 3, reply
            else:
                with anyio.fail_after(120):
                    while link.state.store.get_node(victim_id) is not None:
                        await anyio.sleep(0.005)
            return time.monotonic() - killed
        finally:
            channel.close()
            if victim.returncode is None:
                victim.kill()
            with anyio.move_on_after(5):
                await victim.wait()


async def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--grace", type=float, default=LinkConfig().disconnect_grace)
    args = parser.parse_args(argv)
    print(f"disconnect_grace {args.grace} s, heartbeat 30 s x patience 2 (window 60 s)")
    for case in ("busy", "polling"):
        times = [await measure(case, args.grace) for _ in range(args.repeats)]
        label = "NODE_UNAVAILABLE" if case == "busy" else "node offline"
        print(f"{case:8s} SIGKILL -> {label}: " + ", ".join(f"{t:.3f}" for t in times) + " s")


if __name__ == "__main__":
    anyio.run(main)

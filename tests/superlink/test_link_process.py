"""SuperLink against real processes: a node killed by PID mid-round, and ``serve()`` stopped by SIGTERM."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator

import anyio
import pytest
from anyio.abc import Process
from anyio.streams.text import TextReceiveStream

from fl_async.common.message import ErrorCode
from fl_async.proto.fl_async import v1 as pb
from fl_async.testing.wire import RawDriver, RawNode, channel, instruction

# A node that registers, heartbeats every interval/2 and takes instructions but never answers.
SILENT_NODE = """
import asyncio, sys
from grpclib.client import Channel
from fl_async.proto.fl_async import v1 as pb

async def main(host, port, interval):
    f = pb.FleetStub(Channel(host, int(port)))
    res = await f.create_node(pb.CreateNodeRequest(heartbeat_interval=float(interval)))
    auth = pb.NodeAuth(node_id=res.node_id, token=res.token)
    print("node", res.node_id, flush=True)

    async def beat():
        while True:
            await f.heartbeat(pb.HeartbeatRequest(auth=auth, heartbeat_interval=res.heartbeat_interval))
            await asyncio.sleep(res.heartbeat_interval / 2)

    task = asyncio.create_task(beat())
    while True:
        r = await f.pull_instructions(pb.PullInstructionsRequest(auth=auth, max_messages=10, timeout=5))
        if r.messages:
            print("got", len(r.messages), flush=True)

asyncio.run(main(*sys.argv[1:]))
"""

SERVE = """
import asyncio, logging, sys
logging.basicConfig(level=logging.DEBUG, stream=sys.stderr, format="%(name)s %(message)s")
from fl_async.superlink import LinkConfig, serve
asyncio.run(serve(LinkConfig(driver_api_address="127.0.0.1:0", fleet_api_address="127.0.0.1:0", max_poll_timeout=30)))
print("serve returned", flush=True)
"""


class Lines:
    """Read a process stream line by line, every read bounded by the caller's fail_after."""

    def __init__(self, stream) -> None:
        self._text = TextReceiveStream(stream)
        self._buf = ""

    async def until(self, pattern: str) -> re.Match[str]:
        while True:
            while "\n" in self._buf:
                line, self._buf = self._buf.split("\n", 1)
                m = re.search(pattern, line)
                if m:
                    return m
            self._buf += await self._text.receive()


@pytest.fixture
async def processes() -> AsyncIterator[list[Process]]:
    procs: list[Process] = []
    try:
        yield procs
    finally:
        for p in procs:
            if p.returncode is None:
                p.kill()  # only processes this test started, by handle (PID)
            with anyio.move_on_after(5):
                await p.wait()


async def test_killed_node_yields_node_unavailable_within_two_windows(superlink_factory, processes) -> None:
    interval, patience = 0.5, 2.0
    link = await superlink_factory(heartbeat_patience=patience)
    host, port = link.fleet_address.split(":")
    proc = await anyio.open_process(
        [sys.executable, "-c", SILENT_NODE, host, port, str(interval)], stdout=subprocess.PIPE, stderr=None
    )
    processes.append(proc)
    out = Lines(proc.stdout)
    with anyio.fail_after(30):  # interpreter start-up and imports
        silent_id = int((await out.until(r"^node (-?\d+)")).group(1))
    dch, fch = channel(link.driver_address), channel(link.fleet_address)
    try:
        drv = await RawDriver.create(pb.DriverStub(dch))
        echo = [await RawNode.create(pb.FleetStub(fch), interval=interval) for _ in range(2)]
        async with anyio.create_task_group() as tg:
            for n in echo:
                tg.start_soon(n.serve_echo)
            targets = [silent_id, *(n.node_id for n in echo)]
            ids = list((await drv.push([instruction(drv.run_id, t) for t in targets])).message_ids)
            assert all(ids)
            with anyio.fail_after(10):
                await out.until(r"^got 1")  # the silent node holds its instruction (in flight)
                replies = await drv.pull(ids, timeout=0.2)  # the others answer right away
                while len(replies) < 2:
                    replies += await drv.pull(ids, timeout=5)
            assert sorted(r.metadata.src_node_id for r in replies) == sorted(n.node_id for n in echo)
            assert link.stats().per_node[silent_id] == (0, 1)
            os.kill(proc.pid, signal.SIGKILL)
            killed_at = time.monotonic()
            with anyio.fail_after(10):
                [err] = await drv.pull(ids, timeout=5)
            elapsed = time.monotonic() - killed_at
            tg.cancel_scope.cancel()
        assert err.error.code == ErrorCode.NODE_UNAVAILABLE
        assert err.metadata.src_node_id == silent_id and err.metadata.reply_to_message == ids[0]
        assert elapsed <= 2 * interval * patience, elapsed
        print(f"NODE_UNAVAILABLE {elapsed:.3f} s after SIGKILL (window {interval * patience} s)")
        assert silent_id not in await drv.node_ids()
    finally:
        dch.close()
        fch.close()


async def test_serve_stops_within_3s_on_sigterm_with_long_poll_in_flight(processes) -> None:
    proc = await anyio.open_process([sys.executable, "-c", SERVE], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    processes.append(proc)
    err = Lines(proc.stderr)
    with anyio.fail_after(30):
        m = await err.until(r"Driver API on (\S+), Fleet API on (\S+), blob data path on (\S+) ")
    fleet = channel(m.group(2))
    try:
        node = await RawNode.create(pb.FleetStub(fleet))
        result: list[object] = []

        async def held_pull() -> None:
            try:
                result.append(await node.pull(timeout=30))
            except Exception as exc:
                result.append(exc)

        async with anyio.create_task_group() as tg:
            tg.start_soon(held_pull)
            with anyio.fail_after(10):
                await err.until(r"holding PullInstructions")
            t0 = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            with anyio.fail_after(3):
                code = await proc.wait()
            elapsed = time.monotonic() - t0
        assert code == 0 and elapsed < 3.0
        assert result == [[]]  # the held pull was answered (empty), not cut off
    finally:
        fleet.close()

"""The link notices a lost node connection: a killed node is offline after ``disconnect_grace`` (not after its
heartbeat window); a network blip shorter than the grace keeps the node's id and its instructions."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

import anyio
import pytest

from benchmarks.disconnect_detection import NODE
from fl_async.client import ClientApp
from fl_async.common import Context, Message, MetricsRecord, RecordSet
from fl_async.common.message import ErrorCode
from fl_async.proto.fl_async import v1 as pb
from fl_async.supernode import SuperNode
from fl_async.testing.wire import RawDriver, RawNode, channel, instruction
from tests.node_driver import TcpProxy
from tests.superlink.test_link_process import Lines, processes  # noqa: F401 - fixture

pytestmark = pytest.mark.anyio

# A real SuperNode (30 s heartbeats, one instruction at a time) whose handler never returns: while it runs, the
# node holds no pull and sends no heartbeat for 30 s, so only its open connection tells the link it is alive.
BUSY_NODE = NODE  # the script benchmarks/disconnect_detection.py measures with


async def test_killed_busy_node_is_unavailable_after_the_grace_not_the_heartbeat_window(
    superlink_factory,
    processes,  # noqa: F811 - the pytest fixture imported above, requested by name
) -> None:
    grace = 1.0
    link = await superlink_factory(disconnect_grace=grace, heartbeat_patience=2.0)
    proc = await anyio.open_process(
        [sys.executable, "-c", BUSY_NODE, link.fleet_address], stdout=subprocess.PIPE, stderr=None
    )
    processes.append(proc)
    out = Lines(proc.stdout)
    with anyio.fail_after(30):  # interpreter start-up and imports
        node_id = int((await out.until(r"^node (-?\d+)")).group(1))
    assert link.state.store.get_node(node_id).heartbeat_interval == 30.0  # window 60 s
    dch = channel(link.driver_address)
    try:
        drv = await RawDriver.create(pb.DriverStub(dch))
        [mid] = (await drv.push([instruction(drv.run_id, node_id)])).message_ids
        with anyio.fail_after(10):
            await out.until(r"^busy")
            while link.state.nodes.active_pulls.get(node_id):  # its pull returned with the instruction
                await anyio.sleep(0.01)
        assert link.stats().per_node[node_id] == (0, 1)
        os.kill(proc.pid, signal.SIGKILL)
        killed_at = time.monotonic()
        with anyio.fail_after(grace + 5):
            [err] = await drv.pull([mid], timeout=grace + 5)
        elapsed = time.monotonic() - killed_at
    finally:
        dch.close()
    assert err.error.code == ErrorCode.NODE_UNAVAILABLE and "connection was lost" in err.error.reason
    assert (err.metadata.src_node_id, err.metadata.reply_to_message) == (node_id, mid)
    assert grace - 0.05 <= elapsed <= grace + 1.0, elapsed
    print(f"NODE_UNAVAILABLE {elapsed:.3f} s after SIGKILL (disconnect_grace {grace} s, heartbeat window 60 s)")


async def test_blip_shorter_than_the_grace_keeps_the_node(superlink_factory) -> None:
    grace = 2.0
    link = await superlink_factory(disconnect_grace=grace)
    proxy = await TcpProxy(link.fleet_address).start()
    gate = threading.Event()
    app = ClientApp()

    @app.train()
    def train(msg: Message, ctx: Context) -> Message:
        gate.wait(20)
        return msg.create_reply(RecordSet(metrics_records={"m": MetricsRecord({"node": ctx.node_id})}))

    dch = channel(link.driver_address)
    try:
        drv = await RawDriver.create(pb.DriverStub(dch))
        async with SuperNode(
            app, f"127.0.0.1:{proxy.port}", insecure=True, heartbeat_interval=30.0, max_backoff=0.2, poll_timeout=5.0
        ) as node:
            node_id = await node.wait_registered(timeout=5)
            with anyio.fail_after(5):  # the node holds a pull through the proxy
                while not link.state.nodes.active_pulls.get(node_id):
                    await anyio.sleep(0.01)
            await proxy.cut()  # both sides see a reset
            with anyio.fail_after(5):
                while node_id not in link.state.disconnected():
                    await anyio.sleep(0.01)
            cut_at = time.monotonic()
            await proxy.restore()
            with anyio.fail_after(grace):  # the node's retried pull comes back within the grace
                while link.state.disconnected():
                    await anyio.sleep(0.01)
            print(f"node back {time.monotonic() - cut_at:.3f} s after the link saw the reset (grace {grace} s)")
            [mid] = (await drv.push([instruction(drv.run_id, node_id)])).message_ids
            # well past the grace: no NODE_UNAVAILABLE, the node still has the instruction
            assert await drv.pull([mid], timeout=grace + 0.5) == []
            assert node_id in await drv.node_ids()
            gate.set()
            with anyio.fail_after(10):
                [reply] = await drv.pull([mid], timeout=10)
            assert reply.error is None and reply.metadata.src_node_id == node_id
            assert node.node_id == node_id and node.registrations == 1
    finally:
        gate.set()
        dch.close()
        await proxy.aclose()


async def test_raw_node_reconnecting_on_a_new_channel_keeps_its_id(superlink_factory) -> None:
    """The binding follows the node's latest call: closing a channel it no longer uses does not start a grace."""
    link = await superlink_factory(disconnect_grace=0.5)
    old, new = channel(link.fleet_address), channel(link.fleet_address)
    try:
        node = await RawNode.create(pb.FleetStub(old))
        moved = RawNode(pb.FleetStub(new), node.node_id, node.token, node.interval)
        await moved.heartbeat()  # its latest call is on the new channel
        old.close()
        with anyio.fail_after(5):
            while link._connections.open_count > 1:  # the link saw the old connection go
                await anyio.sleep(0.01)
        assert link.state.disconnected() == {}
        new.close()  # now the node's own connection goes: the grace starts
        with anyio.fail_after(5):
            while node.node_id not in link.state.disconnected():
                await anyio.sleep(0.01)
    finally:
        old.close()
        new.close()


@pytest.mark.parametrize("value", ["0", "-1", "nan"])
def test_cli_refuses_a_bad_disconnect_grace(value: str) -> None:
    from typer.testing import CliRunner

    from fl_async.cli import app

    r = CliRunner().invoke(app, ["superlink", "--insecure", "--disconnect-grace", value])
    out = r.output.strip()
    assert r.exit_code == 2 and len(out.splitlines()) == 1, out
    assert out.startswith("fl-async superlink: error: --disconnect-grace must be"), out

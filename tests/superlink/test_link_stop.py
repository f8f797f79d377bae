"""A stopped SuperLink closes the connections that were open, so clients notice, and an in-process restart on the
same ports serves the clients that were connected to the first link (they reconnect to the new one)."""

from __future__ import annotations

import anyio
import pytest
from grpclib.const import Status
from grpclib.exceptions import GRPCError, StreamTerminatedError

from fl_async.client import ClientApp
from fl_async.common import Context, InvalidRequestError, LinkConnectionError, Message, MetricsRecord, RecordSet
from fl_async.proto.fl_async import v1 as pb
from fl_async.server import AsyncDriver
from fl_async.supernode import SuperNode
from fl_async.testing.wire import RawDriver, RawNode, channel, instruction

pytestmark = pytest.mark.anyio

CONNECTION_ERRORS = (StreamTerminatedError, OSError)  # what grpclib raises on a closed / refused connection


async def test_open_channels_get_connection_errors_after_stop(superlink_factory) -> None:
    link = await superlink_factory()
    fch, dch = channel(link.fleet_address), channel(link.driver_address)
    try:
        node = await RawNode.create(pb.FleetStub(fch))
        drv = await RawDriver.create(pb.DriverStub(dch))
        [mid] = (await drv.push([instruction(drv.run_id, node.node_id)])).message_ids
        assert await node.heartbeat() and await drv.node_ids() == [node.node_id]
        held: list[object] = []

        async def hold() -> None:
            held.append(await drv.pull([mid], timeout=30))

        async with anyio.create_task_group() as tg:
            tg.start_soon(hold)
            with anyio.fail_after(5):
                while not link._wakeups._reply_waiters:  # the driver pull is held on the link
                    await anyio.sleep(0.005)
            with anyio.fail_after(3):
                await link.stop(grace=0.5)
        assert held == [[]]  # the held long-poll got its (empty) answer before its connection was closed
        assert link._connections.open_count == 0
        for call in (node.heartbeat, lambda: node.pull(timeout=1), drv.node_ids, lambda: drv.pull([mid], 1)):
            with anyio.fail_after(5), pytest.raises(CONNECTION_ERRORS):
                await call()
    finally:
        fch.close()
        dch.close()


def _echo_app() -> ClientApp:
    app = ClientApp()

    @app.train()
    async def train(msg: Message, ctx: Context) -> Message:
        return msg.create_reply(RecordSet(metrics_records={"m": MetricsRecord({"node": ctx.node_id})}))

    return app


async def test_in_process_restart_on_same_ports_serves_existing_clients(superlink_factory) -> None:
    first = await superlink_factory()
    fleet, driver_address = first.fleet_address, first.driver_address
    async with (
        AsyncDriver(driver_address, insecure=True) as driver,
        SuperNode(_echo_app(), fleet, insecure=True, heartbeat_interval=0.5, max_backoff=0.2, poll_timeout=2.0) as node,
    ):
        first_id = await node.wait_registered(timeout=5)
        assert await driver.wait_for_nodes(1, timeout=5) == [first_id]
        with anyio.fail_after(3):
            await first.stop(grace=0.5)
        with pytest.raises(LinkConnectionError):  # nothing listens: the SDK maps the refusal
            await driver.get_node_ids()

        second = await superlink_factory(fleet_api_address=fleet, driver_api_address=driver_address)
        # the driver's channel reconnects to the new link, which does not know its run (in-memory state)
        with pytest.raises(InvalidRequestError) as exc:
            await driver.get_node_ids()
        assert exc.value.status == Status.NOT_FOUND.name and "unknown run" in str(exc.value)
        # the node's next call reaches the new link: it is unknown there, so it registers again and serves
        async with AsyncDriver(driver_address, insecure=True) as fresh:
            [again] = await fresh.wait_for_nodes(1, timeout=10)
            assert again != first_id and node.node_id == again and node.registrations == 2
            msg = fresh.create_message(RecordSet(), "train", again, group_id="1")
            [reply] = await fresh.send_and_receive([msg], timeout=10)
            assert reply.has_content() and reply.content.metrics_records["m"]["node"] == again
        assert second.stats().nodes == 1


async def test_stopped_link_is_not_reachable_through_an_old_channel_after_restart(superlink_factory) -> None:
    """A raw channel opened to the first link talks to the second one after a restart (the first link's state
    is not served any more: the node it registered is unknown)."""
    first = await superlink_factory()
    fch = channel(first.fleet_address)
    try:
        node = await RawNode.create(pb.FleetStub(fch))
        await first.stop(grace=0.1)
        await superlink_factory(fleet_api_address=first.fleet_address, driver_api_address=first.driver_address)
        with anyio.fail_after(5):
            while True:
                try:
                    await node.heartbeat()
                except CONNECTION_ERRORS:
                    await anyio.sleep(0.01)  # the client saw the old connection close; the next call reconnects
                    continue
                except GRPCError as exc:
                    assert exc.status is Status.UNAUTHENTICATED
                    break
                raise AssertionError("the stopped link's state is still being served")
    finally:
        fch.close()

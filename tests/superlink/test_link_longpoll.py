"""Long-poll wake-ups without sockets: the link's services over grpclib's in-memory transport (ChannelFor),
on a LinkState with an injected clock (no deadline timer: deadlines apply on the next call)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import anyio
import pytest
from grpclib.testing import ChannelFor

from fl_async.common.message import ErrorCode
from fl_async.proto.fl_async import v1 as pb
from fl_async.superlink import LinkState
from fl_async.superlink.rpc import CallTracker, LimitedProtoCodec
from fl_async.superlink.services import DriverService, FleetService
from fl_async.superlink.wakeups import Wakeups
from fl_async.testing.wire import RawDriver, RawNode, instruction, reply_to


@dataclass
class MemLink:
    state: LinkState
    wakeups: Wakeups
    driver: RawDriver
    fleet: pb.FleetStub


@asynccontextmanager
async def mem_link() -> AsyncIterator[MemLink]:
    wakeups, calls, codec = Wakeups(), CallTracker(), LimitedProtoCodec(1 << 20)
    state = LinkState(listener=wakeups, min_heartbeat_interval=0.01)
    services = [FleetService(state, wakeups, calls, 5.0, codec), DriverService(state, wakeups, calls, 5.0, codec)]
    async with ChannelFor(services, codec=codec) as ch:
        drv = await RawDriver.create(pb.DriverStub(ch))
        yield MemLink(state, wakeups, drv, pb.FleetStub(ch))


async def held(state: LinkState, predicate) -> None:
    with anyio.fail_after(3):
        while not predicate():
            await anyio.sleep(0.005)


@pytest.fixture
async def link() -> AsyncIterator[MemLink]:
    async with mem_link() as m:
        yield m


async def test_node_pull_woken_by_push(link: MemLink) -> None:
    node = await RawNode.create(link.fleet)
    async with anyio.create_task_group() as tg:
        got: list = []

        async def pull() -> None:
            got.extend(await node.pull(timeout=5, max_messages=3))

        tg.start_soon(pull)
        await held(link.state, lambda: link.state.nodes.active_pulls)
        t0 = time.perf_counter()
        ids = (await link.driver.push([instruction(link.driver.run_id, node.node_id) for _ in range(2)])).message_ids
    assert time.perf_counter() - t0 < 1.0
    assert [m.metadata.message_id for m in got] == list(ids)


async def test_driver_pull_woken_only_when_all_outstanding_are_ready(link: MemLink) -> None:
    a, b = await RawNode.create(link.fleet), await RawNode.create(link.fleet)
    drv = link.driver
    ids = list((await drv.push([instruction(drv.run_id, a.node_id), instruction(drv.run_id, b.node_id)])).message_ids)
    [ia], [ib] = await a.pull(), await b.pull()
    result: list = []
    async with anyio.create_task_group() as tg:

        async def pull() -> None:
            result.extend(await drv.pull(ids, timeout=5))

        tg.start_soon(pull)
        await held(link.state, lambda: link.wakeups._reply_waiters)
        await a.reply([reply_to(ia)])
        [waiter] = {w for group in link.wakeups._reply_waiters.values() for w in group}
        assert waiter.pending == {ids[1]} and not waiter.event.is_set()  # one of two ready: still held
        assert result == []
        await b.reply([reply_to(ib)])
    assert sorted(r.metadata.reply_to_message for r in result) == sorted(ids)
    assert link.wakeups._reply_waiters == {}  # waiter unregistered


async def test_wait_for_nodes_woken_by_registration(link: MemLink) -> None:
    res: list = []
    async with anyio.create_task_group() as tg:

        async def wait() -> None:
            r = await link.driver.stub.wait_for_nodes(
                pb.WaitForNodesRequest(run_id=link.driver.run_id, min_nodes=2, timeout=5), metadata=link.driver.metadata
            )
            res.append(r)

        tg.start_soon(wait)
        await RawNode.create(link.fleet)
        await RawNode.create(link.fleet)
    assert len(res[0].node_ids) == 2


async def test_driver_pull_woken_by_node_deletion(link: MemLink) -> None:
    node = await RawNode.create(link.fleet)
    drv = link.driver
    [mid] = (await drv.push([instruction(drv.run_id, node.node_id)])).message_ids
    result: list = []
    async with anyio.create_task_group() as tg:

        async def pull() -> None:
            result.extend(await drv.pull([mid], timeout=5))

        tg.start_soon(pull)
        await held(link.state, lambda: link.wakeups._reply_waiters)
        await node.stub.delete_node(pb.DeleteNodeRequest(auth=node.auth))
    assert result[0].error.code == ErrorCode.NODE_UNAVAILABLE


async def test_cancelled_held_calls_lose_nothing(link: MemLink) -> None:
    node = await RawNode.create(link.fleet)
    drv = link.driver
    for _ in range(5):
        with anyio.move_on_after(0.02):
            await node.pull(timeout=5)
    [mid] = (await drv.push([instruction(drv.run_id, node.node_id)])).message_ids
    [ins] = await node.pull()
    for _ in range(5):
        with anyio.move_on_after(0.02):
            await drv.pull([mid], timeout=5)
    await node.reply([reply_to(ins)])
    [rep] = await drv.pull([mid], timeout=1)
    assert rep.metadata.reply_to_message == mid
    assert link.wakeups._reply_waiters == {} and not link.state.nodes.active_pulls


async def test_close_answers_held_calls_at_once(link: MemLink) -> None:
    node = await RawNode.create(link.fleet)
    results: list = []
    async with anyio.create_task_group() as tg:

        async def pull() -> None:
            results.append(await node.pull(timeout=5))

        tg.start_soon(pull)
        await held(link.state, lambda: link.state.nodes.active_pulls)
        with anyio.fail_after(1):
            link.wakeups.close()
    assert results == [[]]
    with anyio.fail_after(1):  # and later calls are not held either
        assert await node.pull(timeout=5) == []

"""``receive()`` holds a constant number of replies; ``pull_messages(max_messages=)`` bounds a batch.

Real link and nodes on 127.0.0.1 with the blob data path: replies carry arrays above the inline limit, so their
payloads are downloaded by the driver separately. The link's count of ready replies shows what the driver took.
"""

from __future__ import annotations

import time

import anyio
import numpy as np
import pytest

from fl_async.common import MessageType, ParametersRecord, RecordSet
from fl_async.proto.fl_async import v1 as pb
from fl_async.server import AsyncDriver
from fl_async.server.async_driver import READ_AHEAD_BYTES
from fl_async.superlink import SuperLink
from fl_async.testing.wire import RawDriver, RawNode, channel, instruction, reply_to
from tests.driver_fixtures import cluster

N = 4
BIG = READ_AHEAD_BYTES + (1 << 20)  # one reply is more than the read-ahead budget: pulled one at a time


def _model(i: int) -> RecordSet:
    return RecordSet(
        parameters_records={"w": ParametersRecord.from_numpy_dict({"a": np.full(BIG // 4, i, dtype=np.float32)})}
    )


async def _all_replies_on_link(link: SuperLink, count: int) -> None:
    with anyio.fail_after(20):
        while link.stats().replies < count:  # noqa: ASYNC110 (the link has no event for its stats; bounded)
            await anyio.sleep(0.01)


async def test_receive_takes_large_replies_from_the_link_one_at_a_time() -> None:
    async with cluster(num_nodes=N) as c, AsyncDriver(c.link.driver_address, insecure=True) as driver:
        ids = await driver.push_messages(
            [driver.create_message(_model(i), MessageType.TRAIN, n, "1") for i, n in enumerate(c.node_ids)]
        )
        await _all_replies_on_link(c.link, N)
        seen = []
        async with driver.receive(ids, timeout=20) as stream:
            for k in range(N):
                with anyio.fail_after(20):
                    reply = await stream.__anext__()
                # only the reply just yielded left the link: the others wait there, their arrays not downloaded
                assert c.link.stats().replies == N - 1 - k
                arr = reply.content.parameters_records["w"]["a"].numpy()
                assert arr.nbytes == BIG
                seen.append(int(arr[0]))
                del reply, arr
        assert sorted(seen) == list(range(N))
        assert stream.outstanding == []


async def test_receive_closed_early_keeps_pulled_replies_for_a_later_pull() -> None:
    async with cluster(num_nodes=3) as c, AsyncDriver(c.link.driver_address, insecure=True) as driver:
        small = [driver.create_message(RecordSet(), MessageType.TRAIN, n, "1") for n in c.node_ids]
        ids = await driver.push_messages(small)
        await _all_replies_on_link(c.link, 3)
        async with driver.receive(ids, timeout=10) as stream:
            first = await stream.__anext__()  # the first poll takes one reply (size unknown yet)
            assert c.link.stats().replies == 2
            second = await stream.__anext__()  # small replies: the next poll takes both
        assert c.link.stats().replies == 0
        yielded = {first.metadata.reply_to_message, second.metadata.reply_to_message}
        rest = await driver.pull_messages(ids, timeout=5)
        assert [r.metadata.reply_to_message for r in rest] == [i for i in ids if i not in yielded]
        assert not rest[0].has_error()


async def test_pull_messages_max_messages_bounds_each_batch() -> None:
    async with cluster(num_nodes=3) as c, AsyncDriver(c.link.driver_address, insecure=True) as driver:
        ids = await driver.push_messages(
            [driver.create_message(RecordSet(), MessageType.TRAIN, n, "1") for n in c.node_ids]
        )
        await _all_replies_on_link(c.link, 3)
        batch = await driver.pull_messages(ids, timeout=5, max_messages=2)
        assert len(batch) == 2 and c.link.stats().replies == 1
        left = [i for i in ids if i not in {r.metadata.reply_to_message for r in batch}]
        assert [r.metadata.reply_to_message for r in await driver.pull_messages(ids, max_messages=2)] == left
        for bad, exc in ((0, ValueError), (2**32, ValueError), (1.5, TypeError), (True, TypeError)):
            with pytest.raises(exc, match="max_messages"):
                await driver.pull_messages(ids, max_messages=bad)  # type: ignore[arg-type]


async def test_link_pull_with_max_messages_returns_as_soon_as_one_reply_is_ready(superlink: SuperLink) -> None:
    driver_channel, fleet_channel = channel(superlink.driver_address), channel(superlink.fleet_address)
    try:
        drv = await RawDriver.create(pb.DriverStub(driver_channel))
        node = await RawNode.create(pb.FleetStub(fleet_channel))
        resp = await drv.stub.push_messages(
            pb.PushMessagesRequest(run_id=drv.run_id, messages=[instruction(drv.run_id, node.node_id)] * 2),
            metadata=drv.metadata,
        )
        ids = list(resp.message_ids)
        instructions = await node.pull(max_messages=2)
        await node.reply([reply_to(instructions[0])])
        started = time.monotonic()
        req = pb.PullMessagesRequest(run_id=drv.run_id, message_ids=ids, timeout=4.0, max_messages=5)
        got = await drv.stub.pull_messages(req, metadata=drv.metadata)
        assert time.monotonic() - started < 2.0  # not held for the second reply
        assert [m.metadata.reply_to_message for m in got.messages] == [ids[0]] and list(got.outstanding) == [ids[1]]
        await node.reply([reply_to(instructions[1])])
        await node.reply([reply_to(instructions[1])])  # a duplicate is refused, not delivered twice
        both = await drv.stub.pull_messages(
            pb.PullMessagesRequest(run_id=drv.run_id, message_ids=ids, timeout=4.0, max_messages=1),
            metadata=drv.metadata,
        )
        assert [m.metadata.reply_to_message for m in both.messages] == [ids[1]] and list(both.outstanding) == []
    finally:
        driver_channel.close()
        fleet_channel.close()

"""Node and run ids are unsigned 64-bit and never 0, end to end; record integers cover [-2**63, 2**64 - 1].

Real links and nodes on 127.0.0.1: ids the link assigns at the top of the range (``LinkState.id_source``, a test
hook) come back exactly through ``get_node_ids``, messages, replies and record values; ids outside the range are
refused where they enter (SDK argument -> ValueError naming the field, wire field -> INVALID_ARGUMENT).
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import AsyncIterator, Iterator

import anyio
import numpy as np
import pytest
from grpclib.const import Status
from grpclib.exceptions import GRPCError

from fl_async._credentials import run_metadata
from fl_async.client import ClientApp
from fl_async.common import ConfigsRecord, Context, Message, MessageType, MetricsRecord, ParametersRecord, RecordSet
from fl_async.proto.fl_async import v1 as pb
from fl_async.server import AsyncDriver
from fl_async.superlink import LinkConfig, SuperLink
from fl_async.superlink.state import LinkState, random_id
from fl_async.supernode import SuperNode
from fl_async.testing.wire import channel, instruction
from tests.driver_fixtures import LINK_DEFAULTS, echo_app

TOP = 2**64 - 1
HIGH_IDS = [2**63, TOP]


def _ids_then_random(first: list[int]) -> Iterator[int]:
    return itertools.chain(first, iter(random_id, None))


@contextlib.asynccontextmanager
async def _high_id_cluster(
    node_ids: list[int], run_id: int, app: ClientApp | None = None
) -> AsyncIterator[tuple[SuperLink, list[SuperNode]]]:
    """A link that assigns ``node_ids`` to the nodes registering first, then ``run_id`` to the first run."""
    async with contextlib.AsyncExitStack() as stack:
        link = SuperLink(LinkConfig(**LINK_DEFAULTS))
        link.state.id_source = _ids_then_random([*node_ids, run_id]).__next__
        await stack.enter_async_context(link)
        nodes = []
        for _ in node_ids:  # one at a time, so the ids are assigned in order
            node = SuperNode(
                app or echo_app(), link.fleet_address, insecure=True, heartbeat_interval=0.5, shutdown_grace=0.2
            )
            await stack.enter_async_context(node)
            with anyio.fail_after(10):
                await node.wait_registered()
            nodes.append(node)
        yield link, nodes


def test_generated_ids_are_unsigned_and_never_zero() -> None:
    state = LinkState()
    ids = [state.create_node(1.0)[0] for _ in range(2000)] + [state.create_run() for _ in range(200)]
    assert all(1 <= i <= TOP for i in ids) and len(set(ids)) == len(ids)
    assert sum(i > 2**63 - 1 for i in ids) > 500  # about half use the top bit (no signed wrap-around any more)


async def test_get_node_ids_are_unsigned_over_many_registrations(superlink: SuperLink) -> None:
    fleet_channel = channel(superlink.fleet_address)
    try:
        fleet = pb.FleetStub(fleet_channel)
        registered = [
            (await fleet.create_node(pb.CreateNodeRequest(heartbeat_interval=60.0))).node_id for _ in range(100)
        ]
        async with AsyncDriver(superlink.driver_address, insecure=True) as driver:
            ids = await driver.get_node_ids()
            assert 1 <= driver.run_id <= TOP
    finally:
        fleet_channel.close()
    assert sorted(ids) == sorted(registered) and len(set(ids)) == 100
    assert all(type(i) is int and 1 <= i <= TOP for i in ids)
    assert any(i > 2**63 - 1 for i in ids)  # about half; all 100 below 2**63 has probability 2**-100


def test_id_source_candidates_out_of_range_or_taken_are_skipped() -> None:
    state = LinkState(id_source=iter([0, -5, 2**64, TOP, TOP, 7]).__next__)
    assert state.create_node(1.0)[0] == TOP
    assert state.create_node(1.0)[0] == 7  # TOP is taken


async def test_high_ids_round_trip_exactly_through_a_real_link() -> None:
    async with _high_id_cluster(HIGH_IDS, TOP - 1) as (_link, nodes):
        assert [n.node_id for n in nodes] == HIGH_IDS
        async with AsyncDriver(_link.driver_address, insecure=True, run_config={"seed": TOP}) as driver:
            assert driver.run_id == TOP - 1 and (await driver.get_run()).run_id == TOP - 1
            assert sorted(await driver.get_node_ids()) == HIGH_IDS
            assert sorted(await driver.wait_for_nodes(2, timeout=5)) == HIGH_IDS
            big = np.arange(1 << 19, dtype=np.float32)  # 2 MiB: over the inline limit, so node and driver use the
            content = RecordSet(  # blob path, whose tokens carry the node and run ids
                configs_records={"c": ConfigsRecord({"big": TOP, "neg": -(2**63), "l": [0, TOP]})},
                parameters_records={"p": ParametersRecord.from_numpy_dict({"w": big})},
            )
            msgs = [driver.create_message(content, MessageType.TRAIN, n, "1") for n in HIGH_IDS]
            assert [m.metadata.dst_node_id for m in msgs] == HIGH_IDS
            with anyio.fail_after(20):
                replies = await driver.send_and_receive(msgs, timeout=15)
        assert len(replies) == 2 and not any(r.has_error() for r in replies)
        for reply in replies:
            md = reply.metadata
            assert md.run_id == TOP - 1 and md.src_node_id in HIGH_IDS and md.dst_node_id == 0
            assert reply.content.metrics_records["node"]["id"] == md.src_node_id  # Context.node_id, a metric
            got = dict(reply.content.configs_records["c"])
            assert got == {"big": TOP, "neg": -(2**63), "l": [0, TOP]}
            assert all(type(v) is int for v in (got["big"], got["neg"]))
            assert np.array_equal(reply.content.parameters_records["p"]["w"].numpy(), big)


def _mirror_app() -> ClientApp:
    app = ClientApp()

    @app.train()
    def train(msg: Message, context: Context) -> Message:
        return msg.create_reply(msg.content)

    return app


async def test_configs_and_metrics_integers_round_trip_through_a_real_link() -> None:
    async with _high_id_cluster([5], 9, _mirror_app()) as (link, _nodes):
        async with AsyncDriver(link.driver_address, insecure=True) as driver:
            values = {"big": TOP, "neg": -(2**63), "edge": 2**63, "max_signed": 2**63 - 1, "zero": 0}
            content = RecordSet(
                configs_records={"c": ConfigsRecord(values)},
                metrics_records={"m": MetricsRecord({**values, "unsigned": [2**63, TOP], "signed": [-(2**63), 1]})},
            )
            with anyio.fail_after(20):
                [reply] = await driver.send_and_receive(
                    [driver.create_message(content, MessageType.TRAIN, 5, "1")], timeout=15
                )
        assert dict(reply.content.configs_records["c"]) == values
        assert dict(reply.content.metrics_records["m"]) == {**values, "unsigned": [2**63, TOP], "signed": [-(2**63), 1]}


@pytest.mark.parametrize("bad", [2**64, -(2**63) - 1])
def test_record_integers_outside_the_range_are_refused_at_insertion(bad: int) -> None:
    for record in (ConfigsRecord(), MetricsRecord()):
        with pytest.raises(ValueError, match="'x'"):
            record["x"] = bad
        assert "x" not in record
    with pytest.raises(ValueError, match="'big'"):
        ConfigsRecord({"big": bad})


@pytest.mark.parametrize("bad", [0, -1, 2**64])
async def test_push_to_a_non_node_id_raises_and_queues_nothing(bad: int) -> None:
    async with _high_id_cluster([TOP], 3) as (link, _nodes), AsyncDriver(link.driver_address, insecure=True) as driver:
        with pytest.raises(ValueError, match="dst_node_id"):
            driver.create_message(RecordSet(), MessageType.TRAIN, bad, "1")
        good = driver.create_message(RecordSet(), MessageType.TRAIN, TOP, "1")
        forged = driver.create_message(RecordSet(), MessageType.TRAIN, TOP, "1")
        forged.metadata.dst_node_id = bad  # Message's setter does not check; push_messages must
        with pytest.raises(ValueError, match=r"Invalid message: item 1 .*dst_node_id"):
            await driver.push_messages([good, forged])
        stats = link.stats()
        assert stats.queued == 0 and stats.in_flight == 0 and stats.replies == 0


async def test_wire_ids_outside_the_range_are_invalid_argument() -> None:
    async with _high_id_cluster([TOP], 3) as (link, _nodes):
        driver_channel, fleet_channel = channel(link.driver_address), channel(link.fleet_address)
        try:
            drv, fleet = pb.DriverStub(driver_channel), pb.FleetStub(fleet_channel)
            calls = [
                drv.get_nodes(pb.GetNodesRequest(run_id=0)),
                drv.get_run(pb.GetRunRequest(run_id=0)),
                drv.pull_messages(pb.PullMessagesRequest(run_id=0, message_ids=["x"])),
                drv.push_messages(pb.PushMessagesRequest(run_id=0, messages=[instruction(0, TOP)])),
                fleet.heartbeat(pb.HeartbeatRequest(auth=pb.NodeAuth(node_id=0, token=b"t"), heartbeat_interval=1)),
            ]
            for call in calls:
                with pytest.raises(GRPCError) as exc:
                    await call
                assert exc.value.status is Status.INVALID_ARGUMENT
                assert "must be in [1, 2**64 - 1], got 0" in (exc.value.message or "")
            assert link.stats().queued == 0
            # a pushed instruction to node 0 is refused at its position (the others are still queued)
            run = await drv.create_run(pb.CreateRunRequest())
            resp = await drv.push_messages(
                pb.PushMessagesRequest(run_id=run.run_id, messages=[instruction(run.run_id, 0)]),
                metadata=run_metadata(run.run_id, run.blob_token),
            )
            assert resp.message_ids == [""] and "dst_node_id must name a node" in resp.reasons[0]
        finally:
            driver_channel.close()
            fleet_channel.close()


def test_message_ids_survive_the_sdk_codec_at_the_top_of_the_range() -> None:
    from fl_async import codec
    from fl_async.common import Metadata

    md = Metadata(run_id=TOP, message_id="m", src_node_id=2**63, dst_node_id=0, reply_to_message="i",
                  group_id="g", ttl=5.0, message_type="train")  # fmt: skip
    wire = pb.Message.FromString(bytes(codec.message_to_proto(Message(md, content=RecordSet()))))
    out = codec.message_from_proto(wire)
    assert (out.metadata.run_id, out.metadata.src_node_id) == (TOP, 2**63)

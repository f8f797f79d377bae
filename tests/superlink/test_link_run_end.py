"""Runs end: by the driver's EndRun (every pending instruction still gets one reply), and when the driver's
connection is lost and it does not come back within ``driver_disconnect_grace`` (sans-IO and over real TCP)."""

from __future__ import annotations

import logging
import time

import anyio
import pytest
from grpclib.const import Status
from grpclib.exceptions import GRPCError

from fl_async.common.message import ErrorCode, MessageType
from fl_async.common.records import RecordSet
from fl_async.errors import FlAsyncError
from fl_async.proto.fl_async import v1 as pb
from fl_async.server import AsyncDriver, Driver, ServerApp, run_server_app
from fl_async.superlink import LinkState, SuperLink
from fl_async.superlink.errors import NotFoundError
from fl_async.superlink.store import MemoryStore, RunRecord
from fl_async.testing.wire import RawDriver, RawNode, channel
from tests.driver_fixtures import cluster_in_thread
from tests.superlink.test_link_state import T0, Clock, Recorder, node, push_one, reply_to


def _state(clock: Clock, **kw: float) -> LinkState:
    return LinkState(heartbeat_patience=2.0, clock=clock, listener=Recorder(), **kw)


# ---------------------------------------------------------------------------------------------- sans-IO
def test_end_run_answers_pending_instructions_and_frees_the_run() -> None:
    clock = Clock()
    state = _state(clock)
    auth = node(state, interval=1000.0)
    run_id, other = state.create_run(), state.create_run()
    answered, in_flight, queued = (push_one(state, run_id, auth) for _ in range(3))
    kept = push_one(state, other, auth)
    pulled = state.pull_instructions(auth, 2)
    assert [m.metadata.message_id for m in pulled] == [answered, in_flight]
    state.push_replies(auth, [reply_to(pulled[0], now=T0)])
    replies, unpulled = state.end_run(run_id, "its driver ended it (EndRun)")
    assert sorted(r.metadata.reply_to_message for r in replies) == sorted([in_flight, queued])
    assert all(r.error is not None and r.error.code == ErrorCode.CANCELLED for r in replies)
    assert "its driver ended it" in replies[0].error.reason
    assert unpulled == [answered]
    assert state.store.get_run(run_id) is None
    assert all(state.store.get_instruction(m) is None for m in (answered, in_flight, queued))
    assert state.stats().runs == 1 and state.store.get_instruction(kept) is not None
    with pytest.raises(NotFoundError, match=r"run \d+ ended: its driver ended it"):
        state.get_run(run_id)
    assert state.end_run(run_id, "again") == ([], [])  # unknown: nothing
    # the node's late reply to the ended run's instruction is refused, not an error
    ids, reasons = state.push_replies(auth, [reply_to(pulled[1], now=T0)])
    assert ids == [""] and "unknown instruction" in reasons[0]


def test_run_ends_when_its_driver_does_not_come_back(caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    state = _state(clock, driver_grace=60.0)
    auth = node(state, interval=1000.0)
    gone, back = state.create_run(), state.create_run()
    queued = push_one(state, gone, auth)
    state.driver_lost([gone, back, 12345])  # unknown ids are ignored
    assert state.lifetimes.abandoned() == {gone: T0 + 60, back: T0 + 60}
    assert state.next_deadline() == T0 + 60
    clock.now = T0 + 30
    state.driver_back(back)  # its driver reconnected and made a call
    state.driver_lost([gone])  # lost again: the earlier deadline stays
    clock.now = T0 + 59.9
    state.advance()
    assert state.store.get_run(gone) is not None
    clock.now = T0 + 60
    with caplog.at_level(logging.INFO, logger="fl_async.superlink"):
        state.advance()
    assert state.store.get_run(gone) is None and state.store.get_instruction(queued) is None
    assert state.store.get_run(back) is not None
    assert "--driver-disconnect-grace" in caplog.text
    with pytest.raises(NotFoundError, match="driver_disconnect_grace"):
        state.get_run(gone)


def test_restored_runs_get_the_grace_from_link_start() -> None:
    store = MemoryStore()
    store.add_run(RunRecord(7, "fab", "1", []))
    store.runs = lambda: iter([store.get_run(7)])  # type: ignore[attr-defined]  # a durable store lists its runs
    clock = Clock()
    clock.now = T0 + 1000
    state = LinkState(clock=clock, store=store, driver_grace=120.0, run_idle_ttl=3600.0)
    assert state.lifetimes.abandoned() == {7: T0 + 1120}
    clock.now = T0 + 1119
    state.driver_back(7)  # the driver resumed within the grace
    clock.now = T0 + 2000
    state.advance()
    assert state.store.get_run(7) is not None
    clock.now = T0 + 1000 + 3601  # no call since link start + resumption: its idle TTL ends it
    state.advance()
    assert state.store.get_run(7) is None


# ---------------------------------------------------------------------------------------------- real links
async def _wait_gone(link: SuperLink, run_id: int, within: float) -> float:
    """Seconds until the link no longer has the run (checked every 50 ms: the link has no event for it)."""
    start = time.monotonic()
    with anyio.fail_after(within):
        while link.state.store.get_run(run_id) is not None:  # noqa: ASYNC110 (the link has no event for it; bounded)
            await anyio.sleep(0.05)
    return time.monotonic() - start


async def test_end_run_over_grpc(superlink_factory) -> None:
    link = await superlink_factory()
    fleet = channel(link.fleet_address)
    try:
        node_ = await RawNode.create(pb.FleetStub(fleet))
        async with AsyncDriver(link.driver_address, insecure=True) as driver:
            msgs = [driver.create_message(RecordSet(), MessageType.QUERY, node_.node_id, "1") for _ in range(2)]
            ids = await driver.push_messages(msgs)
            (handling,) = await node_.pull(max_messages=1)  # one in flight, one queued
            replies = await driver.end_run()
            beat = await node_.stub.heartbeat(
                pb.HeartbeatRequest(auth=node_.auth, heartbeat_interval=30.0), metadata=node_.metadata
            )
            assert list(beat.cancelled) == [handling.metadata.message_id]  # the node is told to stop handling it
            assert sorted(r.metadata.reply_to_message for r in replies) == sorted(ids)
            assert {r.error.code for r in replies} == {ErrorCode.CANCELLED}
            assert link.stats().runs == 0 and link.stats().queued == 0 and link.stats().in_flight == 0
            assert await driver.end_run() == []  # idempotent
            with pytest.raises(FlAsyncError, match="ended: its driver ended it"):
                await driver.get_node_ids()
    finally:
        fleet.close()


async def test_run_ends_after_its_driver_disconnects(superlink_factory) -> None:
    link = await superlink_factory(driver_disconnect_grace=0.5)
    driver = AsyncDriver(link.driver_address, insecure=True)
    await driver.connect()
    run_id = driver.run_id
    await driver.get_node_ids()
    await driver.aclose()  # the connection closes; no EndRun
    took = await _wait_gone(link, run_id, within=10)
    assert took < 5


async def test_reconnect_within_the_grace_keeps_the_run(superlink_factory) -> None:
    link = await superlink_factory(driver_disconnect_grace=5.0)
    async with RawDriver(link.driver_address) as first:
        created = await first.stub.create_run(pb.CreateRunRequest())
    run_id = created.run_id
    with anyio.fail_after(5):  # the link notices the closed connection
        while run_id not in link.state.lifetimes.abandoned():  # noqa: ASYNC110 (no event for it; bounded)
            await anyio.sleep(0.02)
    async with RawDriver(link.driver_address, run_id, created.blob_token) as again:
        assert await again.node_ids() == []  # a call within the grace, on a new connection
        assert run_id not in link.state.lifetimes.abandoned()  # no deadline any more: the run stays
        assert link.state.store.get_run(run_id) is not None


async def test_connection_closed_by_the_link_does_not_end_the_run(superlink_factory) -> None:
    link = await superlink_factory(driver_disconnect_grace=0.3, connection_idle_timeout=0.3)
    async with AsyncDriver(link.driver_address, insecure=True) as driver:
        run_id = driver.run_id
        with anyio.fail_after(10):
            while link.gate is not None and link.gate.timed_out == 0:  # noqa: ASYNC110 (the gate's sweep; bounded)
                await anyio.sleep(0.05)
        await anyio.sleep(0.6)  # twice the grace: a lost driver's run would be gone by now
        assert link.state.store.get_run(run_id) is not None
        assert await driver.get_node_ids() == []  # the driver reconnects on its next call


def test_run_server_app_ends_its_run_when_main_returns_or_raises() -> None:
    app, failing = ServerApp(), ServerApp()
    seen: list[int] = []

    @app.main()
    def main(driver: Driver, context: object) -> str:
        seen.append(driver.run_id)
        return "done"

    @failing.main()
    async def fail(driver: AsyncDriver, context: object) -> None:
        seen.append(driver.run_id)
        raise KeyError("boom")

    with cluster_in_thread(num_nodes=1) as (c, _portal):
        assert run_server_app(app, c.link.driver_address, insecure=True) == "done"
        with pytest.raises(KeyError):
            run_server_app(failing, c.link.driver_address, insecure=True)
        for run_id in seen:
            assert c.link.state.store.get_run(run_id) is None
            assert "EndRun" in c.link.state.lifetimes.ended(run_id)
    assert len(seen) == 2


async def test_element_cap_per_field_over_grpc(superlink_factory) -> None:
    link = await superlink_factory(max_message_ids_per_request=1000)
    async with RawDriver(link.driver_address) as drv:
        run_id = await drv.create_run()
        with pytest.raises(GRPCError) as exc:
            await drv.stub.pull_messages(
                pb.PullMessagesRequest(run_id=run_id, message_ids=["x" * 36] * 50_001),
                metadata=drv._headers(run_id),
            )
        assert exc.value.status is Status.RESOURCE_EXHAUSTED
        assert "PullMessagesRequest.message_ids" in exc.value.message and "--max-message-ids-per-request" in (
            exc.value.message or ""
        )
        resp = await drv.stub.pull_messages(
            pb.PullMessagesRequest(run_id=run_id, message_ids=["x" * 36] * 1000), metadata=drv._headers(run_id)
        )
        assert resp.outstanding == []


async def test_end_run_needs_the_runs_credentials(superlink_factory) -> None:
    link = await superlink_factory()
    async with RawDriver(link.driver_address) as drv:
        run_id = await drv.create_run()
        with pytest.raises(GRPCError) as exc:  # a run id alone (anonymous) does not end a run
            await drv.stub.end_run(pb.EndRunRequest(run_id=run_id))
        assert exc.value.status is Status.PERMISSION_DENIED and "credentials" in (exc.value.message or "")
        assert link.state.store.get_run(run_id) is not None
        resp = await drv.stub.end_run(pb.EndRunRequest(run_id=run_id), metadata=drv._headers(run_id))
        assert resp.messages == [] and resp.unpulled == []
        with pytest.raises(GRPCError) as exc:
            await drv.stub.get_run(pb.GetRunRequest(run_id=run_id), metadata=drv._headers(run_id))
        assert exc.value.status is Status.NOT_FOUND and "ended: its driver ended it (EndRun)" in exc.value.message


async def test_nodes_are_told_when_a_run_ends_without_its_driver(superlink_factory) -> None:
    link = await superlink_factory(driver_disconnect_grace=0.3)
    fleet = channel(link.fleet_address)
    try:
        node_ = await RawNode.create(pb.FleetStub(fleet))
        driver = AsyncDriver(link.driver_address, insecure=True)
        await driver.connect()
        run_id = driver.run_id
        (mid,) = await driver.push_messages([driver.create_message(RecordSet(), MessageType.QUERY, node_.node_id, "1")])
        assert len(await node_.pull(max_messages=1)) == 1  # the node is handling it
        await driver.aclose()  # gone without EndRun
        await _wait_gone(link, run_id, within=10)
        beat = await node_.stub.heartbeat(
            pb.HeartbeatRequest(auth=node_.auth, heartbeat_interval=30.0), metadata=node_.metadata
        )
        assert list(beat.cancelled) == [mid]
    finally:
        fleet.close()

"""Operations on a live link: Prometheus metrics, cancel (queued / in flight), stop a run, admin listings, and the
reason of a raising ClientApp. Real links and nodes on 127.0.0.1."""

from __future__ import annotations

import time
import urllib.request

import anyio
import pytest
from prometheus_client.parser import text_string_to_metric_families

from fl_async.client import ClientApp
from fl_async.common import ConfigsRecord, Context, ErrorCode, Message, MessageType, MetricsRecord, RecordSet
from fl_async.errors import RunStoppedError
from fl_async.proto.fl_async import v1 as pb
from fl_async.server import AsyncDriver
from fl_async.superlink import SuperLink
from tests.driver_fixtures import GATES, cluster


async def scrape(address: str) -> dict[str, float]:
    """``/metrics`` parsed with prometheus_client's parser: ``"name{k=v,...}" -> value``."""

    def get() -> str:
        with urllib.request.urlopen(f"http://{address}/metrics", timeout=10) as resp:
            return resp.read().decode()

    text = await anyio.to_thread.run_sync(get)
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
            out[f"{sample.name}{{{labels}}}"] = sample.value
    return out


def gated_app() -> ClientApp:
    """``query`` releases gate ``started-<event>``, then waits until the test releases ``<event>``."""
    app = ClientApp()

    @app.query()
    async def query(msg: Message, context: Context) -> Message:
        name = str(msg.content.configs_records["wait"]["event"])
        GATES.release(f"started-{name}")
        await GATES.wait(name)
        return msg.create_reply(RecordSet())

    return app


async def reply_ready(link: SuperLink, message_id: str) -> None:
    """Wait (on the link's own wake-up) until the instruction has a reply stored."""
    ins = link.state.store.get_instruction(message_id)
    assert ins is not None
    _, waiting = link.state.outstanding(ins.run_id, [message_id])
    waiter = link._wakeups.wait_replies(waiting)  # set at once when nothing is waiting
    try:
        with anyio.fail_after(5):
            await waiter.event.wait()
    finally:
        link._wakeups.drop(waiter)


def query(driver: AsyncDriver, node: int, gate: str) -> Message:
    content = RecordSet(configs_records={"wait": ConfigsRecord({"event": gate})})
    return driver.create_message(content, MessageType.QUERY, node, group_id="g")


async def test_metrics_nodes_gauge_and_pushed_counter() -> None:
    async with cluster(num_nodes=3, metrics_address="127.0.0.1:0") as c:
        address = c.link.metrics_address
        assert address is not None
        before = await scrape(address)
        assert before["fl_async_nodes_online{}"] == 3 == c.link.stats().nodes
        assert before.get("fl_async_messages_pushed_total{}", 0.0) == 0.0
        async with AsyncDriver(c.link.driver_address, insecure=True) as driver:
            nodes = await driver.get_node_ids()
            msgs = [driver.create_message(RecordSet(), MessageType.TRAIN, n, group_id="1") for n in nodes]
            replies = await driver.send_and_receive(msgs, timeout=10)
            assert len(replies) == 3
            after = await scrape(address)
        assert after["fl_async_messages_pushed_total{}"] - before.get("fl_async_messages_pushed_total{}", 0) == 3
        assert after["fl_async_messages_delivered_total{}"] == 3
        assert after["fl_async_messages_replied_total{}"] == 3
        assert after["fl_async_round_trip_seconds_count{}"] == 3
        assert after["fl_async_runs{state=active}"] == 1
        assert after["fl_async_messages{state=queued}"] == 0
        assert after["fl_async_connections_open{}"] >= 4
        assert after["fl_async_rpc_duration_seconds_count{method=Driver.PushMessages,status=OK}"] == 1


async def test_metrics_off_by_default() -> None:
    async with cluster(num_nodes=1) as c:
        assert c.link.metrics is None and c.link.metrics_address is None


async def test_cancel_queued_never_runs_and_gets_one_cancelled_reply() -> None:
    async with cluster(gated_app(), num_nodes=1) as c, AsyncDriver(c.link.driver_address, insecure=True) as driver:
        (node,) = await driver.get_node_ids()
        busy, queued = await driver.push_messages([query(driver, node, "busy"), query(driver, node, "never")])
        assert busy and queued
        with anyio.fail_after(5):  # the node (max_concurrency 1) is busy with the first one
            await GATES.wait("started-busy")
        assert await driver.cancel([queued, "", "unknown"]) == [queued]
        replies = await driver.pull_messages([queued], timeout=2)
        assert len(replies) == 1 and replies[0].has_error() and replies[0].error.code == ErrorCode.CANCELLED
        assert await driver.pull_messages([queued], timeout=0) == []  # exactly one
        GATES.release("busy")
        (real,) = await driver.pull_messages([busy], timeout=5)
        assert not real.has_error()
        assert not GATES.get("started-never").is_set()
        assert c.nodes[0].running_handlers == 0  # the cancelled one never started


async def test_cancel_in_flight_async_handler_one_reply_within_2s() -> None:
    started = anyio.Event()
    ended: list[str] = []
    done = anyio.Event()
    app = ClientApp()

    @app.query()
    async def slow(msg: Message, context: Context) -> Message:
        started.set()
        try:
            await anyio.sleep(30)
        finally:
            ended.append("cancelled" if context.cancelled else "other")
            done.set()
        return msg.create_reply(RecordSet())

    async with cluster(app, num_nodes=1) as c, AsyncDriver(c.link.driver_address, insecure=True) as driver:
        (node,) = await driver.get_node_ids()
        (mid,) = await driver.push_messages([driver.create_message(RecordSet(), MessageType.QUERY, node, "g")])
        with anyio.fail_after(5):
            await started.wait()
        t0 = time.monotonic()
        assert await driver.cancel([mid]) == [mid]
        replies = await driver.pull_messages([mid], timeout=2)
        assert time.monotonic() - t0 < 2
        assert [r.error.code for r in replies] == [ErrorCode.CANCELLED]
        with anyio.fail_after(3):  # the node hears of it with its next response (heartbeat every ~0.3 s)
            await done.wait()
        assert ended == ["cancelled"]
        assert await driver.pull_messages([mid], timeout=0.5) == []


async def test_cancel_answered_keeps_the_real_reply() -> None:
    async with cluster(num_nodes=1) as c, AsyncDriver(c.link.driver_address, insecure=True) as driver:
        (node,) = await driver.get_node_ids()
        (mid,) = await driver.push_messages([driver.create_message(RecordSet(), MessageType.TRAIN, node, "g")])
        await reply_ready(c.link, mid)
        assert await driver.cancel([mid]) == []
        (reply,) = await driver.pull_messages([mid], timeout=2)
        assert not reply.has_error()


async def test_stop_run_leaves_other_run_intact() -> None:
    async with cluster(num_nodes=2) as c:  # noqa: SIM117 (c is needed by the next context managers)
        async with (
            AsyncDriver(c.link.driver_address, insecure=True) as a,
            AsyncDriver(c.link.driver_address, insecure=True) as b,
        ):
            nodes = await a.get_node_ids()
            ids_a = await a.push_messages([query(a, n, f"a{n}") for n in nodes])
            ids_b = await b.push_messages([query(b, n, f"b{n}") for n in nodes])
            stub = pb.AdminStub(a._transport._channel)  # type: ignore[union-attr]
            resp = await stub.stop_run(pb.StopRunRequest(run_id=a.run_id))
            assert resp.cancelled == 2 and not resp.already_stopped
            replies = await a.pull_messages(ids_a, timeout=2)
            assert sorted(r.error.code for r in replies) == [ErrorCode.CANCELLED] * 2
            with pytest.raises(RunStoppedError, match="stopped"):
                await a.push_messages([a.create_message(RecordSet(), MessageType.TRAIN, nodes[0], "g")])
            with pytest.raises(RunStoppedError):
                await a.get_node_ids()
            for n in nodes:
                GATES.release(f"a{n}")
                GATES.release(f"b{n}")
            got = await b.pull_messages(ids_b, timeout=10)
            assert len(got) == 2 and not any(r.has_error() for r in got)
            runs = {r.run_id: r for r in (await stub.list_runs(pb.ListRunsRequest())).runs}
            assert runs[a.run_id].stopped and not runs[b.run_id].stopped


async def test_clientapp_error_reason_names_file_and_line() -> None:
    app = ClientApp()

    @app.train()
    def train(msg: Message, context: Context) -> Message:
        return msg.create_reply(RecordSet(metrics_records={"m": MetricsRecord({"x": 1 / 0})}))

    async with cluster(app, num_nodes=1) as c, AsyncDriver(c.link.driver_address, insecure=True) as driver:
        (node,) = await driver.get_node_ids()
        msgs = [driver.create_message(RecordSet(), MessageType.TRAIN, node, "g")]
        (reply,) = await driver.send_and_receive(msgs, timeout=10)
        assert reply.error.code == ErrorCode.CLIENT_APP_RAISED_EXCEPTION
        reason = reply.error.reason
        assert "ZeroDivisionError" in reason and "division by zero" in reason
        assert "test_operations.py:" in reason and "in train" in reason


async def test_cancel_in_flight_sync_handler_sees_context_cancelled() -> None:
    import threading

    started, finished = threading.Event(), threading.Event()
    saw: list[bool] = []
    app = ClientApp()

    @app.query()
    def slow(msg: Message, context: Context) -> Message:
        started.set()
        deadline = time.monotonic() + 20
        while not context.cancelled and time.monotonic() < deadline:
            time.sleep(0.01)  # a sync handler polls the flag between steps of its work
        saw.append(context.cancelled)
        finished.set()
        return msg.create_reply(RecordSet())

    async with cluster(app, num_nodes=1) as c, AsyncDriver(c.link.driver_address, insecure=True) as driver:
        (node,) = await driver.get_node_ids()
        (mid,) = await driver.push_messages([driver.create_message(RecordSet(), MessageType.QUERY, node, "g")])
        await anyio.to_thread.run_sync(started.wait, 5)
        assert await driver.cancel([mid]) == [mid]
        (reply,) = await driver.pull_messages([mid], timeout=2)
        assert reply.error.code == ErrorCode.CANCELLED
        assert await anyio.to_thread.run_sync(finished.wait, 5)  # returns once the node heard of the cancel
        assert saw == [True]
        assert await driver.pull_messages([mid], timeout=0.5) == []  # its late reply was not sent


async def test_cancel_notice_reaches_the_node_through_its_held_pull() -> None:
    """Heartbeats every 30 s: the notice can only come with the pull the node holds open (a free slot)."""
    from fl_async.supernode import SuperNode

    started, done = anyio.Event(), anyio.Event()
    app = ClientApp()

    @app.query()
    async def slow(msg: Message, context: Context) -> Message:
        started.set()
        try:
            await anyio.sleep(30)
        finally:
            done.set()
        return msg.create_reply(RecordSet())

    async with cluster(num_nodes=0) as c:
        node = SuperNode(
            app, c.link.fleet_address, insecure=True, heartbeat_interval=30, max_concurrency=2, shutdown_grace=0.2
        )
        async with node, AsyncDriver(c.link.driver_address, insecure=True) as driver:
            node_id = await node.wait_registered(timeout=10)
            (mid,) = await driver.push_messages([driver.create_message(RecordSet(), MessageType.QUERY, node_id, "g")])
            with anyio.fail_after(5):
                await started.wait()
            t0 = time.monotonic()
            assert await driver.cancel([mid]) == [mid]
            with anyio.fail_after(2):
                await done.wait()
            assert time.monotonic() - t0 < 2
            assert node.fleet_calls["Heartbeat"] == 0

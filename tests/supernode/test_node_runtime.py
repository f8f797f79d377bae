"""SuperNode against a real SuperLink on 127.0.0.1: serving, error replies, contexts, heartbeats, concurrency, TLS."""

from __future__ import annotations

import logging
import threading
import time

import anyio
import pytest

from fl_async._net import ServerTLS
from fl_async.client import ClientApp
from fl_async.common import ConfigsRecord, Context, ErrorCode, Message, MetricsRecord, RecordSet
from fl_async.supernode import SuperNode
from fl_async.testing.certs import make_certs, write_certs
from fl_async.testing.wire import RawDriver


def counting_app() -> ClientApp:
    """train: counts calls in context.state and echoes run/node config; query: raises; evaluate: bad reply."""
    app = ClientApp()

    @app.train()
    def train(msg: Message, ctx: Context) -> Message:
        rec = ctx.state.metrics_records.setdefault("count", MetricsRecord({"n": 0}))
        rec["n"] += 1
        echo = ConfigsRecord({"node_id": ctx.node_id, **ctx.run_config, **ctx.node_config})
        return msg.create_reply(
            RecordSet(metrics_records={"m": MetricsRecord({"n": rec["n"]})}, configs_records={"echo": echo})
        )

    @app.query()
    def query(msg: Message, ctx: Context) -> Message:
        raise RuntimeError("boom!")

    @app.evaluate()
    async def evaluate(msg: Message, ctx: Context) -> Message:
        return msg  # not a reply

    return app


async def test_serves_messages_and_keeps_one_context_per_run(superlink) -> None:
    async with (
        RawDriver(superlink.driver_address) as drv,
        SuperNode(counting_app(), superlink.fleet_address, insecure=True, node_config={"site": "a"}) as node,
    ):
        node_id = await node.wait_registered(timeout=5)
        run_a = await drv.create_run({"lr": 0.5})
        run_b = await drv.create_run({"lr": 0.1})
        for expected in (1, 2):
            rep = await drv.reply(run_a, await drv.push_message(run_a, node_id))
            assert rep.content.metrics_records["m"]["n"] == expected
        rep = await drv.reply(run_b, await drv.push_message(run_b, node_id))
        assert rep.content.metrics_records["m"]["n"] == 1  # a new run gets a new Context
        assert dict(rep.content.configs_records["echo"]) == {"node_id": node_id, "lr": 0.1, "site": "a"}
        assert rep.metadata.src_node_id == node_id and rep.metadata.dst_node_id == 0
        assert set(node.contexts()) == {run_a, run_b}
    assert superlink.stats().nodes == 0  # leaving deleted the node


async def test_handler_error_and_bad_reply_give_error_replies_and_node_keeps_serving(superlink) -> None:
    async with (
        RawDriver(superlink.driver_address) as drv,
        SuperNode(counting_app(), superlink.fleet_address, insecure=True) as node,
    ):
        node_id = await node.wait_registered(timeout=5)
        run = await drv.create_run()
        ids = [await drv.push_message(run, node_id, t) for t in ("query", "evaluate", "unknown-type")]
        got = await drv.replies(run, ids)
        boom, bad, unknown = (got[i] for i in ids)
        assert boom.error.code == ErrorCode.CLIENT_APP_RAISED_EXCEPTION
        assert boom.error.reason.startswith("<class 'RuntimeError'>:<'boom!'> (raised at ")
        assert "test_node_runtime.py:" in boom.error.reason
        assert bad.error.code == ErrorCode.INVALID_REPLY and "message_id is" in bad.error.reason
        assert unknown.error.code == ErrorCode.CLIENT_APP_RAISED_EXCEPTION
        assert "Unknown message_type: unknown-type" in unknown.error.reason
        ok = await drv.reply(run, await drv.push_message(run, node_id, "train"))
        assert ok.content.metrics_records["m"]["n"] == 1


async def test_long_sync_handler_keeps_node_online_via_heartbeats(superlink_factory) -> None:
    """A 5 s blocking handler with a 0.5 s heartbeat: offline would come after 1 s without heartbeats."""
    link = await superlink_factory(heartbeat_patience=2.0)
    started = threading.Event()
    app = ClientApp()

    @app.train()
    def train(msg: Message, ctx: Context) -> Message:
        started.set()
        time.sleep(5.0)  # the training step: blocks its worker thread, not the node's event loop
        return msg.create_reply(RecordSet())

    async with (
        RawDriver(link.driver_address) as drv,
        SuperNode(app, link.fleet_address, insecure=True, heartbeat_interval=0.5) as node,
    ):
        node_id = await node.wait_registered(timeout=5)
        run = await drv.create_run()
        mid = await drv.push_message(run, node_id)
        checks = 0
        with anyio.fail_after(15):
            while True:  # long-poll for the reply in 0.25 s windows, checking liveness in between
                replies = await drv.pull_messages(run, [mid], timeout=0.25)
                if replies:
                    break
                if started.is_set():
                    assert node_id in await drv.node_ids(run)
                    assert link.stats().per_node[node_id] == (0, 1)  # the instruction is in flight
                    checks += 1
        assert replies[0].has_content(), replies[0].error  # not NODE_UNAVAILABLE
        assert checks >= 10  # liveness was sampled across the whole 5 s
        assert node.registrations == 1


async def test_max_concurrency_runs_four_slow_handlers_in_parallel(superlink) -> None:
    barrier = threading.Barrier(4, timeout=10)  # passes only when 4 handlers wait at once
    app = ClientApp()

    @app.train()
    def train(msg: Message, ctx: Context) -> Message:
        barrier.wait()
        return msg.create_reply(RecordSet())

    async with (
        RawDriver(superlink.driver_address) as drv,
        SuperNode(app, superlink.fleet_address, insecure=True, max_concurrency=4) as node,
    ):
        node_id = await node.wait_registered(timeout=5)
        run = await drv.create_run()
        ids = [await drv.push_message(run, node_id) for _ in range(4)]
        got = await drv.replies(run, ids, timeout=15)
        assert all(m.has_content() for m in got.values()), [m for m in got.values() if m.has_error()]


async def test_concurrency_never_exceeds_the_limit_and_async_handlers_share_the_loop(superlink) -> None:
    app = ClientApp()
    running = 0
    peak = 0
    pair = threading.Barrier(2, timeout=10)
    lock = threading.Lock()

    @app.train()
    def train(msg: Message, ctx: Context) -> Message:
        nonlocal running, peak
        with lock:
            running += 1
            peak = max(peak, running)
        try:
            pair.wait()  # needs a partner: proves 2 run at once
        finally:
            with lock:
                running -= 1
        return msg.create_reply(RecordSet())

    async with (
        RawDriver(superlink.driver_address) as drv,
        SuperNode(app, superlink.fleet_address, insecure=True, max_concurrency=2) as node,
    ):
        node_id = await node.wait_registered(timeout=5)
        run = await drv.create_run()
        ids = [await drv.push_message(run, node_id) for _ in range(6)]
        got = await drv.replies(run, ids, timeout=15)
        assert all(m.has_content() for m in got.values())
    assert peak == 2


async def test_many_nodes_share_one_event_loop(superlink) -> None:
    app = counting_app()
    nodes = [SuperNode(app, superlink.fleet_address, insecure=True) for _ in range(5)]
    async with RawDriver(superlink.driver_address) as drv, anyio.create_task_group() as tg:
        for n in nodes:
            tg.start_soon(n.run)
        ids = [await n.wait_registered(timeout=10) for n in nodes]
        run = await drv.create_run()
        assert sorted(await drv.wait_for_nodes(run, 5)) == sorted(ids)
        mids = [await drv.push_message(run, i) for i in ids]
        got = await drv.replies(run, mids)
        assert {m.metadata.src_node_id for m in got.values()} == set(ids)
        for n in nodes:
            n.stop()
    assert superlink.stats().nodes == 0


async def test_tls_with_root_certificates(superlink_factory, tmp_path, caplog) -> None:
    files = write_certs(tmp_path)
    link = await superlink_factory(tls=ServerTLS(files.ca_cert, files.server_cert, files.server_key))
    async with SuperNode(counting_app(), link.fleet_address, root_certificates=files.ca_cert) as node:
        assert await node.wait_registered(timeout=5)
    caplog.set_level(logging.WARNING, logger="fl_async.supernode")
    other_ca = make_certs(common_name="another CA").ca_cert
    async with SuperNode(counting_app(), link.fleet_address, root_certificates=other_ca, max_backoff=0.2) as node:
        with anyio.fail_after(10):  # the link's certificate is not trusted: the node keeps retrying
            while sum("TLS failure" in r.getMessage() for r in caplog.records) < 2:
                await anyio.sleep(0.02)
        assert node.node_id is None
    assert link.stats().nodes == 0


@pytest.mark.parametrize(
    ("kwargs", "error", "fragment"),
    [
        ({}, ValueError, "no TLS root certificates given"),
        ({"insecure": True, "root_certificates": b"x"}, ValueError, "not both"),
        ({"insecure": True, "max_concurrency": 0}, ValueError, "max_concurrency must be >= 1"),
        ({"insecure": True, "heartbeat_interval": -1}, ValueError, "heartbeat_interval must be"),
        ({"insecure": True, "poll_timeout": float("nan")}, ValueError, "poll_timeout must be"),
        ({"insecure": True, "node_config": {"k": object()}}, TypeError, "value of .k. has type object"),
        ({"root_certificates": b"not pem"}, ValueError, "not PEM"),
    ],
)
def test_bad_arguments(kwargs, error, fragment) -> None:
    with pytest.raises(error, match=fragment):
        SuperNode(ClientApp(), "127.0.0.1:9092", **kwargs)


def test_bad_app_and_address() -> None:
    with pytest.raises(TypeError, match="app must be a ClientApp"):
        SuperNode(lambda m, c: m, "127.0.0.1:9092", insecure=True)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="invalid address"):
        SuperNode(ClientApp(), "nohostport", insecure=True)
    with pytest.raises(ValueError, match="port 0"):
        SuperNode(ClientApp(), "127.0.0.1:0", insecure=True)


async def test_reply_too_large_for_the_link_becomes_payload_unavailable_error(superlink_factory) -> None:
    import numpy as np

    from fl_async.common import ParametersRecord, array_from_numpy

    link = await superlink_factory(max_request_bytes=64 * 1024)
    app = ClientApp()

    @app.train()
    def train(msg: Message, ctx: Context) -> Message:  # 256 KiB inline array: over the link's request limit
        arr = array_from_numpy(np.zeros(64 * 1024, dtype=np.float32))
        return msg.create_reply(RecordSet(parameters_records={"w": ParametersRecord({"w": arr})}))

    async with RawDriver(link.driver_address) as drv, SuperNode(app, link.fleet_address, insecure=True) as node:
        node_id = await node.wait_registered(timeout=5)
        run = await drv.create_run()
        reply = await drv.reply(run, await drv.push_message(run, node_id))
        assert reply.error.code == ErrorCode.PAYLOAD_UNAVAILABLE
        assert "RESOURCE_EXHAUSTED" in reply.error.reason
        ok = await drv.reply(run, await drv.push_message(run, node_id, "query"))  # still serving
        assert ok.has_error() and ok.error.code == ErrorCode.CLIENT_APP_RAISED_EXCEPTION

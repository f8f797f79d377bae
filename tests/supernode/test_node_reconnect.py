"""SuperNode surviving its link: restart on the same port, being forgotten, and a link that comes up late."""

from __future__ import annotations

import logging

import anyio

from fl_async.client import ClientApp
from fl_async.common import Context, Message, MetricsRecord, RecordSet
from fl_async.proto.fl_async import v1 as pb
from fl_async.supernode import SuperNode
from fl_async.testing.wire import RawDriver
from tests.node_driver import LINK_PROCESS, end_process, free_port, spawn, wait_for_text


def echo_app() -> ClientApp:
    app = ClientApp()

    @app.train()
    async def train(msg: Message, ctx: Context) -> Message:
        return msg.create_reply(RecordSet(metrics_records={"m": MetricsRecord({"node": ctx.node_id})}))

    return app


async def serve_one_round(link, node_id: int | None = None) -> int:
    """Create a run, wait for one node, push it an instruction, check the reply; return the node id."""
    async with RawDriver(link.driver_address) as drv:
        run = await drv.create_run()
        (found,) = await drv.wait_for_nodes(run, 1)
        if node_id is not None:
            assert found == node_id
        rep = await drv.reply(run, await drv.push_message(run, found))
        assert rep.has_content(), rep.error
        assert rep.content.metrics_records["m"]["node"] == found  # the Context knows the current id
        return found


async def test_link_restarted_on_same_port_node_registers_again_and_serves(tmp_path) -> None:
    """The link is a separate process, stopped and started again on the same ports (a real restart: its
    connections die with it and its in-memory state is gone)."""
    driver_addr, fleet_addr = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"

    class Link:  # what serve_one_round needs
        driver_address = driver_addr

    first = await spawn(LINK_PROCESS, driver_addr, fleet_addr, log_path=tmp_path / "link1.log")
    try:
        await wait_for_text(tmp_path / "link1.log", "SuperLink serving")
        async with SuperNode(echo_app(), fleet_addr, insecure=True, heartbeat_interval=0.5, max_backoff=0.5) as node:
            node_id = await node.wait_registered(timeout=5)
            await serve_one_round(Link, node_id)
            await end_process(first)
            second = await spawn(LINK_PROCESS, driver_addr, fleet_addr, log_path=tmp_path / "link2.log")
            try:
                await wait_for_text(tmp_path / "link2.log", "SuperLink serving")
                again = await serve_one_round(Link)  # long-polls until the node has registered again
                assert again != node_id and node.node_id == again
                assert node.registrations == 2
            finally:
                await end_process(second)
    finally:
        await end_process(first)


async def test_node_forgotten_by_the_link_registers_again(superlink_factory, caplog) -> None:
    caplog.set_level(logging.INFO, logger="fl_async.supernode")
    link = await superlink_factory()
    async with SuperNode(echo_app(), link.fleet_address, insecure=True, heartbeat_interval=0.2) as node:
        first = await node.wait_registered(timeout=5)
        record = link.state.store.get_node(first)
        link.state.delete_node(pb.NodeAuth(node_id=first, token=record.token))  # as if declared offline
        assert link.stats().nodes == 0
        second = await serve_one_round(link)  # the next heartbeat/pull gets UNAUTHENTICATED -> CreateNode
        assert second != first and node.registrations == 2
    again = [r for r in caplog.records if "registered again" in r.getMessage()]
    assert len(again) == 1 and again[0].levelno == logging.INFO  # the operator sees that the node recovered
    assert f"as node {second}" in again[0].getMessage() and f"forgot node {first}" in again[0].getMessage()


async def test_node_started_before_the_link_retries_then_registers(superlink_factory, caplog) -> None:
    port = free_port()  # nobody listens there (yet)
    caplog.set_level(logging.WARNING, logger="fl_async.supernode")
    async with SuperNode(echo_app(), f"127.0.0.1:{port}", insecure=True, max_backoff=0.3) as node:
        with anyio.fail_after(10):  # the node has failed at least twice (backoff, no crash)
            while sum("not usable" in r.getMessage() for r in caplog.records) < 2:
                await anyio.sleep(0.02)
        assert node.node_id is None
        link = await superlink_factory(fleet_api_address=f"127.0.0.1:{port}")
        node_id = await node.wait_registered(timeout=5)
        await serve_one_round(link, node_id)


def test_backoff_is_capped_jittered_and_never_zero() -> None:
    from tenacity import RetryCallState

    from fl_async.supernode.supernode import _Backoff

    wait = _Backoff(0.1, 2.0)
    for attempt in range(1, 40):
        state = RetryCallState(None, None, (), {})  # type: ignore[arg-type]
        state.attempt_number = attempt
        base = min(2.0, 0.1 * 2 ** (attempt - 1))
        assert 0.5 * base <= wait(state) <= base <= 2.0


async def test_network_blip_keeps_the_registration_and_delivers_the_reply_made_meanwhile(
    superlink_factory, caplog
) -> None:
    import threading

    from tests.node_driver import TcpProxy

    # The node must come back within the link's disconnect_grace (default 3 s) or the link declares it offline
    # and answers NODE_UNAVAILABLE: a generous grace keeps a loaded machine from failing the test.
    link = await superlink_factory(disconnect_grace=10.0)
    proxy = await TcpProxy(link.fleet_address).start()
    started, release = threading.Event(), threading.Event()
    app = ClientApp()

    @app.train()
    def train(msg: Message, ctx: Context) -> Message:
        started.set()
        release.wait(10)
        return msg.create_reply(RecordSet(metrics_records={"m": MetricsRecord({"node": ctx.node_id})}))

    caplog.set_level(logging.INFO, logger="fl_async.supernode")
    try:
        async with (
            RawDriver(link.driver_address) as drv,
            SuperNode(app, f"127.0.0.1:{proxy.port}", insecure=True, heartbeat_interval=2.0, max_backoff=0.2) as node,
        ):
            node_id = await node.wait_registered(timeout=5)
            run = await drv.create_run()
            mid = await drv.push_message(run, node_id)
            with anyio.fail_after(10):
                while not started.is_set():
                    await anyio.sleep(0.01)
            await proxy.cut()  # the node's connection resets; the link (grace 10 s) still knows the node
            with anyio.fail_after(10):  # the node noticed (heartbeat failed) and is retrying
                while not any("not usable" in r.getMessage() for r in caplog.records):
                    await anyio.sleep(0.01)
            release.set()  # the reply is made while the link is unreachable
            await proxy.restore()
            reply = await drv.reply(run, mid)
            assert reply.has_content(), reply.error  # delivered after the blip, not NODE_UNAVAILABLE
            assert node.node_id == node_id and node.registrations == 1  # same registration resumed
            assert any(
                r.levelno == logging.INFO and "restored; same registration" in r.getMessage() for r in caplog.records
            )
    finally:
        release.set()
        await proxy.aclose()

"""How a SuperNode pulls against a real SuperLink: a reply's push also pulls when no pull is in flight
(``PushReplies.pull_max_messages``), never asking for more instructions than free slots."""

from __future__ import annotations

import logging
import random
import time

import anyio
import grpclib.events

from fl_async._fastwire import Encoded
from fl_async.client import ClientApp
from fl_async.common import Context, Message, RecordSet
from fl_async.proto.fl_async import v1 as pb
from fl_async.supernode import SuperNode
from fl_async.testing.wire import RawDriver


def echo_app() -> ClientApp:
    app = ClientApp()

    @app.train()
    async def train(msg: Message, ctx: Context) -> Message:
        return msg.create_reply(RecordSet())

    return app


async def test_busy_node_replies_and_pulls_in_one_call(superlink_factory) -> None:
    link = await superlink_factory(max_poll_timeout=30.0)
    async with (
        RawDriver(link.driver_address) as drv,
        SuperNode(echo_app(), link.fleet_address, insecure=True, poll_timeout=30.0) as node,
    ):
        node_id = await node.wait_registered(timeout=5)
        run = await drv.create_run()
        for _ in range(5):  # one at a time: each arrives while the previous reply's push is held
            reply = await drv.reply(run, await drv.push_message(run, node_id))
            assert reply.has_content(), reply.error
        calls = node.fleet_calls
    assert calls["PushReplies+pull"] == 5 and calls["PushReplies"] == 0
    assert calls["PullInstructions"] == 1  # only the first instruction came through the separate long-poll
    assert link.stats().nodes == 0


async def test_reply_whose_ttl_is_too_short_to_hold_a_pull_is_pushed_alone(superlink) -> None:
    async with (
        RawDriver(superlink.driver_address) as drv,
        SuperNode(echo_app(), superlink.fleet_address, insecure=True) as node,
    ):
        node_id = await node.wait_registered(timeout=5)
        run = await drv.create_run()
        reply = await drv.reply(run, await drv.push_message(run, node_id, ttl=3.0))  # < 5 s margin left
        assert reply.has_content(), reply.error
        assert node.fleet_calls["PushReplies"] == 1 and node.fleet_calls["PushReplies+pull"] == 0


async def test_stop_while_a_push_holds_a_pull_is_quick_and_unregisters(superlink_factory, caplog) -> None:
    link = await superlink_factory(max_poll_timeout=30.0)
    node = SuperNode(echo_app(), link.fleet_address, insecure=True, poll_timeout=30.0)
    caplog.set_level(logging.INFO, logger="fl_async.supernode")
    async with RawDriver(link.driver_address) as drv, anyio.create_task_group() as tg:
        tg.start_soon(node.run)
        node_id = await node.wait_registered(timeout=5)
        run = await drv.create_run()
        assert (await drv.reply(run, await drv.push_message(run, node_id))).has_content()
        assert node.fleet_calls["PushReplies+pull"] == 1  # held on the link now, for up to 30 s
        t0 = time.monotonic()
        node.stop()
    assert time.monotonic() - t0 < 2.0  # not the 30 s hold: DeleteNode made the link answer it
    assert link.stats().nodes == 0 and node.registrations == 1
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert not [r for r in warnings if "node authentication is off" not in r.getMessage()], caplog.text
    assert sum("deleted on the SuperLink" in r.getMessage() for r in caplog.records) == 1


async def test_pulls_never_ask_for_more_than_the_free_slots(superlink_factory) -> None:
    """Random handler durations with max_concurrency=3: at every pulling request (a separate pull or a push
    that pulls), running handlers + requested instructions <= 3, and the link holds no other pull of the node."""
    link = await superlink_factory(max_poll_timeout=30.0)
    limit = 3
    rng = random.Random(7)
    app = ClientApp()
    running = peak = 0

    @app.train()
    async def train(msg: Message, ctx: Context) -> Message:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        try:
            for _ in range(rng.randrange(4)):  # a few loop turns of "work" (no timers)
                await anyio.lowlevel.checkpoint()
        finally:
            running -= 1
        return msg.create_reply(RecordSet())

    node = SuperNode(app, link.fleet_address, insecure=True, max_concurrency=limit, poll_timeout=30.0)
    violations: list[str] = []
    pulling_requests = 0

    async with RawDriver(link.driver_address) as drv, node:
        node_id = await node.wait_registered(timeout=5)
        channel = node._conn._channel  # white box: watch what the node's one connection sends
        auth_len = len(node._session.wire_auth)

        async def on_send(event: grpclib.events.SendMessage) -> None:
            nonlocal pulling_requests
            msg = event.message
            if not isinstance(msg, Encoded):
                return  # not a pull or push
            tag = msg.data[auth_len] if len(msg.data) > auth_len else 0
            if tag in (0x10, 0x19):  # PullInstructionsRequest: max_messages / timeout follow the auth
                requested = pb.PullInstructionsRequest.parse(msg.data).max_messages
            else:
                requested = pb.PushRepliesRequest.parse(msg.data).pull_max_messages
                if not requested:
                    return  # a push that does not pull
            pulling_requests += 1
            if requested < 1 or requested + node.running_handlers > limit:
                violations.append(f"asked for {requested} with {node.running_handlers} running")
            held = link.state.nodes.active_pulls.get(node_id, 0)  # white box: pulls the link holds for the node
            if held:
                violations.append(f"a pulling request was sent while the link held {held} pull(s)")

        grpclib.events.listen(channel, grpclib.events.SendMessage, on_send)
        run = await drv.create_run()
        for burst in (5, 1, 7, 2, 10, 3, 12):  # bursts larger and smaller than the slots
            ids = [await drv.push_message(run, node_id) for _ in range(burst)]
            got = await drv.replies(run, ids, timeout=15)
            assert all(m.has_content() for m in got.values())
        calls = node.fleet_calls
    assert not violations, violations
    assert pulling_requests >= 7 and 1 <= peak <= limit
    assert calls["PushReplies+pull"] >= 1


async def test_connection_lost_while_a_push_holds_a_pull_resumes_and_keeps_serving(superlink_factory, caplog) -> None:
    """The reply got through, then the connection broke during the pull part: the node resumes its
    registration, sends the reply again (the link refuses the duplicate: logged at INFO, not as a problem)
    and serves the next instruction."""
    from tests.node_driver import TcpProxy

    link = await superlink_factory(max_poll_timeout=30.0)
    proxy = await TcpProxy(link.fleet_address).start()
    caplog.set_level(logging.INFO, logger="fl_async.supernode")
    try:
        async with (
            RawDriver(link.driver_address) as drv,
            SuperNode(
                echo_app(),
                f"127.0.0.1:{proxy.port}",
                insecure=True,
                poll_timeout=30.0,
                heartbeat_interval=2.0,
                max_backoff=0.2,
            ) as node,
        ):
            node_id = await node.wait_registered(timeout=5)
            run = await drv.create_run()
            first = await drv.push_message(run, node_id)
            assert (await drv.reply(run, first)).has_content()
            assert node.fleet_calls["PushReplies+pull"] == 1
            await proxy.cut()
            with anyio.fail_after(10):  # the held call failed and the node is retrying
                while node.node_id is not None:
                    await anyio.sleep(0.01)
            await proxy.restore()
            reply = await drv.reply(run, await drv.push_message(run, node_id))
            assert reply.has_content(), reply.error
            assert node.node_id == node_id and node.registrations == 1
            with anyio.fail_after(10):
                while not any(first in r.getMessage() and "sent again" in r.getMessage() for r in caplog.records):
                    await anyio.sleep(0.01)
        resent = [r for r in caplog.records if r.name == "fl_async.supernode" and first in r.getMessage()]
        assert resent and all(r.levelno == logging.INFO for r in resent), caplog.text  # (the link logs its refusal)
    finally:
        await proxy.aclose()


async def test_a_busy_node_sends_no_heartbeats_an_idle_one_does(superlink) -> None:
    """Completed pulls/pushes are signs of life: heartbeats are counted from the last one."""
    async with (
        RawDriver(superlink.driver_address) as drv,
        SuperNode(echo_app(), superlink.fleet_address, insecure=True, heartbeat_interval=0.5) as node,
    ):
        node_id = await node.wait_registered(timeout=5)
        run = await drv.create_run()
        t0 = time.monotonic()
        while time.monotonic() - t0 < 1.5:  # busy: instructions back to back (~5 heartbeat periods)
            assert (await drv.reply(run, await drv.push_message(run, node_id))).has_content()
        busy = node.fleet_calls["Heartbeat"]
        with anyio.fail_after(10):  # idle: its pull is held on the link (5 s), so heartbeats resume
            while node.fleet_calls["Heartbeat"] < busy + 2:
                await anyio.sleep(0.05)
        assert node_id in await drv.node_ids(run)  # still online (the link declares a node offline after 1 s)
    assert busy <= 1, busy

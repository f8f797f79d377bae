"""The SuperLink over real gRPC on 127.0.0.1 (raw pb stubs): rounds, long-polls, statuses, TLS, restart."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator

import anyio
import anyio.lowlevel
import pytest
from grpclib.client import Channel
from grpclib.const import Status
from grpclib.exceptions import GRPCError, StreamTerminatedError

from fl_async._net import ServerTLS, client_ssl_context, parse_address
from fl_async.common.message import ErrorCode
from fl_async.proto.fl_async import v1 as pb
from fl_async.superlink import SuperLink
from fl_async.testing.wire import RawDriver, RawNode, channel, instruction, reply_to


class Conn:
    def __init__(self, link: SuperLink) -> None:
        self.driver_channel = channel(link.driver_address)
        self.fleet_channel = channel(link.fleet_address)
        self.driver = pb.DriverStub(self.driver_channel)
        self.fleet = pb.FleetStub(self.fleet_channel)

    def close(self) -> None:
        self.driver_channel.close()
        self.fleet_channel.close()


@pytest.fixture
async def conn(superlink: SuperLink) -> AsyncIterator[Conn]:
    c = Conn(superlink)
    try:
        yield c
    finally:
        c.close()


async def test_round_trip_with_long_polls(superlink: SuperLink, conn: Conn) -> None:
    drv = await RawDriver.create(conn.driver)
    nodes = [await RawNode.create(conn.fleet) for _ in range(3)]
    assert sorted(await drv.node_ids()) == sorted(n.node_id for n in nodes)
    async with anyio.create_task_group() as tg:
        for n in nodes:
            tg.start_soon(n.serve_echo)
        with anyio.fail_after(5):
            for _ in range(3):  # each round is answered through held polls, far below the 5 s poll window
                t0 = time.perf_counter()
                replies = await drv.send_and_receive([instruction(drv.run_id, n.node_id) for n in nodes])
                assert time.perf_counter() - t0 < 1.0
                assert sorted(r.metadata.src_node_id for r in replies) == sorted(n.node_id for n in nodes)
                assert all(r.metadata.message_id and r.content is not None for r in replies)
        tg.cancel_scope.cancel()
    assert superlink.stats().replies == 0 and superlink.stats().in_flight == 0


async def test_node_pull_returns_empty_at_timeout_and_cap(superlink_factory) -> None:
    link = await superlink_factory(max_poll_timeout=0.3)
    c = Conn(link)
    try:
        node = await RawNode.create(c.fleet)
        t0 = time.perf_counter()
        assert await node.pull(timeout=0.1) == []
        assert 0.08 <= time.perf_counter() - t0 < 1.0
        t0 = time.perf_counter()
        assert await node.pull(timeout=1e9) == []  # capped by max_poll_timeout
        assert 0.25 <= time.perf_counter() - t0 < 2.0
        assert await node.pull(timeout=float("inf")) == []
    finally:
        c.close()


async def test_driver_pull_waits_for_all_outstanding_then_partial_at_timeout(conn: Conn) -> None:
    drv = await RawDriver.create(conn.driver)
    a, b = await RawNode.create(conn.fleet), await RawNode.create(conn.fleet)
    ids = list((await drv.push([instruction(drv.run_id, a.node_id), instruction(drv.run_id, b.node_id)])).message_ids)
    [ins_a] = await a.pull()
    await a.reply([reply_to(ins_a)])
    t0 = time.perf_counter()
    got = await drv.pull(["", "unknown", *ids], timeout=0.3)  # b never answers: partial after the window
    assert 0.25 <= time.perf_counter() - t0 < 2.0
    assert [r.metadata.reply_to_message for r in got] == [ids[0]]
    assert await drv.pull(ids, timeout=0) == []  # delivered once

    async def answer_b_later() -> None:
        [ins_b] = await b.pull(timeout=2)
        await anyio.lowlevel.checkpoint()  # let the driver's pull get held first (not needed for correctness)
        await b.reply([reply_to(ins_b)])

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(answer_b_later)
            got = await drv.pull(ids, timeout=5)  # returns as soon as b's reply is there
    assert [r.metadata.reply_to_message for r in got] == [ids[1]]
    assert await drv.pull(ids, timeout=0.05) == []  # nothing outstanding: no wait beyond the window


async def test_pull_with_nothing_outstanding_returns_at_once(conn: Conn) -> None:
    drv = await RawDriver.create(conn.driver)
    t0 = time.perf_counter()
    assert await drv.pull(["", "nope"], timeout=5) == []
    assert await drv.pull([], timeout=5) == []
    assert time.perf_counter() - t0 < 1.0


async def test_pull_response_lists_the_ids_still_outstanding(conn: Conn) -> None:
    drv, other = await RawDriver.create(conn.driver), await RawDriver.create(conn.driver)
    a, b = await RawNode.create(conn.fleet), await RawNode.create(conn.fleet)
    ids = list((await drv.push([instruction(drv.run_id, a.node_id), instruction(drv.run_id, b.node_id)])).message_ids)
    [foreign] = (await other.push([instruction(other.run_id, a.node_id)])).message_ids

    async def pull(request_ids: list[str], timeout: float = 0.0) -> pb.PullMessagesResponse:
        return await conn.driver.pull_messages(
            pb.PullMessagesRequest(run_id=drv.run_id, message_ids=request_ids, timeout=timeout), metadata=drv.metadata
        )

    asked = ["", "unknown", foreign, *ids, ids[0]]
    resp = await pull(asked)
    assert resp.messages == [] and resp.outstanding == ids  # pushed in this run, no reply yet; deduplicated
    [ins_a] = await a.pull()
    await a.reply([reply_to(ins_a)])
    resp = await pull(asked, timeout=0.05)  # a's reply is delivered now: only b's id is still outstanding
    assert [r.metadata.reply_to_message for r in resp.messages] == [ids[0]] and resp.outstanding == [ids[1]]
    resp = await pull(ids)
    assert resp.messages == [] and resp.outstanding == [ids[1]]  # ids[0] was delivered: never listed again
    b_ins = await b.pull()
    await b.reply([reply_to(b_ins[0])])
    resp = await pull(ids, timeout=5)
    assert len(resp.messages) == 1 and resp.outstanding == []


async def test_wait_for_nodes(conn: Conn) -> None:
    drv = await RawDriver.create(conn.driver)
    req = pb.WaitForNodesRequest(run_id=drv.run_id, min_nodes=2, timeout=5)
    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:

            async def register() -> None:
                for _ in range(2):
                    await RawNode.create(conn.fleet)

            tg.start_soon(register)
            res = await conn.driver.wait_for_nodes(req, metadata=drv.metadata)
    assert len(res.node_ids) == 2
    t0 = time.perf_counter()
    res = await conn.driver.wait_for_nodes(
        pb.WaitForNodesRequest(run_id=drv.run_id, min_nodes=5, timeout=0.2), metadata=drv.metadata
    )
    assert len(res.node_ids) == 2 and 0.15 <= time.perf_counter() - t0 < 2.0
    with pytest.raises(GRPCError) as exc:
        await conn.driver.wait_for_nodes(pb.WaitForNodesRequest(run_id=12345, min_nodes=1, timeout=1))
    assert exc.value.status is Status.NOT_FOUND
    for bad in (-5, 2**31):  # -5 arrives as 2**32 - 5 in the uint32 field
        with pytest.raises(GRPCError) as exc:
            await conn.driver.wait_for_nodes(
                pb.WaitForNodesRequest(run_id=drv.run_id, min_nodes=bad, timeout=1), metadata=drv.metadata
            )
        assert exc.value.status is Status.INVALID_ARGUMENT and "min_nodes must be in 0..2147483647" in (
            exc.value.message or ""
        )


async def test_statuses(superlink: SuperLink, conn: Conn) -> None:
    drv = await RawDriver.create(conn.driver)
    a, b = await RawNode.create(conn.fleet), await RawNode.create(conn.fleet)
    await drv.push([instruction(drv.run_id, a.node_id), instruction(drv.run_id, b.node_id)])
    [ins_a], [ins_b] = await a.pull(), await b.pull()

    async def status_of(coro) -> tuple[Status, str]:
        with pytest.raises(GRPCError) as exc:
            await coro
        return exc.value.status, exc.value.message or ""

    bad = pb.NodeAuth(node_id=a.node_id, token=b"\0" * 32)
    s, m = await status_of(conn.fleet.heartbeat(pb.HeartbeatRequest(auth=bad, heartbeat_interval=1)))
    assert s is Status.UNAUTHENTICATED and "wrong token" in m
    s, m = await status_of(conn.fleet.pull_instructions(pb.PullInstructionsRequest(timeout=1)))
    assert s is Status.UNAUTHENTICATED and "NodeAuth" in m
    s, m = await status_of(a.reply([reply_to(ins_b, src_node_id=a.node_id)]))
    assert s is Status.PERMISSION_DENIED and "not addressed" in m
    s, m = await status_of(a.reply([reply_to(ins_a, src_node_id=b.node_id)]))
    assert s is Status.PERMISSION_DENIED
    s, m = await status_of(conn.driver.get_run(pb.GetRunRequest(run_id=777)))
    assert s is Status.NOT_FOUND and "777" in m
    s, m = await status_of(conn.fleet.get_run(pb.FleetGetRunRequest(auth=a.auth, run_id=777)))
    assert s is Status.NOT_FOUND
    s, m = await status_of(conn.driver.get_nodes(pb.GetNodesRequest(run_id=777)))
    assert s is Status.NOT_FOUND
    s, m = await status_of(conn.driver.pull_messages(pb.PullMessagesRequest(run_id=777, message_ids=["x"])))
    assert s is Status.NOT_FOUND
    s, m = await status_of(a.pull(timeout=-1))
    assert s is Status.INVALID_ARGUMENT and "timeout" in m
    s, m = await status_of(drv.pull([], timeout=float("nan")))
    assert s is Status.INVALID_ARGUMENT
    s, m = await status_of(conn.fleet.create_node(pb.CreateNodeRequest(heartbeat_interval=float("nan"))))
    assert s is Status.INVALID_ARGUMENT and "heartbeat_interval" in m
    s, m = await status_of(conn.fleet.create_node(pb.CreateNodeRequest()))
    assert s is Status.INVALID_ARGUMENT
    s, m = await status_of(
        conn.driver.create_run(pb.CreateRunRequest(run_config=[pb.ValueEntry(key="k", value=pb.Value())]))
    )
    assert s is Status.INVALID_ARGUMENT and "run_config" in m
    run = (await conn.fleet.get_run(pb.FleetGetRunRequest(auth=a.auth, run_id=drv.run_id))).run
    assert run.run_id == drv.run_id and run.fab_id == "test"
    # the failed calls changed nothing: both replies are still accepted
    assert all((await a.reply([reply_to(ins_a)])).message_ids)
    assert superlink.stats().replies == 1


async def test_push_positions_and_logging(conn: Conn, caplog: pytest.LogCaptureFixture) -> None:
    drv = await RawDriver.create(conn.driver)
    a = await RawNode.create(conn.fleet)
    with caplog.at_level(logging.WARNING, logger="fl_async.superlink"):
        res = await drv.push(
            [instruction(drv.run_id, a.node_id), instruction(drv.run_id, 99), instruction(drv.run_id, a.node_id, ttl=0)]
        )
    assert res.message_ids[0] and res.message_ids[1:] == ["", ""]
    assert res.reasons[0] == "" and "99" in res.reasons[1] and "ttl" in res.reasons[2]
    assert "position 1" in caplog.text and "position 2" in caplog.text
    assert (await drv.push([])).message_ids == []


@pytest.mark.parametrize("size", [10_000, 12 * 2**20])  # below and far above the HTTP/2 windows (4 MiB)
async def test_request_size_limit(superlink_factory, size: int) -> None:
    limit = 64 * 1024
    link = await superlink_factory(max_request_bytes=limit)
    c = Conn(link)
    try:
        drv = await RawDriver.create(c.driver)
        node = await RawNode.create(c.fleet)
        small = instruction(drv.run_id, node.node_id)
        small.content = None
        small.error = pb.Error(code=0, reason="x" * (limit // 2))
        assert (await drv.push([small])).message_ids[0]  # under the limit: fine
        big = instruction(drv.run_id, node.node_id, group_id="x" * max(size, limit + 1))
        with pytest.raises(GRPCError) as exc:
            await drv.push([big])
        assert exc.value.status is Status.RESOURCE_EXHAUSTED
        wire_size = len(bytes(pb.PushMessagesRequest(run_id=drv.run_id, messages=[big])))
        assert f"{wire_size} bytes" in exc.value.message and str(limit) in exc.value.message
        assert link.stats().queued == 1
        with pytest.raises(GRPCError) as exc:  # Fleet API too
            await node.reply([reply_to(big, src_node_id=node.node_id, group_id="y" * (limit + 1))])
        assert exc.value.status is Status.RESOURCE_EXHAUSTED
        with anyio.fail_after(5):  # the same connections still serve
            assert (await drv.push([instruction(drv.run_id, node.node_id)])).message_ids[0]
            assert len(await node.pull(max_messages=5)) == 2
    finally:
        c.close()


async def test_cancelled_polls_lose_nothing(superlink: SuperLink, conn: Conn) -> None:
    drv = await RawDriver.create(conn.driver)
    node = await RawNode.create(conn.fleet)
    for _ in range(3):  # node pulls cancelled by the client (RST_STREAM) while held
        with anyio.move_on_after(0.1):
            await node.pull(timeout=5)
    with pytest.raises(TimeoutError):  # and one hitting its gRPC deadline while held
        await conn.fleet.pull_instructions(pb.PullInstructionsRequest(auth=node.auth, timeout=5), timeout=0.1)
    [mid] = (await drv.push([instruction(drv.run_id, node.node_id)])).message_ids
    with anyio.fail_after(5):
        [ins] = await node.pull(timeout=5)
    assert ins.metadata.message_id == mid
    with anyio.move_on_after(0.1):  # a driver pull cancelled while held, before the reply exists
        await drv.pull([mid], timeout=5)
    with pytest.raises(TimeoutError):
        await conn.driver.pull_messages(
            pb.PullMessagesRequest(run_id=drv.run_id, message_ids=[mid], timeout=5), timeout=0.1, metadata=drv.metadata
        )
    await node.reply([reply_to(ins)])
    with anyio.fail_after(5):
        [rep] = await drv.pull([mid], timeout=5)
    assert rep.metadata.reply_to_message == mid
    assert superlink.stats().replies == 0 and superlink.stats().in_flight == 0


async def test_node_removed_while_pull_held(superlink: SuperLink, conn: Conn) -> None:
    node = await RawNode.create(conn.fleet)
    with anyio.fail_after(4):
        async with anyio.create_task_group() as tg:

            async def held() -> None:
                with pytest.raises(GRPCError) as exc:
                    await node.pull(timeout=5)
                assert exc.value.status is Status.UNAUTHENTICATED

            tg.start_soon(held)
            while not superlink.state.nodes.active_pulls:  # the pull is held
                await anyio.sleep(0.01)
            await conn.fleet.delete_node(pb.DeleteNodeRequest(auth=node.auth))


async def test_tls(superlink_factory, tmp_path) -> None:
    from fl_async.testing.certs import write_certs

    files = write_certs(tmp_path)
    link = await superlink_factory(tls=ServerTLS(files.ca_cert, files.server_cert, files.server_key))
    ctx = client_ssl_context(files.ca_cert)
    host, port = parse_address(link.fleet_address)
    ch = Channel(host, port, ssl=ctx)
    try:
        node = await RawNode.create(pb.FleetStub(ch))
        assert node.node_id in link.stats().per_node
    finally:
        ch.close()
    plain = channel(link.fleet_address)  # a plaintext client cannot talk to a TLS link
    try:
        with pytest.raises((StreamTerminatedError, OSError, GRPCError, TimeoutError)):
            await pb.FleetStub(plain).create_node(pb.CreateNodeRequest(heartbeat_interval=1), timeout=2)
    finally:
        plain.close()


async def test_restart_on_same_port(superlink_factory) -> None:
    first = await superlink_factory()
    fleet, driver = first.fleet_address, first.driver_address
    c = Conn(first)
    node = await RawNode.create(c.fleet)
    await first.stop()
    c.close()
    second = await superlink_factory(fleet_api_address=fleet, driver_api_address=driver)
    assert (second.fleet_address, second.driver_address) == (fleet, driver)
    c = Conn(second)
    try:
        with pytest.raises(GRPCError) as exc:  # in-memory state is gone: the node must register again
            await node.__class__(c.fleet, node.node_id, node.token, 1.0).heartbeat()
        assert exc.value.status is Status.UNAUTHENTICATED
        assert (await RawNode.create(c.fleet)).node_id
    finally:
        c.close()


async def test_stop_within_3s_with_long_polls_in_flight(superlink_factory) -> None:
    link = await superlink_factory(max_poll_timeout=30)
    c = Conn(link)
    try:
        drv = await RawDriver.create(c.driver)
        node = await RawNode.create(c.fleet)
        other = await RawNode.create(c.fleet)
        [mid] = (await drv.push([instruction(drv.run_id, other.node_id)])).message_ids
        results: dict[str, object] = {}

        async def hold(name: str, coro) -> None:
            try:
                results[name] = await coro
            except Exception as exc:
                results[name] = exc

        async with anyio.create_task_group() as tg:
            tg.start_soon(hold, "node", node.pull(timeout=30))
            tg.start_soon(hold, "driver", drv.pull([mid], timeout=30))
            tg.start_soon(
                hold,
                "wait",
                c.driver.wait_for_nodes(
                    pb.WaitForNodesRequest(run_id=drv.run_id, min_nodes=10, timeout=30), metadata=drv.metadata
                ),
            )
            with anyio.fail_after(3):
                while link.stats() and (len(link.state.nodes.active_pulls) < 1 or link._calls.active < 3):
                    await anyio.sleep(0.01)
            t0 = time.perf_counter()
            with anyio.fail_after(3):
                await link.stop(grace=1.0)
            elapsed = time.perf_counter() - t0
        assert elapsed < 3.0
        assert results["node"] == [] and results["driver"] == []  # answered, not cut off
        assert isinstance(results["wait"], pb.WaitForNodesResponse)
    finally:
        c.close()


async def test_node_unavailable_on_delete_reaches_held_driver_pull(conn: Conn) -> None:
    drv = await RawDriver.create(conn.driver)
    node = await RawNode.create(conn.fleet)
    [mid] = (await drv.push([instruction(drv.run_id, node.node_id)])).message_ids
    with anyio.fail_after(4):
        async with anyio.create_task_group() as tg:

            async def delete_soon() -> None:
                await node.pull()
                await conn.fleet.delete_node(pb.DeleteNodeRequest(auth=node.auth))

            tg.start_soon(delete_soon)
            [err] = await drv.pull([mid], timeout=5)
    assert err.error.code == ErrorCode.NODE_UNAVAILABLE
    assert err.metadata.reply_to_message == mid and err.metadata.src_node_id == node.node_id


async def test_ttl_expiry_reaches_held_driver_pull(conn: Conn) -> None:
    drv = await RawDriver.create(conn.driver)
    node = await RawNode.create(conn.fleet)
    [mid] = (await drv.push([instruction(drv.run_id, node.node_id, ttl=0.3)])).message_ids
    t0 = time.perf_counter()
    with anyio.fail_after(4):
        [err] = await drv.pull([mid], timeout=5)
    assert 0.2 <= time.perf_counter() - t0 < 2.0  # woken by the link's deadline timer
    assert err.error.code == ErrorCode.MESSAGE_EXPIRED
    assert await node.pull() == []  # never handed out


async def test_push_replies_and_pull_in_one_call(superlink: SuperLink, conn: Conn) -> None:
    drv = await RawDriver.create(conn.driver)
    node = await RawNode.create(conn.fleet)
    [first] = (await drv.push([instruction(drv.run_id, node.node_id)])).message_ids
    [ins] = await node.pull()
    s_before = superlink.stats()
    with pytest.raises(GRPCError) as exc:  # a bad pull_timeout refuses the whole call: the reply is not taken
        await node.reply_and_pull([reply_to(ins)], timeout=-1)
    assert exc.value.status is Status.INVALID_ARGUMENT and "pull_timeout" in exc.value.message
    assert superlink.stats() == s_before
    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:

            async def push_next() -> None:
                while not superlink.state.nodes.active_pulls:  # the combined call is held
                    await anyio.sleep(0.01)
                await drv.push([instruction(drv.run_id, node.node_id)])

            tg.start_soon(push_next)
            res = await node.reply_and_pull([reply_to(ins)], timeout=5, max_messages=4)
    assert res.message_ids[0] and res.reasons == [""]
    [nxt] = res.instructions
    assert nxt.metadata.message_id != first and nxt.metadata.dst_node_id == node.node_id
    [rep] = await drv.pull([first], timeout=1)
    assert rep.metadata.reply_to_message == first
    res = await node.reply_and_pull([reply_to(nxt)], timeout=0.05)  # nothing more: empty after the window
    assert res.message_ids[0] and list(res.instructions) == []
    assert (await node.reply([])).message_ids == []  # pull_max_messages 0: no pull, answers at once


async def test_start_failures_leave_nothing_bound(superlink: SuperLink, tmp_path) -> None:
    from fl_async.superlink import LinkConfig

    taken = LinkConfig(driver_api_address="127.0.0.1:0", fleet_api_address=superlink.fleet_address)
    link = SuperLink(taken)
    with pytest.raises(OSError):
        await link.start()
    with pytest.raises(RuntimeError, match="stopped"):
        await link.start()
    await link.stop()  # idempotent
    with pytest.raises(RuntimeError, match="not started"):
        _ = SuperLink().driver_address
    bad_tls = LinkConfig(
        driver_api_address="127.0.0.1:0",
        fleet_api_address="127.0.0.1:0",
        tls=ServerTLS(tmp_path / "ca.pem", tmp_path / "cert.pem", tmp_path / "key.pem"),
    )
    with pytest.raises(ValueError, match="cannot read"):
        await SuperLink(bad_tls).start()


async def test_calling_the_other_api_gets_a_hint_naming_the_right_port(superlink: SuperLink) -> None:
    """A Driver API call on the Fleet API port (and the reverse) is answered UNIMPLEMENTED naming the port of
    the right API, not grpclib's 'Missing content-type header'."""
    driver_port = parse_address(superlink.driver_address)[1]
    fleet_port = parse_address(superlink.fleet_address)[1]
    ch = channel(superlink.fleet_address)
    try:
        with pytest.raises(GRPCError) as info:
            await pb.DriverStub(ch).create_run(pb.CreateRunRequest(), timeout=5)
    finally:
        ch.close()
    assert info.value.status is Status.UNIMPLEMENTED
    assert info.value.message == (
        f"this port serves the Fleet API, not the Driver API (this SuperLink serves it "
        f"on port {driver_port}; defaults: Driver API 9091, Fleet API 9092)"
    )
    ch = channel(superlink.driver_address)
    try:
        with pytest.raises(GRPCError) as info:
            await pb.FleetStub(ch).create_node(pb.CreateNodeRequest(heartbeat_interval=5.0), timeout=5)
    finally:
        ch.close()
    assert info.value.status is Status.UNIMPLEMENTED
    assert f"serves the Driver API, not the Fleet API (this SuperLink serves it on port {fleet_port}" in (
        info.value.message or ""
    )
    assert superlink.stats().nodes == 0 and superlink.stats().runs == 0

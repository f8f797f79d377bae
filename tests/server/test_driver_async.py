"""AsyncDriver against a real SuperLink and real SuperNodes on 127.0.0.1."""

from __future__ import annotations

import logging
import socket
import time

import anyio
import numpy as np
import pytest

from fl_async.common import (
    ConfigsRecord,
    ErrorCode,
    FlAsyncError,
    LinkConnectionError,
    LinkTimeoutError,
    Message,
    MessageType,
    Metadata,
    MetricsRecord,
    ParametersRecord,
    RecordSet,
)
from fl_async.server import AsyncDriver, DriverState
from tests.driver_fixtures import GATES, cluster

pytestmark = pytest.mark.anyio


def _content(i: int = 0) -> RecordSet:
    return RecordSet(
        parameters_records={"w": ParametersRecord.from_numpy_dict({"a": np.arange(6, dtype=np.float32) + i})},
        configs_records={"c": ConfigsRecord({"i": i})},
    )


def _gate(name: str) -> RecordSet:
    return RecordSet(configs_records={"wait": ConfigsRecord({"event": name})})


async def test_connect_creates_run_with_config() -> None:
    async with cluster(num_nodes=0) as c:
        async with AsyncDriver(
            c.link.driver_address, insecure=True, run_config={"lr": 0.5, "name": "x"}, fab_id="app", fab_version="1.0"
        ) as driver:
            assert driver.state is DriverState.OPENED
            run = driver.run
            assert run.run_id == driver.run_id
            assert (run.fab_id, run.fab_version, run.run_config) == ("app", "1.0", {"lr": 0.5, "name": "x"})
            fetched = await driver.get_run()
            assert fetched == run
            async with AsyncDriver(c.link.driver_address, insecure=True) as other:
                assert other.run_id != driver.run_id
        assert driver.state is DriverState.CLOSED
        with pytest.raises(RuntimeError, match="closed"):
            await driver.get_node_ids()


async def test_round_trip_push_pull_exactly_once() -> None:
    async with cluster(num_nodes=3) as c, AsyncDriver(c.link.driver_address, insecure=True) as driver:
        node_ids = await driver.get_node_ids()
        assert sorted(node_ids) == sorted(c.node_ids)
        msgs = [driver.create_message(_content(i), MessageType.TRAIN, n, "1") for i, n in enumerate(node_ids)]
        ids = await driver.push_messages(msgs)
        assert len(ids) == 3 and all(ids)
        assert all(m.metadata.message_id == "" for m in msgs)  # the caller's messages are not changed
        with anyio.fail_after(5):
            replies = await driver.pull_messages(ids, timeout=5)
        assert sorted(r.metadata.reply_to_message for r in replies) == sorted(ids)
        by_id = {r.metadata.reply_to_message: r for r in replies}
        for i, (mid, node) in enumerate(zip(ids, node_ids, strict=True)):
            reply = by_id[mid]
            assert reply.metadata.src_node_id == node and reply.metadata.dst_node_id == 0
            assert reply.content.metrics_records["node"]["id"] == node
            np.testing.assert_array_equal(reply.content.parameters_records["w"]["a"].numpy(), np.arange(6) + i)
        # Delivered once: pulling again returns nothing, at once (none of the ids is outstanding).
        started = time.monotonic()
        assert await driver.pull_messages(ids, timeout=3) == []
        assert time.monotonic() - started < 1.0


async def test_pull_ignores_empty_and_unknown_ids_without_waiting() -> None:
    async with cluster(num_nodes=0) as c, AsyncDriver(c.link.driver_address, insecure=True) as driver:
        started = time.monotonic()
        assert await driver.pull_messages(["", "no-such-id"], timeout=3) == []
        assert await driver.pull_messages([], timeout=3) == []
        assert time.monotonic() - started < 1.0
        with pytest.raises(TypeError, match="single string"):
            await driver.pull_messages("abc")
        with pytest.raises(ValueError, match=">= 0"):
            await driver.pull_messages(["x"], timeout=-1)


async def test_pull_returns_when_last_reply_arrives_not_at_timeout() -> None:
    async with cluster(num_nodes=2) as c, AsyncDriver(c.link.driver_address, insecure=True) as driver:
        fast, slow = c.node_ids
        ids = await driver.push_messages(
            [
                driver.create_message(_content(), MessageType.TRAIN, fast, "1"),
                driver.create_message(_gate("slow"), MessageType.QUERY, slow, "1"),
            ]
        )
        async with anyio.create_task_group() as tg:

            async def release_later() -> None:
                # release the slow node once the fast reply has been waiting on the link
                with anyio.fail_after(5):
                    while c.link.stats().replies < 1:
                        await anyio.sleep(0.01)
                GATES.release("slow")

            tg.start_soon(release_later)
            started = time.monotonic()
            replies = await driver.pull_messages(ids, timeout=20)
            elapsed = time.monotonic() - started
        assert sorted(r.metadata.reply_to_message for r in replies) == sorted(ids)
        assert elapsed < 5.0


async def test_push_refused_message_gets_empty_id_and_reason_logged(caplog: pytest.LogCaptureFixture) -> None:
    async with cluster(num_nodes=1) as c, AsyncDriver(c.link.driver_address, insecure=True) as driver:
        (node,) = c.node_ids
        msgs = [
            driver.create_message(_content(), MessageType.TRAIN, node, "1"),
            driver.create_message(_content(), MessageType.TRAIN, 4242, "1"),
        ]
        with caplog.at_level(logging.WARNING, logger="fl_async.server"):
            ids = await driver.push_messages(msgs)
        assert ids[0] != "" and ids[1] == ""
        assert any("4242" in r.getMessage() and "not queued" in r.getMessage() for r in caplog.records)
        replies = await driver.pull_messages(ids, timeout=5)
        assert [r.metadata.reply_to_message for r in replies] == [ids[0]]


async def test_client_side_validation_sends_nothing() -> None:
    async with (
        cluster(num_nodes=1) as c,
        AsyncDriver(c.link.driver_address, insecure=True) as driver,
        AsyncDriver(c.link.driver_address, insecure=True) as other,
    ):
        (node,) = c.node_ids
        good = driver.create_message(_content(), MessageType.TRAIN, node, "1")
        foreign = other.create_message(_content(), MessageType.TRAIN, node, "1")
        with pytest.raises(ValueError, match="Invalid message: item 1 .*not this driver's run"):
            await driver.push_messages([good, foreign])
        bad_ttl = driver.create_message(_content(), MessageType.TRAIN, node, "1")
        bad_ttl.metadata.ttl = 0
        with pytest.raises(ValueError, match="Invalid message: item 0 .*ttl"):
            await driver.push_messages([bad_ttl])
        ids = await driver.push_messages([good])
        (received,) = await driver.pull_messages(ids, timeout=5)
        with pytest.raises(ValueError, match="src_node_id must be 0"):
            await driver.push_messages([received])  # a reply is not an instruction
        pushed = Message(Metadata(driver.run_id, ids[0], 0, node, "", "1", 60.0, MessageType.TRAIN), _content())
        with pytest.raises(ValueError, match="message_id is already set"):
            await driver.push_messages([pushed])
        with pytest.raises(TypeError, match="single Message"):
            await driver.push_messages(good)
        with pytest.raises(TypeError, match="item 0 is a str"):
            await driver.push_messages(["x"])
        with pytest.raises(ValueError, match="ttl"):
            driver.create_message(_content(), MessageType.TRAIN, node, "1", ttl=0)
        with pytest.raises(TypeError, match="RecordSet"):
            driver.create_message({"a": 1}, MessageType.TRAIN, node, "1")  # type: ignore[arg-type]
        assert await driver.push_messages([]) == []
        # nothing of the refused pushes reached the link: only `good` was ever queued
        assert c.link.stats().queued == 0 and c.link.stats().in_flight == 0


async def test_caller_errors_in_content_propagate_unchanged() -> None:
    """A record value made invalid after it was set (mutated list) raises the codec's TypeError naming the record
    and key, not a link error; nothing is queued and the driver stays usable."""
    async with cluster(num_nodes=1) as c, AsyncDriver(c.link.driver_address, insecure=True) as driver:
        (node,) = c.node_ids
        rec = MetricsRecord({"a": [1, 2]})
        rec["a"].append("x")
        msg = driver.create_message(RecordSet(metrics_records={"m": rec}), MessageType.TRAIN, node, "g")
        with pytest.raises(TypeError, match="metrics record 'm': value of 'a'") as info:
            await driver.push_messages([msg])
        assert not isinstance(info.value, FlAsyncError)
        assert c.link.stats().queued == 0 and c.link.stats().in_flight == 0
        ids = await driver.push_messages([driver.create_message(_content(), MessageType.TRAIN, node, "g")])
        assert len(await driver.pull_messages(ids, timeout=5)) == 1


async def test_transport_maps_only_transport_errors() -> None:
    """The driver's one mapping place leaves non-transport exceptions (a caller's bad request) unchanged."""
    from fl_async._grpc import from_grpc
    from fl_async.proto.fl_async import v1 as pb
    from fl_async.server._base import check_connect_args
    from fl_async.server._transport import DriverTransport

    async with cluster(num_nodes=0) as c:
        transport = DriverTransport.connect(
            check_connect_args(
                c.link.driver_address, insecure=True, root_certificates=None, run_config=None, fab_id="", fab_version=""
            )
        )
        try:
            bad = pb.GetNodesRequest(run_id="1")  # type: ignore[arg-type]  # fails while encoding, client side
            with pytest.raises(TypeError) as info:  # betterproto2's own error, unchanged
                await transport.call("GetNodes", bad)
            assert not isinstance(info.value, FlAsyncError) and "GetNodes" not in str(info.value)
            assert "transport failures only" not in str(info.value)
        finally:
            transport.close()
    with pytest.raises(TypeError, match="transport failures only"):
        from_grpc(ValueError("x"), what="GetNodes")


async def test_wrong_port_gets_a_hint() -> None:
    """A driver pointed at the Fleet API port, or at a gRPC server that does not know the Driver API (grpclib
    answers 'UNKNOWN: Missing content-type header'), gets UNIMPLEMENTED with a hint naming the ports."""
    import grpclib.server

    from fl_async.common import RefusedByLinkError

    async with cluster(num_nodes=0) as c:
        with pytest.raises(RefusedByLinkError, match="this port serves the Fleet API, not the Driver API") as info:
            await AsyncDriver(c.link.fleet_address, insecure=True).connect()
        assert info.value.status == "UNIMPLEMENTED"
    server = grpclib.server.Server([])  # a gRPC server with no services at all
    await server.start("127.0.0.1", 0)
    try:
        address = f"127.0.0.1:{server._server.sockets[0].getsockname()[1]}"  # type: ignore[union-attr]
        with pytest.raises(RefusedByLinkError) as info:
            await AsyncDriver(address, insecure=True).connect()
        assert info.value.status == "UNIMPLEMENTED" and "content-type" not in str(info.value)
        assert f"(is {address} the Fleet API? The Driver API listens on 9091 by default)" in str(info.value)
    finally:
        server.close()
        await server.wait_closed()


async def test_send_and_receive_never_overshoots_timeout() -> None:
    async with cluster(num_nodes=2) as c, AsyncDriver(c.link.driver_address, insecure=True) as driver:
        answering, silent = c.node_ids
        msgs = [
            driver.create_message(_content(), MessageType.TRAIN, answering, "1"),
            driver.create_message(_gate("never"), MessageType.QUERY, silent, "1"),
        ]
        started = time.monotonic()
        replies = await driver.send_and_receive(msgs, timeout=0.5)
        elapsed = time.monotonic() - started
        assert 0.5 - 0.01 <= elapsed < 0.5 + 0.05, elapsed
        assert [r.metadata.src_node_id for r in replies] == [answering]
        # Flower: timeout <= 0 pushes and returns [] at once
        assert (
            await driver.send_and_receive(
                [driver.create_message(_content(), MessageType.TRAIN, answering, "2")], timeout=0
            )
            == []
        )


async def test_send_and_receive_returns_as_soon_as_all_replied() -> None:
    async with cluster(num_nodes=3) as c, AsyncDriver(c.link.driver_address, insecure=True) as driver:
        for rnd in range(3):
            msgs = [driver.create_message(_content(), MessageType.TRAIN, n, str(rnd)) for n in c.node_ids]
            started = time.monotonic()
            replies = await driver.send_and_receive(msgs, timeout=20)
            assert len(replies) == 3 and all(r.has_content() for r in replies)
            assert time.monotonic() - started < 2.0


async def test_receive_yields_each_reply_as_it_arrives() -> None:
    async with cluster(num_nodes=3) as c, AsyncDriver(c.link.driver_address, insecure=True) as driver:
        a, b, d = c.node_ids
        ids = await driver.push_messages(
            [
                driver.create_message(_gate("b"), MessageType.QUERY, b, "1"),
                driver.create_message(_content(), MessageType.TRAIN, a, "1"),
                driver.create_message(_gate("d"), MessageType.QUERY, d, "1"),
            ]
        )
        order = []
        with anyio.fail_after(10):
            async with driver.receive(ids, timeout=10) as replies:
                async for reply in replies:
                    order.append(reply.metadata.src_node_id)
                    # each gate is opened only after the previous reply was yielded
                    if len(order) == 1:
                        GATES.release("d")
                    elif len(order) == 2:
                        GATES.release("b")
                assert replies.outstanding == []
        assert order == [a, d, b]


async def test_receive_stopped_early_keeps_unread_replies() -> None:
    async with cluster(num_nodes=2) as c, AsyncDriver(c.link.driver_address, insecure=True) as driver:
        ids = await driver.push_messages(
            [driver.create_message(_content(), MessageType.TRAIN, n, "1") for n in c.node_ids]
        )
        got = []
        with anyio.fail_after(10):
            async with driver.receive(ids, timeout=10) as replies:
                async for reply in replies:
                    got.append(reply.metadata.reply_to_message)
                    break
            rest = await driver.pull_messages(ids, timeout=5)
        assert sorted(got + [r.metadata.reply_to_message for r in rest]) == sorted(ids)


async def test_receive_timeout_ends_iteration() -> None:
    async with cluster(num_nodes=1) as c, AsyncDriver(c.link.driver_address, insecure=True) as driver:
        ids = await driver.push_messages([driver.create_message(_gate("never"), MessageType.QUERY, c.node_ids[0], "1")])
        started = time.monotonic()
        assert [r async for r in driver.receive(ids, timeout=0.3)] == []
        assert time.monotonic() - started < 0.3 + 0.1


async def test_node_unavailable_reply_when_node_leaves() -> None:
    async with cluster(num_nodes=2) as c, AsyncDriver(c.link.driver_address, insecure=True) as driver:
        leaving = c.nodes[1]
        msg = driver.create_message(_gate("never"), MessageType.QUERY, leaving.node_id, "1")
        ids = await driver.push_messages([msg])
        leaving.stop()  # unregisters from the link; its running handler is abandoned
        with anyio.fail_after(10):
            replies = await driver.pull_messages(ids, timeout=10)
        (reply,) = replies
        assert reply.has_error() and reply.error.code == ErrorCode.NODE_UNAVAILABLE


async def test_wait_for_nodes() -> None:
    async with cluster(num_nodes=2) as c, AsyncDriver(c.link.driver_address, insecure=True) as driver:
        with anyio.fail_after(5):
            assert sorted(await driver.wait_for_nodes(2, timeout=5)) == sorted(c.node_ids)
        started = time.monotonic()
        with pytest.raises(LinkTimeoutError, match="only 2 of 3 nodes"):
            await driver.wait_for_nodes(3, timeout=0.3)
        assert time.monotonic() - started < 0.3 + 0.1
        with pytest.raises(ValueError):
            await driver.wait_for_nodes(-1)


async def test_state_errors_and_bad_arguments() -> None:
    with pytest.raises(ValueError, match="no transport security"):
        AsyncDriver("127.0.0.1:9091")
    with pytest.raises(ValueError, match="not both"):
        AsyncDriver("127.0.0.1:9091", insecure=True, root_certificates=b"x")
    with pytest.raises(ValueError, match="invalid address"):
        AsyncDriver("nohostport", insecure=True)
    with pytest.raises(TypeError, match="lr"):
        AsyncDriver("127.0.0.1:9091", insecure=True, run_config={"lr": None})
    driver = AsyncDriver("127.0.0.1:9091", insecure=True)
    with pytest.raises(RuntimeError, match="not connected"):
        driver.create_message(RecordSet(), MessageType.TRAIN, 1, "1")
    with pytest.raises(RuntimeError, match="not connected"):
        await driver.get_node_ids()


async def test_unreachable_link_raises_connection_error() -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    driver = AsyncDriver(f"127.0.0.1:{port}", insecure=True)
    with anyio.fail_after(10), pytest.raises(LinkConnectionError, match="CreateRun"):
        await driver.connect()
    assert driver.state is DriverState.UNOPENED


async def test_tls_link(tmp_path) -> None:
    from fl_async._net import ServerTLS
    from fl_async.superlink import LinkConfig, SuperLink
    from fl_async.testing.certs import make_certs, write_certs

    files = write_certs(tmp_path)
    config = LinkConfig(
        driver_api_address="127.0.0.1:0",
        fleet_api_address="127.0.0.1:0",
        tls=ServerTLS(files.ca_cert, files.server_cert, files.server_key),
    )
    async with SuperLink(config) as link:
        async with AsyncDriver(link.driver_address, root_certificates=files.ca_cert) as driver:
            assert await driver.get_node_ids() == []
        async with AsyncDriver(link.driver_address, root_certificates=make_certs().ca_cert) as driver:
            assert await driver.get_node_ids() == []
        with anyio.fail_after(10), pytest.raises(LinkConnectionError):
            await AsyncDriver(link.driver_address, insecure=True).connect()
        with anyio.fail_after(10), pytest.raises(LinkConnectionError, match="TLS|SSL|certificate"):
            await AsyncDriver(link.driver_address, root_certificates=make_certs("other CA").ca_cert).connect()


async def test_receive_many_ids_shares_polls() -> None:
    from fl_async.server import MAX_CONCURRENT_POLLS

    async with cluster(num_nodes=2) as c, AsyncDriver(c.link.driver_address, insecure=True) as driver:
        count = MAX_CONCURRENT_POLLS + 8
        msgs = [driver.create_message(_content(i), MessageType.TRAIN, c.node_ids[i % 2], "1") for i in range(count)]
        ids = await driver.push_messages(msgs)
        with anyio.fail_after(20):
            got = [r.metadata.reply_to_message async for r in driver.receive(ids, timeout=20)]
        assert sorted(got) == sorted(ids)


async def test_aclose_fails_calls_in_flight() -> None:
    async with cluster(num_nodes=1) as c:
        driver = await AsyncDriver(c.link.driver_address, insecure=True).connect()
        ids = await driver.push_messages([driver.create_message(_gate("never"), MessageType.QUERY, c.node_ids[0], "1")])
        errors: list[BaseException] = []

        async def pull() -> None:
            try:
                await driver.pull_messages(ids, timeout=8)
            except BaseException as exc:
                errors.append(exc)

        with anyio.fail_after(10):
            async with anyio.create_task_group() as tg:
                tg.start_soon(pull)
                with anyio.fail_after(5):
                    while c.link.stats().in_flight < 1:  # the instruction reached the node
                        await anyio.sleep(0.01)
                await anyio.sleep(0.1)  # let the pull reach the link
                await driver.aclose()
        assert len(errors) == 1 and isinstance(errors[0], LinkConnectionError), errors
        assert "closed" in str(errors[0])


async def test_pull_keeps_polling_a_link_that_holds_polls_only_briefly() -> None:
    """The link lists outstanding ids on every pull, so a 10 ms ``max_poll_timeout`` does not end the driver's
    wait: it pulls again until the reply is in (here, after several empty polls) or its own timeout ends."""
    async with (
        cluster(num_nodes=1, max_poll_timeout=0.01) as c,
        AsyncDriver(c.link.driver_address, insecure=True) as driver,
    ):
        [node] = c.node_ids
        [mid] = await driver.push_messages([driver.create_message(_gate("late"), MessageType.QUERY, node, "1")])
        state = c.link.state
        checks = 0
        real = state.outstanding

        def counting(run_id: int, ids):
            nonlocal checks
            checks += 1
            return real(run_id, ids)

        state.outstanding = counting  # type: ignore[method-assign]
        async with anyio.create_task_group() as tg:

            async def release_after_some_polls() -> None:
                with anyio.fail_after(5):
                    while checks < 30:  # about 10 pulls of 10 ms each, all empty
                        await anyio.sleep(0.005)
                GATES.release("late")

            tg.start_soon(release_after_some_polls)
            started = time.monotonic()
            with anyio.fail_after(10):
                replies = await driver.pull_messages(["no-such-id", mid], timeout=8)
            elapsed = time.monotonic() - started
        assert [r.metadata.reply_to_message for r in replies] == [mid] and replies[0].has_content()
        assert checks >= 30 and elapsed < 5, (checks, elapsed)
        # timeout with the reply still missing: returns at the driver's timeout, not at the link's 10 ms
        [mid2] = await driver.push_messages([driver.create_message(_gate("never"), MessageType.QUERY, node, "1")])
        started = time.monotonic()
        assert await driver.pull_messages([mid2], timeout=0.3) == []
        assert 0.3 <= time.monotonic() - started < 1.5


async def test_pull_of_ids_not_outstanding_returns_at_once_on_a_link_holding_polls_long() -> None:
    async with (
        cluster(num_nodes=1, max_poll_timeout=30) as c,
        AsyncDriver(c.link.driver_address, insecure=True) as driver,
        AsyncDriver(c.link.driver_address, insecure=True) as other,
    ):
        [node] = c.node_ids
        [mid] = await driver.push_messages([driver.create_message(_content(), MessageType.TRAIN, node, "1")])
        with anyio.fail_after(10):
            [reply] = await driver.pull_messages([mid], timeout=10)
        [foreign] = await other.push_messages([other.create_message(_gate("f"), MessageType.QUERY, node, "1")])
        for ids in ([mid], ["no-such-id"], [foreign], [mid, "no-such-id", foreign, ""]):
            started = time.monotonic()
            with anyio.fail_after(5):
                assert await driver.pull_messages(ids, timeout=20) == []
            assert time.monotonic() - started < 0.5, ids
        started = time.monotonic()
        with anyio.fail_after(5):  # send_and_receive and receive use the same loop
            async with driver.receive([mid, "no-such-id"], timeout=20) as stream:
                assert [r async for r in stream] == []
        assert time.monotonic() - started < 0.5

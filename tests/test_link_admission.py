"""Request admission: callers authenticated from headers before the body is read, byte/element/time bounds."""

from __future__ import annotations

import time

import anyio
import pytest
from grpclib.const import Cardinality, Status
from grpclib.exceptions import GRPCError

from benchmarks._h2raw import RawH2
from fl_async._credentials import node_metadata, run_metadata
from fl_async._net import parse_address
from fl_async.proto.fl_async import v1 as pb
from fl_async.superlink import SuperLink
from fl_async.superlink.admission import count_elements
from fl_async.supernode._wire import Encoded, auth_field
from tests.link_stubs import RawDriver, RawNode, channel, instruction

BOMB = b"\x12\x00"  # one empty Message in field 2 of PushRepliesRequest / PushMessagesRequest


def test_count_elements_stops_at_the_limit() -> None:
    req = pb.PushMessagesRequest(run_id=1, messages=[instruction(1, 2) for _ in range(3)])
    # per message: the Message, its Metadata and its RecordSet
    assert count_elements(bytes(req), pb.PushMessagesRequest, 100) == 9
    assert count_elements(BOMB * 1000, pb.PushRepliesRequest, 10) == 11
    ids = pb.PullMessagesRequest(run_id=1, message_ids=["a"] * 50)
    assert count_elements(bytes(ids), pb.PullMessagesRequest, 1000) == 50
    with pytest.raises(ValueError):
        count_elements(b"\x12\x05ab", pb.PushRepliesRequest, 10)


async def _round(link: SuperLink) -> None:
    """A fresh node and driver complete a round within 10 s."""
    drv_ch, fleet_ch = channel(link.driver_address), channel(link.fleet_address)
    try:
        with anyio.fail_after(10):
            drv = await RawDriver.create(pb.DriverStub(drv_ch))
            node = await RawNode.create(pb.FleetStub(fleet_ch))
            async with anyio.create_task_group() as tg:
                tg.start_soon(node.serve_echo)
                assert len(await drv.send_and_receive([instruction(drv.run_id, node.node_id)])) == 1
                tg.cancel_scope.cancel()
    finally:
        drv_ch.close()
        fleet_ch.close()


async def test_unauthenticated_decode_bomb_refused_from_the_frame_header(superlink: SuperLink) -> None:
    ch = channel(superlink.fleet_address)
    try:
        node = await RawNode.create(pb.FleetStub(ch))
        start = time.monotonic()
        with pytest.raises(GRPCError) as exc:  # 8 MiB of empty replies, credentials only in the body
            async with ch.request(
                "/fl_async.v1.Fleet/PushReplies", Cardinality.UNARY_UNARY, Encoded, pb.PushRepliesResponse
            ) as stream:
                await stream.send_message(Encoded(auth_field(node.auth) + BOMB * 2**22), end=True)
                await stream.recv_message()
        assert exc.value.status is Status.RESOURCE_EXHAUSTED
        assert "--max-anonymous-request-bytes" in (exc.value.message or "")
        assert "headers" in (exc.value.message or "")
        assert time.monotonic() - start < 5
    finally:
        ch.close()
    await _round(superlink)


async def test_wrong_header_credentials_refused_before_the_body(superlink: SuperLink) -> None:
    host, port = parse_address(superlink.fleet_address)
    raw = await RawH2.connect(host, port)
    try:
        headers = [(k, v if isinstance(v, str) else "") for k, v in node_metadata(12345, b"x")]
        headers[1] = ("fl-async-node-token-bin", "eA")  # base64 of b"x"
        sid, _ = await raw.call_prefix("/fl_async.v1.Fleet/PushReplies", 1000, b"", headers)
        status = await raw.wait_status(sid, 5)  # answered without any body byte
        assert status is not None and status[0] == str(Status.UNAUTHENTICATED.value)
        assert "12345" in status[1]
    finally:
        await raw.close()
    ch = channel(superlink.driver_address)
    try:
        drv = await RawDriver.create(pb.DriverStub(ch))
        with pytest.raises(GRPCError) as exc:  # a run's token, but another run in the body
            await pb.DriverStub(ch).get_nodes(pb.GetNodesRequest(run_id=drv.run_id ^ 1), metadata=drv.metadata)
        assert exc.value.status is Status.UNAUTHENTICATED and "run" in (exc.value.message or "")
        with pytest.raises(GRPCError) as exc:
            await pb.DriverStub(ch).get_nodes(
                pb.GetNodesRequest(run_id=drv.run_id), metadata=run_metadata(drv.run_id, b"wrong")
            )
        assert exc.value.status is Status.UNAUTHENTICATED
        assert await drv.node_ids() == []
    finally:
        ch.close()


async def test_authenticated_element_bomb_refused_before_decoding(superlink_factory) -> None:
    link = await superlink_factory(max_request_elements=1000)
    ch = channel(link.fleet_address)
    try:
        node = await RawNode.create(pb.FleetStub(ch))
        start = time.monotonic()
        with pytest.raises(GRPCError) as exc:
            async with ch.request(
                "/fl_async.v1.Fleet/PushReplies",
                Cardinality.UNARY_UNARY,
                Encoded,
                pb.PushRepliesResponse,
                metadata=node.metadata,
            ) as stream:
                await stream.send_message(Encoded(auth_field(node.auth) + BOMB * 50_000), end=True)
                await stream.recv_message()
        assert exc.value.status is Status.RESOURCE_EXHAUSTED and "--max-request-elements" in (exc.value.message or "")
        assert time.monotonic() - start < 5
        assert (await node.reply([])).message_ids == []  # under the cap: fine
    finally:
        ch.close()


async def test_stalled_body_dropped_after_the_read_deadline(superlink_factory) -> None:
    link = await superlink_factory(request_read_timeout=0.5)
    ch = channel(link.fleet_address)
    host, port = parse_address(link.fleet_address)
    raw = await RawH2.connect(host, port)
    try:
        node = await RawNode.create(pb.FleetStub(ch))
        headers = [(node_metadata(node.node_id, node.token)[0]), ("fl-async-node-token-bin", _b64(node.token))]
        start = time.monotonic()
        sid, sent = await raw.call_prefix("/fl_async.v1.Fleet/PushReplies", 3 << 20, b"\x12\x00" * 1000, headers)
        assert sent == 2000
        status = await raw.wait_status(sid, 5)
        assert status is not None and status[0] == str(Status.DEADLINE_EXCEEDED.value)
        assert "--request-read-timeout" in status[1]
        assert 0.4 < time.monotonic() - start < 3
        assert link.admission.pending == 0
    finally:
        await raw.close()
        ch.close()
    await _round(link)


async def test_bytes_in_flight_budget(superlink_factory) -> None:
    link = await superlink_factory(max_pending_request_bytes=4 << 20, request_read_timeout=5)
    ch = channel(link.fleet_address)
    host, port = parse_address(link.fleet_address)
    raw = await RawH2.connect(host, port)
    try:
        node = await RawNode.create(pb.FleetStub(ch))
        headers = [(node_metadata(node.node_id, node.token)[0]), ("fl-async-node-token-bin", _b64(node.token))]
        first, _ = await raw.call_prefix("/fl_async.v1.Fleet/PushReplies", 3 << 20, b"", headers)
        second, _ = await raw.call_prefix("/fl_async.v1.Fleet/PushReplies", 3 << 20, b"", headers)
        status = await raw.wait_status(second, 3)
        assert status is not None and status[0] == str(Status.RESOURCE_EXHAUSTED.value)
        assert "--max-pending-request-bytes" in status[1]
        assert first not in raw.status  # still being received
    finally:
        await raw.close()
        ch.close()


async def test_create_run_bounds(superlink_factory) -> None:
    link = await superlink_factory(max_fab_id_bytes=16, max_run_config_bytes=64)
    ch = channel(link.driver_address)
    stub = pb.DriverStub(ch)
    try:
        for req, flag in (
            (pb.CreateRunRequest(fab_id="a" * 17), "--max-fab-id-bytes"),
            (pb.CreateRunRequest(fab_version="é" * 9), "--max-fab-id-bytes"),
            (
                pb.CreateRunRequest(run_config=[pb.ValueEntry(key="k", value=pb.Value(string="v" * 100))]),
                "--max-run-config-bytes",
            ),
            (pb.CreateRunRequest(fab_id="a" * (100 << 20)), "--max-anonymous-request-bytes"),
        ):
            with pytest.raises(GRPCError) as exc:
                await stub.create_run(req)
            assert flag in (exc.value.message or "")
        assert link.stats().runs == 0
        assert (await stub.create_run(pb.CreateRunRequest(fab_id="a" * 16))).run_id
    finally:
        ch.close()


def _b64(token: bytes) -> str:
    import base64

    return base64.b64encode(token).decode().rstrip("=")


def test_limit_flags_match_link_config() -> None:
    import dataclasses

    from typer.testing import CliRunner

    from fl_async._link_limits import LIMITS
    from fl_async.cli import app
    from fl_async.superlink import LinkConfig

    defaults = {f.name: f.default for f in dataclasses.fields(LinkConfig)}
    help_text = CliRunner().invoke(app, ["superlink", "--help"], env={"COLUMNS": "200"}).output
    for limit in LIMITS:
        assert defaults[limit.field] == limit.default, limit.field
        assert limit.flag in help_text
    r = CliRunner().invoke(app, ["superlink", "--insecure", "--request-read-timeout", "0"])
    assert r.exit_code == 2 and "--request-read-timeout must be > 0" in r.output

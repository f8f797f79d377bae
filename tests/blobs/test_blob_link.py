"""Large arrays through a real SuperLink: 10 in-process SuperNodes, the AsyncDriver, small chunks.

Arrays above the codec's inline limit travel on the blob data path; the link stores a broadcast
array once, and its store is empty again once the round is over.
"""

from __future__ import annotations

import asyncio
import socket
from contextlib import AsyncExitStack
from typing import Any

import anyio
import numpy as np
import pytest
from grpclib.client import Channel

from fl_async.client.client_app import ClientApp
from fl_async.codec import DEFAULT_INLINE_LIMIT, message_to_proto
from fl_async.common import Context, Message, RecordSet
from fl_async.common.message import ErrorCode, Metadata
from fl_async.common.records import Array, ParametersRecord
from fl_async.errors import LinkConnectionError, LinkTimeoutError, ResourceExhaustedError
from fl_async.proto.fl_async import v1 as pb
from fl_async.server.async_driver import AsyncDriver
from fl_async.superlink import SuperLink
from fl_async.supernode import SuperNode
from fl_async.testing.wire import RawDriver

N = 10


def make_app(gate: asyncio.Event) -> ClientApp:
    app = ClientApp()

    @app.train()
    async def train(message: Message, context: Context) -> Message:
        await gate.wait()
        w = message.content.parameters_records["model"]["w"].numpy()
        out = w + np.float32(context.node_id % 7)  # a distinct reply array per node
        return message.create_reply(
            RecordSet(parameters_records={"model": ParametersRecord({"w": Array.from_numpy(out)})})
        )

    return app


async def test_broadcast_stored_once_round_trip_exact_and_freed(superlink: SuperLink) -> None:
    assert superlink.blobs is not None
    blobs = superlink.blobs
    blobs.store.max_blob_bytes = 64 << 20
    gate = asyncio.Event()
    w = np.arange((3 * DEFAULT_INLINE_LIMIT) // 4 + 123, dtype=np.float32)  # ~3 MiB: travels as a blob
    async with AsyncExitStack() as stack:
        nodes = [
            await stack.enter_async_context(
                SuperNode(make_app(gate), superlink.fleet_address, insecure=True, heartbeat_interval=5.0)
            )
            for _ in range(N)
        ]
        with anyio.fail_after(20):
            for node in nodes:
                await node.wait_registered()
        driver = await stack.enter_async_context(AsyncDriver(superlink.driver_address, insecure=True))
        node_ids = await driver.wait_for_nodes(N, timeout=10)
        content = RecordSet(parameters_records={"model": ParametersRecord({"w": Array.from_numpy(w)})})
        msgs = [driver.create_message(content, "train", nid, "round-1") for nid in node_ids]
        ids = await driver.push_messages(msgs)
        assert all(ids)
        st = blobs.statistics()
        assert (st.blobs, st.complete, st.bytes_held, st.references) == (1, 1, w.nbytes, N)  # stored once
        gate.set()
        with anyio.fail_after(30):
            replies = await driver.pull_messages(ids, timeout=25)
            while len(replies) < N:
                replies += await driver.pull_messages(
                    [i for i in ids if i not in {r.metadata.reply_to_message for r in replies}], timeout=5
                )
        by_node = {r.metadata.src_node_id: r for r in replies}
        for nid in node_ids:
            got = by_node[nid].content.parameters_records["model"]["w"].numpy()
            np.testing.assert_array_equal(got, w + np.float32(nid % 7))
        st = blobs.statistics()
        assert (st.blobs, st.bytes_held, st.references, st.leases) == (0, 0, 0, 0), st


async def test_refused_upload_fails_the_push(superlink: SuperLink) -> None:
    """The driver uploads before pushing: a refused upload fails push_messages and queues nothing."""
    assert superlink.blobs is not None
    async with (
        SuperNode(ClientApp(), superlink.fleet_address, insecure=True) as node,
        AsyncDriver(superlink.driver_address, insecure=True) as driver,
    ):
        with anyio.fail_after(10):
            await node.wait_registered()
        nid = (await driver.wait_for_nodes(1, timeout=10))[0]
        w = np.ones(DEFAULT_INLINE_LIMIT // 4 + 1, dtype=np.float32)
        content = RecordSet(parameters_records={"m": ParametersRecord({"w": Array.from_numpy(w)})})
        superlink.blobs.store.max_bytes = 1024
        with pytest.raises(ResourceExhaustedError, match="STORE_FULL"):
            await driver.push_messages([driver.create_message(content, "train", nid, "g")])
        assert superlink.stats().queued == 0 and superlink.blobs.statistics().bytes_held == 0


def _external_instruction(run_id: int, nid: int, w: np.ndarray) -> tuple[pb.Message, dict[bytes, Any]]:
    md = Metadata(
        run_id=run_id,
        message_id="",
        src_node_id=0,
        dst_node_id=nid,
        reply_to_message="",
        group_id="g",
        ttl=60.0,
        message_type="train",
    )
    msg = Message(md, content=RecordSet(parameters_records={"m": ParametersRecord({"w": Array.from_numpy(w)})}))
    blobs: dict[bytes, Any] = {}
    return message_to_proto(msg, blobs=blobs), blobs  # an external reference; payload in `blobs`


async def test_push_naming_a_payload_the_link_does_not_hold_is_refused(superlink: SuperLink) -> None:
    """PushMessages refuses (``""`` + reason naming the digest) an instruction whose payload was never uploaded,
    or is only partly uploaded; nothing is queued or declared, and the node is not held up."""
    assert superlink.blobs is not None
    store = superlink.blobs.store
    async with (
        SuperNode(ClientApp(), superlink.fleet_address, insecure=True) as node,
        RawDriver(superlink.driver_address) as drv,
    ):
        with anyio.fail_after(10):
            await node.wait_registered()
        run_id = await drv.create_run()
        [nid] = await drv.wait_for_nodes(run_id, 1)
        w = np.ones(DEFAULT_INLINE_LIMIT // 4 + 1, dtype=np.float32)
        wire, blobs = _external_instruction(run_id, nid, w)
        [digest] = blobs
        resp = await drv.stub.push_messages(
            pb.PushMessagesRequest(run_id=run_id, messages=[wire]), timeout=5, metadata=drv.headers(run_id)
        )
        assert list(resp.message_ids) == [""]
        assert digest.hex() in resp.reasons[0] and "never uploaded" in resp.reasons[0]
        upload = store.begin_upload(digest, w.nbytes, writer=object())  # a stalled upload: not held either
        assert upload is not None
        wire, _ = _external_instruction(run_id, nid, w)
        resp = await drv.stub.push_messages(
            pb.PushMessagesRequest(run_id=run_id, messages=[wire]), timeout=5, metadata=drv.headers(run_id)
        )
        assert list(resp.message_ids) == [""] and "still being uploaded" in resp.reasons[0]
        assert superlink.stats().queued == 0 and superlink.stats().in_flight == 0
        assert store.references(digest) == 0


async def test_reply_naming_a_payload_the_link_does_not_hold_is_refused(superlink: SuperLink) -> None:
    """PushReplies refuses a reply whose external payload was never uploaded (``""`` + reason naming the digest);
    the instruction stays unanswered."""
    async with RawDriver(superlink.driver_address) as drv:
        host, port = superlink.fleet_address.rsplit(":", 1)
        channel = Channel(host, int(port))
        try:
            fleet = pb.FleetStub(channel)
            created = await fleet.create_node(pb.CreateNodeRequest(heartbeat_interval=30.0), timeout=5)
            auth = pb.NodeAuth(node_id=created.node_id, token=created.token)
            run_id = await drv.create_run()
            await drv.push_message(run_id, created.node_id)
            pulled = await fleet.pull_instructions(
                pb.PullInstructionsRequest(auth=auth, max_messages=1, timeout=5), timeout=10
            )
            [ins] = pulled.messages
            w = np.ones(DEFAULT_INLINE_LIMIT // 4 + 1, dtype=np.float32)
            md = Metadata(
                run_id=run_id,
                message_id="",
                src_node_id=created.node_id,
                dst_node_id=0,
                reply_to_message=ins.metadata.message_id,
                group_id="g",
                ttl=60.0,
                message_type="train",
            )
            reply = Message(
                md, content=RecordSet(parameters_records={"m": ParametersRecord({"w": Array.from_numpy(w)})})
            )
            blobs: dict[bytes, Any] = {}
            wire = message_to_proto(reply, blobs=blobs)
            [digest] = blobs
            resp = await fleet.push_replies(pb.PushRepliesRequest(auth=auth, messages=[wire]), timeout=5)
            assert list(resp.message_ids) == [""] and digest.hex() in resp.reasons[0]
            assert superlink.stats().in_flight == 1 and superlink.stats().replies == 0
        finally:
            channel.close()


async def test_unreachable_payload_becomes_payload_unavailable(superlink: SuperLink) -> None:
    """A node that cannot fetch a held instruction payload (blob path down) answers PAYLOAD_UNAVAILABLE."""
    assert superlink.blobs is not None and superlink.blobs.server is not None
    ran = []
    app = ClientApp()

    @app.train()
    def train(message: Message, context: Context) -> Message:  # pragma: no cover - must not run
        ran.append(message)
        return message.create_reply(RecordSet())

    async with (
        SuperNode(app, superlink.fleet_address, insecure=True) as node,
        RawDriver(superlink.driver_address) as drv,
    ):
        with anyio.fail_after(10):
            await node.wait_registered()
        run_id = await drv.create_run()
        [nid] = await drv.wait_for_nodes(run_id, 1)
        w = np.ones(DEFAULT_INLINE_LIMIT // 4 + 1, dtype=np.float32)
        wire, blobs = _external_instruction(run_id, nid, w)
        [(digest, data)] = blobs.items()
        superlink.blobs.store.put(digest, data)  # held by the link ...
        await superlink.blobs.server.stop()  # ... but the node cannot reach the blob path
        resp = await drv.stub.push_messages(
            pb.PushMessagesRequest(run_id=run_id, messages=[wire]), timeout=5, metadata=drv.headers(run_id)
        )
        [mid] = resp.message_ids
        assert mid, resp.reasons
        with anyio.fail_after(60):
            [reply] = await drv.pull_messages(run_id, [mid], timeout=55)
        assert reply.has_error() and reply.error.code == ErrorCode.PAYLOAD_UNAVAILABLE
        assert not ran


async def test_echoed_array_survives_the_answer(superlink: SuperLink) -> None:
    """A reply echoing the instruction's array (same digest) is not freed between release and retain."""
    app = ClientApp()

    @app.train()
    def train(message: Message, context: Context) -> Message:
        return message.create_reply(message.content)

    w = np.arange(DEFAULT_INLINE_LIMIT // 2, dtype=np.float32)
    async with (
        SuperNode(app, superlink.fleet_address, insecure=True) as node,
        AsyncDriver(superlink.driver_address, insecure=True) as driver,
    ):
        with anyio.fail_after(10):
            await node.wait_registered()
        nid = (await driver.wait_for_nodes(1, timeout=10))[0]
        content = RecordSet(parameters_records={"m": ParametersRecord({"w": Array.from_numpy(w)})})
        with anyio.fail_after(20):
            [reply] = await driver.send_and_receive([driver.create_message(content, "train", nid, "g")], timeout=15)
        np.testing.assert_array_equal(reply.content.parameters_records["m"]["w"].numpy(), w)
        assert superlink.blobs is not None and superlink.blobs.statistics().blobs == 0


async def test_blob_path_uses_the_links_tls(superlink_factory) -> None:  # type: ignore[no-untyped-def]
    """With a TLS link, the blob path is TLS too (same certificate); node and driver reach it with their roots."""
    from fl_async._net import ServerTLS
    from fl_async.testing.certs import make_certs

    certs = make_certs()
    link = await superlink_factory(tls=ServerTLS(certs.ca_cert, certs.server_cert, certs.server_key))
    app = ClientApp()

    @app.train()
    def train(message: Message, context: Context) -> Message:
        arr = message.content.parameters_records["m"]["w"]
        arr.numpy()[...] *= 2
        return message.create_reply(RecordSet(parameters_records={"m": ParametersRecord({"w": arr})}))

    w = np.arange(DEFAULT_INLINE_LIMIT // 2, dtype=np.float32)
    async with (
        SuperNode(app, link.fleet_address, root_certificates=certs.ca_cert) as node,
        AsyncDriver(link.driver_address, root_certificates=certs.ca_cert) as driver,
    ):
        with anyio.fail_after(10):
            await node.wait_registered()
        nid = (await driver.wait_for_nodes(1, timeout=10))[0]
        content = RecordSet(parameters_records={"m": ParametersRecord({"w": Array.from_numpy(w)})})
        with anyio.fail_after(20):
            [reply] = await driver.send_and_receive([driver.create_message(content, "train", nid, "g")], timeout=15)
        np.testing.assert_array_equal(reply.content.parameters_records["m"]["w"].numpy(), w * 2)
    # a plaintext client cannot talk to the TLS blob port
    from fl_async.blobs import BlobClient

    assert link.blobs is not None
    async with BlobClient("127.0.0.1", link.blobs.port, timeout=2.0, max_retries=0) as plain:
        with pytest.raises((LinkConnectionError, LinkTimeoutError)):
            await plain.has(bytes(32))


async def test_blob_path_listens_on_the_configured_address_and_drops_slow_headers(superlink_factory) -> None:  # type: ignore[no-untyped-def]
    """LinkConfig.blob_api_address is where the blob path listens (advertised in CreateRun); a connection that
    sends part of a request header is dropped after blob_header_timeout."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    link = await superlink_factory(blob_api_address=f"127.0.0.1:{port}", blob_header_timeout=0.3)
    assert link.blob_address == f"127.0.0.1:{port}"
    async with RawDriver(link.driver_address) as drv:
        resp = await drv.stub.create_run(pb.CreateRunRequest(), timeout=5)
        assert resp.blob_port == port
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(b"FLBS\x01")  # the start of a request header, and then nothing
        await writer.drain()
        with anyio.fail_after(5):  # dropped after 0.3 s (the default io timeout was 60 s)
            assert await reader.read() == b""
    finally:
        writer.close()

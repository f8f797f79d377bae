"""Identity and access on a real link over TLS on 127.0.0.1: driver tokens, run ownership, node keys (signed
registration, the id bound to the key, one live session per key, the allow-list and its reload)."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import anyio
import anyio.lowlevel
import pytest
from grpclib.const import Status
from grpclib.exceptions import GRPCError

from fl_async._credentials import run_metadata
from fl_async._grpc import open_channel
from fl_async._keys import load_private_key, node_id_for, registration_headers
from fl_async._net import ServerTLS, client_ssl_context
from fl_async.client import ClientApp
from fl_async.common import Context, ErrorCode, Message, MessageType, MetricsRecord, RecordSet
from fl_async.errors import NotAuthorizedError
from fl_async.proto.fl_async import v1 as pb
from fl_async.server import AsyncDriver
from fl_async.superlink import LinkConfig, SuperLink
from fl_async.superlink.errors import UnauthenticatedError
from fl_async.superlink.identity import REGISTRATION_WINDOW, IdentityCallers
from fl_async.supernode import SuperNode
from fl_async.testing.certs import make_certs, write_node_keys
from fl_async.testing.wire import instruction, reply_to

echo = ClientApp()


@echo.query()
def answer(message: Message, context: Context) -> Message:
    return message.create_reply(RecordSet(metrics_records={"m": MetricsRecord({"pid": os.getpid()})}))


@echo.train()
async def hold(message: Message, context: Context) -> Message:
    await anyio.sleep(60)  # still running when its node is disconnected
    return message.create_reply(RecordSet())


def config(**fields: object) -> LinkConfig:
    c = make_certs()
    return LinkConfig(
        driver_api_address="127.0.0.1:0",
        fleet_api_address="127.0.0.1:0",
        blob_api_address="127.0.0.1:0",
        tls=ServerTLS(c.ca_cert, c.server_cert, c.server_key),
        min_heartbeat_interval=0.01,
        max_poll_timeout=5.0,
        **fields,  # type: ignore[arg-type]
    )


CA = make_certs().ca_cert


def tokens_file(tmp_path: Path, *tokens: str) -> str:
    path = tmp_path / "tokens"
    path.write_text("# driver tokens\n" + "\n".join(tokens) + "\n")
    return str(path)


async def test_driver_tokens_by_keyword_env_and_refusals(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FL_ASYNC_AUTH_TOKEN", raising=False)
    with anyio.fail_after(30):
        async with SuperLink(config(driver_auth_token_file=tokens_file(tmp_path, "alpha", "beta"))) as link:
            with pytest.raises(NotAuthorizedError, match=r"requires a driver token.*auth_token=.*FL_ASYNC_AUTH_TOKEN"):
                async with AsyncDriver(link.driver_address, root_certificates=CA):
                    pass
            with pytest.raises(NotAuthorizedError, match=r"UNAUTHENTICATED.*not one of the link's"):
                async with AsyncDriver(link.driver_address, root_certificates=CA, auth_token="gamma"):
                    pass
            async with AsyncDriver(link.driver_address, root_certificates=CA, auth_token="alpha") as drv:
                assert await drv.get_node_ids() == []
            # the Admin API (fl-async ls / stop) shares the Driver API's port and its tokens
            from fl_async.cli.ops import AdminClient

            for token, refused in ((None, True), ("gamma", True), ("alpha", False)):
                admin = AdminClient(link.driver_address, root_certificates=CA, auth_token=token)
                try:
                    if refused:
                        with pytest.raises(NotAuthorizedError):
                            await admin.call("ListRuns", pb.ListRunsRequest())
                    else:
                        assert len((await admin.call("ListRuns", pb.ListRunsRequest())).runs) == 1
                finally:
                    admin.close()
            monkeypatch.setenv("FL_ASYNC_AUTH_TOKEN", "beta")
            async with AsyncDriver(link.driver_address, root_certificates=CA) as drv:
                assert await drv.get_node_ids() == []
                run_a = drv.run_id
                headers = drv._transport.credentials  # type: ignore[union-attr]
            monkeypatch.delenv("FL_ASYNC_AUTH_TOKEN")
            # the run's credentials alone (without a token) are refused; with another token too
            stub_channel = open_channel("127.0.0.1", int(link.driver_address.rsplit(":", 1)[1]), client_ssl_context(CA))
            try:
                stub = pb.DriverStub(stub_channel)
                run_headers = tuple(h for h in headers or () if h[0] != "fl-async-auth-token-bin")
                with pytest.raises(GRPCError) as err:
                    await stub.get_nodes(pb.GetNodesRequest(run_id=run_a), metadata=run_headers)
                assert err.value.status is Status.UNAUTHENTICATED
                with pytest.raises(GRPCError) as err:
                    await stub.get_nodes(
                        pb.GetNodesRequest(run_id=run_a),
                        metadata=(("fl-async-auth-token-bin", b"alpha"), *run_headers),
                    )
                assert err.value.status is Status.PERMISSION_DENIED and "belongs to another driver" in str(
                    err.value.message
                )
            finally:
                stub_channel.close()


async def test_cross_run_reply_theft_is_refused_and_the_owner_gets_its_reply() -> None:
    with anyio.fail_after(30):
        async with SuperLink(config()) as link:
            host, port = link.driver_address.rsplit(":", 1)
            channel = open_channel(host, int(port), client_ssl_context(CA))
            fleet_host, fleet_port = link.fleet_address.rsplit(":", 1)
            fleet = open_channel(fleet_host, int(fleet_port), client_ssl_context(CA))
            try:
                stub, fstub = pb.DriverStub(channel), pb.FleetStub(fleet)
                owner = await stub.create_run(pb.CreateRunRequest())
                thief = await stub.create_run(pb.CreateRunRequest())
                owner_h = run_metadata(owner.run_id, owner.blob_token)
                thief_h = run_metadata(thief.run_id, thief.blob_token)
                node = await fstub.create_node(pb.CreateNodeRequest(heartbeat_interval=30))
                auth = pb.NodeAuth(node_id=node.node_id, token=node.token)
                [mid] = (
                    await stub.push_messages(
                        pb.PushMessagesRequest(run_id=owner.run_id, messages=[instruction(owner.run_id, node.node_id)]),
                        metadata=owner_h,
                    )
                ).message_ids
                [ins] = (await fstub.pull_instructions(pb.PullInstructionsRequest(auth=auth, max_messages=1))).messages
                await fstub.push_replies(pb.PushRepliesRequest(auth=auth, messages=[reply_to(ins)]))
                # anonymous, naming the owner's run: refused
                with pytest.raises(GRPCError) as err:
                    await stub.pull_messages(pb.PullMessagesRequest(run_id=owner.run_id, message_ids=[mid]))
                assert err.value.status is Status.PERMISSION_DENIED
                # the thief's own credentials, naming the owner's run: refused
                with pytest.raises(GRPCError) as err:
                    await stub.pull_messages(
                        pb.PullMessagesRequest(run_id=owner.run_id, message_ids=[mid]), metadata=thief_h
                    )
                assert err.value.status in (Status.PERMISSION_DENIED, Status.UNAUTHENTICATED)
                # the thief's own run, naming the owner's message id: nothing
                got = await stub.pull_messages(
                    pb.PullMessagesRequest(run_id=thief.run_id, message_ids=[mid]), metadata=thief_h
                )
                assert got.messages == [] and got.outstanding == []
                for call in (
                    stub.get_run(pb.GetRunRequest(run_id=owner.run_id)),
                    stub.push_messages(pb.PushMessagesRequest(run_id=owner.run_id)),
                    stub.wait_for_nodes(pb.WaitForNodesRequest(run_id=owner.run_id, min_nodes=1)),
                ):
                    with pytest.raises(GRPCError) as err:
                        await call
                    assert err.value.status is Status.PERMISSION_DENIED
                # the owner still gets its reply
                got = await stub.pull_messages(
                    pb.PullMessagesRequest(run_id=owner.run_id, message_ids=[mid]), metadata=owner_h
                )
                assert [m.metadata.reply_to_message for m in got.messages] == [mid]
            finally:
                channel.close()
                fleet.close()


async def test_registration_checks_signature_window_and_replay(tmp_path: Path) -> None:
    priv, _ = write_node_keys(tmp_path)
    key = load_private_key(priv)
    now = [1_000_000.0]

    def refuse(_api: str, _md: object) -> object:
        raise AssertionError("not reached")

    check = IdentityCallers(refuse, clock=lambda: now[0])  # type: ignore[arg-type]
    headers = dict(registration_headers(key, now=now[0]))
    caller = check("Fleet", headers)
    assert caller.node_id == node_id_for(key.public_key()) and caller.public_key
    with pytest.raises(UnauthenticatedError, match="replay"):
        check("Fleet", headers)
    with pytest.raises(UnauthenticatedError, match="off the link's clock"):
        check("Fleet", dict(registration_headers(key, now=now[0] - REGISTRATION_WINDOW - 5)))
    other = load_private_key(write_node_keys(tmp_path, "other")[0])
    forged = {**dict(registration_headers(key, now=now[0] + 1)), **{"fl-async-node-signature-bin": b"\x30\x00"}}
    with pytest.raises(UnauthenticatedError, match="bad signature"):
        check("Fleet", forged)
    mixed = dict(registration_headers(other, now=now[0] + 2))
    mixed["fl-async-node-public-key"] = dict(registration_headers(key))["fl-async-node-public-key"]
    with pytest.raises(UnauthenticatedError, match="bad signature"):
        check("Fleet", mixed)


async def run_quietly(node: SuperNode) -> None:
    with contextlib.suppress(NotAuthorizedError):  # kept in node._fatal
        await node.run()


async def run_round(drv: AsyncDriver, node_id: int, n: int = 1) -> list[Message]:
    msgs = [drv.create_message(RecordSet(), MessageType.QUERY, node_id, "1") for _ in range(n)]
    return await drv.send_and_receive(msgs, timeout=20)


async def test_node_keys_allow_list_same_id_one_session_and_reload(tmp_path: Path) -> None:
    priv, pub = write_node_keys(tmp_path, "a")
    priv_b, pub_b = write_node_keys(tmp_path, "b")
    allow = tmp_path / "keys.csv"
    allow.write_text(pub.read_text())
    expected = node_id_for(load_private_key(priv).public_key())
    with anyio.fail_after(60):
        async with SuperLink(config(auth_list_public_keys=str(allow))) as link:
            fleet = link.fleet_address
            # a node without a key is refused (and gives up: retrying would not help)
            with pytest.raises(NotAuthorizedError, match="requires node authentication"):
                async with SuperNode(echo, fleet, root_certificates=CA) as node:
                    await node.wait_registered(10)
            # a key not on the list is refused
            with pytest.raises(NotAuthorizedError, match="not on the link's allow-list"):
                async with SuperNode(
                    echo, fleet, root_certificates=CA, auth_private_key=priv_b, auth_public_key=pub_b
                ) as node:
                    await node.wait_registered(10)
            async with AsyncDriver(link.driver_address, root_certificates=CA) as drv:
                kw = {"root_certificates": CA, "auth_private_key": priv, "auth_public_key": pub, "max_backoff": 0.2}
                async with SuperNode(echo, fleet, **kw) as first:  # type: ignore[arg-type]
                    assert await first.wait_registered(10) == expected
                    # a second live session with the same key is refused and keeps retrying
                    second = SuperNode(echo, fleet, heartbeat_interval=0.2, **kw)  # type: ignore[arg-type]
                    async with anyio.create_task_group() as tg:
                        tg.start_soon(run_quietly, second)
                        await anyio.lowlevel.checkpoint()
                        replies = await run_round(drv, expected, 5)
                        assert len(replies) == 5 and all(r.has_content() for r in replies)
                        assert second.registrations == 0 and await drv.get_node_ids() == [expected]
                        first.stop()
                        # once the first one is gone, the second registers under the same id
                        assert await second.wait_registered(15) == expected
                        assert await drv.get_node_ids() == [expected]
                        replies = await run_round(drv, expected, 3)
                        assert len(replies) == 3 and all(r.has_content() for r in replies)
                        # the key leaves the allow-list (the link notices the file change): the node is disconnected,
                        # its in-flight instruction becomes an error reply, and the node gives up
                        [held] = await drv.push_messages(
                            [drv.create_message(RecordSet(), MessageType.TRAIN, expected, "h")]
                        )
                        allow.write_text(pub_b.read_text())
                        [lost] = await drv.pull_messages([held], timeout=15)
                        assert lost.has_error() and lost.error.code == ErrorCode.NODE_UNAVAILABLE
                        assert "removed from the allow-list" in lost.error.reason
                        assert await drv.get_node_ids() == []
                        with anyio.fail_after(15):
                            while second._fatal is None:  # noqa: ASYNC110 (no event for a node's fatal error)
                                await anyio.sleep(0.05)
                        assert isinstance(second._fatal, NotAuthorizedError)
                        tg.cancel_scope.cancel()


def test_insecure_with_a_key_is_refused(tmp_path: Path) -> None:
    priv, pub = write_node_keys(tmp_path)
    with pytest.raises(ValueError, match=r"requires TLS.*--insecure"):
        SuperNode(echo, "127.0.0.1:9092", insecure=True, auth_private_key=priv, auth_public_key=pub)
    with pytest.raises(ValueError, match="requires TLS"):
        LinkConfig(auth_list_public_keys=str(pub))


async def test_blob_reads_only_for_the_addressee_and_the_owning_run() -> None:
    """A node reads only the arrays of instructions addressed to it, a driver only those of its run's replies; HAS
    answers as for an unknown blob otherwise."""
    import numpy as np

    from fl_async.blobs.client import BlobClient
    from fl_async.blobs.protocol import node_blob_token
    from fl_async.codec import message_to_proto
    from fl_async.common import Array, Metadata, ParametersRecord
    from fl_async.errors import InvalidRequestError

    w = np.arange(300_000, dtype=np.float32)  # above the 1 MiB inline limit: an external array
    with anyio.fail_after(30):
        async with SuperLink(config()) as link:
            ssl = client_ssl_context(CA)
            host, port = link.driver_address.rsplit(":", 1)
            fhost, fport = link.fleet_address.rsplit(":", 1)
            channel, fleet = open_channel(host, int(port), ssl), open_channel(fhost, int(fport), ssl)
            clients: list[BlobClient] = []
            try:
                stub, fstub = pb.DriverStub(channel), pb.FleetStub(fleet)
                owner, other = (
                    await stub.create_run(pb.CreateRunRequest()),
                    await stub.create_run(pb.CreateRunRequest()),
                )
                a = await fstub.create_node(pb.CreateNodeRequest(heartbeat_interval=30))
                b = await fstub.create_node(pb.CreateNodeRequest(heartbeat_interval=30))
                blob_port = owner.blob_port

                def client(token: bytes) -> BlobClient:
                    clients.append(BlobClient("127.0.0.1", blob_port, ssl=ssl, token=token, max_retries=0))
                    return clients[-1]

                md = Metadata(owner.run_id, "", 0, a.node_id, "", "g", 60.0, "train")
                blobs: dict[bytes, object] = {}
                wire = message_to_proto(
                    Message(md, content=RecordSet({"p": ParametersRecord({"w": Array.from_numpy(w)})})), blobs=blobs
                )
                [(digest, payload)] = blobs.items()
                await client(owner.blob_token).put(digest, payload)  # type: ignore[arg-type]
                resp = await stub.push_messages(
                    pb.PushMessagesRequest(run_id=owner.run_id, messages=[wire]),
                    metadata=run_metadata(owner.run_id, owner.blob_token),
                )
                assert resp.message_ids[0], resp.reasons
                node_a = client(node_blob_token(a.node_id, a.token))
                node_b = client(node_blob_token(b.node_id, b.token))
                other_driver = client(other.blob_token)
                assert bytes(await node_a.get(digest, w.nbytes)) == w.tobytes()
                assert await node_a.has(digest) == w.nbytes
                for stranger in (node_b, other_driver):
                    with pytest.raises(InvalidRequestError, match="NOT_FOUND"):
                        await stranger.get(digest, w.nbytes)
                    assert await stranger.has(digest) == 0
            finally:
                for c in clients:
                    await c.aclose()
                channel.close()
                fleet.close()


async def test_keyed_session_calls_need_a_fresh_proof_matching_the_body(tmp_path: Path) -> None:
    from fl_async._credentials import node_metadata
    from fl_async.supernode._fleet import FleetClient

    priv, _ = write_node_keys(tmp_path)
    key = load_private_key(priv)
    with anyio.fail_after(30):
        async with SuperLink(config()) as link:
            host, port = link.fleet_address.rsplit(":", 1)
            channel = open_channel(host, int(port), client_ssl_context(CA))
            try:
                client = FleetClient(channel, link.fleet_address, rpc_timeout=5, push_timeout=5, poll_margin=5)
                resp, signer = await client.create_node(30.0, key)
                assert signer is not None and resp.node_id == node_id_for(key.public_key())
                auth = pb.NodeAuth(node_id=resp.node_id, token=resp.token)
                stub = pb.FleetStub(channel)
                req = pb.HeartbeatRequest(auth=auth, heartbeat_interval=30.0)
                creds = node_metadata(resp.node_id, resp.token)
                with pytest.raises(GRPCError, match="must carry its proof") as err:  # session credentials alone
                    await stub.heartbeat(req, metadata=creds)
                assert err.value.status is Status.UNAUTHENTICATED
                proof = signer.headers("Heartbeat", bytes(req))
                await stub.heartbeat(req, metadata=creds + proof)  # a fresh proof of this body
                with pytest.raises(GRPCError, match="replayed") as err:  # the same proof again
                    await stub.heartbeat(req, metadata=creds + proof)
                assert err.value.status is Status.UNAUTHENTICATED
                other = pb.HeartbeatRequest(auth=auth, heartbeat_interval=5.0)
                with pytest.raises(GRPCError, match="does not match its body"):  # a proof of another body
                    await stub.heartbeat(other, metadata=creds + signer.headers("Heartbeat", bytes(req)))
                with pytest.raises(GRPCError, match="does not match its body"):  # ... or of another method
                    await stub.heartbeat(req, metadata=creds + signer.headers("GetRun", bytes(req)))
                client.credentials, client.signer = creds, signer  # the node runtime's pre-encoded calls
                assert await client.heartbeat(auth, 30.0, timeout=5) == 30.0
            finally:
                channel.close()


@pytest.mark.parametrize("link_key", [True, False])
async def test_keyed_session_the_link_no_longer_holds(tmp_path: Path, link_key: bool) -> None:
    """A registration the link holds no session for (as after a restart with a durable store): with the link's key
    configured the session's proofs are checked again; without, its calls rest on the session credentials."""
    from fl_async._credentials import node_metadata
    from fl_async.supernode._fleet import FleetClient

    key = load_private_key(write_node_keys(tmp_path, "node")[0])
    link_priv = str(write_node_keys(tmp_path, "link")[0]) if link_key else None
    with anyio.fail_after(30):
        async with SuperLink(config(auth_superlink_private_key=link_priv)) as link:
            host, port = link.fleet_address.rsplit(":", 1)
            channel = open_channel(host, int(port), client_ssl_context(CA))
            try:
                client = FleetClient(channel, link.fleet_address, rpc_timeout=5, push_timeout=5, poll_margin=5)
                resp, signer = await client.create_node(30.0, key)
                assert signer is not None
                auth = pb.NodeAuth(node_id=resp.node_id, token=resp.token)
                req = pb.HeartbeatRequest(auth=auth, heartbeat_interval=30.0)
                creds = node_metadata(resp.node_id, resp.token)
                link.identity._sessions.clear()  # noqa: SLF001 (what a restarted link process starts with)
                stub = pb.FleetStub(channel)
                await stub.heartbeat(req, metadata=creds + signer.headers("Heartbeat", bytes(req)))
                if link_key:
                    with pytest.raises(GRPCError, match="must carry its proof"):
                        await stub.heartbeat(req, metadata=creds)
                else:
                    await stub.heartbeat(req, metadata=creds)
            finally:
                channel.close()

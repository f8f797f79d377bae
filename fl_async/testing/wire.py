"""A bare node and a bare driver speaking the wire API (generated stubs, no SDK), for tests and benchmarks of
the link alone.

They build wire messages directly (empty RecordSets; no records), so they exercise the link alone.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any, Self

import anyio
from grpclib.client import Channel

from fl_async._credentials import Metadata as Headers
from fl_async._credentials import node_metadata, run_metadata
from fl_async._net import parse_address
from fl_async.codec import config_to_proto, message_from_proto, message_to_proto
from fl_async.common import Message, Metadata, RecordSet
from fl_async.proto.fl_async import v1 as pb

__all__ = ["RawDriver", "RawNode", "channel", "instruction", "reply_to"]


def channel(address: str, **kwargs: object) -> Channel:
    """A grpclib Channel to ``"HOST:PORT"`` (create it inside the running event loop)."""
    host, port = parse_address(address)
    return Channel(host, port, **kwargs)  # type: ignore[arg-type]


def instruction(run_id: int, dst: int, *, ttl: float = 60.0, message_type: str = "train", **md: object) -> pb.Message:
    """An instruction for ``dst`` with an empty RecordSet, created now."""
    fields: dict[str, object] = {
        "run_id": run_id,
        "dst_node_id": dst,
        "ttl": ttl,
        "message_type": message_type,
        "created_at": time.time(),
        "group_id": "1",
    }
    fields.update(md)
    return pb.Message(metadata=pb.Metadata(**fields), content=pb.RecordSet())  # type: ignore[arg-type]


def reply_to(ins: pb.Message, **md: object) -> pb.Message:
    """A content reply to ``ins`` from its destination node."""
    m = ins.metadata
    assert m is not None
    fields: dict[str, object] = {
        "run_id": m.run_id,
        "src_node_id": m.dst_node_id,
        "dst_node_id": 0,
        "reply_to_message": m.message_id,
        "ttl": 30.0,
        "message_type": m.message_type,
        "group_id": m.group_id,
        "created_at": time.time(),
    }
    fields.update(md)
    return pb.Message(metadata=pb.Metadata(**fields), content=pb.RecordSet())  # type: ignore[arg-type]


class RawNode:
    """A node registered through raw Fleet stubs."""

    def __init__(self, stub: pb.FleetStub, node_id: int, token: bytes, interval: float) -> None:
        self.stub = stub
        self.node_id = node_id
        self.token = token
        self.interval = interval

    @classmethod
    async def create(cls, stub: pb.FleetStub, interval: float = 30.0) -> RawNode:
        res = await stub.create_node(pb.CreateNodeRequest(heartbeat_interval=interval))
        return cls(stub, res.node_id, res.token, res.heartbeat_interval)

    @property
    def auth(self) -> pb.NodeAuth:
        return pb.NodeAuth(node_id=self.node_id, token=self.token)

    @property
    def metadata(self) -> Headers:
        """The credentials as request headers (as the SDK sends them)."""
        return node_metadata(self.node_id, self.token)

    async def pull(self, timeout: float = 0.0, max_messages: int = 1, **kw: object) -> list[pb.Message]:
        res = await self.stub.pull_instructions(
            pb.PullInstructionsRequest(auth=self.auth, max_messages=max_messages, timeout=timeout),
            **{"metadata": self.metadata, **kw},  # type: ignore[arg-type]
        )
        return list(res.messages)

    async def reply(self, messages: Sequence[pb.Message]) -> pb.PushRepliesResponse:
        return await self.stub.push_replies(
            pb.PushRepliesRequest(auth=self.auth, messages=list(messages)), metadata=self.metadata
        )

    async def reply_and_pull(
        self, messages: Sequence[pb.Message], timeout: float = 0.0, max_messages: int = 1
    ) -> pb.PushRepliesResponse:
        """Push replies and pull the next instructions in one call (``PushRepliesResponse.instructions``)."""
        req = pb.PushRepliesRequest(
            auth=self.auth, messages=list(messages), pull_max_messages=max_messages, pull_timeout=timeout
        )
        return await self.stub.push_replies(req, metadata=self.metadata)

    async def heartbeat(self) -> float:
        res = await self.stub.heartbeat(
            pb.HeartbeatRequest(auth=self.auth, heartbeat_interval=self.interval), metadata=self.metadata
        )
        return res.heartbeat_interval

    async def serve_echo(self, timeout: float = 5.0) -> None:
        """Answer every instruction at once, forever (cancel to stop)."""
        while True:
            for ins in await self.pull(timeout=timeout, max_messages=16):
                await self.reply([reply_to(ins)])


class RawDriver:
    """A driver speaking raw Driver stubs (wire messages, no Driver SDK): the one raw-driver double of the tests
    and benchmarks, to exercise the link or the nodes without :class:`~fl_async.server.AsyncDriver`.

    ``RawDriver(stub, run_id)`` / ``await RawDriver.create(stub)`` use a stub you own; ``async with
    RawDriver("HOST:PORT") as drv:`` opens (and closes) a channel of its own. Wire-level calls (:meth:`push`,
    :meth:`pull`, :meth:`send_and_receive`) take ``pb.Message`` objects for ``run_id``; message-level calls
    (:meth:`create_run`, :meth:`push_message`, :meth:`pull_messages`, :meth:`replies`, :meth:`reply`) take the run
    id first and encode / decode with :mod:`fl_async.codec`. Every wait is a link-side long-poll bounded by
    ``anyio.fail_after``. Every call sends the run's credentials in its headers (as the SDK does) when the run's
    token is known (``token``, or a run made by :meth:`create` / :meth:`create_run`).
    """

    def __init__(self, stub: pb.DriverStub | str, run_id: int = 0, token: bytes = b"") -> None:
        self._channel: Channel | None = None
        if isinstance(stub, str):
            self._channel = channel(stub)
            stub = pb.DriverStub(self._channel)
        self.stub = stub
        self.run_id = run_id
        self.token = token
        self._tokens: dict[int, bytes] = {run_id: token} if token else {}
        self.metadata: Headers | None = run_metadata(run_id, token) if token else None
        """The run's credentials as request headers (as the SDK sends them)."""

    def _headers(self, run_id: int) -> Headers | None:
        token = self._tokens.get(run_id)
        return run_metadata(run_id, token) if token else None

    def headers(self, run_id: int) -> Headers | None:
        """The credentials of a run this driver created, as request headers (``None``: not one of its runs)."""
        return self._headers(run_id)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._channel is not None:
            self._channel.close()

    @classmethod
    async def create(cls, stub: pb.DriverStub) -> RawDriver:
        res = await stub.create_run(pb.CreateRunRequest(fab_id="test", fab_version="0"))
        return cls(stub, res.run_id, res.blob_token)

    # ---------------------------------------------------------------------------- wire level (run_id)

    async def push(self, messages: Sequence[pb.Message]) -> pb.PushMessagesResponse:
        return await self.stub.push_messages(
            pb.PushMessagesRequest(run_id=self.run_id, messages=list(messages)), metadata=self.metadata
        )

    async def pull(self, ids: Sequence[str], timeout: float = 0.0, **kw: object) -> list[pb.Message]:
        res = await self.stub.pull_messages(
            pb.PullMessagesRequest(run_id=self.run_id, message_ids=list(ids), timeout=timeout),
            **{"metadata": self.metadata, **kw},  # type: ignore[arg-type]
        )
        return list(res.messages)

    async def node_ids(self, run_id: int | None = None) -> list[int]:
        """The run's online nodes (default: :attr:`run_id`)."""
        run = self.run_id if run_id is None else run_id
        res = await self.stub.get_nodes(pb.GetNodesRequest(run_id=run), timeout=5, metadata=self._headers(run))
        return list(res.node_ids)

    async def send_and_receive(self, messages: Sequence[pb.Message], timeout: float = 10.0) -> list[pb.Message]:
        """Push, then long-poll until every accepted message has a reply (or ``timeout`` s pass)."""
        ids = [i for i in (await self.push(messages)).message_ids if i]
        replies: list[pb.Message] = []
        deadline = time.monotonic() + timeout
        while len(replies) < len(ids) and time.monotonic() < deadline:
            replies += await self.pull(ids, timeout=max(0.0, deadline - time.monotonic()))
        return replies

    # ---------------------------------------------------------------------------- message level (run id first)

    async def create_run(self, run_config: dict[str, Any] | None = None) -> int:
        """Create a run (with ``run_config``) and return its id."""
        request = pb.CreateRunRequest(run_config=config_to_proto(run_config or {}))
        resp = await self.stub.create_run(request, timeout=5)
        if resp.blob_token:
            self._tokens[resp.run_id] = resp.blob_token
        return resp.run_id

    async def wait_for_nodes(self, run_id: int, n: int, timeout: float = 10.0) -> list[int]:
        with anyio.fail_after(timeout):
            while True:
                resp = await self.stub.wait_for_nodes(
                    pb.WaitForNodesRequest(run_id=run_id, min_nodes=n, timeout=1.0),
                    timeout=6,
                    metadata=self._headers(run_id),
                )
                if len(resp.node_ids) >= n:
                    return list(resp.node_ids)

    async def push_message(
        self,
        run_id: int,
        node_id: int,
        message_type: str = "train",
        content: RecordSet | None = None,
        *,
        ttl: float = 60.0,
        group_id: str = "g",
    ) -> str:
        """Push one instruction to ``node_id``; returns its message id (asserts the link accepted it)."""
        md = Metadata(
            run_id=run_id,
            message_id="",
            src_node_id=0,
            dst_node_id=node_id,
            reply_to_message="",
            group_id=group_id,
            ttl=ttl,
            message_type=message_type,
        )
        msg = Message(md, content=content if content is not None else RecordSet())
        resp = await self.stub.push_messages(
            pb.PushMessagesRequest(run_id=run_id, messages=[message_to_proto(msg)]),
            timeout=5,
            metadata=self._headers(run_id),
        )
        assert resp.message_ids[0], f"push refused: {list(resp.reasons)}"
        return resp.message_ids[0]

    async def pull_messages(self, run_id: int, message_ids: list[str], timeout: float) -> list[Message]:
        """One held pull of the replies to ``message_ids``, decoded."""
        resp = await self.stub.pull_messages(
            pb.PullMessagesRequest(run_id=run_id, message_ids=message_ids, timeout=timeout),
            timeout=timeout + 5,
            metadata=self._headers(run_id),
        )
        return [message_from_proto(m) for m in resp.messages]

    async def replies(self, run_id: int, message_ids: list[str], timeout: float = 10.0) -> dict[str, Message]:
        """Long-poll until every id has its reply (keyed by ``reply_to_message``)."""
        got: dict[str, Message] = {}
        with anyio.fail_after(timeout):
            while len(got) < len(message_ids):
                missing = [i for i in message_ids if i not in got]
                for m in await self.pull_messages(run_id, missing, timeout=1.0):
                    got[m.metadata.reply_to_message] = m
        return got

    async def reply(self, run_id: int, message_id: str, timeout: float = 10.0) -> Message:
        return (await self.replies(run_id, [message_id], timeout))[message_id]

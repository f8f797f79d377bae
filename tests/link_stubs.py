"""Raw-stub helpers for SuperLink tests and benchmarks: a bare node and a bare driver speaking the wire API.

They build wire messages directly (empty RecordSets; no records), so they exercise the link alone.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from grpclib.client import Channel

from fl_async._credentials import Metadata, node_metadata, run_metadata
from fl_async._net import parse_address
from fl_async.proto.fl_async import v1 as pb

__all__ = ["RawDriver", "RawNode", "channel", "instruction", "reply_to"]


def channel(address: str, **kwargs: object) -> Channel:
    """A grpclib Channel to ``"HOST:PORT"`` (create it inside the running event loop)."""
    host, port = parse_address(address)
    return Channel(host, port, **kwargs)  # type: ignore[arg-type]


def instruction(run_id: int, dst: int, *, ttl: float = 60.0, message_type: str = "train", **md: object) -> pb.Message:
    """An instruction for ``dst`` with an empty RecordSet, created now."""
    fields: dict[str, object] = dict(
        run_id=run_id, dst_node_id=dst, ttl=ttl, message_type=message_type, created_at=time.time(), group_id="1"
    )
    fields.update(md)
    return pb.Message(metadata=pb.Metadata(**fields), content=pb.RecordSet())  # type: ignore[arg-type]


def reply_to(ins: pb.Message, **md: object) -> pb.Message:
    """A content reply to ``ins`` from its destination node."""
    m = ins.metadata
    assert m is not None
    fields: dict[str, object] = dict(
        run_id=m.run_id,
        src_node_id=m.dst_node_id,
        dst_node_id=0,
        reply_to_message=m.message_id,
        ttl=30.0,
        message_type=m.message_type,
        group_id=m.group_id,
        created_at=time.time(),
    )
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
    def metadata(self) -> Metadata:
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
    """A driver speaking raw Driver stubs."""

    def __init__(self, stub: pb.DriverStub, run_id: int, token: bytes = b"") -> None:
        self.stub = stub
        self.run_id = run_id
        self.token = token
        self.metadata: Metadata | None = run_metadata(run_id, token) if token else None
        """The run's credentials as request headers (as the SDK sends them)."""

    @classmethod
    async def create(cls, stub: pb.DriverStub) -> RawDriver:
        res = await stub.create_run(pb.CreateRunRequest(fab_id="test", fab_version="0"))
        return cls(stub, res.run_id, res.blob_token)

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

    async def node_ids(self) -> list[int]:
        res = await self.stub.get_nodes(pb.GetNodesRequest(run_id=self.run_id), metadata=self.metadata)
        return list(res.node_ids)

    async def send_and_receive(self, messages: Sequence[pb.Message], timeout: float = 10.0) -> list[pb.Message]:
        """Push, then long-poll until every accepted message has a reply (or ``timeout`` s pass)."""
        ids = [i for i in (await self.push(messages)).message_ids if i]
        replies: list[pb.Message] = []
        deadline = time.monotonic() + timeout
        while len(replies) < len(ids) and time.monotonic() < deadline:
            replies += await self.pull(ids, timeout=max(0.0, deadline - time.monotonic()))
        return replies

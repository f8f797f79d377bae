"""The link's wire guard: size limit and malformed bytes -> precise statuses, never an internal error."""

from __future__ import annotations

from typing import Any

import pytest
from grpclib.client import Channel
from grpclib.const import Cardinality, Status
from grpclib.encoding.base import CodecBase
from grpclib.exceptions import GRPCError

from fl_async._net import parse_address
from fl_async.proto.fl_async import v1 as pb
from fl_async.superlink import SuperLink
from fl_async.superlink.wire import LimitedProtoCodec, wire_type_problem
from tests.link_stubs import RawNode, channel, instruction

GARBAGE = [
    (b"\x0a\xff", "varint"),  # truncated
    (b"\x0a\x05ab", "run_id: expected uint64, decoded list"),  # length-delimited chunk in a scalar field
    (b"\x0b", "run_id: undecodable value"),  # group wire type
    (b"\x12\x04\x0a\x02\x10\x01", "messages[0].metadata.message_id: expected string"),
    (b"\x12\x05\x0a\x03\x2a\x01\xff", "malformed"),  # invalid UTF-8 in a string
]


@pytest.mark.parametrize("data,needle", GARBAGE)
def test_codec_refuses_garbage(data: bytes, needle: str) -> None:
    with pytest.raises(GRPCError) as exc:
        LimitedProtoCodec(1 << 20).decode(data, pb.PushMessagesRequest)
    assert exc.value.status is Status.INVALID_ARGUMENT
    assert needle in exc.value.message and "PushMessagesRequest" in exc.value.message


def test_codec_size_limit_and_round_trip() -> None:
    codec = LimitedProtoCodec(100)
    good = pb.PushMessagesRequest(run_id=2**64 - 5, messages=[instruction(1, 2)])
    data = bytes(good)
    assert codec.decode(data, pb.PushMessagesRequest).run_id == 2**64 - 5
    assert wire_type_problem(good) == ""
    with pytest.raises(GRPCError) as exc:
        LimitedProtoCodec(len(data) - 1).decode(data, pb.PushMessagesRequest)
    assert exc.value.status is Status.RESOURCE_EXHAUSTED
    assert f"{len(data)} bytes" in exc.value.message and f"limit of {len(data) - 1} bytes" in exc.value.message
    assert codec.encode(good, pb.PushMessagesRequest) == data


class RawBytesCodec(CodecBase):
    """Client codec sending bytes as they are and returning response bytes undecoded."""

    __content_subtype__ = "proto"

    def encode(self, message: Any, message_type: Any) -> bytes:
        return message

    def decode(self, data: bytes, message_type: Any) -> Any:
        return data


@pytest.mark.parametrize("data,needle", GARBAGE)
async def test_garbage_over_the_wire(superlink: SuperLink, data: bytes, needle: str) -> None:
    host, port = parse_address(superlink.driver_address)
    ch = Channel(host, port, codec=RawBytesCodec())
    try:
        with pytest.raises(GRPCError) as exc:
            async with ch.request("/fl_async.v1.Driver/PushMessages", Cardinality.UNARY_UNARY, bytes, bytes) as stream:
                await stream.send_message(data, end=True)
                await stream.recv_message()
        assert exc.value.status is Status.INVALID_ARGUMENT and needle in (exc.value.message or "")
    finally:
        ch.close()
    fleet = channel(superlink.fleet_address)  # the link is unharmed
    try:
        assert (await RawNode.create(pb.FleetStub(fleet))).node_id
    finally:
        fleet.close()


def test_fast_pull_responses_equal_betterproto2() -> None:
    """Pull responses re-emitted from the pushed bytes decode to the same messages (and here, same bytes)."""
    import math

    from fl_async.superlink.fastwire import TAIL_LIMIT, encode_metadata

    codec = LimitedProtoCodec(1 << 26)
    msgs = [
        instruction(-(2**63), 2**63 - 1, group_id="é", ttl=1e-9),
        instruction(1, -1, message_type="query", created_at=0.0),
        instruction(7, 8, group_id="x" * (TAIL_LIMIT + 10)),  # large: betterproto2 path
    ]
    msgs[1].content = None
    msgs[1].error = pb.Error(code=-3, reason="r")
    data = bytes(pb.PushMessagesRequest(run_id=5, messages=msgs))
    req = codec.decode(data, pb.PushMessagesRequest)
    for i, m in enumerate(req.messages):
        m.metadata.message_id = f"id-{i}"
    req.messages.append(pb.Message(metadata=pb.Metadata(run_id=3, ttl=math.nan), error=pb.Error(code=4)))  # no tail
    for resp_type in (pb.PullInstructionsResponse, pb.PullMessagesResponse):
        resp = resp_type(messages=req.messages)
        fast = codec.encode(resp, resp_type)
        assert resp_type.FromString(fast).messages[:3] == resp_type.FromString(bytes(resp)).messages[:3]
        assert fast == bytes(resp)
    for md in (pb.Metadata(), pb.Metadata(run_id=2**64 - 1, ttl=-0.5, created_at=1.5, reply_to_message="a")):
        assert encode_metadata(md) == bytes(md)
    replies = pb.PushRepliesRequest(auth=pb.NodeAuth(node_id=1, token=b"t"), messages=msgs[:2])
    decoded = codec.decode(bytes(replies), pb.PushRepliesRequest)
    assert codec.encode(pb.PullMessagesResponse(messages=decoded.messages), pb.PullMessagesResponse) == bytes(
        pb.PullMessagesResponse(messages=decoded.messages)
    )


def test_fast_pull_messages_response_carries_outstanding_ids() -> None:
    codec = LimitedProtoCodec(1 << 20)
    req = codec.decode(bytes(pb.PushMessagesRequest(run_id=5, messages=[instruction(5, 9)])), pb.PushMessagesRequest)
    req.messages[0].metadata.message_id = "m0"
    for messages, outstanding in ((req.messages, ["a", "b"]), ([], ["a"]), (req.messages, []), ([], [])):
        resp = pb.PullMessagesResponse(messages=messages, outstanding=outstanding)
        fast = codec.encode(resp, pb.PullMessagesResponse)
        assert fast == bytes(resp)
        assert pb.PullMessagesResponse.FromString(fast).outstanding == outstanding


def test_fast_push_replies_response_with_instructions() -> None:
    codec = LimitedProtoCodec(1 << 20)
    data = bytes(pb.PushMessagesRequest(run_id=5, messages=[instruction(5, 9), instruction(5, 9)]))
    req = codec.decode(data, pb.PushMessagesRequest)
    for i, m in enumerate(req.messages):
        m.metadata.message_id = f"m{i}"
    resp = pb.PushRepliesResponse(message_ids=["a", ""], reasons=["", "why"], instructions=req.messages)
    assert codec.encode(resp, pb.PushRepliesResponse) == bytes(resp)
    empty = pb.PushRepliesResponse(message_ids=["a"], reasons=[""])
    assert codec.encode(empty, pb.PushRepliesResponse) == bytes(empty)

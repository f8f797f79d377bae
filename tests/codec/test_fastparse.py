"""The link's hand-written decoder of its two forwarding requests gives betterproto2's result, or falls back."""

from __future__ import annotations

import math

from hypothesis import given, settings
from hypothesis import strategies as st

from fl_async import _fastwire as pw
from fl_async._fastparse import parse_forwarding_request
from fl_async.proto.fl_async import v1 as pb

uint64 = st.integers(0, 2**64 - 1) | st.sampled_from([0, 1, 2**63, 2**64 - 1])
doubles = st.floats() | st.sampled_from([0.0, -0.0, math.inf, math.nan])
metadata = st.builds(
    pb.Metadata,
    run_id=uint64,
    message_id=st.text(max_size=40),
    src_node_id=uint64,
    dst_node_id=uint64,
    reply_to_message=st.text(max_size=60),
    group_id=st.text(max_size=10),
    ttl=doubles,
    message_type=st.text(max_size=20),
    created_at=doubles,
)
contents = st.sampled_from(
    [
        None,
        pb.RecordSet(),
        pb.RecordSet(
            metrics=[pb.MetricsRecord(name="m", entries=[pb.ValueEntry(key="a", value=pb.Value(double=0.5))])]
        ),
    ]
)
messages = st.lists(
    st.builds(
        pb.Message,
        metadata=st.none() | metadata,
        content=contents,
        error=st.none() | st.builds(pb.Error, code=st.integers(-(2**63), 2**63 - 1), reason=st.text(max_size=30)),
    ),
    max_size=4,
)
auths = st.none() | st.builds(pb.NodeAuth, node_id=uint64, token=st.binary(max_size=40))


def same(a: object, b: object) -> bool:
    """Equal, with NaN equal to NaN (compared through their canonical bytes)."""
    return bytes(a) == bytes(b)  # type: ignore[call-overload]


@settings(deadline=None)  # a shared, loaded machine
@given(auths, messages, st.integers(0, 2**32 - 1), doubles)
def test_push_replies_request_decodes_as_betterproto2(
    auth: pb.NodeAuth | None, msgs: list[pb.Message], pull_max: int, pull_timeout: float
) -> None:
    data = bytes(pb.PushRepliesRequest(auth=auth, messages=msgs, pull_max_messages=pull_max, pull_timeout=pull_timeout))
    fast = parse_forwarding_request(data, pb.PushRepliesRequest)
    slow = pb.PushRepliesRequest.FromString(data)
    assert fast is not None and same(fast, slow)
    assert (fast.auth is None) == (slow.auth is None)
    for f, s in zip(fast.messages, slow.messages, strict=True):
        assert [getattr(f, n) is None for n in ("metadata", "content", "error")] == [
            getattr(s, n) is None for n in ("metadata", "content", "error")
        ]
    if not any(math.isnan(v) for v in (pull_timeout,)):
        assert fast == slow


@settings(deadline=None)
@given(uint64, messages)
def test_push_messages_request_decodes_as_betterproto2(run_id: int, msgs: list[pb.Message]) -> None:
    data = bytes(pb.PushMessagesRequest(run_id=run_id, messages=msgs))
    fast = parse_forwarding_request(data, pb.PushMessagesRequest)
    assert fast is not None and same(fast, pb.PushMessagesRequest.FromString(data))


def test_other_types_and_non_canonical_encodings_fall_back() -> None:
    ok = bytes(pb.PushMessagesRequest(run_id=7, messages=[pb.Message(metadata=pb.Metadata(run_id=7))]))
    assert parse_forwarding_request(ok, pb.PushMessagesRequest) is not None
    assert parse_forwarding_request(ok, pb.PullMessagesRequest) is None
    cases = {
        "unknown field": ok + pw.tag(15, 0) + b"\x01",
        "scalar twice": pw.tag(1, 0) + b"\x01" + ok,
        "wrong wire type": pw.tag(1, 2) + b"\x00",
        "truncated": ok[:-1],
        "bad utf-8": bytes(pb.PushMessagesRequest(messages=[pb.Message(metadata=pb.Metadata(group_id="x"))])).replace(
            b"x", b"\xff"
        ),
        "varint too long": pw.tag(1, 0) + b"\xff" * 10 + b"\x01",
    }
    for what, data in cases.items():
        assert parse_forwarding_request(data, pb.PushMessagesRequest) is None, what


def outcome(decode: object, data: bytes, cls: type) -> object:
    try:
        return bytes(decode(data, cls) if decode is parse_forwarding_request else cls.FromString(data))  # type: ignore[operator]
    except Exception as exc:
        return type(exc)


@settings(deadline=None)
@given(st.binary(max_size=80), st.booleans())
def test_garbage_decodes_alike_or_falls_back(data: bytes, replies: bool) -> None:
    cls = pb.PushRepliesRequest if replies else pb.PushMessagesRequest
    try:
        fast = parse_forwarding_request(data, cls)
    except Exception as exc:
        assert outcome(None, data, cls) is type(exc)
        return
    if fast is not None:
        assert bytes(fast) == outcome(None, data, cls)


@settings(deadline=None)
@given(st.lists(st.text(max_size=40), max_size=5), st.lists(st.text(max_size=40), max_size=5), st.booleans())
def test_push_responses_are_encoded_as_betterproto2(ids: list[str], reasons: list[str], replies: bool) -> None:
    from fl_async.superlink.rpc import LimitedProtoCodec

    codec = LimitedProtoCodec(1 << 20)
    cls = pb.PushRepliesResponse if replies else pb.PushMessagesResponse
    response = cls(message_ids=ids, reasons=reasons)
    assert codec.encode(response, cls) == bytes(response)
    if replies:
        with_instructions = pb.PushRepliesResponse(
            message_ids=ids,
            reasons=reasons,
            instructions=[pb.Message(metadata=pb.Metadata(run_id=1))],
            cancelled=ids[:1],
        )
        assert codec.encode(with_instructions, cls) == bytes(with_instructions)


@settings(deadline=None)
@given(messages, st.lists(st.text(max_size=20), max_size=3), st.lists(st.text(max_size=20), max_size=3))
def test_node_side_responses_decode_as_betterproto2(msgs: list[pb.Message], ids: list[str], reasons: list[str]) -> None:
    from fl_async._fastparse import fast_response_type

    for cls, response in (
        (pb.PullInstructionsResponse, pb.PullInstructionsResponse(messages=msgs)),
        (pb.PushRepliesResponse, pb.PushRepliesResponse(message_ids=ids, reasons=reasons, instructions=msgs)),
    ):
        data = bytes(response)
        fast = fast_response_type(cls).FromString(data)
        assert type(fast) is cls and same(fast, cls.FromString(data))
        assert parse_forwarding_request(data, cls) is not None
    garbage = pw.tag(9, 0) + b"\x01"  # unknown field: betterproto2 decodes it
    assert fast_response_type(pb.PushRepliesResponse).FromString(garbage) == pb.PushRepliesResponse.FromString(garbage)

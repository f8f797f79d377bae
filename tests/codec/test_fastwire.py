"""The shared hand-written protobuf encoder writes betterproto2's bytes (sans-IO)."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fl_async import _fastwire as pw
from fl_async.proto.fl_async import v1 as pb

sint64 = st.integers(-(2**63), 2**63 - 1)
uint64 = st.integers(0, 2**64 - 1) | st.sampled_from([0, 1, 2**63 - 1, 2**63, 2**64 - 1])
uint32 = st.integers(0, 2**32 - 1)
doubles = st.floats() | st.sampled_from([0.0, -0.0, 1e-300, math.inf, -math.inf, math.nan])
metadata = st.builds(
    pb.Metadata,
    run_id=uint64,
    message_id=st.text(max_size=40),
    src_node_id=uint64,
    dst_node_id=uint64,
    reply_to_message=st.text(max_size=200),
    group_id=st.text(max_size=10),
    ttl=doubles,
    message_type=st.text(max_size=20),
    created_at=doubles,
)


@settings(deadline=None)  # a shared, loaded machine: the first example may take a while
@given(metadata)
def test_encode_metadata_matches_betterproto2(md: pb.Metadata) -> None:
    assert pw.encode_metadata(md) == bytes(md)


@settings(deadline=None)
@given(uint64, st.binary(max_size=300))
def test_fields_match_betterproto2(node_id: int, token: bytes) -> None:
    body = pw.uint64_field(pw.tag(1, 0), node_id) + (pw.len_field(pw.tag(2, 2), token) if token else b"")
    assert body == bytes(pb.NodeAuth(node_id=node_id, token=token))
    auth = pb.NodeAuth(node_id=node_id, token=token)
    assert pw.auth_field(auth) == bytes(pb.PullInstructionsRequest(auth=auth))


@settings(deadline=None)
@given(sint64)
def test_sint64_field_matches_betterproto2(code: int) -> None:
    assert pw.sint64_field(pw.tag(1, 0), code) == bytes(pb.Error(code=code))


def test_uint64_fields_refuse_what_protobuf_would_wrap() -> None:
    for bad in (-1, -(2**63), 2**64, 2**70):
        with pytest.raises(ValueError, match=r"node_id must be in \[0, 2\*\*64 - 1\]"):
            pw.uint64_field(b"\x08", bad, "node_id")
        with pytest.raises(ValueError, match=r"node_id must be in \[0, 2\*\*64 - 1\]"):
            pw.auth_field(pb.NodeAuth(node_id=bad))
    for field in ("run_id", "src_node_id", "dst_node_id"):
        md = pb.Metadata()
        setattr(md, field, 2**64)
        with pytest.raises(ValueError, match=f"metadata {field}"):
            pw.encode_metadata(md)
    assert pw.uint64_field(b"\x08", 2**64 - 1) == b"\x08" + b"\xff" * 9 + b"\x01"


@given(uint32, doubles)
def test_uint_and_double_fields_match_betterproto2(max_messages: int, timeout: float) -> None:
    got = (b"\x10" + pw.varint(max_messages) if max_messages else b"") + pw.double_field(pw.tag(3, 1), timeout)
    assert got == bytes(pb.PullInstructionsRequest(max_messages=max_messages, timeout=timeout))


def test_varint_and_zigzag_edges() -> None:
    assert pw.varint(0) == b"\x00" and pw.varint(127) == b"\x7f" and pw.varint(128) == b"\x80\x01"
    assert pw.varint(2**64 - 1) == b"\xff" * 9 + b"\x01" == pw.varint(-1)  # negative int64: two's complement
    assert [pw.zigzag(v) for v in (0, -1, 1, -2, 2**63 - 1, -(2**63))] == [0, 1, 2, 3, 2**64 - 2, 2**64 - 1]
    assert pw.tag(1, 2) == b"\x0a" and pw.tag(16, 0) == b"\x80\x01"
    assert pw.len_field(b"\x12", b"") == b"\x12\x00"  # a set, empty sub-message is written
    assert pw.sint64_field(b"\x08", 0) == b"" and pw.double_field(b"\x39", -0.0) == b""


def test_field_keys_come_from_the_generated_classes() -> None:
    """Each key is read from the generated class: a renumbered field moves the key, a retyped one is refused."""
    import dataclasses

    import betterproto2

    for name in ("run_id", "message_id", "ttl", "created_at"):
        meta = pb.Metadata._betterproto.meta_by_field_name[name]  # type: ignore[attr-defined]
        assert pw.field_key(pb.Metadata, name, meta.proto_type)[0] >> 3 == meta.number

    @dataclasses.dataclass(eq=False, repr=False)
    class Renumbered(betterproto2.Message):
        run_id: int = betterproto2.field(7, betterproto2.TYPE_SINT64)
        ttl: float = betterproto2.field(21, betterproto2.TYPE_DOUBLE)

    assert pw.field_key(Renumbered, "run_id", betterproto2.TYPE_SINT64) == pw.tag(7, 0)
    assert pw.field_key(Renumbered, "ttl", betterproto2.TYPE_DOUBLE) == pw.tag(21, 1)
    with pytest.raises(TypeError, match="Renumbered.run_id"):
        pw.field_key(Renumbered, "run_id", betterproto2.TYPE_STRING)


contents = st.sampled_from(
    [
        None,
        pb.RecordSet(),
        pb.RecordSet(
            metrics=[pb.MetricsRecord(name="m", entries=[pb.ValueEntry(key="a", value=pb.Value(double=0.5))])]
        ),
    ]
)
wire_messages = st.builds(
    pb.Message,
    metadata=st.none() | metadata,
    content=contents,
    error=st.none() | st.builds(pb.Error, code=sint64, reason=st.text(max_size=30)),
)


@given(st.lists(wire_messages, max_size=5), st.text(max_size=40), st.booleans())
def test_reemitted_messages_match_betterproto2(messages: list[pb.Message], new_id: str, push_replies: bool) -> None:
    """What the link re-emits from pushed bytes (new message id) equals betterproto2's bytes of the same response."""
    request_type = pb.PushRepliesRequest if push_replies else pb.PushMessagesRequest
    data = bytes(request_type(messages=messages))
    parsed = request_type.FromString(data)
    pw.remember_tails(data, parsed)
    for m in parsed.messages:
        if m.metadata is not None:
            m.metadata.message_id = new_id
    assert pw.encode_messages_response(parsed.messages) == bytes(pb.PullMessagesResponse(messages=parsed.messages))
    instructions = pw.encode_messages_response(parsed.messages, pw.PUSH_REPLIES_INSTRUCTIONS_KEY)
    assert instructions == bytes(pb.PushRepliesResponse(instructions=parsed.messages))

"""The shared hand-written protobuf encoder writes betterproto2's bytes (sans-IO)."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fl_async import _protowire as pw
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


@settings(deadline=None)
@given(sint64)
def test_sint64_field_matches_betterproto2(code: int) -> None:
    assert pw.sint64_field(pw.tag(1, 0), code) == bytes(pb.Error(code=code))


def test_uint64_fields_refuse_what_protobuf_would_wrap() -> None:
    for bad in (-1, -(2**63), 2**64, 2**70):
        with pytest.raises(ValueError, match=r"node_id must be in \[0, 2\*\*64 - 1\]"):
            pw.uint64_field(b"\x08", bad, "node_id")
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

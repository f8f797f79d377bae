"""Hand-written protobuf encoding for the hot paths (sans-IO): varints, tagged fields, ``Metadata``.

Shared by the link's pull-response fast path (:mod:`fl_async.superlink.fastwire`) and the node's pre-encoded
Fleet requests (:mod:`fl_async.supernode._wire`). Everything follows proto3 as betterproto2 writes it: scalar
fields whose value is the default (0, ``""``, ``b""``, ``0.0``/``-0.0``) are omitted, NaN doubles are written,
fields are written in field-number order. Tests comparing these bytes with betterproto2's:
``tests/test_protowire.py``, ``tests/test_node_wire.py``, ``tests/test_link_wire.py``.

Record content is never built here (:mod:`fl_async.codec` stays the only module that maps records to the wire).
"""

from __future__ import annotations

import struct

from fl_async.proto.fl_async import v1 as pb

__all__ = [
    "double_field",
    "encode_metadata",
    "len_field",
    "pack_double",
    "sint64_field",
    "tag",
    "uint64_field",
    "uint64_varint",
    "varint",
    "zigzag",
]

pack_double = struct.Struct("<d").pack
"""``pack_double(x)``: the 8 little-endian bytes of a ``double`` field's value."""

_MASK64 = (1 << 64) - 1


def varint(value: int) -> bytes:
    """Base-128 varint of ``value``; a negative value is written as its 64-bit two's complement (10 bytes),
    as protobuf writes a negative ``int64``/``int32``.

    Args:
        value: an integer in ``[-2**63, 2**64)``.
    """
    if value < 0x80:
        if value >= 0:
            return bytes((value,))
        value &= _MASK64
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def zigzag(value: int) -> int:
    """ZigZag mapping of a ``sint64`` value (``0, -1, 1, -2 -> 0, 1, 2, 3``); the result is a ``uint64``.

    Args:
        value: an integer in ``[-2**63, 2**63)``.
    """
    return ((value << 1) ^ (value >> 63)) & _MASK64


def tag(number: int, wire_type: int) -> bytes:
    """The key of a field: ``varint(number << 3 | wire_type)`` (wire types: 0 varint, 1 fixed64, 2 length-delimited,
    5 fixed32). Precompute it for fields written often."""
    return varint(number << 3 | wire_type)


def len_field(key: bytes, payload: bytes) -> bytes:
    """A length-delimited field (message, string, bytes): ``key`` (from :func:`tag` with wire type 2), the
    length, ``payload``. Written even when ``payload`` is empty (a set sub-message)."""
    return key + varint(len(payload)) + payload


def sint64_field(key: bytes, value: int) -> bytes:
    """A ``sint64`` field (``key`` with wire type 0), or ``b""`` when ``value`` is 0."""
    return key + varint(zigzag(value)) if value else b""


def uint64_varint(value: int, name: str = "uint64 field") -> bytes:
    """The varint of a ``uint64`` value (node and run ids), refusing values protobuf would wrap.

    Raises:
        ValueError: ``value`` is outside ``[0, 2**64 - 1]`` (the message names ``name``).
    """
    if not 0 <= value <= _MASK64:
        raise ValueError(f"{name} must be in [0, 2**64 - 1], got {value}")
    return varint(value)


def uint64_field(key: bytes, value: int, name: str = "uint64 field") -> bytes:
    """A ``uint64`` field (``key`` with wire type 0), or ``b""`` when ``value`` is 0.

    Raises:
        ValueError: ``value`` is outside ``[0, 2**64 - 1]`` (see :func:`uint64_varint`).
    """
    return key + uint64_varint(value, name) if value else b""


def double_field(key: bytes, value: float) -> bytes:
    """A ``double`` field (``key`` with wire type 1), or ``b""`` when ``value`` is ``0.0``/``-0.0`` (NaN is
    written)."""
    return key + pack_double(value) if value else b""


def encode_metadata(md: pb.Metadata) -> bytes:
    """``bytes(md)`` for a ``Metadata`` (nine scalar fields), byte-identical to betterproto2's.

    NaN ``ttl``/``created_at`` are written as they are (validation refuses them elsewhere).

    Raises:
        ValueError: an id is outside ``[0, 2**64 - 1]`` (never wrapped).
    """
    parts: list[bytes] = []
    if md.run_id:
        parts.append(b"\x08" + uint64_varint(md.run_id, "metadata run_id"))  # uint64 run_id = 1
    if md.message_id:
        parts.append(len_field(b"\x12", md.message_id.encode()))  # string message_id = 2
    if md.src_node_id:
        parts.append(b"\x18" + uint64_varint(md.src_node_id, "metadata src_node_id"))  # uint64 src_node_id = 3
    if md.dst_node_id:
        parts.append(b"\x20" + uint64_varint(md.dst_node_id, "metadata dst_node_id"))  # uint64 dst_node_id = 4
    if md.reply_to_message:
        parts.append(len_field(b"\x2a", md.reply_to_message.encode()))  # string reply_to_message = 5
    if md.group_id:
        parts.append(len_field(b"\x32", md.group_id.encode()))  # string group_id = 6
    if md.ttl:  # NaN is truthy: kept
        parts.append(b"\x39" + pack_double(md.ttl))  # double ttl = 7
    if md.message_type:
        parts.append(len_field(b"\x42", md.message_type.encode()))  # string message_type = 8
    if md.created_at:
        parts.append(b"\x49" + pack_double(md.created_at))  # double created_at = 9
    return b"".join(parts)

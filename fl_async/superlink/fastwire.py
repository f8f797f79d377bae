"""Fast path for the link's hottest responses: re-emit forwarded messages from the bytes they arrived in.

Every instruction and reply passes through the link once: parsed (betterproto2) from a push, serialized again
into a pull response. The link changes only ``metadata.message_id``, so re-serializing the whole message with
betterproto2 (about half the link's codec time) is wasted work. Instead:

* on decode, :func:`remember_tails` keeps, for each small message of a ``PushMessagesRequest`` /
  ``PushRepliesRequest``, the raw bytes of every field except ``metadata`` (its "tail": content or error,
  plus unknown fields) on the parsed object;
* on encode, :func:`encode_messages_response` writes each message as ``metadata`` (encoded here from the
  parsed, possibly updated object; 9 scalar fields) followed by the tail, verbatim.

Messages without a tail (synthesized errors, messages larger than :data:`TAIL_LIMIT`) go through betterproto2.
Record content is never built here; it is copied byte for byte (``fl_async.codec`` stays the only module that
maps records to the wire). The result is ordinary protobuf: field order is free and each field appears once.
"""

from __future__ import annotations

import struct
from typing import Any

from fl_async.proto.fl_async import v1 as pb

__all__ = ["TAIL_LIMIT", "remember_tails", "encode_messages_response", "encode_metadata"]

TAIL_LIMIT = 64 * 1024
"""Messages larger than this (bytes) are not given a tail: they are re-serialized by betterproto2, so the link
never holds a second copy of a large payload."""

_TAIL = "_fl_async_tail"
_pack_double = struct.Struct("<d").pack
_MASK64 = (1 << 64) - 1


def _varint(value: int) -> bytes:
    if value < 0x80:
        return bytes((value,))
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _zigzag(value: int) -> bytes:
    return _varint(((value << 1) ^ (value >> 63)) & _MASK64)


def _string(tag: bytes, value: str) -> bytes:
    data = value.encode()
    return tag + _varint(len(data)) + data


def encode_metadata(md: pb.Metadata) -> bytes:
    """Protobuf bytes of a ``Metadata`` (proto3: default values omitted), equal to what betterproto2 parses back."""
    parts: list[bytes] = []
    if md.run_id:
        parts.append(b"\x08" + _zigzag(md.run_id))
    if md.message_id:
        parts.append(_string(b"\x12", md.message_id))
    if md.src_node_id:
        parts.append(b"\x18" + _zigzag(md.src_node_id))
    if md.dst_node_id:
        parts.append(b"\x20" + _zigzag(md.dst_node_id))
    if md.reply_to_message:
        parts.append(_string(b"\x2a", md.reply_to_message))
    if md.group_id:
        parts.append(_string(b"\x32", md.group_id))
    if md.ttl != 0 or md.ttl != md.ttl:  # NaN is kept (validation refuses it elsewhere)
        parts.append(b"\x39" + _pack_double(md.ttl))
    if md.message_type:
        parts.append(_string(b"\x42", md.message_type))
    if md.created_at != 0 or md.created_at != md.created_at:
        parts.append(b"\x49" + _pack_double(md.created_at))
    return b"".join(parts)


def _read_varint(buf: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, pos
        shift += 7
        if shift >= 64:
            raise ValueError("varint too long")


def _fields(buf: bytes, start: int, end: int) -> list[tuple[int, int, int, int]]:
    """``(field_number, field_start, value_start, field_end)`` of each field in ``buf[start:end]``.

    Raises:
        ValueError, IndexError: malformed input (callers then skip the fast path).
    """
    out = []
    pos = start
    while pos < end:
        field_start = pos
        key, pos = _read_varint(buf, pos)
        wire = key & 7
        if wire == 0:
            _, pos = _read_varint(buf, pos)
            value_start = pos
        elif wire == 1:
            value_start = pos
            pos += 8
        elif wire == 2:
            length, pos = _read_varint(buf, pos)
            value_start = pos
            pos += length
        elif wire == 5:
            value_start = pos
            pos += 4
        else:
            raise ValueError(f"unsupported wire type {wire}")
        if pos > end:
            raise ValueError("field runs past the end")
        out.append((key >> 3, field_start, value_start, pos))
    return out


def remember_tails(data: bytes, request: Any) -> None:
    """Attach the raw non-metadata bytes of each small message in ``request.messages`` (field 2 of both
    ``PushMessagesRequest`` and ``PushRepliesRequest``) to the parsed message. Best effort: on any surprise
    nothing is attached and the slow path is used."""
    try:
        spans = [(v, e) for number, _, v, e in _fields(data, 0, len(data)) if number == 2]
        messages = request.messages
        if len(spans) != len(messages):
            return
        for (start, end), message in zip(spans, messages, strict=True):
            if end - start > TAIL_LIMIT:
                continue
            tail = b"".join(data[fs:fe] for number, fs, _, fe in _fields(data, start, end) if number != 1)
            object.__setattr__(message, _TAIL, tail)
    except (ValueError, IndexError):
        return


def encode_messages_response(messages: list[pb.Message], tag: bytes = b"\x0a") -> bytes:
    """Bytes of a ``repeated Message`` field: ``PullInstructionsResponse`` / ``PullMessagesResponse``
    (``messages = 1``, the default ``tag``) or ``PushRepliesResponse.instructions`` (field 3, tag ``0x1a``)."""
    parts: list[bytes] = []
    for message in messages:
        tail = getattr(message, _TAIL, None)
        if tail is None or message.metadata is None:
            body = bytes(message)
        else:
            md = encode_metadata(message.metadata)
            body = b"\x0a" + _varint(len(md)) + md + tail
        parts.append(tag + _varint(len(body)) + body)
    return b"".join(parts)

"""Fast path for the link's hottest responses: re-emit forwarded messages from the bytes they arrived in.

Every instruction and reply passes through the link once: parsed (betterproto2) from a push, serialized again
into a pull response. The link changes only ``metadata.message_id``, so re-serializing the whole message with
betterproto2 (about half the link's codec time) is wasted work. Instead:

* on decode, :func:`remember_tails` keeps, for each small message of a ``PushMessagesRequest`` /
  ``PushRepliesRequest``, the raw bytes of every field except ``metadata`` (its "tail": content or error,
  plus unknown fields) on the parsed object;
* on encode, :func:`encode_messages_response` writes each message as ``metadata`` (encoded by
  :func:`fl_async._protowire.encode_metadata` from the parsed, possibly updated object; 9 scalar fields)
  followed by the tail, verbatim.

Messages without a tail (synthesized errors, messages larger than :data:`TAIL_LIMIT`) go through betterproto2.
Record content is never built here; it is copied byte for byte (``fl_async.codec`` stays the only module that
maps records to the wire). The result is ordinary protobuf: field order is free and each field appears once.
"""

from __future__ import annotations

from typing import Any

from fl_async._protowire import encode_metadata, varint
from fl_async.proto.fl_async import v1 as pb

__all__ = ["TAIL_LIMIT", "encode_messages_response", "encode_metadata", "remember_tails"]

TAIL_LIMIT = 64 * 1024
"""Messages larger than this (bytes) are not given a tail: they are re-serialized by betterproto2, so the link
never holds a second copy of a large payload."""

_TAIL = "_fl_async_tail"


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
            body = b"\x0a" + varint(len(md)) + md + tail
        parts.append(tag + varint(len(body)) + body)
    return b"".join(parts)

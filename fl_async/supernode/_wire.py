"""Pre-encoded Fleet requests for the node's hot path (sans-IO).

The node sends two requests per instruction at most: ``PullInstructionsRequest`` and ``PushRepliesRequest``.
Their envelope (credentials, counts, timeouts) is a handful of scalar fields; betterproto2 spends ~20-70 us
serializing it per call (a ``warnings.catch_warnings()`` per field). Here the envelope is written directly:
the ``NodeAuth`` field is encoded once per registration and the reply messages are serialized once (by
betterproto2, from :func:`fl_async.codec.message_to_proto`) and embedded as bytes, so a retried push does
not serialize again and the node knows the request's size before sending it.

:func:`message_bytes` serializes a reply made by :func:`fl_async.codec.message_to_proto`: its ``Metadata``
(nine scalars, ~30 us in betterproto2) is written here, its content or error by betterproto2.

The output is byte-identical to ``bytes(pb.PullInstructionsRequest(...))`` / ``bytes(pb.PushRepliesRequest(...))``
and ``bytes(pb.Message(...))`` (proto3: fields in number order, zero values omitted, set sub-messages
written even when empty); ``tests/test_node_wire.py`` checks that. Record content is never built here:
:mod:`fl_async.codec` builds it, betterproto2 serializes it.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence

from fl_async.proto.fl_async import v1 as pb

__all__ = ["Encoded", "auth_field", "message_bytes", "pull_request", "push_request"]

_PACK_DOUBLE = struct.Struct("<d").pack


class Encoded:
    """A request already serialized; grpclib's ProtoCodec sends ``SerializeToString()`` as is.

    Pass ``Encoded`` as the request type of ``Channel.request`` (the codec checks ``isinstance``).
    """

    __slots__ = ("data",)

    def __init__(self, data: bytes) -> None:
        self.data = data

    def SerializeToString(self) -> bytes:
        """The serialized request (the protobuf method name grpclib's codec calls)."""
        return self.data

    def __len__(self) -> int:
        return len(self.data)


def _varint(value: int) -> bytes:
    if value < 0:
        value += 1 << 64  # two's complement, as protobuf encodes negative int64
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _zigzag64(value: int) -> int:
    return (value << 1) ^ (value >> 63)


def _len_field(number: int, payload: bytes) -> bytes:
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def _sint64(tag: bytes, value: int) -> bytes:
    return tag + _varint(_zigzag64(value)) if value else b""


def _string(number: int, value: str) -> bytes:
    return _len_field(number, value.encode()) if value else b""


def _double(tag: bytes, value: float) -> bytes:
    return tag + _PACK_DOUBLE(value) if value else b""


def _metadata_bytes(md: pb.Metadata) -> bytes:
    return b"".join((
        _sint64(b"\x08", md.run_id),
        _string(2, md.message_id),
        _sint64(b"\x18", md.src_node_id),
        _sint64(b"\x20", md.dst_node_id),
        _string(5, md.reply_to_message),
        _string(6, md.group_id),
        _double(b"\x39", md.ttl),
        _string(8, md.message_type),
        _double(b"\x49", md.created_at),
    ))


def message_bytes(message: pb.Message) -> bytes:
    """``bytes(message)``, with the ``Metadata`` written here (the content/error by betterproto2).

    Args:
        message: a wire message from :func:`fl_async.codec.message_to_proto`.
    """
    parts = []
    if message.metadata is not None:
        parts.append(_len_field(1, _metadata_bytes(message.metadata)))  # Metadata metadata = 1
    if message.content is not None:
        parts.append(_len_field(2, bytes(message.content)))  # RecordSet content = 2
    if message.error is not None:
        parts.append(_len_field(3, bytes(message.error)))  # Error error = 3
    return b"".join(parts)


def auth_field(auth: pb.NodeAuth) -> bytes:
    """Field 1 (``NodeAuth auth``) of every Fleet request carrying credentials, encoded.

    Encode it once per registration and pass it to :func:`pull_request` / :func:`push_request`.
    """
    body = b""
    if auth.node_id:
        body += b"\x08" + _varint(_zigzag64(auth.node_id))  # sint64 node_id = 1
    if auth.token:
        body += _len_field(2, auth.token)  # bytes token = 2
    return _len_field(1, body)


def pull_request(auth: bytes, max_messages: int, timeout: float) -> bytes:
    """``PullInstructionsRequest(auth, max_messages, timeout)`` serialized.

    Args:
        auth: from :func:`auth_field`.
        max_messages: instructions wanted at most (uint32).
        timeout: seconds the link may hold the call (double).
    """
    out = auth
    if max_messages:
        out += b"\x10" + _varint(max_messages)  # uint32 max_messages = 2
    if timeout:
        out += b"\x19" + _PACK_DOUBLE(timeout)  # double timeout = 3
    return out


def push_request(auth: bytes, messages: Sequence[bytes], pull_max_messages: int = 0, pull_timeout: float = 0.0) -> bytes:
    """``PushRepliesRequest(auth, messages, pull_max_messages, pull_timeout)`` serialized.

    Args:
        auth: from :func:`auth_field`.
        messages: each reply serialized (``bytes(pb.Message)``).
        pull_max_messages: with ``> 0``, the link also pulls up to this many instructions in the same call.
        pull_timeout: seconds the link may hold that pull.
    """
    parts = [auth]
    parts.extend(_len_field(2, m) for m in messages)  # repeated Message messages = 2
    if pull_max_messages:
        parts.append(b"\x18" + _varint(pull_max_messages))  # uint32 pull_max_messages = 3
    if pull_timeout:
        parts.append(b"\x21" + _PACK_DOUBLE(pull_timeout))  # double pull_timeout = 4
    return b"".join(parts)

"""Every hand-written protobuf encoder of fl-async, in one place (sans-IO).

Two hot paths skip betterproto2's per-field serialization (a ``warnings.catch_warnings()`` per field):

* the link re-emits forwarded messages from the bytes they arrived in (:func:`remember_tails` on decode,
  :func:`encode_messages_response` on encode): it changes only ``metadata.message_id``, so only ``Metadata``
  (nine scalars) is re-encoded and the rest of each message is copied verbatim; re-serializing it with betterproto2
  was about half the link's codec time;
* the node pre-encodes its two per-instruction Fleet requests (:func:`pull_request`, :func:`push_request`): the
  ``NodeAuth`` field once per registration (:func:`auth_field`), each reply once (:func:`message_bytes`), so a
  retried push does not serialize again and the node knows the request's size before sending it.

Field numbers and types are read from the generated betterproto2 classes (:data:`fl_async.proto`) when this module
is imported, and each is checked against the wire type written here: a ``.proto`` edit that renumbers a field moves
the encoder with it, one that changes a field's type fails at import. Everything follows proto3 as betterproto2
writes it: scalar fields whose value is the default (0, ``""``, ``b""``, ``0.0``/``-0.0``) are omitted, NaN doubles
are written, set sub-messages are written even when empty, fields are written in field-number order. The tests in
``tests/codec/`` compare these bytes with betterproto2's (with hypothesis).

Record content is never built here (:mod:`fl_async.codec` stays the only module that maps records to the wire).
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from typing import Any

import betterproto2

from fl_async.proto.fl_async import v1 as pb

__all__ = [
    "TAIL_LIMIT",
    "Encoded",
    "auth_field",
    "double_field",
    "encode_messages_response",
    "encode_metadata",
    "field_key",
    "len_field",
    "message_bytes",
    "pack_double",
    "pull_request",
    "push_request",
    "remember_tails",
    "sint64_field",
    "tag",
    "uint64_field",
    "uint64_varint",
    "varint",
    "zigzag",
]

# ------------------------------------------------------------------------------------------------ primitives

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


# ------------------------------------------------------------------------------------------------ field keys

_WIRE_TYPES: dict[str, int] = {
    betterproto2.TYPE_SINT64: 0,
    betterproto2.TYPE_UINT64: 0,
    betterproto2.TYPE_UINT32: 0,
    betterproto2.TYPE_DOUBLE: 1,
    betterproto2.TYPE_STRING: 2,
    betterproto2.TYPE_BYTES: 2,
    betterproto2.TYPE_MESSAGE: 2,
}
"""The protobuf types the encoders here write, and their wire types."""


def _meta(message_type: Any, name: str) -> Any:
    """betterproto2's field metadata (``number``, ``proto_type``, ``repeated``) of a generated class's field."""
    return message_type._betterproto.meta_by_field_name[name]


def field_key(message_type: type[betterproto2.Message], name: str, proto_type: str) -> bytes:
    """The key (tag) of field ``name`` of a generated message class, with its number read from that class.

    Args:
        message_type: a generated class, e.g. ``pb.Metadata``.
        name: the Python field name, e.g. ``"run_id"``.
        proto_type: the protobuf type the caller writes (``betterproto2.TYPE_*``).

    Raises:
        TypeError: the field's type in the generated class is not ``proto_type`` (the ``.proto`` changed; the
            encoder must change with it).
    """
    meta = _meta(message_type, name)
    if meta.proto_type != proto_type or (meta.repeated and proto_type != betterproto2.TYPE_MESSAGE):
        raise TypeError(f"{message_type.__name__}.{name} is {meta.proto_type}, the hand encoder writes {proto_type}")
    return tag(meta.number, _WIRE_TYPES[proto_type])


def _field_names(message_type: Any) -> list[str]:
    return list(message_type._betterproto.meta_by_field_name)


def _number(message_type: type[betterproto2.Message], name: str) -> int:
    return int(_meta(message_type, name).number)


_U64, _U32, _DBL = betterproto2.TYPE_UINT64, betterproto2.TYPE_UINT32, betterproto2.TYPE_DOUBLE
_STR, _BYT, _MSG = betterproto2.TYPE_STRING, betterproto2.TYPE_BYTES, betterproto2.TYPE_MESSAGE

# Message
_MSG_METADATA = field_key(pb.Message, "metadata", _MSG)
_MSG_CONTENT = field_key(pb.Message, "content", _MSG)
_MSG_ERROR = field_key(pb.Message, "error", _MSG)
_MSG_METADATA_NUMBER = _number(pb.Message, "metadata")
# NodeAuth
_AUTH_NODE_ID = field_key(pb.NodeAuth, "node_id", _U64)
_AUTH_TOKEN = field_key(pb.NodeAuth, "token", _BYT)
# PullInstructionsRequest
_PULL_AUTH = field_key(pb.PullInstructionsRequest, "auth", _MSG)
_PULL_MAX = field_key(pb.PullInstructionsRequest, "max_messages", _U32)
_PULL_TIMEOUT = field_key(pb.PullInstructionsRequest, "timeout", _DBL)
# PushRepliesRequest
_PUSH_AUTH = field_key(pb.PushRepliesRequest, "auth", _MSG)
_PUSH_MESSAGES = field_key(pb.PushRepliesRequest, "messages", _MSG)
_PUSH_PULL_MAX = field_key(pb.PushRepliesRequest, "pull_max_messages", _U32)
_PUSH_PULL_TIMEOUT = field_key(pb.PushRepliesRequest, "pull_timeout", _DBL)
# responses re-emitted by the link
PULL_MESSAGES_KEY = field_key(pb.PullMessagesResponse, "messages", _MSG)
"""Key of ``PullMessagesResponse.messages`` (the same number as ``PullInstructionsResponse.messages``)."""
PUSH_REPLIES_INSTRUCTIONS_KEY = field_key(pb.PushRepliesResponse, "instructions", _MSG)
"""Key of ``PushRepliesResponse.instructions``."""
if field_key(pb.PullInstructionsResponse, "messages", _MSG) != PULL_MESSAGES_KEY:
    raise TypeError("PullMessagesResponse.messages and PullInstructionsResponse.messages must share a number")
_FORWARDED_NUMBERS = {_number(pb.PushMessagesRequest, "messages"), _number(pb.PushRepliesRequest, "messages")}
if len(_FORWARDED_NUMBERS) != 1:
    raise TypeError("PushMessagesRequest.messages and PushRepliesRequest.messages must share a number")
(_FORWARDED_NUMBER,) = _FORWARDED_NUMBERS

# Metadata: written field by field below (unrolled: this runs for every forwarded message), in this order
_METADATA_FIELDS = (
    ("run_id", _U64),
    ("message_id", _STR),
    ("src_node_id", _U64),
    ("dst_node_id", _U64),
    ("reply_to_message", _STR),
    ("group_id", _STR),
    ("ttl", _DBL),
    ("message_type", _STR),
    ("created_at", _DBL),
)
(_MD_RUN_ID, _MD_MESSAGE_ID, _MD_SRC, _MD_DST, _MD_REPLY_TO, _MD_GROUP, _MD_TTL, _MD_TYPE, _MD_CREATED) = (
    field_key(pb.Metadata, name, proto_type) for name, proto_type in _METADATA_FIELDS
)
if set(_field_names(pb.Metadata)) != {name for name, _ in _METADATA_FIELDS}:
    raise TypeError("Metadata's fields changed: update encode_metadata")
if [_number(pb.Metadata, name) for name, _ in _METADATA_FIELDS] != sorted(
    _number(pb.Metadata, name) for name, _ in _METADATA_FIELDS
):
    raise TypeError("Metadata's fields were renumbered out of this order: reorder encode_metadata")


def encode_metadata(md: pb.Metadata) -> bytes:
    """``bytes(md)`` for a ``Metadata`` (nine scalar fields), byte-identical to betterproto2's.

    NaN ``ttl``/``created_at`` are written as they are (NaN is truthy; validation refuses them elsewhere).

    Raises:
        ValueError: an id is outside ``[0, 2**64 - 1]`` (never wrapped).
    """
    parts: list[bytes] = []
    if md.run_id:
        parts.append(_MD_RUN_ID + uint64_varint(md.run_id, "metadata run_id"))
    if md.message_id:
        parts.append(len_field(_MD_MESSAGE_ID, md.message_id.encode()))
    if md.src_node_id:
        parts.append(_MD_SRC + uint64_varint(md.src_node_id, "metadata src_node_id"))
    if md.dst_node_id:
        parts.append(_MD_DST + uint64_varint(md.dst_node_id, "metadata dst_node_id"))
    if md.reply_to_message:
        parts.append(len_field(_MD_REPLY_TO, md.reply_to_message.encode()))
    if md.group_id:
        parts.append(len_field(_MD_GROUP, md.group_id.encode()))
    if md.ttl:
        parts.append(_MD_TTL + pack_double(md.ttl))
    if md.message_type:
        parts.append(len_field(_MD_TYPE, md.message_type.encode()))
    if md.created_at:
        parts.append(_MD_CREATED + pack_double(md.created_at))
    return b"".join(parts)


# ------------------------------------------------------------------------------------------------ node requests


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


def message_bytes(message: pb.Message) -> bytes:
    """``bytes(message)``, with the ``Metadata`` written here (the content/error by betterproto2).

    Args:
        message: a wire message from :func:`fl_async.codec.message_to_proto`.
    """
    parts = []
    if message.metadata is not None:
        parts.append(len_field(_MSG_METADATA, encode_metadata(message.metadata)))
    if message.content is not None:
        parts.append(len_field(_MSG_CONTENT, bytes(message.content)))
    if message.error is not None:
        parts.append(len_field(_MSG_ERROR, bytes(message.error)))
    return b"".join(parts)


def auth_field(auth: pb.NodeAuth) -> bytes:
    """The ``NodeAuth auth`` field of every Fleet request carrying credentials, encoded.

    Encode it once per registration and pass it to :func:`pull_request` / :func:`push_request` (both requests
    carry ``auth`` under the same number, checked at import).

    Raises:
        ValueError: ``auth.node_id`` is outside ``[0, 2**64 - 1]``.
    """
    body = uint64_field(_AUTH_NODE_ID, auth.node_id, "node_id")
    if auth.token:
        body += len_field(_AUTH_TOKEN, auth.token)
    return len_field(_PULL_AUTH, body)


if _PULL_AUTH != _PUSH_AUTH:
    raise TypeError("PullInstructionsRequest.auth and PushRepliesRequest.auth must share a number")


def pull_request(auth: bytes, max_messages: int, timeout: float) -> bytes:
    """``PullInstructionsRequest(auth, max_messages, timeout)`` serialized.

    Args:
        auth: from :func:`auth_field`.
        max_messages: instructions wanted at most (uint32).
        timeout: seconds the link may hold the call (double).
    """
    out = auth
    if max_messages:
        out += _PULL_MAX + varint(max_messages)
    return out + double_field(_PULL_TIMEOUT, timeout)


def push_request(
    auth: bytes, messages: Sequence[bytes], pull_max_messages: int = 0, pull_timeout: float = 0.0
) -> bytes:
    """``PushRepliesRequest(auth, messages, pull_max_messages, pull_timeout)`` serialized.

    Args:
        auth: from :func:`auth_field`.
        messages: each reply serialized (``bytes(pb.Message)``).
        pull_max_messages: with ``> 0``, the link also pulls up to this many instructions in the same call.
        pull_timeout: seconds the link may hold that pull.
    """
    parts = [auth]
    parts.extend(len_field(_PUSH_MESSAGES, m) for m in messages)
    if pull_max_messages:
        parts.append(_PUSH_PULL_MAX + varint(pull_max_messages))
    parts.append(double_field(_PUSH_PULL_TIMEOUT, pull_timeout))
    return b"".join(parts)


# ------------------------------------------------------------------------------------------------ link responses

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
    """Attach the raw non-metadata bytes (the "tail": content or error, plus unknown fields) of each small message
    in ``request.messages`` of a ``PushMessagesRequest`` / ``PushRepliesRequest`` to the parsed message. Best
    effort: on any surprise nothing is attached and the slow path is used."""
    try:
        spans = [(v, e) for number, _, v, e in _fields(data, 0, len(data)) if number == _FORWARDED_NUMBER]
        messages = request.messages
        if len(spans) != len(messages):
            return
        for (start, end), message in zip(spans, messages, strict=True):
            if end - start > TAIL_LIMIT:
                continue
            tail = b"".join(
                data[fs:fe] for number, fs, _, fe in _fields(data, start, end) if number != _MSG_METADATA_NUMBER
            )
            object.__setattr__(message, _TAIL, tail)
    except (ValueError, IndexError):
        return


def encode_messages_response(messages: list[pb.Message], key: bytes = PULL_MESSAGES_KEY) -> bytes:
    """Bytes of a ``repeated Message`` field: ``PullInstructionsResponse`` / ``PullMessagesResponse``
    (``messages``, the default ``key``) or ``PushRepliesResponse.instructions``
    (:data:`PUSH_REPLIES_INSTRUCTIONS_KEY`). Each message with a tail is written as its ``metadata`` (encoded
    from the parsed, possibly updated object) followed by the tail, verbatim; the others by betterproto2."""
    parts: list[bytes] = []
    for message in messages:
        tail = getattr(message, _TAIL, None)
        if tail is None or message.metadata is None:
            body = bytes(message)
        else:
            body = len_field(_MSG_METADATA, encode_metadata(message.metadata)) + tail
        parts.append(len_field(key, body))
    return b"".join(parts)

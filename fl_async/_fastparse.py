"""Hand-written protobuf decoding of the messages that carry forwarded ``Message`` lists (sans-IO): on the link
``PushRepliesRequest`` (a node's replies) and ``PushMessagesRequest`` (a driver's instructions), on the node
``PullInstructionsResponse`` and ``PushRepliesResponse`` (its instructions).

betterproto2 decodes field by field in Python (a varint read, a default lookup and a type check each); for a tiny
reply the ``Metadata`` (nine scalars), the envelope and ``NodeAuth`` are most of that work. Here the envelope,
``NodeAuth`` and each ``Message``'s ``Metadata`` are read in one pass over the bytes; ``content`` (``RecordSet``)
and ``error`` are still decoded by betterproto2 (:mod:`fl_async.codec` stays the one owner of records), and an
empty ``content`` needs no decoding at all.

Only the canonical encoding is read: each scalar or sub-message field at most once, known field numbers, the
expected wire types, varints in range, valid UTF-8. On anything else :func:`parse_forwarding_request` returns
``None`` and the caller decodes with betterproto2, which then gives its usual result or error, so both paths
decode every input alike (``tests/codec/test_fastparse.py`` compares them with hypothesis). Field numbers are read
from the generated classes at import, like :mod:`fl_async._fastwire`.
"""

from __future__ import annotations

import struct
from typing import Any

import betterproto2

from fl_async.proto.fl_async import v1 as pb

__all__ = ["fast_response_type", "parse_forwarding_request"]

_unpack_double = struct.Struct("<d").unpack_from
_U64_LIMIT = 1 << 64
_U32_LIMIT = 1 << 32


class _Fallback(Exception):
    """Not the canonical encoding: decode with betterproto2 instead."""


def _numbers(message_type: Any) -> dict[str, tuple[int, str, bool]]:
    return {
        name: (meta.number, meta.proto_type, bool(meta.repeated))
        for name, meta in message_type._betterproto.meta_by_field_name.items()
    }


_SCALAR_WIRE = {
    betterproto2.TYPE_UINT64: 0,
    betterproto2.TYPE_UINT32: 0,
    betterproto2.TYPE_DOUBLE: 1,
    betterproto2.TYPE_STRING: 2,
    betterproto2.TYPE_BYTES: 2,
    betterproto2.TYPE_MESSAGE: 2,
}


def _layout(message_type: Any, expected: dict[str, str]) -> dict[int, tuple[str, str, bool]]:
    """``field number -> (name, proto type, repeated)``, checked against the types this module reads.

    Raises:
        TypeError: the generated class has other fields or types (the ``.proto`` changed: update this module).
    """
    fields = _numbers(message_type)
    found = {name: proto_type for name, (_, proto_type, _) in fields.items()}
    if found != expected:
        raise TypeError(f"{message_type.__name__}'s fields changed ({found}): update fl_async._fastparse")
    return {number: (name, proto_type, repeated) for name, (number, proto_type, repeated) in fields.items()}


_U64, _U32, _DBL = betterproto2.TYPE_UINT64, betterproto2.TYPE_UINT32, betterproto2.TYPE_DOUBLE
_STR, _BYT, _MSG = betterproto2.TYPE_STRING, betterproto2.TYPE_BYTES, betterproto2.TYPE_MESSAGE

_METADATA = _layout(
    pb.Metadata,
    {
        "run_id": _U64,
        "message_id": _STR,
        "src_node_id": _U64,
        "dst_node_id": _U64,
        "reply_to_message": _STR,
        "group_id": _STR,
        "ttl": _DBL,
        "message_type": _STR,
        "created_at": _DBL,
    },
)
_MESSAGE = _layout(pb.Message, {"metadata": _MSG, "content": _MSG, "error": _MSG})
_AUTH = _layout(pb.NodeAuth, {"node_id": _U64, "token": _BYT})
_ENVELOPES: dict[type, dict[int, tuple[str, str, bool]]] = {
    pb.PushRepliesRequest: _layout(
        pb.PushRepliesRequest, {"auth": _MSG, "messages": _MSG, "pull_max_messages": _U32, "pull_timeout": _DBL}
    ),
    pb.PushMessagesRequest: _layout(pb.PushMessagesRequest, {"run_id": _U64, "messages": _MSG}),
    pb.PullInstructionsResponse: _layout(pb.PullInstructionsResponse, {"messages": _MSG, "cancelled": _STR}),
    pb.PushRepliesResponse: _layout(
        pb.PushRepliesResponse, {"message_ids": _STR, "reasons": _STR, "instructions": _MSG, "cancelled": _STR}
    ),
}
_MESSAGE_LISTS = ("messages", "instructions")
_MESSAGE_NAMES = {"metadata", "content", "error"}
_SUB_DECODERS: dict[str, Any] = {"content": pb.RecordSet, "error": pb.Error}


def _varint(buf: bytes, pos: int, end: int) -> tuple[int, int]:
    result = shift = 0
    while pos < end:
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise _Fallback
    raise _Fallback


def _fields(buf: bytes, pos: int, end: int, layout: dict[int, tuple[str, str, bool]]) -> dict[str, Any]:
    """The fields of one message in ``buf[pos:end]``: scalars decoded, sub-messages as ``(start, end)`` spans
    (repeated ones as a list of spans)."""
    out: dict[str, Any] = {}
    while pos < end:
        key, pos = _varint(buf, pos, end)
        spec = layout.get(key >> 3)
        if spec is None:
            raise _Fallback  # unknown field: betterproto2 keeps it as unknown bytes
        name, proto_type, repeated = spec
        if key & 7 != _SCALAR_WIRE[proto_type]:
            raise _Fallback
        value: Any
        if proto_type in (_U64, _U32):
            value, pos = _varint(buf, pos, end)
            if value >= (_U64_LIMIT if proto_type == _U64 else _U32_LIMIT):
                raise _Fallback
        elif proto_type == _DBL:
            if pos + 8 > end:
                raise _Fallback
            value = _unpack_double(buf, pos)[0]
            pos += 8
        else:
            length, pos = _varint(buf, pos, end)
            start, pos = pos, pos + length
            if pos > end:
                raise _Fallback
            if proto_type == _STR:
                try:
                    value = buf[start:pos].decode("utf-8")
                except UnicodeDecodeError:
                    raise _Fallback from None
            elif proto_type == _BYT:
                value = buf[start:pos]
            else:
                value = (start, pos)
            if repeated:
                out.setdefault(name, []).append(value)
                continue
        if name in out:
            raise _Fallback  # a repeated scalar or sub-message: betterproto2 merges, last one wins
        out[name] = value
    return out


def _message(buf: bytes, start: int, end: int) -> pb.Message:
    spans = _fields(buf, start, end, _MESSAGE)
    parts: dict[str, Any] = {}
    for name, (s, e) in spans.items():
        if name == "metadata":
            parts[name] = pb.Metadata(**_fields(buf, s, e, _METADATA))
        elif s == e:
            parts[name] = _SUB_DECODERS[name]()
        else:
            parts[name] = _SUB_DECODERS[name].FromString(buf[s:e])
    return pb.Message(**parts)


def parse_forwarding_request(data: bytes, message_type: type) -> Any:
    """Decode a ``PushRepliesRequest``, ``PushMessagesRequest`` (the link's side), ``PullInstructionsResponse`` or
    ``PushRepliesResponse`` (the node's side) as betterproto2 would, or return ``None`` when
    ``data`` is not in the canonical encoding read here (or ``message_type`` is another type): the caller then
    decodes it with betterproto2.

    Args:
        data: the serialized request.
        message_type: one of the four classes above.

    Raises:
        Exception: what betterproto2 raises decoding a malformed ``content`` / ``error`` (the caller maps it, as
            it does betterproto2's errors on the whole request).
    """
    layout = _ENVELOPES.get(message_type)
    if layout is None:
        return None
    try:
        fields = _fields(data, 0, len(data), layout)
        auth = fields.get("auth")
        if auth is not None:
            fields["auth"] = pb.NodeAuth(**_fields(data, auth[0], auth[1], _AUTH))
        for name in _MESSAGE_LISTS:
            spans = fields.get(name)
            if spans is not None:
                fields[name] = [_message(data, s, e) for s, e in spans]
    except _Fallback:
        return None
    return message_type(**fields)


class _FastDecoded:
    """Stands for a generated response class where grpclib's codec only calls ``FromString``."""

    message_type: Any = None

    @classmethod
    def FromString(cls, data: bytes) -> Any:  # the protobuf method name grpclib's codec calls
        """Decode with :func:`parse_forwarding_request`, else with betterproto2."""
        message = parse_forwarding_request(data, cls.message_type)
        return message if message is not None else cls.message_type.FromString(data)


def fast_response_type(message_type: type) -> type:
    """A stand-in for ``pb.PullInstructionsResponse`` or ``pb.PushRepliesResponse`` to pass as the response type of
    grpclib's ``Channel.request``: its ``FromString`` decodes as betterproto2 would, through this module's decoder
    (the node decodes one such response per instruction)."""
    return type(f"Fast{message_type.__name__}", (_FastDecoded,), {"message_type": message_type})

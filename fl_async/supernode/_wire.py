"""Pre-encoded Fleet requests for the node's hot path (sans-IO).

The node sends two requests per instruction at most: ``PullInstructionsRequest`` and ``PushRepliesRequest``.
Their envelope (credentials, counts, timeouts) is a handful of scalar fields; betterproto2 spends ~20-70 us
serializing it per call (a ``warnings.catch_warnings()`` per field). Here the envelope is written directly:
the ``NodeAuth`` field is encoded once per registration and the reply messages are serialized once (by
betterproto2, from :func:`fl_async.codec.message_to_proto`) and embedded as bytes, so a retried push does
not serialize again and the node knows the request's size before sending it.

:func:`message_bytes` serializes a reply made by :func:`fl_async.codec.message_to_proto`: its ``Metadata``
(nine scalars, ~30 us in betterproto2) is written by :func:`fl_async._protowire.encode_metadata` (shared with
the link), its content or error by betterproto2.

The output is byte-identical to ``bytes(pb.PullInstructionsRequest(...))`` / ``bytes(pb.PushRepliesRequest(...))``
and ``bytes(pb.Message(...))`` (proto3: fields in number order, zero values omitted, set sub-messages
written even when empty); ``tests/test_node_wire.py`` checks that. Record content is never built here:
:mod:`fl_async.codec` builds it, betterproto2 serializes it.
"""

from __future__ import annotations

from collections.abc import Sequence

from fl_async._protowire import double_field, encode_metadata, len_field, uint64_field, varint
from fl_async.proto.fl_async import v1 as pb

__all__ = ["Encoded", "auth_field", "message_bytes", "pull_request", "push_request"]


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
        parts.append(len_field(b"\x0a", encode_metadata(message.metadata)))  # Metadata metadata = 1
    if message.content is not None:
        parts.append(len_field(b"\x12", bytes(message.content)))  # RecordSet content = 2
    if message.error is not None:
        parts.append(len_field(b"\x1a", bytes(message.error)))  # Error error = 3
    return b"".join(parts)


def auth_field(auth: pb.NodeAuth) -> bytes:
    """Field 1 (``NodeAuth auth``) of every Fleet request carrying credentials, encoded.

    Encode it once per registration and pass it to :func:`pull_request` / :func:`push_request`.

    Raises:
        ValueError: ``auth.node_id`` is outside ``[0, 2**64 - 1]``.
    """
    body = uint64_field(b"\x08", auth.node_id, "node_id")  # uint64 node_id = 1
    if auth.token:
        body += len_field(b"\x12", auth.token)  # bytes token = 2
    return len_field(b"\x0a", body)


def pull_request(auth: bytes, max_messages: int, timeout: float) -> bytes:
    """``PullInstructionsRequest(auth, max_messages, timeout)`` serialized.

    Args:
        auth: from :func:`auth_field`.
        max_messages: instructions wanted at most (uint32).
        timeout: seconds the link may hold the call (double).
    """
    out = auth
    if max_messages:
        out += b"\x10" + varint(max_messages)  # uint32 max_messages = 2
    return out + double_field(b"\x19", timeout)  # double timeout = 3


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
    parts.extend(len_field(b"\x12", m) for m in messages)  # repeated Message messages = 2
    if pull_max_messages:
        parts.append(b"\x18" + varint(pull_max_messages))  # uint32 pull_max_messages = 3
    parts.append(double_field(b"\x21", pull_timeout))  # double pull_timeout = 4
    return b"".join(parts)

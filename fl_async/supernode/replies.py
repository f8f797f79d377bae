"""Every error reply the node runtime sends is built here, and the reply rules it checks.

* :func:`error_reply`: to a decoded instruction (a ClientApp that raised or returned an invalid reply, a run
  whose config could not be fetched);
* :func:`wire_error_reply`: to an instruction that may not decode (undecodable content, a node failure);
* :func:`payload_error_reply`: in place of a reply whose payload cannot be delivered or encoded;
* :func:`check_reply` and :func:`exception_reason`: Flower 1.9's reply validation and error reason format.

Each returns ``None`` (and logs why) when no error reply can be sent because the instruction's TTL is over.
"""

from __future__ import annotations

import logging
import time
import traceback
from typing import Any

from fl_async.codec import message_from_proto
from fl_async.common.message import Error, ErrorCode, Message, Metadata
from fl_async.errors import TTLExpiredError
from fl_async.proto.fl_async import v1 as pb

__all__ = ["check_reply", "error_reply", "exception_reason", "payload_error_reply", "wire_error_reply"]

logger = logging.getLogger("fl_async.supernode")


def exception_reason(exc: BaseException) -> str:
    """Error reason for an exception raised by a ClientApp: Flower 1.9's format, then where it was raised.

    Example: ``RuntimeError("boom!")`` raised in ``train`` at line 12 of ``client.py`` ->
    ``"<class 'RuntimeError'>:<'boom!'> (raised at /path/client.py:12 in train)"``. The location is the
    innermost frame of the traceback (omitted when there is none).
    """
    frames = traceback.extract_tb(exc.__traceback__) if exc.__traceback__ is not None else []
    where = f" (raised at {frames[-1].filename}:{frames[-1].lineno} in {frames[-1].name})" if frames else ""
    return f"{type(exc)}:<'{exc}'>{where}"


def check_reply(instruction: Message, reply: Any) -> list[str]:
    """What is wrong with ``reply`` as the reply to ``instruction`` (empty list = valid).

    The checks are Flower 1.9's (``validate_out_message``): the reply must be a :class:`Message` with
    the same ``run_id``, ``group_id`` and ``message_type``, an empty ``message_id``, ``src_node_id`` =
    the instruction's ``dst_node_id``, ``dst_node_id`` = its ``src_node_id`` and ``reply_to_message`` =
    its ``message_id``. Unlike Flower, ``created_at`` is not compared: the two timestamps come from
    different machines' clocks.

    Args:
        instruction: the message the ClientApp was called with.
        reply: what the ClientApp returned.

    Returns:
        One human-readable problem per failed check.
    """
    if not isinstance(reply, Message):
        return [
            f"the ClientApp returned {type(reply).__name__}, expected a Message "
            "(build it with message.create_reply(...))"
        ]
    inn, out = instruction.metadata, reply.metadata
    expected = [
        ("run_id", out.run_id, inn.run_id),
        ("message_id", out.message_id, ""),
        ("src_node_id", out.src_node_id, inn.dst_node_id),
        ("dst_node_id", out.dst_node_id, inn.src_node_id),
        ("reply_to_message", out.reply_to_message, inn.message_id),
        ("group_id", out.group_id, inn.group_id),
        ("message_type", out.message_type, inn.message_type),
    ]
    problems = [f"{name} is {got!r}, expected {want!r}" for name, got, want in expected if got != want]
    if out.ttl <= 0:
        problems.append(f"ttl is {out.ttl!r}, expected > 0")
    return problems


def error_reply(instruction: Message, code: int, reason: str) -> Message | None:
    """The error reply ``code`` with ``reason`` to the decoded ``instruction``, or ``None`` (logged) when its TTL
    is over (the link then reports ``MESSAGE_EXPIRED`` for it)."""
    try:
        return instruction.create_error_reply(Error(code, reason))
    except TTLExpiredError as exc:
        logger.warning("dropping the error reply to message %s: %s", instruction.metadata.message_id, exc)
        return None


def wire_error_reply(wire: pb.Message, code: int, reason: str) -> Message | None:
    """An error reply to the (possibly undecodable) instruction ``wire``, or ``None`` (logged) if it has no
    usable metadata or its TTL is over."""
    mid = wire.metadata.message_id if wire.metadata is not None else "?"
    if wire.metadata is None:
        logger.warning("node: no error reply to instruction %s: it has no metadata", mid)
        return None
    try:
        stub = message_from_proto(pb.Message(metadata=wire.metadata, content=pb.RecordSet()))
        return stub.create_error_reply(Error(code, reason))
    except (ValueError, TypeError) as exc2:  # includes TTLExpiredError
        logger.warning("node: dropping the error reply to %s: %s", mid, exc2)
        return None


def payload_error_reply(reply: Message, reason: str, code: int = ErrorCode.PAYLOAD_UNAVAILABLE) -> Message | None:
    """An error reply ``code`` (default ``PAYLOAD_UNAVAILABLE``) with the routing of ``reply`` and the TTL it
    has left (``None`` if none is left)."""
    md = reply.metadata
    left = md.ttl - (time.time() - md.created_at)
    if left <= 0:
        return None
    meta = Metadata(
        run_id=md.run_id,
        message_id="",
        src_node_id=md.src_node_id,
        dst_node_id=md.dst_node_id,
        reply_to_message=md.reply_to_message,
        group_id=md.group_id,
        ttl=left,
        message_type=md.message_type,
    )
    if code == ErrorCode.PAYLOAD_UNAVAILABLE:
        reason = f"node could not deliver its reply: {reason}"
    return Message(meta, error=Error(code, reason))

"""The replies the link writes itself: error replies for instructions that cannot be answered by their node
(``NODE_UNAVAILABLE``, ``MESSAGE_EXPIRED``, ``CANCELLED``), and the reason a late reply is refused (and how loudly
that is logged)."""

from __future__ import annotations

import logging
import uuid

from fl_async.common.message import ErrorCode
from fl_async.proto.fl_async import v1 as pb
from fl_async.superlink.store import InstructionRecord, Status

__all__ = ["SYNTHETIC_REPLY_TTL", "answered_reason", "refused_reply_level", "synthetic_error_reply"]

SYNTHETIC_REPLY_TTL = 10.0
"""TTL (seconds) of the error replies the link synthesizes (NODE_UNAVAILABLE, MESSAGE_EXPIRED). Replies
are kept until a driver pulls them whatever their TTL; this only tells the reader they are fresh."""


def synthetic_error_reply(ins: InstructionRecord, code: int, reason: str, now: float) -> pb.Message:
    """The error reply ``code`` the link writes itself to ``ins`` (``NODE_UNAVAILABLE``, ``MESSAGE_EXPIRED``),
    created at ``now`` (Unix seconds) with a fresh message id."""
    md = ins.message.metadata
    assert md is not None
    return pb.Message(
        metadata=pb.Metadata(
            run_id=md.run_id,
            message_id=str(uuid.uuid4()),
            src_node_id=md.dst_node_id,
            dst_node_id=0,
            reply_to_message=md.message_id,
            group_id=md.group_id,
            ttl=SYNTHETIC_REPLY_TTL,
            message_type=md.message_type,
            created_at=now,
        ),
        error=pb.Error(code=code, reason=reason),
    )


def answered_reason(ins: InstructionRecord) -> str:
    """Why a reply to the already answered (or expired) ``ins`` is refused."""
    err = ins.reply.error if ins.reply is not None else None
    if err is not None and err.code == ErrorCode.MESSAGE_EXPIRED:
        return f"instruction {ins.message_id} has expired"
    if err is not None and err.code == ErrorCode.CANCELLED:
        return f"instruction {ins.message_id} was cancelled"
    return f"instruction {ins.message_id} is already answered"


def refused_reply_level(ins: InstructionRecord | None, *, malformed: bool) -> int:
    """The log level of a refused reply to ``ins`` (``None``: unknown instruction).

    A node re-sending a reply the link already has (its push broke off after sending), or answering a cancelled
    instruction, is routine: INFO. Genuinely bad replies (expired, answered by the link, malformed) stay WARNING.
    """
    code = ins.reply.error.code if ins is not None and ins.reply is not None and ins.reply.error is not None else None
    link_answered = code in (ErrorCode.MESSAGE_EXPIRED, ErrorCode.NODE_UNAVAILABLE)
    cancelled = code == ErrorCode.CANCELLED
    resent = not malformed and (ins is None or (ins.status is Status.ANSWERED and not link_answered))
    return logging.INFO if resent or cancelled else logging.WARNING

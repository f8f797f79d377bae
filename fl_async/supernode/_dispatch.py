"""Sans-IO part of the node runtime: run a ClientApp on one instruction and build the reply.

Nothing here touches the network; :mod:`fl_async.supernode.supernode` does the I/O around it.
"""

from __future__ import annotations

import logging
import traceback
from typing import Any

import anyio

from fl_async.client.client_app import ClientApp
from fl_async.common.context import Context
from fl_async.common.errors import TTLExpiredError
from fl_async.common.message import Error, ErrorCode, Message

__all__ = ["check_reply", "exception_reason", "run_client_app"]

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


def _error_reply(instruction: Message, code: int, reason: str) -> Message | None:
    try:
        return instruction.create_error_reply(Error(code, reason))
    except TTLExpiredError as exc:
        logger.warning("dropping the error reply to message %s: %s", instruction.metadata.message_id, exc)
        return None


async def run_client_app(
    app: ClientApp, message: Message, context: Context, *, limiter: anyio.CapacityLimiter | None = None
) -> Message | None:
    """Run ``app`` on ``message`` and return the reply to push, or ``None`` if there is nothing to push.

    * A handler (or mod) raising (``SystemExit`` included) -> error reply ``CLIENT_APP_RAISED_EXCEPTION``
      with :func:`exception_reason` (as Flower 1.9), including a missing handler or unknown message type.
    * A return value that is not a valid reply (see :func:`check_reply`) -> error reply
      ``INVALID_REPLY`` naming what was wrong (Flower 1.9 logged and sent nothing).
    * A reply that cannot be built because the instruction expired (:class:`TTLExpiredError`) is
      logged and dropped: the link already reports ``MESSAGE_EXPIRED`` for it.

    Args:
        app: the ClientApp.
        message: the decoded instruction.
        context: the run's context (mutated in place by the app; changes made before an exception persist).
        limiter: bounds the worker threads of sync handlers/mods.

    Returns:
        The reply or error reply, or ``None`` when it was dropped.
    """
    md = message.metadata
    try:
        reply = await app.acall(message, context, limiter=limiter)
    except TTLExpiredError as exc:
        logger.warning(
            "message %s (%s): the ClientApp could not build its reply: %s", md.message_id, md.message_type, exc
        )
        return _error_reply(message, ErrorCode.CLIENT_APP_RAISED_EXCEPTION, exception_reason(exc))
    except (Exception, SystemExit) as exc:
        logger.warning(
            "message %s (%s): the ClientApp raised %s",
            md.message_id,
            md.message_type,
            exception_reason(exc),
            exc_info=exc,  # the full traceback, as Flower logs it
        )
        return _error_reply(message, ErrorCode.CLIENT_APP_RAISED_EXCEPTION, exception_reason(exc))
    problems = check_reply(message, reply)
    if problems:
        reason = "invalid reply from the ClientApp: " + "; ".join(problems)
        logger.warning("message %s (%s): %s", md.message_id, md.message_type, reason)
        return _error_reply(message, ErrorCode.INVALID_REPLY, reason)
    return reply

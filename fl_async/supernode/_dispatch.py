"""Sans-IO part of the node runtime: run a ClientApp on one instruction and build the reply.

Nothing here touches the network; :mod:`fl_async.supernode.supernode` does the I/O around it.
"""

from __future__ import annotations

import logging

import anyio

from fl_async.client.client_app import ClientApp
from fl_async.common.context import Context
from fl_async.common.message import ErrorCode, Message
from fl_async.errors import TTLExpiredError
from fl_async.supernode.replies import check_reply, error_reply, exception_reason

__all__ = ["run_client_app"]

logger = logging.getLogger("fl_async.supernode")


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
        return error_reply(message, ErrorCode.CLIENT_APP_RAISED_EXCEPTION, exception_reason(exc))
    except (Exception, SystemExit) as exc:
        logger.warning(
            "message %s (%s): the ClientApp raised %s",
            md.message_id,
            md.message_type,
            exception_reason(exc),
            exc_info=exc,  # the full traceback, as Flower logs it
        )
        return error_reply(message, ErrorCode.CLIENT_APP_RAISED_EXCEPTION, exception_reason(exc))
    problems = check_reply(message, reply)
    if problems:
        reason = "invalid reply from the ClientApp: " + "; ".join(problems)
        logger.warning("message %s (%s): %s", md.message_id, md.message_type, reason)
        return error_reply(message, ErrorCode.INVALID_REPLY, reason)
    assert isinstance(reply, Message)  # check_reply found no problem
    return reply

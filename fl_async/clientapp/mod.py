"""Newest Flower's built-in ClientApp mods that fl-async provides: ``message_size_mod`` and ``arrays_size_mod``.

A mod is ``mod(message, context, call_next) -> Message`` (see :class:`~fl_async.client.ClientApp`). The
differential-privacy mods of newest Flower (``LocalDpMod``, ``fixedclipping_mod``,
``adaptiveclipping_mod``) are not provided.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from fl_async.client.client_app import Mod
from fl_async.common.context import Context
from fl_async.common.message import Message

__all__ = ["Mod", "arrays_size_mod", "message_size_mod"]

logger = logging.getLogger("fl_async.client")


def _content_bytes(message: Message) -> tuple[int, int]:
    """``(array payload bytes, metric and config bytes)`` of a message's content (0, 0 for an error)."""
    if not message.has_content():
        return 0, 0
    rs = message.content
    arrays = sum(r.count_bytes() for r in rs.parameters_records.values())
    other = sum(r.count_bytes() for r in rs.metrics_records.values())
    other += sum(r.count_bytes() for r in rs.configs_records.values())
    return arrays, other


def message_size_mod(message: Message, context: Context, call_next: Callable[[Message, Context], Message]) -> Message:
    """Log the size of the incoming message's content in bytes, then call the handler (as newest Flower's)."""
    arrays, other = _content_bytes(message)
    logger.info("Message size: %d bytes", arrays + other)
    return call_next(message, context)


def arrays_size_mod(message: Message, context: Context, call_next: Callable[[Message, Context], Message]) -> Message:
    """Log the number and total size of the incoming message's arrays, then call the handler (as newest Flower's)."""
    arrays, _ = _content_bytes(message)
    count = sum(len(r) for r in message.content.parameters_records.values()) if message.has_content() else 0
    logger.info("%d arrays, %.4f MB in total", count, arrays / (1024 * 1024))
    return call_next(message, context)

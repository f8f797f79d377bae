"""``log(level, msg, *args)`` on the ``"fl_async"`` logger, as Flower 1.9's ``flwr.common.log``.

Flower's guide logs progress with ``log(INFO, ...)`` and expects to see it without configuring logging:
Flower's ``"flwr"`` logger has its own console handler at INFO. :func:`log` does the same on the logger
``"fl_async"``: records at INFO and above are printed on stderr by one console handler, installed once on that
logger (never duplicated, the root logger is left alone). When the application has configured logging (the
root logger has a handler that takes the record, e.g. after ``logging.basicConfig()``, or pytest's capture),
the record reaches those handlers through normal propagation and the console handler stays quiet, so a line
is never printed twice.

Only records made by :func:`log` itself (logger name exactly ``"fl_async"``) use the console handler: the
library's own loggers (``fl_async.superlink``, ``fl_async.supernode``, ...) keep the standard behaviour.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

__all__ = ["LOGGER_NAME", "log"]

LOGGER_NAME = "fl_async"
"""Name of the logger :func:`log` writes to."""

_logger = logging.getLogger(LOGGER_NAME)


class _ConsoleHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """stderr handler for :func:`log`'s records, silent when the root logger's handlers print them."""

    def __init__(self) -> None:
        super().__init__()
        self.setLevel(logging.INFO)
        self.setFormatter(logging.Formatter("%(levelname)s : %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        self.stream = sys.stderr  # follow redirections of sys.stderr (as logging.lastResort does)
        super().emit(record)

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name != LOGGER_NAME:
            return False
        if _logger.propagate and any(record.levelno >= h.level for h in logging.getLogger().handlers):
            return False  # the application's handlers take it
        return bool(super().filter(record))


_HANDLER_NAME = "fl_async.console"


def _handler() -> logging.Handler:
    """The console handler, installed once (found by name, so a re-import does not add another)."""
    for h in _logger.handlers:
        if h.get_name() == _HANDLER_NAME:
            return h
    h = _ConsoleHandler()
    h.set_name(_HANDLER_NAME)
    _logger.addHandler(h)
    return h


_handler()


def log(level: int, msg: object, *args: Any, **kwargs: Any) -> None:
    """Log ``msg % args`` at ``level`` (e.g. ``logging.INFO``) on the ``"fl_async"`` logger, as Flower 1.9's
    ``flwr.common.log``: INFO and above are printed on stderr without any logging setup (see the module
    docstring); DEBUG only when the ``"fl_async"`` logger (or the root logger) is set to DEBUG.

    Args:
        level: a ``logging`` level number.
        msg: the message, a ``%``-format string when ``args`` are given.
        *args: the format arguments.
        **kwargs: as ``logging.Logger.log`` (``exc_info``, ``stack_info``, ``stacklevel``, ``extra``).

    Raises:
        TypeError: ``level`` is not an int (as ``logging.Logger.log`` with ``raiseExceptions``).
    """
    if not isinstance(level, int) or isinstance(level, bool):
        raise TypeError(f"log level must be an int, got {type(level).__name__}")
    if level < logging.INFO and not _logger.isEnabledFor(level):
        return
    if level >= logging.INFO and _logger.manager.disable >= level:
        return  # logging.disable() still wins
    exc_info = kwargs.pop("exc_info", None)
    extra = kwargs.pop("extra", None)
    stack_info = kwargs.pop("stack_info", False)
    stacklevel = kwargs.pop("stacklevel", 1)
    if kwargs:
        raise TypeError(f"log() got unexpected keyword arguments: {', '.join(kwargs)}")
    fn, lno, func, sinfo = _logger.findCaller(stack_info, stacklevel + 1)
    if exc_info and not isinstance(exc_info, (tuple, BaseException)):
        exc_info = sys.exc_info()
    elif isinstance(exc_info, BaseException):
        exc_info = (type(exc_info), exc_info, exc_info.__traceback__)
    record = _logger.makeRecord(_logger.name, level, fn, lno, msg, args, exc_info, func, extra, sinfo)
    _logger.handle(record)  # INFO+ bypasses the inherited level (WARNING by default), as Flower's logger at DEBUG

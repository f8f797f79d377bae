"""Logging set-up of the ``fl-async`` commands: levels, destination and format (text or JSON lines).

* fl-async's own loggers (``fl_async`` and below) log at INFO by default: one line per lifecycle event (link
  listening, node registered / left, run created / ended, reconnects, limits hit), nothing per message.
  ``-v`` turns them to DEBUG.
* Third-party loggers (grpclib, hpack, h2, asyncio...) stay at WARNING, unless ``--log-level-all`` gives them
  fl-async's level too.
* ``--log-file PATH`` appends to a file instead of stderr; ``--log-format json`` writes one JSON object per line
  with ``time`` (ISO 8601, UTC), ``level``, ``logger``, ``message``, the lifecycle ``event`` and the ids it
  concerns (``node_id``, ``run_id``) when the record has them, and ``exc`` (the formatted traceback) if any.
"""

from __future__ import annotations

import datetime
import json
import logging
import sys
from pathlib import Path

__all__ = ["LOG_FORMATS", "JsonFormatter", "configure_logging", "lifecycle_filter"]

LOG_FORMATS = ("text", "json")
"""Values of ``--log-format``."""

_HANDLER_NAME = "fl_async.cli"
_EXTRA_KEYS = ("event", "node_id", "run_id")


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever ``sys.stderr`` is when a record is emitted (follows redirections, as
    ``logging.lastResort`` does), so a handler installed under a redirected stderr never writes to a closed one."""

    def emit(self, record: logging.LogRecord) -> None:
        self.stream = sys.stderr
        super().emit(record)


class JsonFormatter(logging.Formatter):
    """One JSON object per record (see the module docstring for the keys)."""

    def format(self, record: logging.LogRecord) -> str:
        """The record as a single-line JSON object."""
        out: dict[str, object] = {
            "time": datetime.datetime.fromtimestamp(record.created, datetime.UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key in _EXTRA_KEYS:
            value = getattr(record, key, None)
            if value is not None:
                out[key] = value
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


def configure_logging(
    *,
    verbose: bool = False,
    log_file: Path | None = None,
    log_format: str = "text",
    log_level_all: bool = False,
) -> None:
    """Set levels and install the one handler of the command (replacing one installed before by this function).

    Args:
        verbose: DEBUG instead of INFO for fl-async's loggers.
        log_file: append to this file instead of writing to stderr.
        log_format: ``"text"`` (``time LEVEL logger: message``) or ``"json"`` (JSON lines).
        log_level_all: give every other logger fl-async's level too (default: WARNING).

    Raises:
        ValueError: unknown ``log_format``.
        OSError: ``log_file`` cannot be opened for appending.
    """
    if log_format not in LOG_FORMATS:
        raise ValueError(f"--log-format must be one of {', '.join(LOG_FORMATS)}, got {log_format!r}")
    handler: logging.Handler = (
        logging.FileHandler(log_file, mode="a", encoding="utf-8") if log_file is not None else _StderrHandler()
    )
    handler.set_name(_HANDLER_NAME)
    if log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    for old in [h for h in root.handlers if h.get_name() == _HANDLER_NAME]:
        root.removeHandler(old)
        old.close()
    root.addHandler(handler)
    level = logging.DEBUG if verbose else logging.INFO
    root.setLevel(level if log_level_all else logging.WARNING)
    logging.getLogger("fl_async").setLevel(level)


def lifecycle_filter(events: frozenset[str]) -> logging.Filter:
    """A filter dropping records whose ``event`` is in ``events`` unless the logger is at DEBUG (``fl-async run``
    replaces the per-node lines of its in-process nodes with one summary line)."""

    class _Drop(logging.Filter):
        def filter(self, record: logging.LogRecord) -> bool:
            if getattr(record, "event", None) not in events:
                return True
            return logging.getLogger(record.name).isEnabledFor(logging.DEBUG)

    return _Drop()

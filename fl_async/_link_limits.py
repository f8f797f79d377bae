"""The link's resource limits as ``fl-async superlink`` flags: one table, from which the CLI options are made.

Each entry names a :class:`~fl_async.superlink.config.LinkConfig` field; its flag is the field name with dashes
(``max_request_bytes`` -> ``--max-request-bytes``) and its default is the field's default (repeated here so
that the CLI does not import the link to build its options; a test checks they agree). The status and message a
client sees when it hits each limit are listed in ``docs/superlink.md``.
"""

from __future__ import annotations

import functools
import inspect
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, TypeVar

__all__ = ["LIMITS", "Limit", "flag_of", "limit_error", "with_limit_options"]

F = TypeVar("F", bound=Callable[..., Any])


def machine_memory() -> int:
    """Physical memory of this machine in bytes (8 GiB when the OS does not say)."""
    try:
        return int(os.sysconf("SC_PHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):  # pragma: no cover - non-POSIX
        return 8 << 30


_GIB = 1 << 30
DEFAULT_BLOB_STORE_BYTES = max(_GIB, machine_memory() // 2 // _GIB * _GIB)
"""Default capacity of the link's blob store: half the machine's memory, in whole GiB (at least 1 GiB)."""
DEFAULT_MAX_BLOB_BYTES = max(_GIB, DEFAULT_BLOB_STORE_BYTES // 2)
"""Default largest blob (and per-node/per-run quota): half the store's default capacity."""


@dataclass(frozen=True)
class Limit:
    """One limit: the ``LinkConfig`` field, its type (``int`` bytes/counts or ``float`` seconds), its default
    (``LinkConfig``'s) and the flag's help."""

    field: str
    kind: type
    default: int | float
    help: str

    @property
    def flag(self) -> str:
        """The CLI flag, e.g. ``--max-request-bytes``."""
        return flag_of(self.field)


def flag_of(field: str) -> str:
    """``"max_request_bytes"`` -> ``"--max-request-bytes"``."""
    return "--" + field.replace("_", "-")


LIMITS: tuple[Limit, ...] = (
    Limit(
        "max_request_bytes",
        int,
        64 * 2**20,
        "Largest gRPC request of a caller with credentials in its headers, in bytes.",
    ),
    Limit(
        "max_anonymous_request_bytes",
        int,
        64 * 2**10,
        "Largest gRPC request of a caller without credentials, in bytes.",
    ),
    Limit(
        "max_request_elements",
        int,
        250_000,
        "Most sub-messages, repeated strings and varint list values in one request.",
    ),
    Limit("max_messages_per_request", int, 50_000, "Most messages in one PushMessages or PushReplies request."),
    Limit("max_message_ids_per_request", int, 100_000, "Most message ids in one PullMessages request."),
    Limit(
        "max_record_entries",
        int,
        100_000,
        "Most entries of one record or record set (config/metrics entries, run_config, arrays, records).",
    ),
    Limit("max_list_values", int, 1_000_000, "Most values of one list value in a record (and dimensions of a shape)."),
    Limit(
        "max_pending_request_bytes", int, 512 * 2**20, "Most request bytes being received at once (anonymous: 1/16)."
    ),
    Limit("request_read_timeout", float, 10.0, "Seconds within which each MiB of a request body must arrive."),
    Limit("max_fab_id_bytes", int, 1024, "Longest fab_id and fab_version of CreateRun, in UTF-8 bytes."),
    Limit("max_run_config_bytes", int, 32 * 2**10, "Largest serialized run_config of CreateRun, in bytes."),
    Limit(
        "max_blob_bytes",
        int,
        DEFAULT_MAX_BLOB_BYTES,
        "Largest array payload on the blob data path, in bytes (default: 1/4 of this machine's memory).",
    ),
    Limit(
        "blob_store_bytes",
        int,
        DEFAULT_BLOB_STORE_BYTES,
        "Capacity of the link's blob store, in bytes (default: 1/2 of this machine's memory).",
    ),
    Limit(
        "blob_quota_bytes",
        int,
        DEFAULT_MAX_BLOB_BYTES,
        "Bytes each node or run may have uploaded that no pushed message names yet.",
    ),
    Limit(
        "blob_min_rate",
        int,
        64 * 2**10,
        "Bytes per second a blob upload must keep up (over --blob-rate-window); slower ones are dropped.",
    ),
    Limit("blob_rate_window", float, 10.0, "Seconds over which --blob-min-rate is measured."),
    Limit("run_idle_ttl", float, 3600.0, "Seconds without a Driver API call after which a run ends and is freed."),
    Limit("reply_ttl", float, 3600.0, "Seconds a reply waits for its driver to pull it before it is dropped."),
    Limit(
        "driver_disconnect_grace",
        float,
        120.0,
        "Seconds a run's driver gets to come back after its connection was lost; then the run ends.",
    ),
    Limit("max_connections", int, 0, "Most open connections on all ports (0: file limit minus --fd-reserve)."),
    Limit("max_connections_per_address", int, 4096, "Most open connections from one source address."),
    Limit("connection_setup_timeout", float, 10.0, "Seconds a connection gets to start its first request."),
    Limit("connection_idle_timeout", float, 300.0, "Seconds an idle connection (no request, no byte) stays open."),
    Limit("fd_reserve", int, 256, "File descriptors kept for the link itself when --max-connections is 0."),
)


def with_limit_options(func: F) -> F:
    """Add one typer option per :data:`LIMITS` entry to the command ``func``; the values reach ``func`` as one
    keyword argument ``limits: dict[str, int | float]`` (field name -> value), to pass to ``LinkConfig``."""
    import typer

    sig = inspect.signature(func, eval_str=True)
    params = [p for p in sig.parameters.values() if p.name != "limits"]
    annotations = {p.name: p.annotation for p in params}
    added = []
    for limit in LIMITS:
        metavar = "BYTES" if limit.field.endswith("bytes") else "SECONDS" if limit.kind is float else "N"
        option = typer.Option(limit.flag, metavar=metavar, help=limit.help)
        annotation = Annotated[limit.kind, option]  # type: ignore[name-defined]  # built at run time
        added.append(inspect.Parameter(limit.field, inspect.Parameter.KEYWORD_ONLY, default=limit.default))
        annotations[limit.field] = annotation
        added[-1] = added[-1].replace(annotation=annotation)
    positional = [p for p in params if p.kind is not inspect.Parameter.KEYWORD_ONLY]
    keyword = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in params if p not in positional]
    names = {limit.field for limit in LIMITS}

    @functools.wraps(func)
    def command(*args: Any, **kwargs: Any) -> Any:
        limits = {name: kwargs.pop(name) for name in list(kwargs) if name in names}
        return func(*args, limits=limits, **kwargs)

    del command.__wrapped__  # typer must see the new signature, not the wrapped one
    command.__signature__ = sig.replace(parameters=[*positional, *keyword, *added])  # type: ignore[attr-defined]
    command.__annotations__ = {**annotations, "return": sig.return_annotation}
    return command  # type: ignore[return-value]


def limit_error(exc: Exception) -> str:
    """A ``LinkConfig`` validation error with each limit field named by its flag (``LinkConfig.x`` -> ``--x``)."""
    text = str(exc)
    for limit in LIMITS:
        text = text.replace(f"LinkConfig.{limit.field}", limit.flag)
    return text

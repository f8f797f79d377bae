"""Pure checks of wire messages and request fields; each returns why something is refused (``""`` if fine).

The rules mirror Flower 1.9's ``server/utils/validator.py`` for instructions (TaskIns) and replies (TaskRes),
adapted to fl-async's Message-shaped wire: the link assigns message ids, so a message arriving with one set
is refused; TTLs are enforced (Flower 1.9 stores but never enforces them).
"""

from __future__ import annotations

import math
import os

from fl_async.proto.fl_async import v1 as pb

__all__ = [
    "MAX_ID",
    "id_problem",
    "instruction_problem",
    "interval_problem",
    "random_id",
    "reply_shape_problem",
    "run_request_problem",
    "timeout_problem",
]

MAX_ID = 2**64 - 1
"""Largest node or run id: ids are unsigned 64-bit and never 0 (0 in metadata means the server app)."""


def id_problem(name: str, value: int) -> str:
    """Why ``value`` cannot be a node or run id: outside ``[1, 2**64 - 1]`` (``""`` if it can)."""
    if not 1 <= value <= MAX_ID:
        return f"{name} must be in [1, 2**64 - 1], got {value}"
    return ""


def _ttl_problem(md: pb.Metadata) -> str:
    if not math.isfinite(md.ttl) or md.ttl <= 0:
        return f"ttl must be a finite number of seconds > 0, got {md.ttl}"
    if not math.isfinite(md.created_at):
        return f"created_at must be a finite Unix time, got {md.created_at}"
    return ""


def _payload_problem(msg: pb.Message) -> str:
    if (msg.content is None) == (msg.error is None):
        return "message must carry exactly one of content and error"
    return ""


def instruction_problem(msg: pb.Message, run_id: int, now: float) -> str:
    """Why an instruction pushed for ``run_id`` cannot be queued (``""`` if it can, node checks aside).

    Checks: metadata present; ``message_id`` empty (the link assigns it); ``run_id`` equals the request's;
    ``src_node_id`` 0 (the driver); ``dst_node_id`` nonzero; ``reply_to_message`` empty; ``message_type`` set;
    ``ttl`` finite and > 0; not already expired (``created_at + ttl <= now``); content xor error.
    """
    md = msg.metadata
    if md is None:
        return "message has no metadata"
    if md.message_id:
        return f"message_id must be empty (the link assigns it), got {md.message_id!r}"
    if md.run_id != run_id:
        return f"message run_id {md.run_id} differs from the request's run_id {run_id}"
    if md.src_node_id != 0:
        return f"src_node_id of an instruction must be 0 (the driver), got {md.src_node_id}"
    if md.dst_node_id == 0:
        return "dst_node_id must name a node (got 0, the server app's own id)"
    if md.dst_node_id > MAX_ID:
        return id_problem("dst_node_id", md.dst_node_id)
    if md.reply_to_message:
        return f"reply_to_message of an instruction must be empty, got {md.reply_to_message!r}"
    if not md.message_type:
        return "message_type must not be empty"
    problem = _ttl_problem(md) or _payload_problem(msg)
    if problem:
        return problem
    if md.created_at + md.ttl <= now:
        return f"message already expired (created_at {md.created_at:.3f} + ttl {md.ttl} s <= now {now:.3f})"
    return ""


def reply_shape_problem(msg: pb.Message, node_id: int) -> str:
    """Why a reply pushed by ``node_id`` is malformed, before looking up its instruction (``""`` if fine).

    Checks: metadata present; ``message_id`` empty; ``src_node_id == node_id`` is checked by the caller
    (it is an authorization failure, not a shape problem); ``dst_node_id`` 0; ``reply_to_message`` set;
    ``ttl`` finite and > 0; content xor error.
    """
    md = msg.metadata
    if md is None:
        return "reply has no metadata"
    if md.message_id:
        return f"message_id must be empty (the link assigns it), got {md.message_id!r}"
    if md.dst_node_id != 0:
        return f"dst_node_id of a reply must be 0 (the driver), got {md.dst_node_id}"
    if not md.reply_to_message:
        return "reply_to_message must name the instruction being answered"
    return _ttl_problem(md) or _payload_problem(msg)


def timeout_problem(name: str, value: float) -> str:
    """Why a requested wait in seconds is unacceptable: NaN or negative (``inf`` is fine: it is capped)."""
    if math.isnan(value) or value < 0:
        return f"{name} must be >= 0 seconds, got {value}"
    return ""


def interval_problem(value: float) -> str:
    """Why a requested heartbeat interval is unacceptable: not finite or not > 0 (the link then clamps it)."""
    if not math.isfinite(value) or value <= 0:
        return f"heartbeat_interval must be a finite number of seconds > 0, got {value}"
    return ""


def run_request_problem(req: pb.CreateRunRequest, max_fab_id_bytes: int, max_run_config_bytes: int) -> str:
    """Why a CreateRun request is too large to keep for the run's lifetime: ``fab_id`` or ``fab_version`` over
    ``max_fab_id_bytes`` UTF-8 bytes, or a serialized ``run_config`` over ``max_run_config_bytes``."""
    for name in ("fab_id", "fab_version"):
        size = len(getattr(req, name).encode("utf-8", "surrogatepass"))
        if size > max_fab_id_bytes:
            return (
                f"{name} has {size} bytes, more than the link's limit of {max_fab_id_bytes} "
                "(max_fab_id_bytes, --max-fab-id-bytes)"
            )
    size = sum(len(bytes(entry)) + 2 for entry in req.run_config)
    if size > max_run_config_bytes:
        return (
            f"run_config has {size} bytes, more than the link's limit of {max_run_config_bytes} "
            "(max_run_config_bytes, --max-run-config-bytes)"
        )
    return ""


def random_id() -> int:
    """A random node or run id, uniform in ``[1, 2**64 - 1]``."""
    while True:
        value = int.from_bytes(os.urandom(8), "little")
        if value:
            return value

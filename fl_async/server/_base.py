"""Sans-IO core shared by :class:`~fl_async.server.AsyncDriver` and :class:`~fl_async.server.Driver`.

Everything here is pure computation: checking constructor arguments, building and validating
messages, turning them into wire requests and wire responses back into messages, and deadline
arithmetic for long-polls. The two drivers differ only in how they do I/O (httpx ``BaseClient``
style): :class:`AsyncDriver` awaits the link, :class:`Driver` runs :class:`AsyncDriver` in a portal.
"""

from __future__ import annotations

import enum
import logging
import math
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypedDict

from fl_async import codec
from fl_async._net import check_client_target
from fl_async.common.arrays import UINT64_MAX
from fl_async.common.message import DEFAULT_TTL, ErrorCode, Message, Metadata
from fl_async.common.records import RecordSet
from fl_async.common.run import Run
from fl_async.errors import FlAsyncError, IntegrityError
from fl_async.proto.fl_async import v1 as pb

__all__ = [
    "DEFAULT_CALL_TIMEOUT",
    "DEFAULT_PULL_TIMEOUT",
    "ConnectArgs",
    "ConnectOptions",
    "Deadline",
    "DriverState",
    "build_message",
    "check_connect_args",
    "decode_replies",
    "normalize_ids",
    "poll_pause",
    "push_request",
    "read_push_response",
    "still_waiting",
    "validate_for_push",
    "wire_bytes",
]

logger = logging.getLogger("fl_async.server")

DEFAULT_PULL_TIMEOUT = 3.0
"""Default wait of ``pull_messages``, in seconds.

Long enough that the guide's ``pull -> if all: break -> time.sleep(3)`` loop finishes a round without
ever reaching its ``sleep`` when nodes answer within this time; short enough to keep the loop's
progress printing lively when they do not.
"""

DEFAULT_CALL_TIMEOUT = 60.0
"""Seconds a single call to the link may take on top of the wait it asks the link to hold it open.

Only an unresponsive link (or a very large transfer) ever reaches it; it bounds every call.
"""

MAX_WAIT_PER_CALL = 30.0
"""Longest wait requested from the link in one long-poll (the link caps it further); longer waits loop."""

POLL_PAUSE = 0.01
"""Seconds a driver pauses before its next long-poll when the link answered the last one with nothing new in
less than this, although it was asked to wait longer: a link with a tiny ``max_poll_timeout``, or one
shutting down. It only paces the polls (at most ~100 per second against such a link); what the driver
concludes comes from the answer itself (e.g. ``PullMessagesResponse.outstanding``)."""


class DriverState(enum.Enum):
    """Lifecycle of a driver: created, connecting (creating the run), open, closed."""

    UNOPENED = "unopened"
    CONNECTING = "connecting"
    OPENED = "opened"
    CLOSED = "closed"


class ConnectOptions(TypedDict, total=False):
    """The connection and run keywords shared by :class:`~fl_async.server.AsyncDriver` (which documents them),
    :class:`~fl_async.server.Driver`, :func:`~fl_async.server.run_server_app` and
    :func:`~fl_async.server.async_run_server_app`: defined once here, forwarded as ``**options``."""

    insecure: bool
    root_certificates: bytes | str | Path | None
    run_config: Mapping[str, Any] | None
    fab_id: str
    fab_version: str
    call_timeout: float
    auth_token: str | None


@dataclass(frozen=True)
class ConnectArgs:
    """Checked constructor arguments of a driver.

    Attributes:
        address: the ``HOST:PORT`` text as given (for messages).
        host, port: the parsed address.
        root_certificates: PEM bytes or a path for TLS; ``None`` for plaintext (``insecure=True``).
        run_config: the run's settings, already checked as a ConfigsRecord.
        run_config_wire: the same settings as wire entries.
        fab_id, fab_version: free-form app identity stored with the run.
    """

    address: str
    host: str
    port: int
    root_certificates: bytes | str | Path | None
    run_config: dict[str, Any]
    run_config_wire: list[pb.ValueEntry]
    fab_id: str
    fab_version: str


def check_connect_args(
    superlink: str,
    *,
    insecure: bool,
    root_certificates: bytes | str | Path | None,
    run_config: Mapping[str, Any] | None,
    fab_id: str,
    fab_version: str,
) -> ConnectArgs:
    """Check a driver's constructor arguments without touching the network.

    Raises:
        ValueError: the address is malformed; both or neither of ``insecure`` and
            ``root_certificates`` are given; a run config value is out of range.
        TypeError: an argument has the wrong type, or a run config value is not a config value.
    """
    host, port = check_client_target(superlink, insecure=insecure, root_certificates=root_certificates)
    for name, value in (("fab_id", fab_id), ("fab_version", fab_version)):
        if not isinstance(value, str):
            raise TypeError(f"{name} must be a str, got {type(value).__name__}")
    if run_config is None:
        run_config = {}
    if not isinstance(run_config, Mapping):
        raise TypeError(f"run_config must be a mapping of str to config values, got {type(run_config).__name__}")
    wire = codec.config_to_proto(run_config)
    return ConnectArgs(
        address=superlink,
        host=host,
        port=port,
        root_certificates=root_certificates,
        run_config=codec.config_from_proto(wire),
        run_config_wire=wire,
        fab_id=fab_id,
        fab_version=fab_version,
    )


def make_run(args: ConnectArgs, run_id: int) -> Run:
    """The :class:`Run` a driver created with ``args`` got back as ``run_id``."""
    return Run(run_id=run_id, fab_id=args.fab_id, fab_version=args.fab_version, run_config=dict(args.run_config))


def run_from_proto(run: pb.Run | None, run_id: int) -> Run:
    """Decode the link's description of a run (``GetRun``)."""
    if run is None:
        raise FlAsyncError(f"the link sent no description of run {run_id}")
    return Run(
        run_id=run.run_id,
        fab_id=run.fab_id,
        fab_version=run.fab_version,
        run_config=codec.config_from_proto(list(run.run_config)),
    )


# --------------------------------------------------------------------------------------------
# deadlines


class Deadline:
    """A point in monotonic time (``time.monotonic``, the clock asyncio's loop uses), or none.

    Args:
        timeout: seconds from now; ``None`` = never.

    Raises:
        ValueError: ``timeout`` is negative or not a number.
    """

    __slots__ = ("_at",)

    def __init__(self, timeout: float | None) -> None:
        self._at = None if timeout is None else time.monotonic() + check_timeout(timeout, "timeout")

    @property
    def infinite(self) -> bool:
        """Whether there is no deadline."""
        return self._at is None

    def remaining(self) -> float:
        """Seconds left (``math.inf`` when infinite, never negative)."""
        if self._at is None:
            return math.inf
        return max(0.0, self._at - time.monotonic())

    def expired(self) -> bool:
        """Whether no time is left."""
        return self.remaining() <= 0.0

    def wait_slice(self) -> float:
        """How long to ask the link to hold the next long-poll open: the time left, at most
        :data:`MAX_WAIT_PER_CALL` seconds."""
        return min(self.remaining(), MAX_WAIT_PER_CALL)


def check_number(value: Any, name: str) -> float:
    """Return ``value`` as a float (negative allowed).

    Raises:
        TypeError: not a number.
        ValueError: NaN.
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number of seconds, got {type(value).__name__}")
    if value != value:
        raise ValueError(f"{name} must not be NaN")
    return float(value)


def check_timeout(timeout: Any, name: str, *, positive: bool = False) -> float:
    """Return ``timeout`` as a float of seconds >= 0 (> 0 with ``positive``).

    Raises:
        TypeError: not a number.
        ValueError: negative or NaN (or 0 with ``positive``); the message states the same bound whatever
            the value.
    """
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
        raise TypeError(f"{name} must be a number of seconds, got {type(timeout).__name__}")
    value = float(timeout)
    if math.isnan(value) or value < 0 or (positive and value == 0):
        raise ValueError(f"{name} must be {'>' if positive else '>='} 0 seconds, got {timeout!r}")
    return value


# --------------------------------------------------------------------------------------------
# messages


def _check_node_id(node_id: Any, name: str = "dst_node_id") -> int:
    """``node_id`` as an int in ``[1, 2**64 - 1]`` (numpy integers are converted).

    Raises:
        TypeError: not an integer.
        ValueError: 0 (the server app's own id: instructions come from it, never go to it), negative, or above
            ``2**64 - 1`` (the message names ``name``; the value is never wrapped).
    """
    if isinstance(node_id, bool) or not isinstance(node_id, int):
        # numpy integers from random.sample over arrays are fine; convert them.
        try:
            import numpy as np

            if isinstance(node_id, np.integer):
                return _check_node_id(int(node_id), name)
        except ImportError:  # pragma: no cover
            pass
        raise TypeError(f"{name} must be an int, got {type(node_id).__name__}")
    if node_id == 0:
        raise ValueError(
            f"{name} must name a node (an id in [1, 2**64 - 1] from get_node_ids()); "
            "0 is the server app's own id (the src_node_id of instructions)"
        )
    if not 1 <= node_id <= UINT64_MAX:
        raise ValueError(f"{name} must be a node id in [1, 2**64 - 1] (ids are unsigned 64-bit), got {node_id}")
    return node_id


def _node_id_problem(node_id: Any) -> str:
    """Why ``node_id`` cannot be a message's ``dst_node_id`` (``""`` if it can); see :func:`_check_node_id`."""
    try:
        _check_node_id(node_id)
    except (TypeError, ValueError) as exc:
        return str(exc)
    return ""


def _check_ttl(ttl: Any) -> float:
    if isinstance(ttl, bool) or not isinstance(ttl, (int, float)):
        raise TypeError(f"ttl must be a number of seconds, got {type(ttl).__name__}")
    if not math.isfinite(ttl) or ttl <= 0:
        raise ValueError(f"ttl must be a finite number of seconds > 0, got {ttl!r}")
    return ttl


def build_message(
    run_id: int,
    content: RecordSet,
    message_type: str,
    dst_node_id: int,
    group_id: str,
    ttl: float | None,
) -> Message:
    """Build an instruction as Flower 1.9's ``Driver.create_message``.

    Metadata: ``run_id`` of the driver, ``message_id=""`` (the link assigns it), ``src_node_id=0``,
    ``reply_to_message=""``, ``ttl=DEFAULT_TTL`` when ``None``.

    Raises:
        TypeError: ``content`` is not a RecordSet, or an argument has the wrong type.
        ValueError: ``ttl`` is <= 0 or not finite, ``dst_node_id`` is not a node id (0, the server app's own id;
            negative; above ``2**64 - 1``), ``message_type`` is empty; the message names the argument.
    """
    if not isinstance(content, RecordSet):
        raise TypeError(f"content must be a RecordSet, got {type(content).__name__}")
    if not isinstance(message_type, str):
        raise TypeError(f"message_type must be a str, got {type(message_type).__name__}")
    if not message_type:
        raise ValueError("message_type must not be empty (e.g. MessageType.TRAIN)")
    if not isinstance(group_id, str):
        raise TypeError(f"group_id must be a str, got {type(group_id).__name__}")
    metadata = Metadata(
        run_id=run_id,
        message_id="",
        src_node_id=0,
        dst_node_id=_check_node_id(dst_node_id),
        reply_to_message="",
        group_id=group_id,
        ttl=DEFAULT_TTL if ttl is None else _check_ttl(ttl),
        message_type=message_type,
    )
    return Message(metadata=metadata, content=content)


def validate_for_push(run_id: int, messages: Iterable[Message]) -> list[Message]:
    """Check messages before pushing them, as Flower 1.9's ``GrpcDriver.push_messages``.

    A message with ``run_id`` 0 (built directly, as newest Flower's ``Message(content, dst_node_id,
    message_type)``) is given run ``run_id``, as newest Flower's ``Grid.push_messages`` does; any other
    message must belong to run ``run_id``. Every message must come from the server app (``src_node_id == 0``),
    go to a node (``dst_node_id`` in ``[1, 2**64 - 1]``: not 0, the server app's own id, not negative, not
    wrapped), not have been pushed or received (``message_id == ""``, ``reply_to_message == ""``) and have
    ``ttl > 0``. Nothing is sent unless all pass.

    Returns:
        The messages as a list.

    Raises:
        TypeError: ``messages`` is a single Message or not iterable, or holds something else than Messages.
        ValueError: ``"Invalid message: ..."`` naming the position and the rule broken.
    """
    if isinstance(messages, Message):
        raise TypeError("push_messages expects an iterable of Messages, got a single Message; wrap it in a list")
    try:
        batch = list(messages)
    except TypeError:
        raise TypeError(f"push_messages expects an iterable of Messages, got {type(messages).__name__}") from None
    for i, msg in enumerate(batch):
        if not isinstance(msg, Message):
            raise TypeError(f"push_messages: item {i} is a {type(msg).__name__}, not a Message")
        md = msg.metadata
        problem = None
        if md.run_id == 0:  # built as Message(content, dst_node_id, message_type): this run's (newest Flower)
            md._run_id = run_id
        if md.run_id != run_id:
            problem = f"run_id {md.run_id} is not this driver's run {run_id}"
        elif md.src_node_id != 0:
            problem = f"src_node_id must be 0 (the server app), got {md.src_node_id}"
        elif dst_problem := _node_id_problem(md.dst_node_id):
            problem = dst_problem
        elif md.message_id != "":
            problem = f"message_id is already set ({md.message_id!r}); create a new message instead"
        elif md.reply_to_message != "":
            problem = f"reply_to_message must be empty, got {md.reply_to_message!r}"
        elif (
            isinstance(md.ttl, bool)
            or not isinstance(md.ttl, (int, float))
            or not md.ttl > 0
            or not math.isfinite(md.ttl)
        ):
            problem = f"ttl must be a finite number of seconds > 0, got {md.ttl!r}"
        if problem is not None:
            raise ValueError(f"Invalid message: item {i} (to node {md.dst_node_id}): {problem}")
    return batch


def push_request(run_id: int, messages: list[Message], blobs: dict[bytes, Any] | None = None) -> pb.PushMessagesRequest:
    """Encode validated messages as one ``PushMessagesRequest``: arrays inline, or, when ``blobs`` is
    given, arrays over the inline limit as external references with payloads put in ``blobs`` (the
    limit is lowered when the batch's small arrays add up to more than the inline budget)."""
    if blobs is None:
        return pb.PushMessagesRequest(run_id=run_id, messages=[codec.message_to_proto(m) for m in messages])
    limit = codec.inline_limit_for(messages)
    digests: codec.DigestMemo = {}  # a model broadcast to N nodes is one buffer: hashed once
    return pb.PushMessagesRequest(
        run_id=run_id,
        messages=[codec.message_to_proto(m, blobs=blobs, inline_limit=limit, digests=digests) for m in messages],
    )


def read_push_response(resp: pb.PushMessagesResponse, messages: list[Message]) -> list[str]:
    """Return one id per pushed message, ``""`` where the link did not queue it (the reason is logged).

    Raises:
        FlAsyncError: the link answered a different number of ids than messages were pushed.
    """
    ids = list(resp.message_ids)
    if len(ids) != len(messages):
        raise FlAsyncError(f"the link answered {len(ids)} message ids for {len(messages)} pushed messages")
    reasons = list(resp.reasons) + [""] * (len(ids) - len(resp.reasons))
    for msg, mid, reason in zip(messages, ids, reasons, strict=True):
        if not mid:
            logger.warning(
                "message to node %d was not queued by the link: %s",
                msg.metadata.dst_node_id,
                reason or "no reason given",
            )
    return ids


def normalize_ids(message_ids: Iterable[str]) -> list[str]:
    """Return the distinct non-empty ids in order (``""`` marks a message the link refused).

    Raises:
        TypeError: ``message_ids`` is a single string or not iterable, or holds a non-string.
    """
    if isinstance(message_ids, (str, bytes)):
        raise TypeError("message_ids must be an iterable of ids, got a single string; wrap it in a list")
    try:
        items = list(message_ids)
    except TypeError:
        raise TypeError(f"message_ids must be an iterable of str, got {type(message_ids).__name__}") from None
    out: dict[str, None] = {}
    for i, mid in enumerate(items):
        if not isinstance(mid, str):
            raise TypeError(f"message_ids[{i}] is a {type(mid).__name__}, not a str")
        if mid:
            out[mid] = None
    return list(out)


def still_waiting(wanted: Iterable[str], resp: pb.PullMessagesResponse) -> list[str]:
    """The ids among ``wanted`` worth pulling again: those the link listed in ``resp.outstanding`` (pushed in
    this run, reply not yet delivered) and not answered in ``resp.messages``. Unknown, foreign-run and
    already-delivered ids are never listed, so they are dropped at once."""
    outstanding = set(resp.outstanding)
    if not outstanding:
        return []
    answered = {m.metadata.reply_to_message for m in resp.messages if m.metadata is not None}
    return [mid for mid in wanted if mid in outstanding and mid not in answered]


def poll_pause(elapsed: float, wait: float, remaining: float) -> float:
    """Seconds to pause before the next poll: :data:`POLL_PAUSE` (at most ``remaining``) when a poll that asked
    the link to wait ``wait`` seconds came back after only ``elapsed < POLL_PAUSE`` seconds with nothing new,
    else 0. Call it only after such an empty answer."""
    if elapsed < POLL_PAUSE < wait:
        return max(0.0, min(POLL_PAUSE - elapsed, remaining))
    return 0.0


def wire_bytes(wire: pb.Message) -> int:
    """Array payload bytes a pulled wire message will occupy once decoded: its inline payloads plus its external
    ones (downloaded on decode). Used to size how many replies a stream pulls ahead."""
    if wire.content is None:
        return 0
    return sum(len(a.data) or a.nbytes for rec in wire.content.parameters for a in rec.arrays)


def decode_replies(
    resp: pb.PullMessagesResponse | Sequence[pb.Message], blobs: Mapping[bytes, Any] | None = None
) -> list[Message]:
    """Decode pulled replies (a pull response, or some of its messages; external payloads from ``blobs``, already
    verified by the blob client).

    A reply that cannot be decoded is not dropped (the link delivers each reply once): it becomes an
    error reply with the same metadata, code ``PAYLOAD_UNAVAILABLE`` (a payload failed its integrity
    check) or ``INVALID_REPLY`` (malformed), and the reason.
    """
    out = []
    used: set[bytes] = set()  # replies echoing one array (e.g. the model, unchanged) get a buffer each
    wires = resp.messages if isinstance(resp, pb.PullMessagesResponse) else resp
    for wire in wires:
        try:
            out.append(codec.message_from_proto(wire, blobs=blobs, verify=not blobs, used=used))
        except (IntegrityError, ValueError, TypeError) as exc:
            if wire.metadata is None:
                logger.error("dropping a reply without metadata: %s", exc)
                continue
            code = ErrorCode.PAYLOAD_UNAVAILABLE if isinstance(exc, IntegrityError) else ErrorCode.INVALID_REPLY
            logger.warning("reply to %s could not be decoded: %s", wire.metadata.reply_to_message, exc)
            stub = pb.Message(metadata=wire.metadata, error=pb.Error(code=code, reason=f"undecodable reply: {exc}"))
            out.append(codec.message_from_proto(stub))
    return out

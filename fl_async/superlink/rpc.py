"""grpclib plumbing of the link: a size-limited codec and the unary handler wrapper both APIs use."""

from __future__ import annotations

import asyncio
import contextvars
import logging
import struct
import time
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from typing import Any, TypeVar

import betterproto2
import grpclib.const
import grpclib.server
from grpclib.const import Status
from grpclib.encoding.proto import ProtoCodec
from grpclib.exceptions import GRPCError

from fl_async._credentials import PUSH_ID_HEADER
from fl_async._fastparse import parse_forwarding_request
from fl_async._fastwire import (
    PUSH_REPLIES_INSTRUCTIONS_KEY,
    encode_messages_response,
    len_field,
    remember_tails,
    tag,
)
from fl_async.proto.fl_async import v1 as pb
from fl_async.superlink.admission import ANONYMOUS, CALLER, Admission, body_identity_problem, buffered
from fl_async.superlink.connections import CURRENT
from fl_async.superlink.state import LinkStateError

__all__ = [
    "CURRENT_STREAM",
    "PUSH_ID",
    "RESPONSE_METADATA",
    "CallTracker",
    "LimitedProtoCodec",
    "Undo",
    "peer_address",
    "unary_handler",
    "wire_type_problem",
]

log = logging.getLogger("fl_async.superlink")

Req = TypeVar("Req")
Resp = TypeVar("Resp")
PUSH_ID: ContextVar[str] = ContextVar("fl_async_push_id", default="")
"""The call's ``fl-async-push-id`` header (``""``: none, or longer than 64 characters), set by the handler."""

RESPONSE_METADATA: contextvars.ContextVar[tuple[tuple[str, str], ...] | None] = contextvars.ContextVar(
    "fl_async_response_metadata", default=None
)
"""Initial metadata a handler wants sent with its response (e.g. the link's public key for a keyed CreateNode)."""
Undo = Callable[[], None] | None
"""Called when a response could not be sent, to put back what the handler took (``None``: nothing to undo)."""

CURRENT_STREAM: contextvars.ContextVar[Any] = contextvars.ContextVar("fl_async_link_stream", default=None)
"""The grpclib server stream of the call the current handler task serves (set by :func:`unary_handler`)."""


def peer_address() -> str:
    """``"host:port"`` of the peer of the current handler's call (``""`` outside a handler or if unknown)."""
    stream = CURRENT_STREAM.get()
    try:
        addr = stream.peer.addr() if stream is not None else None
    except Exception:  # a transport already closed
        addr = None
    if not addr:
        return ""
    host, port = addr[0], addr[1]
    return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"


_INT_TYPES = {
    betterproto2.TYPE_ENUM, betterproto2.TYPE_INT32, betterproto2.TYPE_INT64, betterproto2.TYPE_UINT32,
    betterproto2.TYPE_UINT64, betterproto2.TYPE_SINT32, betterproto2.TYPE_SINT64, betterproto2.TYPE_FIXED32,
    betterproto2.TYPE_SFIXED32, betterproto2.TYPE_FIXED64, betterproto2.TYPE_SFIXED64,
}  # fmt: skip
_PY_TYPES: dict[str, type | tuple[type, ...]] = {
    betterproto2.TYPE_BOOL: bool,
    betterproto2.TYPE_FLOAT: float,
    betterproto2.TYPE_DOUBLE: float,
    betterproto2.TYPE_STRING: str,
    betterproto2.TYPE_BYTES: bytes,
    betterproto2.TYPE_MESSAGE: betterproto2.Message,
    **dict.fromkeys(_INT_TYPES, int),
}


_FieldSpec = tuple[str, str, "type | tuple[type, ...] | None", bool, bool]
_SPECS: dict[type, list[_FieldSpec]] = {}


def _specs(cls: type) -> list[_FieldSpec]:
    specs = _SPECS.get(cls)
    if specs is None:
        specs = []
        for name, meta in cls._betterproto.meta_by_field_name.items():  # type: ignore[attr-defined]
            nullable = bool(meta.optional or meta.group or meta.proto_type == betterproto2.TYPE_MESSAGE)
            specs.append((name, meta.proto_type, _PY_TYPES.get(meta.proto_type), bool(meta.repeated), nullable))
        _SPECS[cls] = specs
    return specs


def _value_problem(proto_type: str, expected: Any, value: Any, where: str) -> str:
    if expected is None:  # maps are not used in fl-async's schema
        return f"{where}: unsupported field type {proto_type}"
    if value.__class__ is not expected and (
        not isinstance(value, expected) or (expected is int and isinstance(value, bool))
    ):
        return f"{where}: expected {proto_type}, decoded {type(value).__name__}"
    if expected is betterproto2.Message:
        return wire_type_problem(value, f"{where}.")
    return ""


def wire_type_problem(message: betterproto2.Message, path: str = "") -> str:
    """Why a decoded message has a field of the wrong shape (``""`` if none), walking nested messages.

    betterproto2 decodes some garbage without complaint: a length-delimited chunk in a scalar field becomes a
    list ("packed"), a group wire type becomes ``None``. Such values must not reach the link's state.
    """
    for name, proto_type, expected, repeated, nullable in _specs(message.__class__):
        value = getattr(message, name)
        if repeated:
            if value.__class__ is not list:
                return f"{path}{name}: expected a repeated field, decoded {type(value).__name__}"
            for i, item in enumerate(value):
                if item.__class__ is not expected or expected is betterproto2.Message:
                    problem = _value_problem(proto_type, expected, item, f"{path}{name}[{i}]")
                    if problem:
                        return problem
        elif value is None:
            if not nullable:
                return f"{path}{name}: undecodable value"
        elif value.__class__ is not expected or expected is betterproto2.Message:
            problem = _value_problem(proto_type, expected, value, path + name)
            if problem:
                return problem
    return ""


_WITH_TAILS = (pb.PushMessagesRequest, pb.PushRepliesRequest)
_FAST_RESPONSES = (pb.PullInstructionsResponse, pb.PullMessagesResponse)


class LimitedProtoCodec(ProtoCodec):
    """grpclib's ``ProtoCodec`` (works with betterproto2 messages: ``FromString`` / ``SerializeToString``),
    refusing request messages larger than ``max_bytes`` and mapping undecodable ones (including fields of the
    wrong shape, see :func:`wire_type_problem`) to INVALID_ARGUMENT.

    grpclib has no message size limit of its own and buffers the whole message before decoding, so this
    check bounds what a handler can be made to process; the transport still buffered the bytes once.

    Args:
        max_bytes: largest accepted serialized request, in bytes.
    """

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes

    def decode(self, data: bytes, message_type: Any) -> Any:
        """Decode a request, or raise ``GRPCError`` RESOURCE_EXHAUSTED (too big) / INVALID_ARGUMENT (garbled)."""
        if len(data) > self.max_bytes:
            raise _too_big(message_type.__name__, len(data), self.max_bytes)
        try:
            # the two hot requests (None: not in the canonical encoding, or another type)
            message: Any = parse_forwarding_request(data, message_type) if message_type in _WITH_TAILS else None
            fast = message is not None
            if not fast:
                message = message_type.FromString(data)
        except Exception as exc:
            raise GRPCError(Status.INVALID_ARGUMENT, f"malformed {message_type.__name__}: {exc}") from None
        if fast:  # envelope and metadata were type-checked while parsing: check what betterproto2 decoded
            problem = next(
                (
                    p
                    for i, m in enumerate(message.messages)
                    for name in ("content", "error")
                    if getattr(m, name) is not None
                    and (p := wire_type_problem(getattr(m, name), f"messages[{i}].{name}."))
                ),
                "",
            )
        else:
            problem = wire_type_problem(message)
        if problem:
            raise GRPCError(Status.INVALID_ARGUMENT, f"malformed {message_type.__name__}: {problem}")
        if message_type in _WITH_TAILS:
            remember_tails(data, message)
        return message

    def encode(self, message: Any, message_type: Any) -> bytes:
        """Encode a response; pull responses re-emit forwarded messages from their original bytes
        (:mod:`fl_async._fastwire`)."""
        if message_type in _FAST_RESPONSES and isinstance(message, message_type):
            body = encode_messages_response(message.messages)
            if message_type is pb.PullMessagesResponse and message.outstanding:  # field 2, after field 1
                body += bytes(pb.PullMessagesResponse(outstanding=message.outstanding))
            elif message_type is pb.PullInstructionsResponse and message.cancelled:  # field 2, after field 1
                body += bytes(pb.PullInstructionsResponse(cancelled=message.cancelled))
            return body
        if message_type in _ID_LISTS and isinstance(message, message_type):  # every push answers these
            head = id_lists_bytes(message.message_ids, message.reasons)
            if message_type is pb.PushRepliesResponse:  # fields 3 and 4 follow fields 1 and 2
                if message.instructions:
                    head += encode_messages_response(message.instructions, PUSH_REPLIES_INSTRUCTIONS_KEY)
                if message.cancelled:
                    head += bytes(pb.PushRepliesResponse(cancelled=message.cancelled))
            return head
        return super().encode(message, message_type)


_ID_LISTS = (pb.PushRepliesResponse, pb.PushMessagesResponse)


def _leading_fields(cls: Any) -> list[tuple[int, str, bool]]:
    return [(m.number, m.proto_type, bool(m.repeated)) for m in list(cls._betterproto.meta_by_field_name.values())[:2]]


for _cls in _ID_LISTS:  # both responses start with the same two repeated strings (checked at import)
    if _leading_fields(_cls) != [(1, betterproto2.TYPE_STRING, True), (2, betterproto2.TYPE_STRING, True)]:
        raise TypeError(f"{_cls.__name__} must start with repeated string message_ids = 1, reasons = 2")
_IDS_KEY, _REASONS_KEY = tag(1, 2), tag(2, 2)


def id_lists_bytes(message_ids: list[str], reasons: list[str]) -> bytes:
    """The ``message_ids`` and ``reasons`` fields of a push response, as betterproto2 writes them (every element,
    empty strings too), without its per-field overhead (one push response per node-round)."""
    parts = [len_field(_IDS_KEY, i.encode()) for i in message_ids]
    parts.extend(len_field(_REASONS_KEY, r.encode()) for r in reasons)
    return b"".join(parts)


def _too_big(name: str, size: int, limit: int, flag: str = "max_request_bytes, --max-request-bytes") -> GRPCError:
    return GRPCError(
        Status.RESOURCE_EXHAUSTED,
        f"{name} of {size} bytes exceeds the link's limit of {limit} bytes ({flag})",
    )


async def _recv_request(
    stream: grpclib.server.Stream[Any, Any],
    codec: LimitedProtoCodec | None,
    name: str,
    admission: Admission | None = None,
) -> Any:
    """Receive the unary request, refusing an oversized one from its 5-byte gRPC frame header, before the
    body is buffered (grpclib's ``recv_message`` would buffer up to 4 GiB first). Falls back to
    ``stream.recv_message()`` (and the codec's own check) if grpclib's internals are not as expected.

    With ``admission``, the caller is established from the headers first (wrong credentials: UNAUTHENTICATED
    before any body byte is read); its size limit, the bytes-in-flight budget, the read deadline and the element
    cap apply; and the decoded body must name the same node or run as the headers."""
    raw = getattr(stream, "_stream", None)
    if codec is None or raw is None or not hasattr(raw, "recv_data"):
        return await stream.recv_message()
    recv_type = stream._recv_type
    if admission is None:
        caller, limit, flag = ANONYMOUS, codec.max_bytes, "max_request_bytes, --max-request-bytes"
        meta = await raw.recv_data(5)
    else:
        caller = admission.identify(name.partition(".")[0], name, stream.metadata)
        CALLER.set(caller)
        limit, flag = admission.size_limit(caller)
        try:
            if buffered(raw) >= 5:  # already here: no timer needed
                meta = await raw.recv_data(5)
            else:
                async with asyncio.timeout(admission.request_read_timeout):
                    meta = await raw.recv_data(5)
        except TimeoutError:
            raise GRPCError(
                Status.DEADLINE_EXCEEDED,
                f"{name}: no request within {admission.request_read_timeout:g} s "
                "(request_read_timeout, --request-read-timeout)",
            ) from None
    if not meta:
        return None
    if len(meta) != 5:
        raise GRPCError(Status.INVALID_ARGUMENT, f"{name}: truncated gRPC message header")
    compressed, length = struct.unpack(">?I", meta)
    if compressed:
        raise GRPCError(Status.UNIMPLEMENTED, f"{name}: compressed messages are not supported")
    if length > limit:
        if not caller.authenticated and length <= codec.max_bytes:
            flag += "; send the node's or run's credentials in the request headers for the larger limit"
        raise _too_big(recv_type.__name__, length, limit, flag)
    if admission is None:
        data = await raw.recv_data(length)
        if len(data) != length:
            raise GRPCError(Status.INVALID_ARGUMENT, f"{name}: truncated gRPC message ({len(data)} of {length} bytes)")
        return codec.decode(data, recv_type)
    admission.reserve(caller, name, length)
    try:
        data = await admission.read_body(raw, name, length)
    finally:
        admission.release(caller, length)
    if caller.verify_body is not None and not caller.verify_body(name.partition(".")[2], data):
        raise GRPCError(
            Status.UNAUTHENTICATED, f"{name}: the call's proof (fl-async-node-proof-bin) does not match its body"
        )
    admission.check_elements(name, data, recv_type)
    request = codec.decode(data, recv_type)
    problem = body_identity_problem(caller, request)
    if problem:
        raise GRPCError(Status.UNAUTHENTICATED, f"{name}: {problem}")
    return request


_LIMIT_LOG_INTERVAL = 10.0
"""Seconds between two "limit hit" log lines (refusals in between are counted in the next line)."""
_limit_log_state = {"last": -_LIMIT_LOG_INTERVAL, "suppressed": 0}


def _log_limit_hit(message: str) -> None:
    """Log a refusal by a configured limit at WARNING, at most once per :data:`_LIMIT_LOG_INTERVAL` seconds (a
    flood of oversized requests must not flood the log)."""
    now = time.monotonic()
    if now - _limit_log_state["last"] < _LIMIT_LOG_INTERVAL:
        _limit_log_state["suppressed"] += 1
        return
    more = _limit_log_state["suppressed"]
    _limit_log_state.update(last=now, suppressed=0)
    log.warning(
        "limit hit: %s%s",
        message,
        f" ({more:g} more refusal(s) since the last such line)" if more else "",
        extra={"event": "limit_hit"},
    )


class CallTracker:
    """Counts handler calls in progress so a graceful stop can wait for them to finish.

    Attributes:
        observe: when set, called after every call as ``observe(method, seconds, status_name)`` (metrics);
            ``status_name`` is ``"OK"``, a gRPC status name, or ``"CANCELLED"`` when the call was cancelled.
    """

    def __init__(self) -> None:
        self.active = 0
        self._idle: list[Callable[[], None]] = []
        self.before_send: Callable[[], None] | None = None
        """Called before each response is sent (a durable store commits there: no caller learns of a change
        that a crash could undo); if it raises, the call fails UNAVAILABLE and its ``undo`` runs."""
        self.observe: Callable[[str, float, str], None] | None = None

    def enter(self) -> None:
        """A call started."""
        self.active += 1

    def exit(self) -> None:
        """A call ended (its response was sent, or it failed or was cancelled)."""
        self.active -= 1
        if self.active == 0:
            callbacks, self._idle = self._idle, []
            for cb in callbacks:
                cb()

    def when_idle(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` (once) when no call is in progress (at once if none is)."""
        if self.active == 0:
            callback()
        else:
            self._idle.append(callback)


def unary_handler(
    name: str,
    func: Callable[[Req], Awaitable[tuple[Resp, Undo]]],
    request_type: type[Req],
    response_type: type[Resp],
    calls: CallTracker,
    codec: LimitedProtoCodec | None = None,
    admission: Admission | None = None,
) -> grpclib.const.Handler:
    """A grpclib unary-unary handler around ``func(request) -> (response, undo)``.

    * with ``codec``, an oversized request is refused from its frame header, before its body is buffered;
    * with ``admission`` as well, the caller is established from the request headers before the body is read
      (:mod:`fl_async.superlink.admission`);
    * :class:`~fl_async.superlink.state.LinkStateError` becomes ``GRPCError`` with its status and message;
    * any other exception is logged with its traceback and answered INTERNAL naming the method (a bug; the
      link keeps running);
    * if sending the response fails or is cancelled, ``undo`` runs so nothing taken for it is lost;
    * :data:`~fl_async.superlink.connections.CURRENT` names the call's HTTP/2 connection while ``func`` runs
      (grpclib runs each call in its own task, so the value stays local to the call).
    """

    async def handle(stream: grpclib.server.Stream[Any, Any]) -> None:
        calls.enter()
        CURRENT.set(getattr(getattr(stream, "_stream", None), "connection", None))
        push_id = stream.metadata.get(PUSH_ID_HEADER) if stream.metadata is not None else None
        PUSH_ID.set(push_id if isinstance(push_id, str) and len(push_id) <= 64 else "")
        CURRENT_STREAM.set(stream)
        started = time.perf_counter()
        status = "OK"
        try:
            await _serve(stream)
        except GRPCError as exc:
            status = exc.status.name
            if exc.status is Status.RESOURCE_EXHAUSTED:
                _log_limit_hit(exc.message or name)
            raise
        except BaseException:
            status = "CANCELLED"
            raise
        finally:
            calls.exit()
            if calls.observe is not None:
                calls.observe(name, time.perf_counter() - started, status)

    async def _serve(stream: grpclib.server.Stream[Any, Any]) -> None:
        RESPONSE_METADATA.set(None)
        request = await _recv_request(stream, codec, name, admission)
        if request is None:
            raise GRPCError(Status.INVALID_ARGUMENT, f"{name}: the request has no message")
        try:
            response, undo = await func(request)
        except LinkStateError as exc:
            raise GRPCError(Status[exc.status], f"{name}: {exc}") from None
        except GRPCError:
            raise
        except Exception as exc:
            log.exception("%s failed", name)
            raise GRPCError(Status.INTERNAL, f"{name}: internal error ({type(exc).__name__})") from None
        try:
            if calls.before_send is not None:
                try:
                    calls.before_send()
                except Exception as exc:
                    log.exception("%s: saving the link state failed", name)
                    why = f"{name}: the link could not save its state ({exc})"
                    raise GRPCError(Status.UNAVAILABLE, why) from None
            extra = RESPONSE_METADATA.get()
            if extra:
                await stream.send_initial_metadata(metadata=extra)
            await stream.send_message(response)
        except BaseException:
            if undo is not None:
                undo()
            raise

    return grpclib.const.Handler(handle, grpclib.const.Cardinality.UNARY_UNARY, request_type, response_type)

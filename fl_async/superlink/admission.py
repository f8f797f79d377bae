"""Admission of gRPC requests: who calls (from the request headers), how many bytes and elements the caller may
send, and how long its request body may take to arrive. Everything here runs before the body is decoded.

* **Caller from headers.** A node sends its session credentials (from ``CreateNodeResponse``) as metadata
  ``fl-async-node-id`` / ``fl-async-node-token-bin``; a driver sends its run's credentials (``run_id`` and
  ``blob_token`` of ``CreateRunResponse``) as ``fl-async-run-id`` / ``fl-async-run-token-bin``. The check
  (:class:`SessionCallers`, a :class:`CallerCheck`) runs when the headers arrive: wrong credentials are refused
  UNAUTHENTICATED before a byte of the body is read. A call without credentials is *anonymous*: it may send at
  most ``max_anonymous_request_bytes`` (enough for CreateNode, CreateRun, GetRun, GetNodes, WaitForNodes and
  small pulls), an authenticated one ``max_request_bytes``. After decoding, the credentials in the body (Fleet
  ``auth``, Driver ``run_id``) must name the same node or run as the headers.
* **Bytes in flight.** The declared sizes of all request bodies being received at once are bounded
  (``max_pending_request_bytes``; anonymous callers share 1/16 of it): a caller above the budget is refused
  RESOURCE_EXHAUSTED from the 5-byte gRPC frame header instead of being buffered.
* **Read deadline.** Each piece of a body (1 MiB, or the rest) must arrive within ``request_read_timeout``
  seconds; otherwise the call is refused DEADLINE_EXCEEDED, the stream is released (grpclib then discards what
  is still in flight) and the process heap is trimmed so that the memory returns to the OS.
* **Element caps.** Before decoding, the number of sub-messages, repeated strings/bytes and packed varint list
  values in the body is counted from the wire format (:func:`element_problem`); above ``max_request_elements``
  the request is refused RESOURCE_EXHAUSTED. (A body of empty repeated sub-messages costs ~350 bytes of Python
  objects per 2 bytes of wire: 8 MiB would be 1.4 GB and a 25 s decode; a 1-byte varint becomes a 28-byte int.)
  Each repeated field also has a cap of its own (:data:`FIELD_CAPS`: messages per push, message ids per pull,
  entries per record, values per list), checked in the same pass; the refusal names the field, the limit and
  its flag.

The :class:`CallerCheck` seam is where a stronger credential check (node keys, driver tokens) plugs in.
"""

from __future__ import annotations

import asyncio
import contextvars
import ctypes
import ctypes.util
import hashlib
import hmac
import logging
import secrets
import struct
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import betterproto2
from grpclib.const import Status
from grpclib.exceptions import GRPCError

from fl_async._credentials import (
    NODE_ID_HEADER,
    NODE_TOKEN_HEADER,
    RUN_ID_HEADER,
    RUN_TOKEN_HEADER,
    node_metadata,
    run_metadata,
)
from fl_async._link_limits import flag_of
from fl_async.proto.fl_async import v1 as pb
from fl_async.superlink.errors import LinkStateError, NotFoundError, UnauthenticatedError

__all__ = [
    "ANONYMOUS",
    "CALLER",
    "FIELD_CAPS",
    "NODE_ID_HEADER",
    "NODE_TOKEN_HEADER",
    "READ_PIECE",
    "RUN_ID_HEADER",
    "RUN_TOKEN_HEADER",
    "Admission",
    "Caller",
    "CallerCheck",
    "SessionCallers",
    "count_elements",
    "element_problem",
    "node_metadata",
    "run_metadata",
    "trim_heap",
]

log = logging.getLogger("fl_async.superlink")

READ_PIECE = 1 << 18
"""Bytes of a request body that must arrive within ``request_read_timeout`` (the rest of the body if smaller):
the read deadline is a rate floor of ``READ_PIECE / request_read_timeout`` bytes per second."""

_ANONYMOUS_SHARE = 16
"""Anonymous callers may have at most ``1 / _ANONYMOUS_SHARE`` of ``max_pending_request_bytes`` in flight."""


@dataclass(frozen=True, slots=True)
class Caller:
    """Who makes a call, as established from its headers.

    Attributes:
        kind: ``"anonymous"`` (no credentials), ``"node"`` or ``"driver"``.
        node_id: the node's id (``kind == "node"``), else 0.
        run_id: the run whose credentials a driver presented (``kind == "driver"``), else 0.
        owner: the driver's token owner name (``--driver-auth-token-file``; ``""`` without tokens).
        public_key: SSH wire encoding of the key a registering node proved (CreateNode), else ``b""``.
        verify_body: for a call of a keyed session, ``(method, raw body) -> bool``: whether the call's proof
            header matches its body (checked over the raw bytes, before decoding); ``None`` otherwise.
    """

    kind: str
    node_id: int = 0
    run_id: int = 0
    owner: str = ""
    public_key: bytes = b""
    verify_body: Callable[[str, bytes], bool] | None = field(default=None, compare=False)

    @property
    def authenticated(self) -> bool:
        """Whether the caller presented valid credentials."""
        return self.kind != "anonymous"


ANONYMOUS = Caller("anonymous")

CALLER: contextvars.ContextVar[Caller] = contextvars.ContextVar("fl_async_caller", default=ANONYMOUS)
"""The caller of the call being handled, as established from its headers (set before its body is decoded;
grpclib runs each call in its own task, so the value stays local to the call)."""


class CallerCheck(Protocol):
    """Establishes the caller of a call from its request headers, before the body is read.

    Called with the API (``"Fleet"`` or ``"Driver"``) and the call's metadata (header name -> ``str``, or
    ``bytes`` for ``-bin`` headers). Returns :data:`ANONYMOUS` when no credentials are present; raises
    :class:`~fl_async.superlink.errors.UnauthenticatedError` when credentials are present but wrong.
    """

    def __call__(self, api: str, metadata: Mapping[str, Any]) -> Caller: ...


def _header_id(metadata: Mapping[str, Any], name: str) -> int:
    raw = metadata.get(name)
    try:
        value = int(raw if isinstance(raw, str) else "")
    except ValueError:
        raise UnauthenticatedError(f"header {name} must be a decimal id, got {str(raw)[:40]!r}") from None
    if not 0 <= value < 2**64:
        raise UnauthenticatedError(f"header {name} is out of the uint64 range")
    return value


class SessionCallers:
    """The default :class:`CallerCheck`: session credentials issued by the link itself.

    A node is checked against the link state (its ``node_id`` and ``token`` from CreateNode; an offline or
    deleted node is unknown); a driver presents its run's token (:meth:`run_token`, given out by CreateRun).

    Args:
        authenticate_node: ``(node_id, token) -> None``, raising ``UnauthenticatedError`` on a mismatch
            (:meth:`LinkState.authenticate`).
        run_token: ``run_id -> token`` of an existing run, or ``None`` for an unknown run (then NOT_FOUND, as
            the call itself would answer); default: tokens derived from a per-process secret
            (:meth:`derived_run_token`).
    """

    def __init__(
        self,
        authenticate_node: Callable[[int, bytes], object],
        run_token: Callable[[int], bytes | None] | None = None,
    ) -> None:
        self._authenticate_node = authenticate_node
        self._secret = secrets.token_bytes(32)
        self.run_token: Callable[[int], bytes | None] = run_token or self.derived_run_token

    def derived_run_token(self, run_id: int) -> bytes:
        """A run's token derived from this process's secret (``HMAC-SHA256(secret, run_id)``); nothing is stored."""
        return hmac.new(self._secret, struct.pack(">Q", run_id), hashlib.sha256).digest()

    def __call__(self, api: str, metadata: Mapping[str, Any]) -> Caller:
        """See :class:`CallerCheck`."""
        if api == "Fleet":
            if NODE_ID_HEADER not in metadata and NODE_TOKEN_HEADER not in metadata:
                return ANONYMOUS
            node_id = _header_id(metadata, NODE_ID_HEADER)
            token = metadata.get(NODE_TOKEN_HEADER)
            if not isinstance(token, bytes):
                raise UnauthenticatedError(f"header {NODE_TOKEN_HEADER} is missing")
            self._authenticate_node(node_id, token)
            return Caller("node", node_id=node_id)
        if RUN_ID_HEADER not in metadata and RUN_TOKEN_HEADER not in metadata:
            return ANONYMOUS
        run_id = _header_id(metadata, RUN_ID_HEADER)
        token = metadata.get(RUN_TOKEN_HEADER)
        if not isinstance(token, bytes):
            raise UnauthenticatedError(f"header {RUN_TOKEN_HEADER} is missing")
        known = self.run_token(run_id)
        if known is None:
            raise NotFoundError(f"unknown run {run_id}")
        if not hmac.compare_digest(known, token):
            raise UnauthenticatedError(f"wrong or expired credentials for run {run_id}")
        return Caller("driver", run_id=run_id)


# ------------------------------------------------------------------------------------------------ element count
FIELD_CAPS: dict[tuple[type, str], str] = {
    (pb.PushMessagesRequest, "messages"): "max_messages_per_request",
    (pb.PushRepliesRequest, "messages"): "max_messages_per_request",
    (pb.PullMessagesRequest, "message_ids"): "max_message_ids_per_request",
    (pb.CreateRunRequest, "run_config"): "max_record_entries",
    (pb.Run, "run_config"): "max_record_entries",
    (pb.ConfigsRecord, "entries"): "max_record_entries",
    (pb.MetricsRecord, "entries"): "max_record_entries",
    (pb.ParametersRecord, "keys"): "max_record_entries",
    (pb.ParametersRecord, "arrays"): "max_record_entries",
    (pb.RecordSet, "parameters"): "max_record_entries",
    (pb.RecordSet, "metrics"): "max_record_entries",
    (pb.RecordSet, "configs"): "max_record_entries",
    (pb.Array, "shape"): "max_list_values",
    (pb.DoubleList, "vals"): "max_list_values",
    (pb.Sint64List, "vals"): "max_list_values",
    (pb.Uint64List, "vals"): "max_list_values",
    (pb.BoolList, "vals"): "max_list_values",
    (pb.StringList, "vals"): "max_list_values",
    (pb.BytesList, "vals"): "max_list_values",
}
"""``(message class, repeated field) -> LinkConfig field`` of its per-request cap: how many values that field may
hold in one occurrence of the message (a ``RecordSet`` with 10 records of 100 entries each has 100, not 1,000).
Fields absent here are bounded by ``max_request_elements`` alone."""

_COUNTED = (betterproto2.TYPE_STRING, betterproto2.TYPE_BYTES)
_VARINTS = {
    betterproto2.TYPE_ENUM, betterproto2.TYPE_BOOL, betterproto2.TYPE_INT32, betterproto2.TYPE_INT64,
    betterproto2.TYPE_UINT32, betterproto2.TYPE_UINT64, betterproto2.TYPE_SINT32, betterproto2.TYPE_SINT64,
}  # fmt: skip
_FIXED = {
    betterproto2.TYPE_DOUBLE: 8, betterproto2.TYPE_FIXED64: 8, betterproto2.TYPE_SFIXED64: 8,
    betterproto2.TYPE_FLOAT: 4, betterproto2.TYPE_FIXED32: 4, betterproto2.TYPE_SFIXED32: 4,
}  # fmt: skip
_HIGH_BYTES = bytes(range(0x80, 0x100))
_PIECE = 1 << 18


@dataclass(frozen=True, slots=True)
class _Field:
    sub: type | None  # sub-message class (descended into)
    counted: bool  # counts towards max_request_elements (sub-message, repeated string/bytes, packed varint)
    width: int  # packed scalar list: 0 varint, 8 or 4 fixed; -1 not a scalar list
    cap: str  # LinkConfig field of its own cap ("" none)
    name: str


_Schema = dict[int, _Field]  # field number -> what it is
_SCHEMAS: dict[type, _Schema] = {}


def _schema(cls: type) -> _Schema:
    schema = _SCHEMAS.get(cls)
    if schema is None:
        info = cls._betterproto  # type: ignore[attr-defined]
        schema = {}
        for name, meta in info.meta_by_field_name.items():
            cap = FIELD_CAPS.get((cls, name), "")
            if meta.proto_type == betterproto2.TYPE_MESSAGE:
                schema[meta.number] = _Field(info.cls_by_field[name], True, -1, cap, name)
            elif meta.repeated and meta.proto_type in _COUNTED:
                schema[meta.number] = _Field(None, True, -1, cap, name)
            elif meta.repeated and meta.proto_type in _VARINTS:
                schema[meta.number] = _Field(None, True, 0, cap, name)
            elif meta.repeated and meta.proto_type in _FIXED:
                schema[meta.number] = _Field(None, False, _FIXED[meta.proto_type], cap, name)
        _SCHEMAS[cls] = schema
    return schema


def _varint(buf: bytes, pos: int, end: int) -> tuple[int, int]:
    result = shift = 0
    while pos < end:
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, pos
        shift += 7
        if shift >= 64:
            break
    raise ValueError("malformed varint")


def element_problem(data: bytes, cls: type, limit: int, caps: Mapping[str, int] | None = None) -> str:
    """Why the serialized ``cls`` message ``data`` has too many elements (``""``: it has not), in one pass over
    the wire format, before anything is decoded.

    Elements are sub-messages, repeated string/bytes values and packed varint values; more than ``limit`` in
    all is a problem naming ``max_request_elements``. ``caps`` maps each LinkConfig field of :data:`FIELD_CAPS`
    to its value: a repeated field holding more values than its cap in one message is a problem naming the
    field, the limit and its flag. The scan stops at the first problem.

    Raises:
        ValueError: the wire format is malformed (the decoder then says why).
    """
    return _scan(data, cls, limit, caps or {})[1]


def _scan(data: bytes, cls: type, limit: int, caps: Mapping[str, int]) -> tuple[int, str]:
    """``(elements counted, problem)`` of :func:`element_problem` (the count stops at ``limit + 1``)."""
    total = 0
    stack: list[tuple[type, int, int]] = [(cls, 0, len(data))]
    while stack:
        owner, pos, end = stack.pop()
        schema = _schema(owner)
        per: dict[int, int] = {}
        while pos < end:
            key, pos = _varint(data, pos, end)
            wire = key & 7
            field = schema.get(key >> 3)
            if wire == 2:
                length, pos = _varint(data, pos, end)
                start, pos = pos, pos + length
                if pos > end:
                    raise ValueError("field runs past the end")
                if field is None:
                    continue
                if field.width == 0:  # packed varints: one per byte below 0x80, counted piece by piece until
                    # the count is over what is left of the total or of the field's cap (bounded work)
                    room = limit - total
                    cap = caps.get(field.cap, 0) if field.cap else 0
                    if cap:
                        room = min(room, cap - per.get(key >> 3, 0))
                    n = 0
                    for i in range(start, pos, _PIECE):
                        n += len(data[i : min(i + _PIECE, pos)].translate(None, _HIGH_BYTES))
                        if n > room:
                            break
                elif field.width > 0:
                    n = length // field.width
                else:
                    n = 1
                    if field.sub is not None and length:
                        stack.append((field.sub, start, pos))
            elif wire == 0:
                _, pos = _varint(data, pos, end)
                n = 1
            elif wire == 1 or wire == 5:
                pos += 8 if wire == 1 else 4
                n = 1
            else:
                raise ValueError(f"unsupported wire type {wire}")
            if field is None:
                continue
            if field.counted and (wire == 2 or field.width == 0):
                total += n
                if total > limit:
                    return total, (
                        f"the request has more than {limit} elements (sub-messages, repeated strings and list "
                        "values) (max_request_elements, --max-request-elements)"
                    )
            if field.cap:
                count = per[key >> 3] = per.get(key >> 3, 0) + n
                cap = caps.get(field.cap, 0)
                if cap and count > cap:
                    return total, (
                        f"{owner.__name__}.{field.name} has more than {cap} values ({field.cap}, {flag_of(field.cap)})"
                    )
    return total, ""


def count_elements(data: bytes, cls: type, limit: int) -> int:
    """Number of sub-messages, repeated string/bytes values and packed varint values in the serialized ``cls``
    message ``data``, counting at most to ``limit + 1`` (the scan stops there).

    Raises:
        ValueError: the wire format is malformed (the decoder then says why).
    """
    return _scan(data, cls, limit, {})[0]


def buffered(raw: Any) -> int:
    """Bytes grpclib's protocol stream ``raw`` has received and not yet read (0 if its internals differ)."""
    try:
        buf = raw.buffer
        return int(buf._acked_size) + sum(int(item.data_size) for item in buf._unacked._queue)
    except (AttributeError, TypeError):
        return 0


# ------------------------------------------------------------------------------------------------ heap trimming
_libc: Any = None


def trim_heap() -> None:
    """Return freed heap memory to the OS (glibc ``malloc_trim(0)``; a no-op elsewhere).

    A request body arrives in 16 KiB HTTP/2 frames: after a large body is dropped, its frames are free but stay
    in the heap (below glibc's mmap threshold), so the process's RSS would not go down without a trim."""
    global _libc
    if _libc is None:
        name = ctypes.util.find_library("c")
        try:
            _libc = ctypes.CDLL(name) if name else False
            if _libc is not False and not hasattr(_libc, "malloc_trim"):
                _libc = False
        except OSError:
            _libc = False
    if _libc is not False:
        _libc.malloc_trim(0)


# ------------------------------------------------------------------------------------------------ admission
class Admission:
    """The per-link admission policy the unary handler applies to every call (see the module docstring).

    Args:
        check: establishes the caller from headers (default :class:`SessionCallers` built by the link).
        max_request_bytes: largest body of an authenticated caller (``LinkConfig.max_request_bytes``).
        max_anonymous_request_bytes: largest body of a caller without credentials.
        max_request_elements: most sub-messages + repeated strings/bytes + packed varints in one body.
        field_caps: ``LinkConfig`` field -> value of each per-field cap of :data:`FIELD_CAPS` (missing: no cap).
        max_pending_request_bytes: sum of the declared sizes of bodies being received at once.
        request_read_timeout: seconds within which each piece (:data:`READ_PIECE`) of a body must arrive.
    """

    def __init__(
        self,
        check: CallerCheck,
        *,
        max_request_bytes: int,
        max_anonymous_request_bytes: int,
        max_request_elements: int,
        max_pending_request_bytes: int,
        request_read_timeout: float,
        field_caps: Mapping[str, int] | None = None,
    ) -> None:
        self.check = check
        self.field_caps = dict(field_caps or {})
        # every element takes >= 1 byte on the wire (>= 2 for sub-messages and strings): smaller bodies cannot
        # exceed any cap and are not scanned
        scan: list[int] = [max_request_elements]
        for (cls, name), cap_field in FIELD_CAPS.items():
            cap = self.field_caps.get(cap_field)
            if cap:
                scan.append(cap * (1 if _schema(cls)[_field_number(cls, name)].width >= 0 else 2))
        self._scan_above = min(scan)
        self.max_request_bytes = max_request_bytes
        self.max_anonymous_request_bytes = max_anonymous_request_bytes
        self.max_request_elements = max_request_elements
        self.max_pending_request_bytes = max_pending_request_bytes
        self.request_read_timeout = request_read_timeout
        self.pending = 0
        self.pending_anonymous = 0
        self._trim: asyncio.TimerHandle | None = None
        self.dropped_bodies = 0
        self.driver_called: Callable[[int], None] | None = None
        """Told the run id of every call whose headers carry valid driver credentials, before its body is read
        (the link binds the run to the call's connection and ends the run's disconnect grace)."""

    def identify(self, api: str, name: str, metadata: Mapping[str, Any] | None) -> Caller:
        """The caller of ``name`` (``"Fleet.Heartbeat"``) from its metadata; GRPCError UNAUTHENTICATED if wrong."""
        try:
            caller = self.check(api, metadata or {})
        except LinkStateError as exc:
            raise GRPCError(Status[exc.status], f"{name}: {exc}") from None
        if caller.kind == "driver" and self.driver_called is not None:
            self.driver_called(caller.run_id)
        return caller

    def size_limit(self, caller: Caller) -> tuple[int, str]:
        """``(bytes, flag)`` of the largest body ``caller`` may send."""
        if caller.authenticated:
            return self.max_request_bytes, "max_request_bytes, --max-request-bytes"
        return self.max_anonymous_request_bytes, "max_anonymous_request_bytes, --max-anonymous-request-bytes"

    def reserve(self, caller: Caller, name: str, length: int) -> None:
        """Count a body of ``length`` bytes as in flight, or refuse it (RESOURCE_EXHAUSTED) above the budget."""
        total = self.max_pending_request_bytes
        if caller.authenticated:
            if self.pending + length > total:
                raise GRPCError(
                    Status.RESOURCE_EXHAUSTED,
                    f"{name}: {self.pending} request bytes are being received; {length} more would exceed the "
                    f"link's limit of {total} bytes (max_pending_request_bytes, --max-pending-request-bytes); "
                    "retry later",
                )
        elif self.pending_anonymous + length > total // _ANONYMOUS_SHARE:
            raise GRPCError(
                Status.RESOURCE_EXHAUSTED,
                f"{name}: unauthenticated requests of {self.pending_anonymous} bytes are being received; {length} "
                f"more would exceed 1/{_ANONYMOUS_SHARE} of the link's limit of {total} bytes "
                "(max_pending_request_bytes, --max-pending-request-bytes); retry later",
            )
        else:
            self.pending_anonymous += length
        self.pending += length

    def release(self, caller: Caller, length: int) -> None:
        """Undo :meth:`reserve`."""
        self.pending -= length
        if not caller.authenticated:
            self.pending_anonymous -= length

    async def read_body(self, raw: Any, name: str, length: int) -> bytes:
        """Read ``length`` body bytes from grpclib's protocol stream ``raw``, each :data:`READ_PIECE` within
        ``request_read_timeout``; GRPCError DEADLINE_EXCEEDED (and a heap trim soon after) when it stalls."""
        parts: list[bytes] = []
        got = 0
        try:
            while got < length:
                want = min(READ_PIECE, length - got)
                if buffered(raw) >= want:  # already here (the usual small request): no timer needed
                    piece = await raw.recv_data(want)
                else:
                    async with asyncio.timeout(self.request_read_timeout):
                        piece = await raw.recv_data(want)
                if len(piece) != want:
                    raise GRPCError(
                        Status.INVALID_ARGUMENT,
                        f"{name}: truncated gRPC message ({got + len(piece)} of {length} bytes)",
                    )
                parts.append(piece)
                got += want
        except TimeoutError:
            self.dropped(length)
            raise GRPCError(
                Status.DEADLINE_EXCEEDED,
                f"{name}: the request body stalled at {got} of {length} bytes: each {READ_PIECE} bytes must arrive "
                f"within {self.request_read_timeout:g} s (request_read_timeout, --request-read-timeout)",
            ) from None
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def dropped(self, length: int) -> None:
        """A partly received body of ``length`` bytes was dropped: trim the heap once it is released."""
        self.dropped_bodies += 1
        if length >= READ_PIECE:
            self.trim_soon()

    def trim_soon(self) -> None:
        """Trim the heap (:func:`trim_heap`) in 0.5 s, once for any number of calls meanwhile: after a large
        body was dropped or a run ended, so that the memory they held returns to the OS."""
        if self._trim is None:
            loop = asyncio.get_running_loop()

            def trim() -> None:
                self._trim = None
                trim_heap()

            self._trim = loop.call_later(0.5, trim)

    def check_elements(self, name: str, data: bytes, message_type: type) -> None:
        """Refuse (RESOURCE_EXHAUSTED) a body with more than ``max_request_elements`` elements, or a repeated field
        above its own cap (:data:`FIELD_CAPS`), before decoding."""
        if len(data) <= self._scan_above:
            return
        try:
            problem = element_problem(data, message_type, self.max_request_elements, self.field_caps)
        except ValueError as exc:
            raise GRPCError(Status.INVALID_ARGUMENT, f"malformed {message_type.__name__}: {exc}") from None
        if problem:
            raise GRPCError(Status.RESOURCE_EXHAUSTED, f"{name}: {problem}")


def _field_number(cls: type, name: str) -> int:
    return int(cls._betterproto.meta_by_field_name[name].number)  # type: ignore[attr-defined]


def body_identity_problem(caller: Caller, request: Any) -> str:
    """Why the credentials in a decoded body disagree with the caller established from the headers (``""``:
    they agree, or the caller is anonymous and the body alone is checked, as before headers existed)."""
    if caller.kind == "node":
        auth = getattr(request, "auth", None)
        if isinstance(auth, pb.NodeAuth) and auth.node_id != caller.node_id:
            return f"the request's auth names node {auth.node_id}, its headers node {caller.node_id}"
    elif caller.kind == "driver":
        run_id = getattr(request, "run_id", None)
        if isinstance(run_id, int) and run_id != caller.run_id:
            return f"the request names run {run_id}, its credentials are for run {caller.run_id}"
    return ""

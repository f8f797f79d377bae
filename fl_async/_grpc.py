"""The client side's transport boundary: opening a gRPC channel and mapping its failures to :mod:`fl_async.errors`.

The driver (:mod:`fl_async.server._transport`) and the node (:mod:`fl_async.supernode._fleet`) make every call
through a grpclib ``Channel`` built by :func:`open_channel` (or injected, e.g. by :mod:`fl_async.testing`), and
turn every transport failure into an :class:`~fl_async.errors.FlAsyncError` with :func:`from_grpc`, here and
nowhere else. :mod:`fl_async.errors` itself imports no grpclib.
"""

from __future__ import annotations

import re
import ssl
from collections.abc import Awaitable, Callable
from typing import Any, NamedTuple

from grpclib.client import Channel
from grpclib.const import Status
from grpclib.exceptions import GRPCError, ProtocolError, StreamTerminatedError

from fl_async.errors import (
    FlAsyncError,
    InvalidRequestError,
    LinkConnectionError,
    LinkTimeoutError,
    NotAuthorizedError,
    RefusedByLinkError,
    ResourceExhaustedError,
    RunStoppedError,
    _wrong_api_hint,
)

__all__ = ["TRANSPORT_ERRORS", "ChannelFactory", "Rpc", "from_grpc", "open_channel", "rpc_methods", "transport_errors"]

TRANSPORT_ERRORS: tuple[type[BaseException], ...] = (
    GRPCError,
    StreamTerminatedError,
    ProtocolError,
    OSError,
    TimeoutError,
    ssl.SSLError,
)
"""The exception types of a failed gRPC call that :func:`from_grpc` maps (see :func:`transport_errors`)."""

ChannelFactory = Callable[[], Awaitable[Channel]]
"""``await factory()`` makes a new channel to one API of a link; called inside the event loop that will use the
channel (grpclib binds a channel to the loop current at construction). The caller owns and closes the channel.
:mod:`fl_async.testing` makes in-memory ones."""


class Rpc(NamedTuple):
    """One RPC of a generated service, as read by :func:`rpc_methods`."""

    name: str
    """The RPC's name in the ``.proto``, e.g. ``"PushMessages"``."""
    path: str
    """Its HTTP/2 path, e.g. ``"/fl_async.v1.Driver/PushMessages"``."""
    method: str
    """The Python method name of the generated stub and base, e.g. ``"push_messages"``."""
    request_type: Any
    response_type: Any


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def rpc_methods(service_base: type) -> tuple[Rpc, ...]:
    """The RPCs of a generated service base (``pb.DriverBase``, ``pb.FleetBase``), read from its ``__mapping__``.

    The link's services, the driver's transport and the node's Fleet client take their method tables from here,
    so a ``.proto`` edit (``make proto``) that adds or changes an RPC needs no hand-kept table.
    """
    # __mapping__ only binds the base's private stream handlers; nothing runs, no __init__ is needed
    mapping: dict[str, Any] = object.__new__(service_base).__mapping__()
    methods = []
    for path, handler in mapping.items():
        name = path.rsplit("/", 1)[1]
        methods.append(Rpc(name, path, _snake(name), handler.request_type, handler.reply_type))
    return tuple(methods)


def open_channel(host: str, port: int, ssl_context: ssl.SSLContext | None = None) -> Channel:
    """A grpclib channel to ``host:port`` (TLS with ``ssl_context``, else plaintext); it connects on first use.

    Must be called inside the event loop that will use it.
    """
    return Channel(host, port, ssl=ssl_context)


def transport_errors() -> tuple[type[BaseException], ...]:
    """The exception types of a failed gRPC call that :func:`from_grpc` maps: grpclib's ``GRPCError``,
    ``StreamTerminatedError`` and ``ProtocolError``, ``OSError`` (incl. ``ConnectionError``), ``ssl.SSLError``
    and ``TimeoutError``. Catch only these around a call; anything else (e.g. a ``TypeError`` from encoding
    the caller's request) is the caller's error and must propagate unchanged."""
    return TRANSPORT_ERRORS


def from_grpc(exc: BaseException, *, what: str, api: str | None = None, address: str | None = None) -> FlAsyncError:
    """Map a grpclib or OS-level failure of the call ``what`` to the fl-async exception tree.

    Only transport failures are mapped (see :func:`transport_errors`); an :class:`FlAsyncError` is returned
    as it is.

    Args:
        exc: a ``grpclib.GRPCError``, ``grpclib.exceptions.StreamTerminatedError``, ``OSError``,
            ``ssl.SSLError`` or ``TimeoutError`` raised by a gRPC call.
        what: a short description of the call for the message, e.g. ``"PushMessages to 127.0.0.1:9091"``.
        api: the API of the call, ``"Driver"`` or ``"Fleet"``: a port that does not serve it (``UNIMPLEMENTED``,
            or grpclib's ``UNKNOWN: Missing content-type header`` for a method the server does not know) gets
            a hint naming the other API and the default port of this one.
        address: the ``HOST:PORT`` called, for that hint.

    Returns:
        The matching :class:`FlAsyncError` (to be raised ``from exc``).

    Raises:
        TypeError: ``exc`` is not a transport failure (a caller's error must not be reworded as a link
            failure: let it propagate instead).
    """
    if isinstance(exc, FlAsyncError):
        return exc
    if isinstance(exc, TimeoutError):
        return LinkTimeoutError(f"{what}: deadline exceeded")
    if isinstance(exc, GRPCError):
        status = exc.status
        detail = exc.message or ""
        if status is Status.UNKNOWN and detail == "Missing content-type header":
            # grpclib's client reading a trailers-only UNIMPLEMENTED (unknown method) answer
            status, detail = Status.UNIMPLEMENTED, "the server does not know this method"
        text = f"{what}: {status.name}" + (f": {detail}" if detail else "")
        if status is Status.UNIMPLEMENTED and "this port serves the" not in detail:
            text += _wrong_api_hint(api, address)
        if status in (Status.UNAUTHENTICATED, Status.PERMISSION_DENIED):
            return NotAuthorizedError(text, status=status.name, detail=detail)
        if status is Status.FAILED_PRECONDITION and " stopped: " in detail:
            return RunStoppedError(text, status=status.name, detail=detail)
        if status in (
            Status.INVALID_ARGUMENT,
            Status.NOT_FOUND,
            Status.FAILED_PRECONDITION,
            Status.OUT_OF_RANGE,
            Status.ALREADY_EXISTS,
        ):
            return InvalidRequestError(text, status=status.name, detail=detail)
        if status is Status.RESOURCE_EXHAUSTED:
            return ResourceExhaustedError(text, status=status.name, detail=detail)
        if status is Status.DEADLINE_EXCEEDED:
            return LinkTimeoutError(text)
        if status is Status.UNAVAILABLE:
            return LinkConnectionError(text)
        return RefusedByLinkError(text, status=status.name, detail=detail)
    if isinstance(exc, ssl.SSLError):
        return LinkConnectionError(f"{what}: TLS failure: {exc}")
    if isinstance(exc, (StreamTerminatedError, ProtocolError, ConnectionError, OSError)):
        return LinkConnectionError(f"{what}: {type(exc).__name__}: {exc}")
    raise TypeError(f"from_grpc maps transport failures only, not {type(exc).__name__}: {exc}") from exc

"""The one exception tree of fl-async.

Every error the SDK raises on purpose derives from :class:`FlAsyncError`. Transport failures are
mapped from grpclib statuses and :class:`TimeoutError` in one place,
:func:`fl_async.common.errors.from_grpc` (used by the driver and the node runtime).

Value errors caused by the caller's own arguments stay builtin ``ValueError``/``TypeError`` (as in
Flower 1.9), so that code written against Flower keeps catching what it caught there.
"""

from __future__ import annotations

__all__ = [
    "AppLoadError",
    "FlAsyncError",
    "IntegrityError",
    "InvalidRequestError",
    "LinkConnectionError",
    "LinkTimeoutError",
    "NoMainFunctionError",
    "NotAuthorizedError",
    "RefusedByLinkError",
    "ResourceExhaustedError",
    "RunStoppedError",
    "TTLExpiredError",
    "UnsupportedFeatureError",
    "from_grpc",
    "transport_errors",
]


class FlAsyncError(Exception):
    """Root of every error fl-async raises on purpose."""


class LinkConnectionError(FlAsyncError):
    """The SuperLink could not be reached, or the connection broke (gRPC UNAVAILABLE, TLS failure)."""


class LinkTimeoutError(FlAsyncError, TimeoutError):
    """A call to the SuperLink did not finish within its deadline.

    Also a builtin :class:`TimeoutError`, so ``except TimeoutError`` keeps working.
    """


class RefusedByLinkError(FlAsyncError):
    """The SuperLink answered the call with an error status.

    Attributes:
        status: the gRPC status name (e.g. ``"NOT_FOUND"``), or ``None`` when not from gRPC.
        detail: the link's explanation.
    """

    def __init__(self, message: str, *, status: str | None = None, detail: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.detail = detail


class NotAuthorizedError(RefusedByLinkError):
    """The link refused the caller's identity (UNAUTHENTICATED) or rights (PERMISSION_DENIED)."""


class InvalidRequestError(RefusedByLinkError):
    """The link found the request malformed (INVALID_ARGUMENT / NOT_FOUND / FAILED_PRECONDITION)."""


class ResourceExhaustedError(RefusedByLinkError):
    """The request was larger than the link accepts (RESOURCE_EXHAUSTED)."""


class RunStoppedError(InvalidRequestError):
    """The run was stopped by an operator (``fl-async stop``): the link refuses its driver's calls
    (FAILED_PRECONDITION "run ... stopped"). Replies already waiting are still delivered by a pull."""


class AppLoadError(FlAsyncError):
    """A ``module:attr`` reference to a ServerApp or ClientApp could not be loaded.

    The message names the reference and what failed (import, attribute, type).
    """


class NoMainFunctionError(AppLoadError, ValueError):
    """A ServerApp has no main function (no ``@app.main()``), so it cannot be run.

    Raised before anything connects (``run_server_app``, ``fl-async server-app``, ``fl-async run``). Also a
    :class:`ValueError`, the type this error had before (Flower 1.9 raises ``ValueError`` here too).
    """


class UnsupportedFeatureError(FlAsyncError, TypeError):
    """A Flower API that fl-async deliberately does not provide (e.g. ``ClientApp(client_fn=...)``,
    ``ServerApp(strategy=...)``); the message says what to use instead.

    Also a ``TypeError``: the type Python raises for an unexpected argument.
    """


class IntegrityError(FlAsyncError):
    """A payload did not match its content hash or announced size (truncated or corrupted transfer)."""


def transport_errors() -> tuple[type[BaseException], ...]:
    """The exception types of a failed gRPC call that :func:`from_grpc` maps: grpclib's ``GRPCError``,
    ``StreamTerminatedError`` and ``ProtocolError``, ``OSError`` (incl. ``ConnectionError``), ``ssl.SSLError``
    and ``TimeoutError``. Catch only these around a call; anything else (e.g. a ``TypeError`` from encoding
    the caller's request) is the caller's error and must propagate unchanged."""
    import ssl

    from grpclib.exceptions import GRPCError, ProtocolError, StreamTerminatedError

    return (GRPCError, StreamTerminatedError, ProtocolError, OSError, TimeoutError, ssl.SSLError)


_DEFAULT_PORTS = {"Driver": 9091, "Fleet": 9092}
_OTHER_API = {"Driver": "Fleet", "Fleet": "Driver"}


def _wrong_api_hint(api: str | None, address: str | None) -> str:
    """A hint for a call to a port that does not serve the API (e.g. a driver pointed at the Fleet API)."""
    if api not in _OTHER_API:
        return " (does this address serve the API of this call? Driver API: 9091 by default, Fleet API: 9092)"
    other = _OTHER_API[api]
    target = address or "this address"
    return f" (is {target} the {other} API? The {api} API listens on {_DEFAULT_PORTS[api]} by default)"


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
    import ssl

    from grpclib.const import Status
    from grpclib.exceptions import GRPCError, ProtocolError, StreamTerminatedError

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


class TTLExpiredError(FlAsyncError, ValueError):
    """A message's time to live has run out (e.g. a reply created after its instruction expired).

    Also a ``ValueError``, the type Flower 1.9 used for invalid messages.
    """

"""The one exception tree of fl-async.

Every error fl-async raises on purpose derives from :class:`FlAsyncError`. The user-facing classes are defined
here; the few that only one layer raises and catches live beside it (named below with their module), so that this
module imports nothing (no grpclib: transport failures are mapped to this tree by :func:`fl_async._grpc.from_grpc`,
the one place that knows grpclib's exceptions)::

    FlAsyncError
    ├── LinkConnectionError            the link cannot be reached, or the connection broke (UNAVAILABLE, TLS)
    ├── LinkTimeoutError (+TimeoutError)   a call did not finish within its deadline
    ├── RefusedByLinkError             the link answered with an error status (.status, .detail)
    │   ├── NotAuthorizedError             UNAUTHENTICATED / PERMISSION_DENIED
    │   ├── InvalidRequestError            INVALID_ARGUMENT / NOT_FOUND / FAILED_PRECONDITION / ...
    │   │   └── RunStoppedError                the run was stopped by an operator (``fl-async stop``)
    │   └── ResourceExhaustedError         RESOURCE_EXHAUSTED (request larger than the link accepts)
    ├── AppLoadError                   a ``module:attr`` reference could not be loaded
    │   └── NoMainFunctionError (+ValueError)   a ServerApp without ``@app.main()``
    ├── IntegrityError                 a payload did not match its content hash or announced size
    ├── TTLExpiredError (+ValueError)  a message's time to live has run out
    ├── UnsupportedFeatureError (+TypeError)   a Flower API fl-async does not provide (says what to use)
    ├── CliArgumentError (+ValueError)     fl_async.cli.args: a refused command-line value
    ├── LinkStateError                 fl_async.superlink.errors: a request the link state refuses (.status)
    │   ├── NotFoundError / UnauthenticatedError / PermissionDeniedError / InvalidArgumentError
    ├── FrameError (+ValueError)       fl_async.blobs.protocol: bytes that are not a valid blob-path frame
    ├── BlobBusyError / BlobStoreFullError / UnknownBlobError (+KeyError)   fl_async.blobs.store
    └── (private) _SessionLost, _PayloadRefused (fl_async.supernode), _Retryable (fl_async.blobs.client)

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


_DEFAULT_PORTS = {"Driver": 9091, "Fleet": 9092}
_OTHER_API = {"Driver": "Fleet", "Fleet": "Driver"}


def _wrong_api_hint(api: str | None, address: str | None) -> str:
    """A hint for a call to a port that does not serve the API (e.g. a driver pointed at the Fleet API)."""
    if api not in _OTHER_API:
        return " (does this address serve the API of this call? Driver API: 9091 by default, Fleet API: 9092)"
    other = _OTHER_API[api]
    target = address or "this address"
    return f" (is {target} the {other} API? The {api} API listens on {_DEFAULT_PORTS[api]} by default)"


class TTLExpiredError(FlAsyncError, ValueError):
    """A message's time to live has run out (e.g. a reply created after its instruction expired).

    Also a ``ValueError``, the type Flower 1.9 used for invalid messages.
    """

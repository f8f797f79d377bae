"""Errors of the link state: each names the gRPC status the I/O layer answers with."""

from __future__ import annotations

from fl_async.errors import FlAsyncError

__all__ = [
    "AlreadyExistsError",
    "InvalidArgumentError",
    "LinkStateError",
    "NotFoundError",
    "PermissionDeniedError",
    "RunStoppedError",
    "UnauthenticatedError",
]


class LinkStateError(FlAsyncError):
    """A request the state refuses as a whole; ``status`` names the gRPC status to answer with."""

    status = "UNKNOWN"


class NotFoundError(LinkStateError):
    """The run does not exist."""

    status = "NOT_FOUND"


class UnauthenticatedError(LinkStateError):
    """Unknown node (never registered, offline or deleted) or wrong token."""

    status = "UNAUTHENTICATED"


class PermissionDeniedError(LinkStateError):
    """The node tried to act on something that is not its own."""

    status = "PERMISSION_DENIED"


class InvalidArgumentError(LinkStateError):
    """A request field is malformed."""

    status = "INVALID_ARGUMENT"


class AlreadyExistsError(LinkStateError):
    """A node with the same key is registered already (a second live session is refused)."""

    status = "ALREADY_EXISTS"


class RunStoppedError(LinkStateError):
    """The run was stopped by an operator (``StopRun``): its driver's calls are refused."""

    status = "FAILED_PRECONDITION"

"""Cancellation of one message's handling on a node, readable from the handler (``Context.cancelled``).

The node runtime gives every ClientApp call a :class:`CancelToken` in a context variable, so a handler reads the
flag of *its own* message even when several messages of the same run (sharing one :class:`Context`) are handled
at once, and a sync handler running in a worker thread reads it too (anyio copies the context into the thread).
The token is set when the SuperLink tells the node that the driver cancelled the instruction (or an operator
stopped its run); an ``async def`` handler is cancelled outright at the same moment.
"""

from __future__ import annotations

import contextvars
import threading

__all__ = ["CancelToken", "current_token"]


class CancelToken:
    """A thread-safe one-shot flag: set once the message being handled was cancelled."""

    __slots__ = ("_event",)

    def __init__(self) -> None:
        self._event = threading.Event()

    def cancel(self) -> None:
        """Mark the message cancelled (idempotent; any thread)."""
        self._event.set()

    @property
    def cancelled(self) -> bool:
        """Whether the message was cancelled."""
        return self._event.is_set()

    def wait(self, timeout: float | None = None) -> bool:
        """Block up to ``timeout`` seconds (``None``: forever) until cancelled; return whether it was.
        For sync handlers in worker threads only (it blocks the calling thread)."""
        return self._event.wait(timeout)


_NEVER = CancelToken()
_CURRENT: contextvars.ContextVar[CancelToken] = contextvars.ContextVar("fl_async_cancel_token", default=_NEVER)


def current_token() -> CancelToken:
    """The token of the message handled in the current context (a never-set token outside a handler)."""
    return _CURRENT.get()


def set_current(token: CancelToken) -> contextvars.Token[CancelToken]:
    """Make ``token`` the current one (the node runtime does this around each ClientApp call); undo with
    :func:`reset_current`."""
    return _CURRENT.set(token)


def reset_current(reset: contextvars.Token[CancelToken]) -> None:
    """Undo :func:`set_current`."""
    _CURRENT.reset(reset)

"""Running a sync callable off the event loop, in a daemon thread that can be abandoned.

Used for sync ClientApp handlers and mods (:mod:`fl_async.client`) and for a sync ServerApp main
(:mod:`fl_async.server.server_app`). anyio's ``to_thread`` pool uses non-daemon threads, so a handler that never
returns would keep the process alive after a graceful shutdown; here the thread is a daemon and cancelling the
awaiting task abandons it (its result is discarded), which keeps shutdown bounded.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import inspect
import threading
from collections.abc import Callable
from typing import Any, TypeVar

import anyio

T = TypeVar("T")

__all__ = ["is_async_callable", "run_sync_abandonable"]


def is_async_callable(fn: Callable[..., Any]) -> bool:
    """Whether calling ``fn`` returns an awaitable to run on the loop: an ``async def`` function, a partial of
    one, or an object whose class defines ``async def __call__`` (looked up on the type, as a call does, so a
    class is not taken for its instances)."""
    call = getattr(type(fn), "__call__", None)  # noqa: B004 - the type's __call__ is what a call runs, not callable()
    return inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(call)


def _settle(fut: asyncio.Future[Any], result: Any, exc: BaseException | None) -> None:
    if fut.done():  # the awaiting task was cancelled: the result is abandoned
        return
    if exc is not None:
        fut.set_exception(exc)
    else:
        fut.set_result(result)


async def run_sync_abandonable(
    fn: Callable[..., T], *args: Any, limiter: anyio.CapacityLimiter | None = None, name: str = "fl-async-handler"
) -> T:
    """Call ``fn(*args)`` in a new daemon thread and await its result.

    The thread runs in a copy of the caller's ``contextvars`` context. Cancelling the awaiting task
    returns at once and abandons the thread (it runs to completion; its outcome is dropped).

    Args:
        fn: a sync callable.
        *args: its positional arguments.
        limiter: bounds how many such threads run at once (``None`` = unbounded).
        name: the thread's name.

    Returns:
        What ``fn`` returned.

    Raises:
        BaseException: whatever ``fn`` raised.
    """
    if limiter is not None:
        async with limiter:
            return await _run(fn, args, name)
    return await _run(fn, args, name)


async def _run(fn: Callable[..., T], args: tuple[Any, ...], name: str) -> T:
    loop = asyncio.get_running_loop()
    fut: asyncio.Future[T] = loop.create_future()
    ctx = contextvars.copy_context()

    def target() -> None:
        result: Any = None
        exc: BaseException | None = None
        try:
            result = ctx.run(fn, *args)
        except BaseException as e:
            exc = e
        with contextlib.suppress(RuntimeError):  # loop closed: nobody is waiting any more
            loop.call_soon_threadsafe(_settle, fut, result, exc)

    threading.Thread(target=target, name=name, daemon=True).start()
    return await fut

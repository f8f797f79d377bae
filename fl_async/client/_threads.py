"""Running a sync callable off the event loop, in a daemon thread that can be abandoned.

Used for sync ClientApp handlers and mods. anyio's ``to_thread`` pool uses non-daemon threads, so a
handler that never returns would keep the process alive after a graceful shutdown; here the thread
is a daemon and cancelling the awaiting task abandons it (its result is discarded), which keeps
SuperNode shutdown bounded.
"""

from __future__ import annotations

import asyncio
import contextvars
import threading
from collections.abc import Callable
from typing import Any, TypeVar

import anyio

T = TypeVar("T")

__all__ = ["run_sync_abandonable"]


def _settle(fut: asyncio.Future[Any], result: Any, exc: BaseException | None) -> None:
    if fut.done():  # the awaiting task was cancelled: the result is abandoned
        return
    if exc is not None:
        fut.set_exception(exc)
    else:
        fut.set_result(result)


async def run_sync_abandonable(fn: Callable[..., T], *args: Any, limiter: anyio.CapacityLimiter | None = None) -> T:
    """Call ``fn(*args)`` in a new daemon thread and await its result.

    The thread runs in a copy of the caller's ``contextvars`` context. Cancelling the awaiting task
    returns at once and abandons the thread (it runs to completion; its outcome is dropped).

    Args:
        fn: a sync callable.
        *args: its positional arguments.
        limiter: bounds how many such threads run at once (``None`` = unbounded).

    Returns:
        What ``fn`` returned.

    Raises:
        BaseException: whatever ``fn`` raised.
    """
    if limiter is not None:
        async with limiter:
            return await _run(fn, args)
    return await _run(fn, args)


async def _run(fn: Callable[..., T], args: tuple[Any, ...]) -> T:
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
        try:
            loop.call_soon_threadsafe(_settle, fut, result, exc)
        except RuntimeError:  # loop closed: nobody is waiting any more
            pass

    threading.Thread(target=target, name="fl-async-handler", daemon=True).start()
    return await fut

"""``Driver``: the blocking facade over :class:`~fl_async.server.AsyncDriver`.

Each ``Driver`` owns one anyio blocking portal: a daemon thread running its own asyncio loop, in
which the :class:`AsyncDriver` (and so the grpclib channel, bound to the loop it was made in) lives. Every
method forwards to the AsyncDriver through that portal, so a ``Driver`` works from
plain scripts, from any thread (calls from several threads are serialised on the portal's loop), and
even from code running inside an event loop (Jupyter), where it blocks that loop while a call runs
but cannot deadlock; it warns there, because :class:`AsyncDriver` is the better fit.

This module holds no logic of its own: behaviour and docs are :class:`AsyncDriver`'s.
"""

from __future__ import annotations

import asyncio
import functools
import threading
import warnings
import weakref
from collections.abc import Awaitable, Callable, Iterable, Iterator
from typing import Any, Self, TypeVar, Unpack

from anyio.from_thread import BlockingPortal, start_blocking_portal

from fl_async._grpc import ChannelFactory
from fl_async._net import DEFAULT_DRIVER_TARGET
from fl_async.common.message import Message
from fl_async.common.records import RecordSet
from fl_async.common.run import Run
from fl_async.server._base import DEFAULT_PULL_TIMEOUT, ConnectOptions, DriverState
from fl_async.server.async_driver import AsyncDriver, ReplyStream

__all__ = ["Driver", "SyncReplyStream"]

T = TypeVar("T")

THREAD_NAME = "fl-async-driver"
"""Name of each Driver's portal thread."""


def _warn_if_in_event_loop() -> None:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return
    warnings.warn(
        "fl_async.server.Driver was created inside a running event loop: every call will block that "
        "loop until the link answers. From async code use fl_async.server.AsyncDriver (await its methods).",
        RuntimeWarning,
        stacklevel=3,
    )


class _Closer:
    """Closes an AsyncDriver in its portal and stops the portal thread; holds no reference to the Driver."""

    def __init__(self, portal_cm: Any, portal: BlockingPortal, inner: AsyncDriver, thread_id: int) -> None:
        self._portal_cm = portal_cm
        self._portal = portal
        self._inner = inner
        self._thread_id = thread_id

    def __call__(self) -> None:
        if threading.get_ident() == self._thread_id:
            # Garbage-collected inside the portal's own loop thread, which cannot wait for itself:
            # close the channel synchronously and let a helper thread stop the portal.
            if self._inner._transport is not None:
                self._inner._transport.close()
            threading.Thread(target=self._stop, name=f"{THREAD_NAME}-closer", daemon=True).start()
            return
        try:
            self._portal.call(self._inner.aclose)
        except RuntimeError:  # portal already stopped
            pass
        finally:
            self._stop()

    def _stop(self) -> None:
        if self._portal_cm is not None:  # a borrowed portal stays open
            self._portal_cm.__exit__(None, None, None)


class Driver:
    """Blocking client of the SuperLink's Driver API; same arguments and methods as :class:`AsyncDriver`.

    Connects (creating the run on the link) when constructed::

        with Driver("127.0.0.1:9091", insecure=True) as driver:
            ids = driver.push_messages(msgs)
            replies = driver.pull_messages(ids)   # waits up to 3 s for all replies

    Always close it (``with`` or :meth:`close`): that stops its portal thread. A ``weakref.finalize``
    closes a forgotten Driver when it is garbage-collected or at interpreter exit.

    Args:
        superlink, insecure, root_certificates, run_config, fab_id, fab_version, call_timeout, channel_factory:
            as :class:`AsyncDriver`.
        portal: run in this anyio blocking portal's event loop instead of a thread of the driver's own (the
            portal stays open when the driver closes). :mod:`fl_async.testing` passes the in-memory link's.

    Raises:
        ValueError, TypeError: bad arguments (before any thread is started).
        LinkConnectionError, LinkTimeoutError, RefusedByLinkError: creating the run failed.

    Warns:
        RuntimeWarning: created in a thread whose event loop is running (use AsyncDriver there).
    """

    def __init__(
        self,
        superlink: str = DEFAULT_DRIVER_TARGET,
        *,
        channel_factory: ChannelFactory | None = None,
        portal: BlockingPortal | None = None,
        **options: Unpack[ConnectOptions],
    ) -> None:
        inner = AsyncDriver(superlink, channel_factory=channel_factory, **options)
        _warn_if_in_event_loop()
        portal_cm: Any = None
        if portal is None:
            portal_cm = start_blocking_portal(name=THREAD_NAME)
            portal = portal_cm.__enter__()
        try:
            thread_id = portal.call(threading.get_ident)
            closer = _Closer(portal_cm, portal, inner, thread_id)
        except BaseException:
            if portal_cm is not None:
                portal_cm.__exit__(None, None, None)
            raise
        self._inner = inner
        self._portal = portal
        self._finalizer = weakref.finalize(self, closer)
        try:
            portal.call(inner.connect)
        except BaseException:
            self._finalizer()
            raise

    # ----------------------------------------------------------------------------------------
    # lifecycle

    def _call(self, func: Callable[..., Awaitable[T]], *args: Any, **kwargs: Any) -> T:
        if not self._finalizer.alive:
            raise RuntimeError("this driver is closed; create a new one")
        if kwargs:
            func = functools.partial(func, **kwargs)
        return self._portal.call(func, *args)

    def close(self) -> None:
        """Close the connection and stop the portal thread (no thread is left behind). Idempotent."""
        self._finalizer()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return repr(self._inner).replace("AsyncDriver", "Driver", 1)

    @property
    def superlink(self) -> str:
        """The ``HOST:PORT`` this driver talks to."""
        return self._inner.superlink

    @property
    def state(self) -> DriverState:
        """Where the driver is in its lifecycle."""
        return self._inner.state

    @property
    def run(self) -> Run:
        """The run this driver created (see :attr:`AsyncDriver.run`)."""
        return self._inner.run

    @property
    def run_id(self) -> int:
        """Id of the run this driver created."""
        return self._inner.run_id

    # ----------------------------------------------------------------------------------------
    # Driver API (see AsyncDriver for semantics)

    def create_message(
        self,
        content: RecordSet,
        message_type: str,
        dst_node_id: int,
        group_id: str,
        ttl: float | None = None,
    ) -> Message:
        """Build an instruction for one node; see :meth:`AsyncDriver.create_message` (no I/O)."""
        return self._inner.create_message(content, message_type, dst_node_id, group_id, ttl)

    def get_run(self) -> Run:
        """Fetch this run's description from the link; see :meth:`AsyncDriver.get_run`."""
        return self._call(self._inner.get_run)

    def get_node_ids(self) -> list[int]:
        """Ids of the nodes online now; see :meth:`AsyncDriver.get_node_ids`."""
        return self._call(self._inner.get_node_ids)

    def wait_for_nodes(self, min_nodes: int, timeout: float | None = None) -> list[int]:
        """Block until at least ``min_nodes`` nodes are online; see :meth:`AsyncDriver.wait_for_nodes`."""
        return self._call(self._inner.wait_for_nodes, min_nodes, timeout)

    def push_messages(self, messages: Iterable[Message]) -> list[str]:
        """Queue messages on the link; see :meth:`AsyncDriver.push_messages`."""
        return self._call(self._inner.push_messages, messages)

    def pull_messages(
        self, message_ids: Iterable[str], timeout: float = DEFAULT_PULL_TIMEOUT, *, max_messages: int | None = None
    ) -> list[Message]:
        """Collect replies, waiting up to ``timeout`` seconds (default 3) for all outstanding ones (at most
        ``max_messages`` of them); the list holds the whole batch; see :meth:`AsyncDriver.pull_messages`."""
        return self._call(self._inner.pull_messages, message_ids, timeout, max_messages=max_messages)

    def cancel(self, message_ids: Iterable[str]) -> list[str]:
        """Cancel instructions without a reply yet; see :meth:`AsyncDriver.cancel`. Returns the ids cancelled."""
        result: list[str] = self._call(self._inner.cancel, message_ids)
        return result

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None) -> list[Message]:
        """Push and wait for the replies; returns all of them at once (memory: every reply, arrays downloaded;
        use :meth:`receive` for large models); see :meth:`AsyncDriver.send_and_receive`."""
        return self._call(self._inner.send_and_receive, messages, timeout=timeout)

    def end_run(self) -> list[Message]:
        """End this run on the link; see :meth:`AsyncDriver.end_run`."""
        return self._call(self._inner.end_run)

    def receive(self, message_ids: Iterable[str], *, timeout: float | None = None) -> SyncReplyStream:
        """Iterate over replies as they arrive; see :meth:`AsyncDriver.receive`.

        Usage: ``with driver.receive(ids, timeout=60) as replies: for reply in replies: ...``
        """
        stream = self._call(_make_stream, self._inner, list(message_ids), timeout)
        return SyncReplyStream(self, stream)


async def _make_stream(inner: AsyncDriver, ids: list[str], timeout: float | None) -> ReplyStream:
    stream = inner.receive(ids, timeout=timeout)
    await stream.__aenter__()  # start the stream (and its timeout) now, in the portal's loop
    return stream


class SyncReplyStream:
    """Blocking iterator over replies as they arrive; returned by :meth:`Driver.receive`.

    Each reply's external arrays are downloaded when it is about to be returned (memory stays a few replies,
    see :meth:`AsyncDriver.receive`). Also a context manager; :meth:`close` ends the stream (replies pulled but
    not read stay with the driver).
    """

    def __init__(self, driver: Driver, stream: ReplyStream) -> None:
        self._driver = driver
        self._stream = stream

    @property
    def outstanding(self) -> list[str]:
        """Ids whose reply has not been received by this stream yet."""
        return self._stream.outstanding

    def __iter__(self) -> Iterator[Message]:
        return self

    def __next__(self) -> Message:
        reply = self._driver._call(self._stream.next_or_none)
        if reply is None:
            raise StopIteration
        return reply

    def close(self) -> None:
        """End the stream. Idempotent; a no-op once the driver is closed."""
        if self._driver._finalizer.alive:
            self._driver._call(self._stream.aclose)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

"""``ClientApp``: the user code a SuperNode runs for every instruction (as Flower 1.9's ``ClientApp``).

Handlers are registered per message type with ``@app.train()``, ``@app.evaluate()`` and
``@app.query()``; each takes ``(message, context)`` and returns the reply message. Handlers and mods
may be plain functions or ``async def`` coroutine functions:

* sync code runs in a worker thread (a daemon thread, see :mod:`fl_async._threads`), so the
  node's event loop keeps heartbeating and polling while a long training step runs;
* async code is awaited on the event loop and must not block it.

Mods wrap every handler, the first mod in the list outermost (as Flower 1.9). A sync mod gets a sync
``call_next(message, context) -> Message``; an async mod gets an async one (``await call_next(...)``).
Sync and async layers may be mixed; consecutive sync layers run together in one thread.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import anyio.from_thread
import anyio.lowlevel

from fl_async._threads import is_async_callable, run_sync_abandonable
from fl_async.common.context import Context
from fl_async.common.message import Message, MessageType

__all__ = ["ClientApp", "ClientAppCallable", "Mod"]

logger = logging.getLogger("fl_async.client")

ClientAppCallable = Callable[[Message, Context], Message | Awaitable[Message]]
"""A handler: ``fn(message, context) -> Message`` (sync) or ``async def fn(message, context) -> Message``."""

Mod = Callable[[Message, Context, Callable[..., Any]], Message | Awaitable[Message]]
"""A mod: ``mod(message, context, call_next) -> Message`` (sync) or its ``async def`` form."""

_KNOWN_TYPES = (MessageType.TRAIN, MessageType.EVALUATE, MessageType.QUERY)


class ClientApp:
    """A federated client application: message handlers plus mods (as Flower 1.9's ``ClientApp``).

    Example::

        app = ClientApp()

        @app.train()
        def train(message: Message, context: Context) -> Message:
            ...
            return message.create_reply(RecordSet(...))

    Args:
        mods: mods applied to every handler, first in the list outermost. Each is
            ``mod(message, context, call_next) -> Message``, sync or ``async def``.

    Raises:
        TypeError: ``mods`` is not a list/tuple of callables.

    Unlike Flower 1.9 there is no legacy ``client_fn``/``Client`` mode.
    """

    def __init__(self, mods: list[Mod] | tuple[Mod, ...] | None = None) -> None:
        if mods is None:
            mods = []
        if not isinstance(mods, (list, tuple)):
            raise TypeError(f"mods must be a list of callables, got {type(mods).__name__}")
        for i, mod in enumerate(mods):
            if not callable(mod):
                raise TypeError(f"mods[{i}] is not callable: {mod!r}")
        self._mods: list[Mod] = list(mods)
        self._handlers: dict[str, ClientAppCallable] = {}
        self._async_of: dict[int, tuple[Callable[..., Any], bool]] = {}  # id -> (callable, is async)

    # ------------------------------------------------------------------ registration

    def _register(self, message_type: str, fn: ClientAppCallable | None) -> Any:
        def decorator(handler: ClientAppCallable) -> ClientAppCallable:
            if not callable(handler):
                raise TypeError(f"@app.{message_type}() must decorate a callable, got {type(handler).__name__}")
            if message_type in self._handlers:
                logger.warning("ClientApp: replacing the registered `%s` handler", message_type)
            self._handlers[message_type] = handler
            return handler

        if fn is not None:  # used as @app.train without parentheses
            return decorator(fn)
        return decorator

    def train(self, fn: ClientAppCallable | None = None) -> Any:
        """Register the handler of ``"train"`` messages: ``@app.train()`` (``@app.train`` works too).

        Returns:
            The decorator, which returns the handler unchanged (as Flower 1.9).

        Raises:
            TypeError: the decorated object is not callable.
        """
        return self._register(MessageType.TRAIN, fn)

    def evaluate(self, fn: ClientAppCallable | None = None) -> Any:
        """Register the handler of ``"evaluate"`` messages; see :meth:`train`."""
        return self._register(MessageType.EVALUATE, fn)

    def query(self, fn: ClientAppCallable | None = None) -> Any:
        """Register the handler of ``"query"`` messages; see :meth:`train`."""
        return self._register(MessageType.QUERY, fn)

    @property
    def mods(self) -> tuple[Mod, ...]:
        """The mods, first outermost (read-only)."""
        return tuple(self._mods)

    @property
    def message_types(self) -> tuple[str, ...]:
        """Message types that have a registered handler."""
        return tuple(self._handlers)

    @property
    def max_thread_depth(self) -> int:
        """Upper bound on worker threads one call may hold at once (for sizing thread limiters)."""
        return len(self._mods) + 1

    # ------------------------------------------------------------------ dispatch

    def _is_async(self, fn: Callable[..., Any]) -> bool:
        """:func:`fl_async._threads.is_async_callable`, remembered per callable (handlers and mods do not change
        kind)."""
        known = self._async_of.get(id(fn))
        if known is not None and known[0] is fn:
            return known[1]
        result = is_async_callable(fn)
        self._async_of[id(fn)] = (fn, result)
        return result

    def _handler_for(self, message_type: str) -> ClientAppCallable:
        handler = self._handlers.get(message_type)
        if handler is not None:
            return handler
        if message_type in _KNOWN_TYPES:
            raise ValueError(f"No `{message_type}` function registered")  # Flower 1.9's text
        raise ValueError(f"Unknown message_type: {message_type}")

    async def acall(self, message: Message, context: Context, *, limiter: anyio.CapacityLimiter | None = None) -> Any:
        """Run the handler for ``message`` wrapped in the mods; the async entry point used by SuperNodes.

        Sync layers run in worker threads (bounded by ``limiter`` when given), async layers on the
        running event loop. Cancelling the call abandons any worker thread it started.

        Args:
            message: the instruction; dispatched on ``message.metadata.message_type``.
            context: the run's context; handlers may change ``context.state``.
            limiter: bounds worker threads (``None`` = unbounded).

        Returns:
            Whatever the outermost layer returned; normally the reply :class:`Message` (the SuperNode
            checks it, see :func:`fl_async.supernode.check_reply`).

        Raises:
            ValueError: no handler is registered for the message type, or the type is unknown (as
                Flower 1.9: ``"No `train` function registered"``, ``"Unknown message_type: x"``).
            Exception: whatever a handler or mod raised.
        """
        handler = self._handler_for(message.metadata.message_type)
        if not self._mods:  # the common case: no layers to compose
            if self._is_async(handler):
                result = await handler(message, context)  # type: ignore[misc]
            else:
                result = await run_sync_abandonable(handler, message, context, limiter=limiter)
            if inspect.isawaitable(result):  # a sync-looking callable that returned a coroutine
                result = await result
            return result
        token = anyio.lowlevel.current_token()

        async def to_thread(fn: Callable[..., Any], *args: Any) -> Any:
            return await run_sync_abandonable(fn, *args, limiter=limiter)

        sync_fn: Callable[..., Any] | None = None
        async_fn: Callable[..., Awaitable[Any]] | None = None
        if self._is_async(handler):
            async_fn = handler  # type: ignore[assignment]
        else:
            sync_fn = handler
        for mod in reversed(self._mods):
            if self._is_async(mod):
                if sync_fn is not None:
                    inner_sync = sync_fn

                    async def inner(m: Message, c: Context, _fn: Callable[..., Any] = inner_sync) -> Any:
                        return await to_thread(_fn, m, c)

                else:
                    assert async_fn is not None
                    inner = async_fn  # type: ignore[assignment]

                async def layer(m: Message, c: Context, _mod: Mod = mod, _next: Any = inner) -> Any:
                    return await _mod(m, c, _next)  # type: ignore[misc]

                async_fn, sync_fn = layer, None
            elif sync_fn is not None:
                inner_sync = sync_fn

                def sync_layer(m: Message, c: Context, _mod: Mod = mod, _next: Any = inner_sync) -> Any:
                    return _mod(m, c, _next)

                sync_fn = sync_layer
            else:
                assert async_fn is not None
                inner_async = async_fn

                def bridge(m: Message, c: Context, _next: Any = inner_async) -> Any:
                    return anyio.from_thread.run(_next, m, c, token=token)

                async def bridged(m: Message, c: Context, _mod: Mod = mod, _bridge: Any = bridge) -> Any:
                    return await to_thread(_mod, m, c, _bridge)

                async_fn = bridged
        if sync_fn is not None:
            result = await to_thread(sync_fn, message, context)
        else:
            assert async_fn is not None
            result = await async_fn(message, context)
        if inspect.isawaitable(result):  # a sync-looking callable that returned a coroutine
            result = await result
        return result

    def __call__(self, message: Message, context: Context) -> Any:
        """Run the app synchronously (as Flower 1.9's ``app(message=..., context=...)``).

        Outside an event loop this runs :meth:`acall` in a fresh loop; inside one, ``await app.acall``.

        Raises:
            RuntimeError: called from a thread that runs an event loop.
            ValueError, Exception: as :meth:`acall`.
        """
        try:
            import asyncio

            asyncio.get_running_loop()
        except RuntimeError:
            return anyio.run(self.acall, message, context)
        raise RuntimeError("ClientApp called synchronously inside an event loop; use `await app.acall(...)`")

    def __repr__(self) -> str:
        return f"ClientApp(handlers={list(self._handlers)}, mods={len(self._mods)})"

"""``ClientApp``: the user code a SuperNode runs for every instruction (as Flower 1.9's ``ClientApp``).

Handlers are registered per message type with ``@app.train()``, ``@app.evaluate()`` and
``@app.query()``; each takes ``(message, context)`` and returns the reply message. As in newest Flower,
a handler may be registered for a named action: ``@app.train("finetune")`` handles message type
``"train.finetune"`` (``"train"`` is the action ``"default"``), and may carry its own mods
(``@app.train(mods=[...])``, applied inside the app's mods). Handlers and mods
may be plain functions or ``async def`` coroutine functions:

* sync code runs in a worker thread (a daemon thread, see :mod:`fl_async.client._threads`), so the
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

from fl_async.client._threads import run_sync_abandonable
from fl_async.common.context import Context
from fl_async.common.errors import UnsupportedFeatureError
from fl_async.common.message import Message, MessageType

__all__ = ["ClientApp", "ClientAppCallable", "Mod"]

logger = logging.getLogger("fl_async.client")

ClientAppCallable = Callable[[Message, Context], Message | Awaitable[Message]]
"""A handler: ``fn(message, context) -> Message`` (sync) or ``async def fn(message, context) -> Message``."""

Mod = Callable[[Message, Context, Callable[..., Any]], Message | Awaitable[Message]]
"""A mod: ``mod(message, context, call_next) -> Message`` (sync) or its ``async def`` form."""

_KNOWN_TYPES = (MessageType.TRAIN, MessageType.EVALUATE, MessageType.QUERY)
DEFAULT_ACTION = "default"
"""The action of a plain ``"train"`` / ``"evaluate"`` / ``"query"`` message (as newest Flower)."""

_HANDLER_STYLE = """fl-async's ClientApp has no client_fn / NumPyClient mode; register message handlers instead:

    app = ClientApp()

    @app.train()
    def train(msg: Message, context: Context) -> Message:
        arrays = msg.content["arrays"]            # what your NumPyClient.fit got as parameters
        ...                                        # train, as in fit()
        return Message(RecordDict({"arrays": ArrayRecord(new_ndarrays),
                                   "metrics": MetricRecord({"num-examples": n})}), reply_to=msg)

(@app.evaluate() likewise replaces evaluate(); see README "Coming from Flower")."""


def _message_type(category: str, action: str) -> str:
    return category if action == DEFAULT_ACTION else f"{category}.{action}"


def _is_async(fn: Callable[..., Any]) -> bool:
    if inspect.iscoroutinefunction(fn):
        return True
    call = getattr(fn, "__call__", None)  # noqa: B004 - callable objects with an async __call__
    return call is not None and inspect.iscoroutinefunction(call)


class ClientApp:
    """A federated client application: message handlers plus mods (as Flower 1.9's ``ClientApp``).

    Example::

        app = ClientApp()

        @app.train()
        def train(message: Message, context: Context) -> Message:
            ...
            return message.create_reply(RecordSet(...))

    Args:
        client_fn: accepted only to refuse it with a clear error (newest Flower's first argument).
        mods: mods applied to every handler, first in the list outermost. Each is
            ``mod(message, context, call_next) -> Message``, sync or ``async def``.

    Raises:
        TypeError: ``mods`` is not a list/tuple of callables.

    Raises:
        UnsupportedFeatureError: ``client_fn`` was given (a ``TypeError``): there is no legacy
            ``client_fn``/``NumPyClient`` mode; the message shows the handler style to use instead.
    """

    def __init__(
        self,
        client_fn: Any = None,
        mods: list[Mod] | tuple[Mod, ...] | None = None,
    ) -> None:
        if isinstance(client_fn, (list, tuple)) and mods is None:  # fl-async's ClientApp([mod, ...])
            client_fn, mods = None, client_fn
        if client_fn is not None:
            raise UnsupportedFeatureError(_HANDLER_STYLE)
        if mods is None:
            mods = []
        if not isinstance(mods, (list, tuple)):
            raise TypeError(f"mods must be a list of callables, got {type(mods).__name__}")
        for i, mod in enumerate(mods):
            if not callable(mod):
                raise TypeError(f"mods[{i}] is not callable: {mod!r}")
        self._mods: list[Mod] = list(mods)
        self._handlers: dict[str, ClientAppCallable] = {}
        self._handler_mods: dict[str, list[Mod]] = {}
        self._async_of: dict[int, tuple[Callable[..., Any], bool]] = {}  # id -> (callable, is async)

    # ------------------------------------------------------------------ registration

    def _register(self, category: str, action: Any, mods: list[Mod] | None) -> Any:
        fn: ClientAppCallable | None = None
        if callable(action):  # used as @app.train without parentheses
            fn, action = action, DEFAULT_ACTION
        if not isinstance(action, str) or not action.isidentifier():
            raise ValueError(
                f"Cannot register {category} function with name {action!r}: the name must be a Python identifier"
            )
        if mods is not None and (not isinstance(mods, (list, tuple)) or not all(callable(m) for m in mods)):
            raise TypeError(f"mods of @app.{category}() must be a list of callables, got {mods!r}")
        message_type = _message_type(category, action)

        def decorator(handler: ClientAppCallable) -> ClientAppCallable:
            if not callable(handler):
                raise TypeError(f"@app.{category}() must decorate a callable, got {type(handler).__name__}")
            if message_type in self._handlers:
                logger.warning("ClientApp: replacing the registered `%s` handler", message_type)
            self._handlers[message_type] = handler
            self._handler_mods[message_type] = list(mods or [])
            return handler

        if fn is not None:
            return decorator(fn)
        return decorator

    def train(self, action: Any = DEFAULT_ACTION, *, mods: list[Mod] | None = None) -> Any:
        """Register the handler of ``"train"`` messages: ``@app.train()`` (``@app.train`` works too).

        Args:
            action: the action name (newest Flower): ``@app.train("finetune")`` handles message type
                ``"train.finetune"``; the default action handles ``"train"`` (and ``"train.default"``).
            mods: mods for this handler only, applied inside the app's mods (as newest Flower).

        Returns:
            The decorator, which returns the handler unchanged (as Flower 1.9).

        Raises:
            TypeError: the decorated object is not callable, or ``mods`` is not a list of callables.
            ValueError: ``action`` is not a Python identifier.
        """
        return self._register(MessageType.TRAIN, action, mods)

    def evaluate(self, action: Any = DEFAULT_ACTION, *, mods: list[Mod] | None = None) -> Any:
        """Register the handler of ``"evaluate"`` messages (``"evaluate.<action>"``); see :meth:`train`."""
        return self._register(MessageType.EVALUATE, action, mods)

    def query(self, action: Any = DEFAULT_ACTION, *, mods: list[Mod] | None = None) -> Any:
        """Register the handler of ``"query"`` messages (``"query.<action>"``); see :meth:`train`."""
        return self._register(MessageType.QUERY, action, mods)

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
        return len(self._mods) + max((len(m) for m in self._handler_mods.values()), default=0) + 1

    # ------------------------------------------------------------------ dispatch

    def _is_async(self, fn: Callable[..., Any]) -> bool:
        """:func:`_is_async`, remembered per callable (handlers and mods do not change kind)."""
        known = self._async_of.get(id(fn))
        if known is not None and known[0] is fn:
            return known[1]
        result = _is_async(fn)
        self._async_of[id(fn)] = (fn, result)
        return result

    def _handler_for(self, message_type: str) -> tuple[ClientAppCallable, list[Mod]]:
        if message_type.endswith("." + DEFAULT_ACTION):
            message_type = message_type[: -len(DEFAULT_ACTION) - 1]
        handler = self._handlers.get(message_type)
        if handler is not None:
            return handler, self._handler_mods.get(message_type, [])
        category, _, action = message_type.partition(".")
        if message_type in _KNOWN_TYPES:
            raise ValueError(f"No `{message_type}` function registered")  # Flower 1.9's text
        if category in _KNOWN_TYPES and action.isidentifier():
            raise ValueError(f"No {category} function registered with name '{action}'")  # newest Flower's text
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
        handler, handler_mods = self._handler_for(message.metadata.message_type)
        mods = self._mods + handler_mods if handler_mods else self._mods
        if not mods:  # the common case: no layers to compose
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
        for mod in reversed(mods):
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

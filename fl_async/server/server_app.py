"""``ServerApp`` and running one: ``run_server_app`` (blocking) and ``async_run_server_app``.

As Flower 1.9's ``ServerApp`` with ``@app.main()``, except that ``main`` may also be an
``async def``: a sync ``main(driver, context)`` gets a blocking :class:`~fl_async.server.Driver`, an
async one gets an :class:`~fl_async.server.AsyncDriver`. Flower's legacy strategy mode
(``ServerApp(strategy=...)``, ``server_fn=...``) is refused with a clear error: the strategies of
:mod:`fl_async.serverapp.strategy` run inside ``main`` (``FedAvg(...).start(grid=..., ...)``), as in newest Flower.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import inspect
import logging
import threading
from collections.abc import Callable, Mapping
from typing import Any, TypeVar, Unpack

import anyio
import anyio.to_thread

from fl_async._net import DEFAULT_DRIVER_TARGET
from fl_async._threads import is_async_callable, run_sync_abandonable
from fl_async.common.context import Context
from fl_async.errors import FlAsyncError, NoMainFunctionError, UnsupportedFeatureError
from fl_async.server._base import ConnectOptions
from fl_async.server.async_driver import AsyncDriver
from fl_async.server.driver import Driver

__all__ = ["ServerApp", "async_run_server_app", "raised_by_app", "run_server_app"]

logger = logging.getLogger("fl_async.server")

F = TypeVar("F", bound=Callable[..., Any])

END_RUN_TIMEOUT = 10.0
"""Seconds the end-of-app ``EndRun`` call may take (it is made even when the app was cancelled)."""

_MAIN_STYLE = """fl-async's ServerApp has no legacy strategy/server_fn mode; run the strategy in a main function:

    from fl_async.serverapp import Grid, ServerApp
    from fl_async.serverapp.strategy import FedAvg

    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        strategy = FedAvg(fraction_train=1.0, min_available_nodes=2)
        result = strategy.start(grid=grid, initial_arrays=ArrayRecord(initial_ndarrays), num_rounds=3)

(see README "Coming from Flower")."""


class ServerApp:
    """A server application: one ``main(driver, context)`` function that drives a run.

    Usage (the guide's)::

        app = ServerApp()

        @app.main()
        def main(driver: Driver, context: Context) -> None:
            ...

    or ``async def main(driver: AsyncDriver, context: Context)``. Run it with ``fl-async server-app
    module:app --superlink HOST:PORT --insecure``, :func:`run_server_app` or :func:`async_run_server_app`.

    Args:
        server, config, strategy, client_manager, server_fn: Flower's legacy (compat) mode; accepted only
            to refuse it.

    Raises:
        UnsupportedFeatureError: any legacy argument was given (a ``TypeError``); the message shows the
            ``@app.main()`` + strategy ``start(...)`` style to use instead.
    """

    def __init__(
        self,
        server: Any = None,
        config: Any = None,
        strategy: Any = None,
        client_manager: Any = None,
        server_fn: Any = None,
    ) -> None:
        if any(v is not None for v in (server, config, strategy, client_manager, server_fn)):
            raise UnsupportedFeatureError(_MAIN_STYLE)
        self._main: Callable[..., Any] | None = None

    def main(self) -> Callable[[F], F]:
        """Return a decorator registering the app's ``main(driver, context)`` (as Flower 1.9's ``@app.main()``).

        Raises:
            TypeError: the decorated object is not callable or cannot take ``(driver, context)``.
            ValueError: a main function is already registered on this app.
        """

        def register(fn: F) -> F:
            if not callable(fn):
                raise TypeError(f"@app.main() must decorate a function, got {type(fn).__name__}")
            try:
                inspect.signature(fn).bind(None, None)
            except TypeError:
                raise TypeError(
                    f"main function {getattr(fn, '__qualname__', fn)!r} must accept (driver, context)"
                ) from None
            except ValueError:  # no signature available (builtins): trust the caller
                pass
            if self._main is not None:
                raise ValueError("this ServerApp already has a main function; register only one")
            self._main = fn
            return fn

        return register

    @property
    def main_function(self) -> Callable[..., Any] | None:
        """The registered main function, or ``None``."""
        return self._main

    @property
    def is_async(self) -> bool:
        """Whether the registered main is an ``async def`` (gets an :class:`AsyncDriver`).

        Raises:
            NoMainFunctionError: no main function is registered (a ``ValueError``).
        """
        return is_async_callable(self._require_main())

    def _require_main(self) -> Callable[..., Any]:
        if self._main is None:
            raise NoMainFunctionError("this ServerApp has no main function: decorate one with @app.main()")
        return self._main

    def __call__(self, driver: Driver | AsyncDriver, context: Context) -> Any:
        """Call the registered main with ``driver`` and ``context``; returns what it returns (a
        coroutine for an async main).

        Raises:
            NoMainFunctionError: no main function is registered (a ``ValueError``).
            TypeError: the driver kind does not match the main (sync main needs a ``Driver``, async
                main an ``AsyncDriver``).
        """
        main = self._require_main()
        if is_async_callable(main) and not isinstance(driver, AsyncDriver):
            raise TypeError("an async main needs an AsyncDriver (use async_run_server_app)")
        if not is_async_callable(main) and isinstance(driver, AsyncDriver):
            raise TypeError("a sync main needs a Driver, not an AsyncDriver (use run_server_app)")
        return main(driver, context)


def _check_app(app: Any) -> ServerApp:
    if not isinstance(app, ServerApp):
        raise TypeError(f"expected a ServerApp, got {type(app).__name__}")
    app._require_main()
    return app


def _context(run_config: Mapping[str, Any], run_id: int = 0) -> Context:
    return Context(node_id=0, run_config=dict(run_config), run_id=run_id)


def _log_end_failure(run_id: int, exc: BaseException) -> None:
    logger.warning(
        "could not end run %d on the link (%s); the link ends it once this driver's connection is gone "
        "(its --driver-disconnect-grace) or after --run-idle-ttl",
        run_id,
        exc,
    )


def _end_run_sync(driver: Driver) -> None:
    """End the run of a sync main's driver once the main is done (failures logged: the link ends it later)."""
    try:
        driver.end_run()
    except (FlAsyncError, RuntimeError) as exc:
        _log_end_failure(driver.run_id, exc)


async def _end_run(driver: AsyncDriver) -> None:
    """End the run of an async main's driver once the main is done, even if it was cancelled (bounded by
    :data:`END_RUN_TIMEOUT`; failures logged: the link ends it later)."""
    with anyio.CancelScope(shield=True), anyio.move_on_after(END_RUN_TIMEOUT):
        try:
            await driver.end_run()
        except (FlAsyncError, RuntimeError) as exc:
            _log_end_failure(driver.run_id, exc)


def run_server_app(
    app: ServerApp,
    superlink: str = DEFAULT_DRIVER_TARGET,
    **options: Unpack[ConnectOptions],
) -> Any:
    """Run a server app against a link, blocking until its main returns (used by ``fl-async server-app``).

    Creates a run on the link, calls ``main(driver, Context(run_config=...))`` with a
    :class:`Driver` (sync main) or, in a fresh event loop, an :class:`AsyncDriver` (async main),
    then ends the run on the link (``EndRun``: its queues, replies and blobs are freed; a failure to do so is
    logged) and closes the driver, whatever happens.

    Args:
        app: the ServerApp.
        superlink: the link's Driver API address, as :class:`AsyncDriver`.
        options: ``insecure``, ``root_certificates``, ``run_config``, ``fab_id``, ``fab_version``,
            ``call_timeout``: as :class:`AsyncDriver` (:class:`~fl_async.server._base.ConnectOptions`).

    Returns:
        What the main function returned.

    Raises:
        TypeError: ``app`` is not a ServerApp.
        NoMainFunctionError: no main registered (an ``AppLoadError`` and ``ValueError``), checked before
            connecting.
        ValueError: bad connection arguments.
        RuntimeError: the main is async and this thread already runs an event loop (use
            :func:`async_run_server_app` there).
        FlAsyncError: a subclass, if talking to the link fails; anything the main raises.
    """
    main = _check_app(app)._require_main()
    if is_async_callable(main):
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            pass
        else:
            raise RuntimeError(
                "run_server_app() cannot run an async main inside a running event loop; "
                "use `await async_run_server_app(...)`"
            )
        return anyio.run(functools.partial(async_run_server_app, app, superlink, **options))
    with Driver(superlink, **options) as driver:
        try:
            return app(driver, _context(driver.run.run_config, driver.run_id))
        finally:
            _end_run_sync(driver)


async def async_run_server_app(
    app: ServerApp,
    superlink: str = DEFAULT_DRIVER_TARGET,
    **options: Unpack[ConnectOptions],
) -> Any:
    """Run a server app from async code (used by the embedded ``fl-async run``).

    An async main is awaited in the current task with an :class:`AsyncDriver`. A sync main runs in a
    daemon thread with its own :class:`Driver` (whose portal thread owns the connection), so it never
    blocks this event loop. If this coroutine is cancelled while a sync main runs, the Driver is
    closed: the main's next driver call raises and its thread ends on its own (Python threads cannot
    be interrupted).

    Arguments, return value and errors: as :func:`run_server_app` (without the RuntimeError).
    """
    main = _check_app(app)._require_main()
    if is_async_callable(main):
        async with AsyncDriver(superlink, **options) as driver:
            try:
                result = await app(driver, _context(driver.run.run_config, driver.run_id))
            except Exception as exc:
                _raised_by_app(exc, driver.run_id)
                raise
            finally:
                await _end_run(driver)
            logger.info("run %d ended: the server app returned", driver.run_id, extra={"event": "run_ended"})
            return result

    holder: list[Driver] = []
    cancelled = threading.Event()

    def run_sync_main() -> Any:
        with Driver(superlink, **options) as driver:
            holder.append(driver)
            if cancelled.is_set():
                return None
            try:
                result = app(driver, _context(driver.run.run_config, driver.run_id))
            except Exception as exc:
                _raised_by_app(exc, driver.run_id)
                raise
            finally:
                if not cancelled.is_set():
                    _end_run_sync(driver)
            logger.info("run %d ended: the server app returned", driver.run_id, extra={"event": "run_ended"})
            return result

    try:
        return await run_sync_abandonable(run_sync_main, name="fl-async-server-app")
    except anyio.get_cancelled_exc_class():
        cancelled.set()
        if holder:
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(holder[0].close)
        raise


_APP_RAISED = "_fl_async_raised_by_app"


def _raised_by_app(exc: BaseException, run_id: int) -> None:
    """Mark ``exc`` as raised out of the server app's main (see :func:`raised_by_app`) and log the run's end."""
    with contextlib.suppress(Exception):  # a type refusing attributes is then reported as the framework's
        setattr(exc, _APP_RAISED, True)
    logger.info("run %d ended: the server app raised %s", run_id, type(exc).__name__, extra={"event": "run_ended"})


def raised_by_app(exc: BaseException) -> bool:
    """Whether ``exc`` came out of a server app's main function (run by :func:`async_run_server_app`), as
    opposed to a failure of fl-async before or after it (connecting, creating the run). An exception the
    driver raised inside the main and the main let through also counts as the app's."""
    return bool(getattr(exc, _APP_RAISED, False))

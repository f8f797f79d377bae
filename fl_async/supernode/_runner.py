"""``run_supernode``: run one SuperNode in the foreground with SIGINT/SIGTERM handling (used by the CLI)."""

from __future__ import annotations

import logging
import signal
import threading
from pathlib import Path
from typing import Any

import anyio

from fl_async._loading import load_object
from fl_async._net import DEFAULT_FLEET_TARGET
from fl_async.client.client_app import ClientApp
from fl_async.errors import FlAsyncError
from fl_async.supernode.supernode import SuperNode

__all__ = ["run_supernode"]

logger = logging.getLogger("fl_async.supernode")


async def _watch_signals(node: SuperNode, scope: anyio.CancelScope) -> None:
    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        count = 0
        async for signum in signals:
            count += 1
            name = signal.Signals(signum).name
            if count == 1:
                logger.info("node: %s received, stopping gracefully (send it again to stop at once)", name)
                node.stop()
            else:
                logger.warning("node: %s received again, stopping now", name)
                scope.cancel()


async def run_supernode(
    app: ClientApp | str,
    superlink: str = DEFAULT_FLEET_TARGET,
    *,
    install_signal_handlers: bool = True,
    app_dir: str | Path | None = None,
    **options: Any,
) -> None:
    """Run a SuperNode in the foreground until it is stopped, for programs that embed one (the ``fl-async
    supernode`` command runs its node through :mod:`fl_async.cli.process`, the runner of every command).

    With signal handlers installed, the first SIGINT/SIGTERM stops the node gracefully (stop pulling,
    finish or abandon running handlers within ``shutdown_grace`` s, best-effort DeleteNode with a 0.5 s
    deadline) and the function returns normally, so the process can exit 0 within 3 s with the
    default grace of 2 s, also when the link is down. A second signal cancels at once (DeleteNode is
    still tried). Handlers are installed only in the main thread (a warning is logged otherwise).

    Args:
        app: the ClientApp, or a ``"module:attr"`` reference to one (loaded with
            :func:`fl_async._loading.load_object`).
        superlink: the Fleet API address ``"HOST:PORT"``.
        install_signal_handlers: handle SIGINT/SIGTERM as described above.
        app_dir: directory put on ``sys.path`` before loading a string ``app``.
        **options: the keyword arguments of :class:`SuperNode` (``insecure``, ``root_certificates``,
            ``max_concurrency``, ``heartbeat_interval``, ``node_config``, ``max_backoff``,
            ``poll_timeout``, ``shutdown_grace``).

    Raises:
        AppLoadError: ``app`` is a reference that cannot be loaded as a ClientApp.
        ValueError, TypeError: bad SuperNode arguments (see :class:`SuperNode`).
        FlAsyncError: the node stopped on a fatal error (e.g. the link refused to register it).
    """
    client_app: ClientApp = load_object(app, dir=app_dir, expected=ClientApp) if isinstance(app, str) else app
    node = SuperNode(client_app, superlink, **options)
    if install_signal_handlers and threading.current_thread() is not threading.main_thread():
        logger.warning("run_supernode: not in the main thread; SIGINT/SIGTERM handlers not installed")
        install_signal_handlers = False
    error: FlAsyncError | None = None
    async with anyio.create_task_group() as tg:
        with anyio.CancelScope() as run_scope:
            if install_signal_handlers:
                tg.start_soon(_watch_signals, node, run_scope)
            try:
                await node.run()
            except FlAsyncError as exc:
                error = exc
            finally:
                tg.cancel_scope.cancel()
    if error is not None:
        raise error

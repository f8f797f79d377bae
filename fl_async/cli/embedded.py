"""``fl-async run``: a SuperLink, N SuperNodes and a ServerApp in one process and one event loop.

Nothing is simulated: the link serves real gRPC on 127.0.0.1 (free ports, plaintext), each node is a
:class:`~fl_async.supernode.SuperNode` with its own connection, and the server app runs through
:func:`~fl_async.server.async_run_server_app` exactly as ``fl-async server-app`` does. Node ``i`` gets
``node_config = {"partition-id": i, "num-partitions": N}`` (as Flower's simulation engine), so one
ClientApp can load a different data partition on each node.
"""

from __future__ import annotations

import contextlib
import logging
import resource
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from typing import Any

import anyio

from fl_async.cli.logsetup import lifecycle_filter
from fl_async.cli.progress import RoundProgress, observe_client_app, rounds_from_config

__all__ = ["REGISTER_TIMEOUT", "REGISTER_WAVE", "run_embedded", "running_nodes"]

logger = logging.getLogger("fl_async.run")

REGISTER_TIMEOUT = 30.0
"""Seconds each wave of in-process nodes gets to register with the link before the run is given up."""
REGISTER_WAVE = 100
"""Nodes started at once. Starting a thousand nodes in one event loop at once makes every CreateNode wait for
every connection's handshake; on a loaded machine they then all miss their deadline together and retry."""


_FD_MARGIN = 512
"""File descriptors (and connections from 127.0.0.1) kept beyond the nodes' own: the driver, blob path, files."""


def _ensure_fds(needed: int) -> None:
    """Raise ``RLIMIT_NOFILE`` to at least ``needed`` descriptors (the hard limit too, where the OS allows it).

    Raises:
        OSError: the limit cannot be raised that far (the message says how many are needed and the limit).
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= needed:
        return
    new_hard = hard if hard == resource.RLIM_INFINITY or hard >= needed else needed
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (needed, new_hard))
    except (ValueError, OSError):
        raise OSError(
            f"this many nodes in one process need {needed} file descriptors; the limit is {soft} (hard {hard}): "
            "raise it (ulimit -n) or run fewer nodes"
        ) from None
    logger.debug("file descriptor limit raised from %d to %d", soft, needed)


@contextlib.asynccontextmanager
async def running_nodes(
    nodes: Sequence[Any],
    *,
    within: float = REGISTER_TIMEOUT,
    on_registered: Callable[[int, int], None] | None = None,
) -> AsyncIterator[None]:
    """Run ``nodes`` (SuperNodes) in one task group while the block runs; stop them all at once on exit.

    Nodes start :data:`REGISTER_WAVE` at a time, each wave registered before the next starts. Each node runs
    as a task of one task group (not one nested task group per node: a thousand nested cancel scopes overflow
    the recursion limit when a cancellation is delivered through them). On exit every node is asked to stop
    gracefully, and the block waits until all have stopped.

    Args:
        nodes: the SuperNodes (not started yet).
        within: seconds each wave gets to register.
        on_registered: called ``(registered, total)`` after each wave has registered (progress while starting).

    Raises:
        TimeoutError: a wave did not register within ``within`` seconds (the message counts the registered nodes).
        FlAsyncError: a node stopped on a fatal error (e.g. the link refused it).
    """
    from fl_async.errors import FlAsyncError

    async def run(node: Any) -> None:
        with contextlib.suppress(FlAsyncError):  # kept by the node, raised by its wait_registered()
            await node.run()

    failure: Exception | None = None
    async with anyio.create_task_group() as tg:
        try:
            for first in range(0, len(nodes), REGISTER_WAVE):
                wave = nodes[first : first + REGISTER_WAVE]
                for node in wave:
                    tg.start_soon(run, node)
                try:
                    with anyio.fail_after(within):
                        for node in wave:
                            await node.wait_registered()
                except TimeoutError:
                    registered = sum(n.node_id is not None for n in nodes)
                    raise TimeoutError(
                        f"only {registered} of {len(nodes)} nodes registered "
                        f"({within:g} s for each wave of {REGISTER_WAVE})"
                    ) from None
                if on_registered is not None:
                    on_registered(first + len(wave), len(nodes))
            yield
        except Exception as exc:  # re-raised as is once the nodes have stopped (the task group would wrap it)
            failure = exc
        finally:
            for node in nodes:
                node.stop()
    if failure is not None:
        raise failure


async def run_embedded(
    server_app: Any,
    client_app: Any,
    *,
    num_supernodes: int,
    run_config: Mapping[str, Any] | None = None,
    max_concurrency: int = 1,
    progress: bool | None = None,
    console: Any = None,
    database: str = ":memory:",
    metrics_address: str | None = None,
) -> Any:
    """Start a link and ``num_supernodes`` nodes on 127.0.0.1, run ``server_app`` to completion, tear down.

    The server app starts once every node is registered (so its first ``get_node_ids()`` sees them
    all). On return, or on cancellation (Ctrl-C), the nodes are stopped gracefully and the link is
    stopped.

    Args:
        server_app: the :class:`~fl_async.server.ServerApp`.
        client_app: the :class:`~fl_async.client.ClientApp` every node runs.
        num_supernodes: how many nodes (>= 1).
        run_config: the run's settings (``Context.run_config`` on the server app and every node).
        max_concurrency: messages each node may handle at once.
        progress: draw round progress on stderr (``None``: only if stderr is a terminal).
        console: a ``rich.console.Console`` for the progress display (default: stderr).
        database: the link's state: ``":memory:"`` (default) or a SQLite file (``LinkConfig.database``).
        metrics_address: serve the link's Prometheus metrics at ``http://HOST:PORT/metrics`` (default: none).

    At INFO, the per-node registration and departure lines of the link and of the in-process nodes are
    replaced by one line naming every node id (they stay visible at DEBUG, ``-v``).

    Returns:
        What the server app's main returned.

    Raises:
        ValueError: ``num_supernodes < 1``.
        TypeError: ``server_app`` is not a ServerApp.
        NoMainFunctionError: the server app has no main function (before anything starts).
        TimeoutError: a wave of :data:`REGISTER_WAVE` nodes did not register within :data:`REGISTER_TIMEOUT` s.
        OSError: the link cannot bind on 127.0.0.1.
        FlAsyncError, Exception: what the server app (or the link) raised.
    """
    from fl_async.server.server_app import _check_app
    from fl_async.superlink import LinkConfig

    if isinstance(num_supernodes, bool) or not isinstance(num_supernodes, int) or num_supernodes < 1:
        raise ValueError(f"num_supernodes must be an int >= 1, got {num_supernodes!r}")
    _check_app(server_app)  # no main: NoMainFunctionError before the link and nodes start
    config = dict(run_config or {})
    view = RoundProgress(rounds_from_config(config), num_supernodes, enabled=progress, console=console)
    app_for_nodes = observe_client_app(client_app, view) if view.enabled else client_app

    _ensure_fds(2 * num_supernodes + _FD_MARGIN)  # each node's connection is two descriptors in this process
    link_config = LinkConfig(
        driver_api_address="127.0.0.1:0",
        fleet_api_address="127.0.0.1:0",
        metrics_address=metrics_address,
        database=database,
        max_connections_per_address=max(LinkConfig.max_connections_per_address, num_supernodes + _FD_MARGIN),
    )
    quiet = lifecycle_filter(_PER_NODE_EVENTS)
    loggers = [logging.getLogger("fl_async.superlink"), logging.getLogger("fl_async.supernode")]
    for lg in loggers:
        lg.addFilter(quiet)
    try:
        return await _run(server_app, app_for_nodes, link_config, num_supernodes, max_concurrency, config, view)
    finally:
        for lg in loggers:
            lg.removeFilter(quiet)


_PER_NODE_EVENTS = frozenset({"node_registered", "node_left"})


async def _run(
    server_app: Any,
    app_for_nodes: Any,
    link_config: Any,
    num_supernodes: int,
    max_concurrency: int,
    config: dict[str, Any],
    view: RoundProgress,
) -> Any:
    from fl_async.server import async_run_server_app
    from fl_async.superlink import SuperLink
    from fl_async.supernode import SuperNode

    async with SuperLink(link_config) as link:
        nodes = [
            SuperNode(
                app_for_nodes,
                link.fleet_address,
                insecure=True,
                max_concurrency=max_concurrency,
                node_config={"partition-id": i, "num-partitions": num_supernodes},
            )
            for i in range(num_supernodes)
        ]
        started = time.monotonic()
        logged = [0]

        def registered(count: int, total: int) -> None:
            view.nodes_registered(count)
            if count == total or count * 10 // total > logged[0] * 10 // total:  # a line per tenth
                logged[0] = count
                logger.info("run: %d of %d nodes registered (%.1f s)", count, total, time.monotonic() - started)

        with view:
            async with running_nodes(nodes, on_registered=registered):
                logger.info(
                    "%d nodes registered with %s: %s",
                    num_supernodes,
                    link.fleet_address,
                    ", ".join(str(n.node_id) for n in nodes),
                )
                try:
                    result = await async_run_server_app(
                        server_app, link.driver_address, insecure=True, run_config=config
                    )
                finally:
                    stopping = time.monotonic()
            logger.info("run: %d nodes stopped in %.1f s", num_supernodes, time.monotonic() - stopping)
    return result

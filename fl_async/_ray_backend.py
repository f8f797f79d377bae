"""``fl-async run --backend ray``: the link and the server app in this process, the SuperNodes in Ray actors.

Ray only places and runs the nodes; link and wire are ours. This process starts a
:class:`~fl_async.superlink.SuperLink` (its Driver API on 127.0.0.1, its Fleet API on an address the actors can
reach), creates ``ceil(N / K)`` Ray actors of K nodes each, and runs the server app as ``fl-async server-app``
does once every node is registered. Each node inside an actor is a real
:class:`~fl_async.supernode.SuperNode` with its own connection to the Fleet API, so everything the in-process
backend (:mod:`fl_async.cli.embedded`) guarantees holds: node ``i`` gets ``node_config = {"partition-id": i,
"num-partitions": N}`` and the same ClientApp runs unchanged.

An actor that dies (killed, out of memory, its machine lost) closes its nodes' connections: the link's
liveness rules take its nodes offline after the disconnect grace and turn their queued and in-flight work into
``NODE_UNAVAILABLE`` error replies, and the run goes on with the other nodes.

Ray is an optional dependency (``pip install 'fl-async[ray]'``): nothing else in fl-async imports this module,
and this module imports ``ray`` only inside its functions.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import re
import signal
import socket
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import anyio

from fl_async._net import format_address, parse_address
from fl_async.cli.embedded import REGISTER_TIMEOUT, REGISTER_WAVE, running_nodes
from fl_async.errors import FlAsyncError

__all__ = [
    "RAY_INSTALL_HINT",
    "NodeHost",
    "RayBackendError",
    "RayNotInstalledError",
    "RayOptions",
    "actor_layout",
    "actor_options",
    "parse_node_resources",
    "require_ray",
    "run_on_ray",
]

logger = logging.getLogger("fl_async.run")

RAY_INSTALL_HINT = "the Ray backend needs Ray: pip install 'fl-async[ray]'"
"""The one line ``fl-async run --backend ray`` prints (exit 2) when Ray is not installed."""

ACTOR_NAME_PREFIX = "fl-async-nodes-"
"""Ray actors are named ``fl-async-nodes-<j>`` (``j`` = 0, 1, ...) in a namespace unique to the run."""

_RESOURCE_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_.:/-]*$")
_AUTH_HINT = (
    " (a cluster with token authentication, the default of clusters that Ray 2.5x starts, is joined with "
    "RAY_AUTH_MODE=token set and its token in ~/.ray/auth_token or RAY_AUTH_TOKEN)"
)
_STOP_TIMEOUT = 5.0
"""Seconds the actors get to stop their nodes (and delete them on the link) at the end of a run."""


class RayBackendError(FlAsyncError):
    """The Ray backend could not start or place the nodes (the message says why and what to change)."""


class RayNotInstalledError(RayBackendError, ImportError):
    """``ray`` cannot be imported; the message is :data:`RAY_INSTALL_HINT`."""


def require_ray() -> Any:
    """Import and return the ``ray`` module.

    Raises:
        RayNotInstalledError: Ray is not installed (message: :data:`RAY_INSTALL_HINT`).
    """
    try:
        import ray
    except ImportError:
        raise RayNotInstalledError(RAY_INSTALL_HINT) from None
    return ray


@dataclass(frozen=True)
class RayOptions:
    """How the Ray backend places the nodes.

    Attributes:
        address: ``None`` starts a local Ray instance for the run (stopped at its end); otherwise the address
            of an existing cluster to join: ``"auto"`` (the cluster this machine belongs to), ``"HOST:PORT"``
            (its GCS) or ``"ray://HOST:PORT"`` (Ray Client). A process that already called ``ray.init`` keeps
            its connection (and the cluster is left running).
        node_resources: Ray resources one node needs (``num_cpus``, ``num_gpus``, ``memory`` in bytes, or any
            custom resource); an actor of K nodes asks for K times each. Empty: Ray's defaults for an actor
            (placed where a CPU is free, holding none while it runs).
        nodes_per_actor: K, nodes per actor; ``None``: spread the nodes evenly over one actor per CPU of the
            cluster.
        num_cpus: CPUs of a local instance (``None``: this machine's usable CPUs). Ignored when joining.
        object_store_memory: bytes of Ray's shared-memory object store of a local instance (Ray's minimum is
            75 MiB; the nodes pass nothing through it). Ignored when joining.
        log_to_driver: forward the actors' stdout/stderr (what the ClientApps print) to this process.
        register_timeout: seconds the actors get to be placed and started; on top of it each wave of
            ``REGISTER_WAVE`` (100) nodes of an actor gets ``REGISTER_TIMEOUT`` (30) seconds to register.
    """

    address: str | None = None
    node_resources: Mapping[str, float] = field(default_factory=dict)
    nodes_per_actor: int | None = None
    num_cpus: int | None = None
    object_store_memory: int = 96 * 2**20
    log_to_driver: bool = True
    register_timeout: float = 120.0


def parse_node_resources(spec: str) -> dict[str, float]:
    """Parse ``--node-resources``: ``"num_cpus=0.5,num_gpus=0.1"`` -> ``{"num_cpus": 0.5, "num_gpus": 0.1}``.

    Keys are Ray resource names (``num_cpus``, ``num_gpus``, ``memory`` in bytes, or custom resources);
    values are finite numbers >= 0. An empty string gives ``{}``.

    Raises:
        ValueError: a malformed pair, a repeated key, or a value that is not a finite number >= 0.
    """
    out: dict[str, float] = {}
    for raw in spec.split(","):
        pair = raw.strip()
        if not pair:
            continue
        key, sep, value = pair.partition("=")
        key = key.strip()
        if not sep or not _RESOURCE_KEY.match(key):
            raise ValueError(f"--node-resources: expected NAME=NUMBER pairs separated by commas, got {pair!r}")
        if key in out:
            raise ValueError(f"--node-resources: {key!r} given twice")
        try:
            number = float(value)
        except ValueError:
            raise ValueError(f"--node-resources: {key} must be a number, got {value.strip()!r}") from None
        if not math.isfinite(number) or number < 0:
            raise ValueError(f"--node-resources: {key} must be a finite number >= 0, got {value.strip()!r}")
        out[key] = number
    return out


def actor_layout(num_nodes: int, nodes_per_actor: int) -> list[range]:
    """Node indices per actor: ``ceil(num_nodes / nodes_per_actor)`` consecutive ranges of at most K nodes.

    Raises:
        ValueError: either number is < 1.
    """
    if num_nodes < 1 or nodes_per_actor < 1:
        raise ValueError(f"need num_nodes >= 1 and nodes_per_actor >= 1, got {num_nodes} and {nodes_per_actor}")
    return [range(start, min(start + nodes_per_actor, num_nodes)) for start in range(0, num_nodes, nodes_per_actor)]


def actor_options(node_resources: Mapping[str, float], num_nodes: int) -> dict[str, Any]:
    """Ray ``.options(...)`` of an actor hosting ``num_nodes`` nodes that each need ``node_resources``.

    ``num_cpus``, ``num_gpus`` and ``memory`` (bytes, rounded up) map to the options of the same name; any
    other key is a custom resource. Keys not given are left to Ray's defaults.
    """
    opts: dict[str, Any] = {}
    custom: dict[str, float] = {}
    for key, value in node_resources.items():
        total = value * num_nodes
        if key in ("num_cpus", "num_gpus"):
            opts[key] = total
        elif key == "memory":
            opts[key] = math.ceil(total)
        else:
            custom[key] = total
    if custom:
        opts["resources"] = custom
    return opts


def _usable_cpus() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


class NodeHost:
    """The body of one Ray actor: K SuperNodes sharing the actor's event loop, each with its own connection.

    Ray creates it in a worker process (``ray.remote(NodeHost)``); it loads the ClientApp there by reference,
    so the app need not be picklable, only importable on every machine.

    Args:
        client_app_ref: the ClientApp, ``"MODULE:ATTR"``.
        app_dir: directory put first on ``sys.path`` before importing it (``None``: the worker's own path).
        fleet_address: the link's Fleet API, ``"HOST:PORT"`` (plaintext).
        node_configs: one ``node_config`` per node of this actor.
        max_concurrency: messages each node may handle at once.
    """

    def __init__(
        self,
        client_app_ref: str,
        app_dir: str | None,
        fleet_address: str,
        node_configs: Sequence[Mapping[str, Any]],
        max_concurrency: int = 1,
    ) -> None:
        self._ref = client_app_ref
        self._dir = app_dir
        self._fleet = fleet_address
        self._configs = [dict(c) for c in node_configs]
        self._max_concurrency = max_concurrency
        self._nodes: list[Any] = []
        self._ready: anyio.Event | None = None
        self._done: anyio.Event | None = None
        self._register_within = 0.0
        self._task: Any = None
        self._error: BaseException | None = None

    async def start(self, register_within: float) -> list[int]:
        """Start the nodes, wait until all are registered and return their node ids.

        Raises:
            AppLoadError: the ClientApp does not load in this worker.
            TimeoutError: a wave of nodes did not register within ``register_within`` seconds (nodes register
                :data:`~fl_async.cli.embedded.REGISTER_WAVE` at a time).
            FlAsyncError: a node stopped on a fatal error (e.g. the link refused it).
        """
        import asyncio

        from fl_async._loading import load_object
        from fl_async.client import ClientApp
        from fl_async.supernode import SuperNode

        app = load_object(self._ref, dir=self._dir, expected=ClientApp)
        self._nodes = [
            SuperNode(app, self._fleet, insecure=True, max_concurrency=self._max_concurrency, node_config=config)
            for config in self._configs
        ]
        self._register_within = register_within
        self._ready, self._done = anyio.Event(), anyio.Event()
        self._task = asyncio.get_running_loop().create_task(self._serve())  # owns the nodes' task groups
        await self._ready.wait()
        if self._error is not None:
            raise self._error
        return [node.node_id for node in self._nodes]

    async def _serve(self) -> None:
        assert self._ready is not None and self._done is not None
        try:
            async with running_nodes(self._nodes, within=self._register_within):
                self._ready.set()
                await self._done.wait()
        except Exception as exc:  # reported by start() (or, once running, ends serve() like a stop)
            self._error = exc
        finally:
            self._ready.set()
            self._done.set()

    async def serve(self) -> int:
        """Return (the number of nodes) once the nodes have stopped; the driver holds this call to see the actor
        die (the call then fails with Ray's ``RayActorError``)."""
        if self._done is not None:
            await self._done.wait()
        return len(self._nodes)

    async def stop(self) -> None:
        """Stop the nodes gracefully (each deletes itself on the link) and wait until they have stopped."""
        if self._done is None or self._task is None:
            return
        self._done.set()
        await self._task


def _local_address_towards(host: str) -> str:
    """The local IP address this machine uses to reach ``host`` (no packet is sent: a UDP ``connect``)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.connect((host, 9))
        return str(sock.getsockname()[0])


def _link_host(ray: Any, address: str | None, started_here: bool) -> str:
    """Where the link's Fleet API listens so that every actor can connect.

    A local instance, or a cluster whose only machine is this one: loopback. A cluster of several machines:
    the address this machine is known by (with ``ray://HOST:PORT``, the local address used to reach HOST).
    """
    if started_here:
        return "127.0.0.1"
    here = ray.util.get_node_ip_address()
    machines = {n["NodeManagerAddress"] for n in ray.nodes() if n.get("Alive")}
    if machines <= {here, "127.0.0.1"}:
        return "127.0.0.1"
    if address and address.startswith("ray://"):
        host = address[len("ray://") :].rsplit(":", 1)[0].strip("[]")
        with contextlib.suppress(OSError):
            return _local_address_towards(host)
    return str(here)


@contextlib.contextmanager
def _ray_session(ray: Any, options: RayOptions, namespace: str) -> Iterator[bool]:
    """Connect to Ray for the run; yields whether a local instance was started (then stopped on exit)."""
    if ray.is_initialized():  # e.g. a notebook that called ray.init: use it, leave it running
        yield False
        return
    kwargs: dict[str, Any] = {
        "namespace": namespace,
        "log_to_driver": options.log_to_driver,
        "logging_level": logging.WARNING,
        "include_dashboard": False,
    }
    if options.address is None:
        kwargs.update(
            address="local",  # a new instance, even if `ray start` left one running on this machine
            num_cpus=options.num_cpus or _usable_cpus(),
            object_store_memory=options.object_store_memory,
            # no idle Python workers started ahead of time (~50 MiB each): every process here is an actor
            _system_config={"enable_worker_prestart": False, "prestart_worker_first_driver": False},
        )
    else:
        kwargs["address"] = options.address
        del kwargs["include_dashboard"]  # the cluster's own setting
    previous = signal.getsignal(signal.SIGTERM)
    try:
        ray.init(**kwargs)
    except (ConnectionError, ValueError, RuntimeError) as exc:
        if options.address is None:
            raise RayBackendError(f"cannot start a local Ray instance: {' '.join(str(exc).split())}") from None
        hint = "" if os.environ.get("RAY_AUTH_MODE") else _AUTH_HINT
        raise RayBackendError(f"cannot join Ray at {options.address!r}: {' '.join(str(exc).split())}{hint}") from None
    finally:
        # ray.init replaces the SIGTERM handler; keep the command's own (a clean stop, exit 0).
        if previous is not None and _in_main_thread():
            signal.signal(signal.SIGTERM, previous)
    try:
        yield options.address is None
    finally:
        ray.shutdown()


def _in_main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


def _check_placeable(ray: Any, per_actor: Mapping[str, Any]) -> None:
    """Refuse a layout no machine of the cluster can host (Ray would leave such actors pending forever)."""
    wanted: dict[str, float] = {
        "CPU": per_actor.get("num_cpus", 0.0),
        "GPU": per_actor.get("num_gpus", 0.0),
        "memory": per_actor.get("memory", 0),
        **per_actor.get("resources", {}),
    }
    needs = {k: v for k, v in wanted.items() if v}
    if not needs:
        return
    machines: list[dict[str, float]] = [n.get("Resources", {}) for n in ray.nodes() if n.get("Alive")]
    if any(all(have.get(k, 0.0) >= v for k, v in needs.items()) for have in machines):
        return
    largest: dict[str, float] = max(machines, key=lambda r: r.get("CPU", 0.0), default={})
    shown = {k: largest.get(k, 0) for k in needs}
    raise RayBackendError(
        f"no Ray machine can host an actor needing {needs} (the largest has {shown}): "
        "lower --nodes-per-actor or --node-resources"
    )


async def run_on_ray(
    server_app: Any,
    client_app_ref: str,
    *,
    num_supernodes: int,
    app_dir: str | None = None,
    run_config: Mapping[str, Any] | None = None,
    max_concurrency: int = 1,
    options: RayOptions | None = None,
    metrics_address: str | None = None,
) -> Any:
    """Run ``server_app`` against ``num_supernodes`` SuperNodes hosted in Ray actors; tear everything down.

    The link and the server app run in this event loop; the server app starts once every node is registered
    (as :func:`fl_async.cli.embedded.run_embedded`). On return, failure or cancellation the actors stop their
    nodes (bounded by 5 s, then they are killed), the link stops, and a local Ray instance is shut down.

    Args:
        server_app: the :class:`~fl_async.server.ServerApp`.
        client_app_ref: the ClientApp as ``"MODULE:ATTR"``, loaded inside each actor.
        num_supernodes: N, how many nodes (>= 1).
        app_dir: directory put first on ``sys.path`` in the actors before loading the ClientApp.
        run_config: the run's settings (``Context.run_config``).
        max_concurrency: messages each node may handle at once.
        options: placement and Ray settings (default: a local instance, Ray's default actor resources).
        metrics_address: ``HOST:PORT`` where the link serves Prometheus metrics (``None``: no metrics).

    Returns:
        What the server app's main returned.

    Raises:
        ValueError: ``num_supernodes < 1`` or ``nodes_per_actor < 1``.
        RayNotInstalledError: Ray is not installed.
        RayBackendError: Ray cannot be started or joined, the actors cannot be placed, or they did not all
            start and register their nodes in time (see :attr:`RayOptions.register_timeout`).
        AppLoadError: the ClientApp does not load in an actor.
        FlAsyncError, Exception: what the server app (or the link) raised.
    """
    from fl_async.server import async_run_server_app
    from fl_async.server.server_app import _check_app
    from fl_async.superlink import LinkConfig, SuperLink

    options = options or RayOptions()
    if isinstance(num_supernodes, bool) or not isinstance(num_supernodes, int) or num_supernodes < 1:
        raise ValueError(f"num_supernodes must be an int >= 1, got {num_supernodes!r}")
    if options.nodes_per_actor is not None and options.nodes_per_actor < 1:
        raise ValueError(f"nodes_per_actor must be >= 1, got {options.nodes_per_actor}")
    _check_app(server_app)
    ray = require_ray()
    namespace = f"fl-async-{uuid.uuid4().hex[:12]}"
    with _ray_session(ray, options, namespace) as started_here:
        per_node = options.nodes_per_actor
        if per_node is None:
            cpus = int(ray.cluster_resources().get("CPU", 1)) or 1
            per_node = math.ceil(num_supernodes / min(num_supernodes, cpus))
        layout = actor_layout(num_supernodes, per_node)
        _check_placeable(ray, actor_options(options.node_resources, len(layout[0])))
        host = _link_host(ray, options.address, started_here)
        link_config = LinkConfig(
            driver_api_address="127.0.0.1:0",
            fleet_api_address=format_address(host, 0),
            metrics_address=metrics_address,
        )
        async with SuperLink(link_config) as link:
            fleet = format_address(host, parse_address(link.fleet_address)[1])  # the address actors connect to
            actors = _Actors(ray, namespace, layout, num_supernodes, options, max_concurrency)
            try:
                async with anyio.create_task_group() as tg:
                    await actors.start(client_app_ref, app_dir, fleet)
                    logger.info("run: %d nodes in %d Ray actors registered with %s", num_supernodes, len(layout), fleet)
                    actors.watch(tg)
                    result = await async_run_server_app(
                        server_app, link.driver_address, insecure=True, run_config=dict(run_config or {})
                    )
                    tg.cancel_scope.cancel()
            finally:
                await actors.close()
            return result


class _Actors:
    """The run's Ray actors: created, started, watched for death, stopped and killed (driver side)."""

    def __init__(
        self,
        ray: Any,
        namespace: str,
        layout: list[range],
        num_nodes: int,
        options: RayOptions,
        max_concurrency: int,
    ) -> None:
        self._ray = ray
        self._namespace = namespace
        self._layout = layout
        self._num_nodes = num_nodes
        self._options = options
        self._max_concurrency = max_concurrency
        self._handles: list[Any] = []
        self._dead: set[int] = set()

    async def start(self, client_app_ref: str, app_dir: str | None, fleet: str) -> None:
        ray, n = self._ray, self._num_nodes
        remote_host = ray.remote(NodeHost)
        timeout = self._options.register_timeout
        for j, nodes in enumerate(self._layout):
            configs = [{"partition-id": i, "num-partitions": n} for i in nodes]
            opts = actor_options(self._options.node_resources, len(nodes))
            handle = remote_host.options(
                name=f"{ACTOR_NAME_PREFIX}{j}", namespace=self._namespace, max_restarts=0, **opts
            ).remote(client_app_ref, app_dir, fleet, configs, self._max_concurrency)
            self._handles.append(handle)
        pending = [h.start.remote(REGISTER_TIMEOUT) for h in self._handles]
        waves = math.ceil(len(self._layout[0]) / REGISTER_WAVE)
        try:
            with anyio.fail_after(timeout + waves * REGISTER_TIMEOUT):
                for j, ref in enumerate(pending):
                    await self._await(ref, f"starting the nodes of Ray actor {j}")
        except TimeoutError:
            ready, _ = ray.wait(pending, num_returns=len(pending), timeout=0)
            asks = actor_options(self._options.node_resources, len(self._layout[0])) or "Ray's default"
            raise RayBackendError(
                f"only {len(ready)} of {len(pending)} Ray actors started and registered their nodes within "
                f"{timeout + waves * REGISTER_TIMEOUT:g} s (each asks for {asks}; the cluster has "
                f"{ray.available_resources()} free)"
            ) from None

    def watch(self, tg: Any) -> None:
        """Watch every actor in ``tg``: log (once) each actor that dies; its nodes' work is the link's concern."""
        for j, handle in enumerate(self._handles):
            tg.start_soon(self._watch, j, handle.serve.remote())

    async def _await(self, ref: Any, what: str) -> Any:
        from fl_async.errors import AppLoadError

        try:
            return await ref
        except self._ray.exceptions.RayTaskError as exc:
            cause = exc.as_instanceof_cause()
            if isinstance(cause, (AppLoadError, TimeoutError)):
                raise RayBackendError(f"{what}: {cause}") from None
            raise RayBackendError(f"{what}: {type(cause).__name__}: {cause}") from None
        except self._ray.exceptions.RayError as exc:
            raise RayBackendError(f"{what}: {' '.join(str(exc).split())[:300]}") from None

    async def _watch(self, j: int, ref: Any) -> None:
        try:
            await ref
        except self._ray.exceptions.RayError as exc:
            self._dead.add(j)
            nodes = self._layout[j]
            logger.warning(
                "Ray actor %d (nodes %d..%d) died (%s): its %d nodes go offline and their work becomes error replies",
                j,
                nodes.start,
                nodes.stop - 1,
                type(exc).__name__,
                len(nodes),
            )

    async def close(self) -> None:
        """Stop the live actors' nodes (graceful, at most 5 s), then kill every actor. Shielded from cancellation."""
        with anyio.CancelScope(shield=True):
            alive = [h for j, h in enumerate(self._handles) if j not in self._dead]
            with anyio.move_on_after(_STOP_TIMEOUT):
                refs = [h.stop.remote() for h in alive]
                for ref in refs:
                    with contextlib.suppress(self._ray.exceptions.RayError):
                        await ref
            for handle in self._handles:
                with contextlib.suppress(Exception):
                    self._ray.kill(handle)

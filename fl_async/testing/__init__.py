"""In-memory SuperLink, SuperNodes and drivers for tests: the real broker, no sockets.

:class:`InMemoryCluster` starts a real :class:`~fl_async.superlink.SuperLink` (its state, services, codec and
deadline timer) without binding a port, N real :class:`~fl_async.supernode.SuperNode` objects running a
:class:`~fl_async.client.ClientApp`, and connects them and the drivers it hands out over grpclib's in-memory
transport (:class:`grpclib.testing.ChannelFor`): every call goes through the same HTTP/2 framing, protobuf codec and
handlers as over TCP, but no socket is opened, so a round takes a few milliseconds and tests need no free port::

    from fl_async.testing import InMemoryCluster

    async def test_one_round():
        async with InMemoryCluster(app, num_nodes=3) as cluster:
            driver = cluster.driver                       # a connected AsyncDriver (one run)
            msgs = [driver.create_message(content, "train", n, "1") for n in cluster.node_ids]
            replies = await driver.send_and_receive(msgs, timeout=5)

    def test_one_round_sync():
        with InMemoryCluster.in_thread(app, num_nodes=3) as cluster:
            replies = cluster.driver.send_and_receive(...)   # a connected Driver (blocking)

What differs from a link on TCP: there is no blob data path (every array travels inline in the gRPC messages, so a
message is bounded by ``LinkConfig.max_request_bytes``, on the responses too); no TLS; a channel closed by its user
is not reported to the link as a lost connection (a node that goes away is noticed by its missed heartbeats).

Submodules: :mod:`fl_async.testing.wire` (a bare node and driver speaking the wire API, to test the link alone)
and :mod:`fl_async.testing.certs` (a throwaway CA and server certificate, to test TLS).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from types import TracebackType
from typing import Any, Self

from anyio.from_thread import BlockingPortal, start_blocking_portal
from grpclib.client import Channel
from grpclib.testing import ChannelFor

from fl_async.client import ClientApp
from fl_async.server import AsyncDriver, Driver
from fl_async.superlink import LinkConfig, SuperLink
from fl_async.superlink.hooks import DigestRefCounts
from fl_async.supernode import SuperNode

__all__ = ["DRIVER_ADDRESS", "FLEET_ADDRESS", "InMemoryCluster", "InMemoryLink"]

DRIVER_ADDRESS = "in-memory:9091"
"""The address an in-memory driver reports (``AsyncDriver.superlink``); nothing listens there."""
FLEET_ADDRESS = "in-memory:9092"
"""The address in-memory nodes report (``SuperNode.superlink``); nothing listens there."""


class _ChannelFor(ChannelFor):
    """grpclib's ``ChannelFor``, whose exit also works once the channel's user has closed it (a node reconnecting,
    a driver closing)."""

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc_val: BaseException | None, exc_tb: TracebackType | None
    ) -> None:
        if self._channel._protocol is not None:
            self._channel._protocol.connection_lost(None)
            self._channel.close()
        self._server_protocol.connection_lost(None)
        self._server.close()
        await self._server.wait_closed()


class InMemoryLink:
    """A started SuperLink served in memory; ``async with InMemoryLink() as link:``.

    Args:
        config: the link's limits and timeouts (addresses and TLS are not used); default ``LinkConfig()``.

    Attributes:
        link: the :class:`~fl_async.superlink.SuperLink` (its ``state`` and ``stats()`` for assertions).
    """

    def __init__(self, config: LinkConfig | None = None) -> None:
        self.link = SuperLink(config, payloads=DigestRefCounts())
        self._channels: list[_ChannelFor] = []
        self._stack = contextlib.AsyncExitStack()

    async def _channel(self, api: str) -> Channel:
        channel_for = _ChannelFor(self.link.services(api), codec=self.link.codec)
        channel = await channel_for.__aenter__()
        self._channels.append(channel_for)
        return channel

    async def driver_channel(self) -> Channel:
        """A new in-memory channel to the Driver API (an ``AsyncDriver``'s ``channel_factory``)."""
        return await self._channel("driver")

    async def fleet_channel(self) -> Channel:
        """A new in-memory channel to the Fleet API (a ``SuperNode``'s ``channel_factory``)."""
        return await self._channel("fleet")

    async def start_node(self, app: ClientApp, **kwargs: Any) -> SuperNode:
        """Start a SuperNode running ``app`` against this link (stopped when the link closes) and wait until it
        is registered.

        Args:
            app: the ClientApp.
            kwargs: more :class:`~fl_async.supernode.SuperNode` arguments (``node_config``, ``max_concurrency``,
                ``heartbeat_interval``, ...).

        Raises:
            TimeoutError: the node did not register within 10 s.
        """
        node = SuperNode(app, FLEET_ADDRESS, insecure=True, channel_factory=self.fleet_channel, **kwargs)
        await self._stack.enter_async_context(node)
        await node.wait_registered(timeout=10)
        return node

    async def connect_driver(self, **kwargs: Any) -> AsyncDriver:
        """A connected :class:`~fl_async.server.AsyncDriver` (a new run; closed when the link closes).

        Args:
            kwargs: more ``AsyncDriver`` arguments (``run_config``, ``fab_id``, ``call_timeout``, ...).
        """
        driver = AsyncDriver(DRIVER_ADDRESS, insecure=True, channel_factory=self.driver_channel, **kwargs)
        return await self._stack.enter_async_context(driver)

    async def __aenter__(self) -> Self:
        await self.link.start_in_memory()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        try:
            await self._stack.aclose()  # drivers and nodes first (a node says goodbye to the link)
        finally:
            await self.link.stop(grace=0.2)
            for channel_for in reversed(self._channels):
                await channel_for.__aexit__(None, None, None)
            self._channels.clear()


class InMemoryCluster:
    """An in-memory link with ``num_nodes`` registered SuperNodes running ``app`` and one connected driver.

    ``async with InMemoryCluster(app, 3) as cluster:`` gives :attr:`driver`, an :class:`~fl_async.server.AsyncDriver`;
    ``with InMemoryCluster.in_thread(app, 3) as cluster:`` runs everything in a thread of its own and gives a
    blocking :class:`~fl_async.server.Driver` instead (for code under test that uses the sync API).

    Args:
        app: the ClientApp every node runs.
        num_nodes: how many SuperNodes (>= 0).
        run_config: the driver's run config (``Context.run_config`` on the nodes).
        link_config: the link's limits and timeouts (default: ``LinkConfig(min_heartbeat_interval=0.01)``).
        node_configs: one ``node_config`` per node (default: none).
        node_options: more SuperNode arguments for every node (e.g. ``max_concurrency``).

    Attributes:
        link: the :class:`InMemoryLink` (``cluster.link.link`` is the SuperLink).
        nodes: the SuperNodes, registered.
        driver: the connected driver (``AsyncDriver``, or ``Driver`` with :meth:`in_thread`).
    """

    def __init__(
        self,
        app: ClientApp,
        num_nodes: int = 2,
        *,
        run_config: Mapping[str, Any] | None = None,
        link_config: LinkConfig | None = None,
        node_configs: list[Mapping[str, Any]] | None = None,
        node_options: Mapping[str, Any] | None = None,
    ) -> None:
        if num_nodes < 0:
            raise ValueError(f"num_nodes must be >= 0, got {num_nodes}")
        if node_configs is not None and len(node_configs) != num_nodes:
            raise ValueError(f"node_configs has {len(node_configs)} entries for {num_nodes} nodes")
        self._app = app
        self._num_nodes = num_nodes
        self._run_config = run_config
        self._node_configs = node_configs
        self._node_options = dict(node_options or {})
        self.link = InMemoryLink(link_config if link_config is not None else LinkConfig(min_heartbeat_interval=0.01))
        self.nodes: list[SuperNode] = []
        self.driver: Any = None
        self._async_driver = True

    @property
    def node_ids(self) -> list[int]:
        """The ids of the registered nodes."""
        return [n.node_id for n in self.nodes if n.node_id is not None]

    async def __aenter__(self) -> Self:
        await self.link.__aenter__()
        try:
            for i in range(self._num_nodes):
                options = dict(self._node_options)
                if self._node_configs is not None:
                    options["node_config"] = self._node_configs[i]
                self.nodes.append(await self.link.start_node(self._app, **options))
            if self._async_driver:
                self.driver = await self.link.connect_driver(run_config=self._run_config)
        except BaseException as exc:
            await self.link.__aexit__(type(exc), exc, exc.__traceback__)
            raise
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.link.__aexit__(exc_type, exc, tb)

    @classmethod
    @contextlib.contextmanager
    def in_thread(cls, app: ClientApp, num_nodes: int = 2, **kwargs: Any) -> Iterator[InMemoryCluster]:
        """The cluster in its own thread and event loop, with a blocking :class:`~fl_async.server.Driver` as
        :attr:`driver` (same arguments as the class). Use it from synchronous code only."""
        cluster = cls(app, num_nodes, **kwargs)
        cluster._async_driver = False  # the Driver below is the cluster's driver
        portal: BlockingPortal
        with start_blocking_portal(name="fl-async-testing") as portal, portal.wrap_async_context_manager(cluster):
            driver = Driver(
                DRIVER_ADDRESS,
                insecure=True,
                run_config=cluster._run_config,
                channel_factory=cluster.link.driver_channel,
                portal=portal,
            )
            cluster.driver = driver
            try:
                yield cluster
            finally:
                driver.close()

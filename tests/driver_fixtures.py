"""Helpers for the Driver SDK tests: real SuperLinks and SuperNodes on 127.0.0.1, in this loop or in
a thread of their own (for the blocking ``Driver`` called from an event loop's thread).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

import anyio
from anyio.from_thread import start_blocking_portal

from fl_async.client import ClientApp
from fl_async.common import Context, Message, MetricsRecord, RecordSet
from fl_async.superlink import LinkConfig, SuperLink
from fl_async.supernode import SuperNode

LINK_DEFAULTS: dict[str, Any] = {
    "driver_api_address": "127.0.0.1:0",
    "fleet_api_address": "127.0.0.1:0",
    "max_poll_timeout": 5.0,
    "min_heartbeat_interval": 0.01,
}


def echo_app() -> ClientApp:
    """Answers ``train`` at once with the instruction's content plus ``metrics["node"]["id"]``;
    ``query`` messages wait until ``configs["wait"]["event"]`` (a key of :data:`GATES`) is released."""
    app = ClientApp()

    @app.train()
    def train(msg: Message, context: Context) -> Message:
        content = RecordSet(
            parameters_records=dict(msg.content.parameters_records.items()),
            configs_records=dict(msg.content.configs_records.items()),
        )
        content.metrics_records["node"] = MetricsRecord({"id": context.node_id})
        return msg.create_reply(content)

    @app.query()
    async def query(msg: Message, context: Context) -> Message:
        name = str(msg.content.configs_records["wait"]["event"])
        await GATES.wait(name)
        return msg.create_reply(RecordSet(metrics_records={"node": MetricsRecord({"id": context.node_id})}))

    return app


@dataclass
class Gates:
    """Named one-shot gates a ClientApp handler can wait on (set from the test, in the nodes' loop)."""

    events: dict[str, anyio.Event] = field(default_factory=dict)

    def get(self, name: str) -> anyio.Event:
        if name not in self.events:
            self.events[name] = anyio.Event()
        return self.events[name]

    async def wait(self, name: str) -> None:
        await self.get(name).wait()

    def release(self, name: str) -> None:
        self.get(name).set()

    def release_all(self) -> None:
        for event in self.events.values():
            event.set()


GATES = Gates()


@dataclass
class Cluster:
    link: SuperLink
    nodes: list[SuperNode]

    @property
    def node_ids(self) -> list[int]:
        return [n.node_id for n in self.nodes if n.node_id is not None]


@contextlib.asynccontextmanager
async def cluster(app: ClientApp | None = None, num_nodes: int = 3, **link_overrides: Any) -> AsyncIterator[Cluster]:
    """A started link with ``num_nodes`` registered nodes running ``app`` (default :func:`echo_app`)."""
    app = app or echo_app()
    async with contextlib.AsyncExitStack() as stack:
        link = SuperLink(LinkConfig(**{**LINK_DEFAULTS, **link_overrides}))
        await stack.enter_async_context(link)
        nodes = []
        for _ in range(num_nodes):
            node = SuperNode(app, link.fleet_address, insecure=True, heartbeat_interval=0.5, shutdown_grace=0.2)
            await stack.enter_async_context(node)
            nodes.append(node)
        with anyio.fail_after(10):
            for node in nodes:
                await node.wait_registered()
        try:
            yield Cluster(link, nodes)
        finally:
            GATES.release_all()
            GATES.events.clear()


@contextlib.contextmanager
def cluster_in_thread(
    app: ClientApp | None = None, num_nodes: int = 3, **link_overrides: Any
) -> Iterator[tuple[Cluster, Any]]:
    """:func:`cluster` running in its own thread and event loop; yields ``(cluster, portal)``."""
    with start_blocking_portal(name="test-cluster") as portal:
        with portal.wrap_async_context_manager(cluster(app, num_nodes, **link_overrides)) as c:
            yield c, portal

"""fl_async.testing: a full round through an in-memory link, nodes and drivers, with no socket opened."""

from __future__ import annotations

import socket
from typing import Any

import pytest

from fl_async.client import ClientApp
from fl_async.common import Context, Message, MessageType, MetricsRecord, ParametersRecord, RecordSet
from fl_async.common.records import array_from_numpy
from fl_async.testing import InMemoryCluster


def _app() -> ClientApp:
    app = ClientApp()

    @app.train()
    def train(msg: Message, context: Context) -> Message:
        params = msg.content.parameters_records["w"]
        doubled = {k: array_from_numpy(a.numpy() * 2) for k, a in params.items()}
        content = RecordSet(
            parameters_records={"w": ParametersRecord(doubled)},
            metrics_records={"m": MetricsRecord({"node": context.node_id, "lr": float(context.run_config["lr"])})},
        )
        return msg.create_reply(content)

    return app


@pytest.fixture
def no_sockets(monkeypatch: pytest.MonkeyPatch) -> None:
    """Creating a network socket (IPv4 or IPv6: what any TCP link, node, driver or blob client needs) fails from
    here on. An event loop's self-pipe (``socket.socketpair``, AF_UNIX, wrapped with ``fileno=``) stays allowed."""
    real = socket.socket

    class NoNetworkSocket(real):  # type: ignore[misc,valid-type]
        def __init__(self, family: int = -1, type: int = -1, proto: int = -1, fileno: Any = None) -> None:
            if fileno is None and family in (-1, socket.AF_INET, socket.AF_INET6):
                raise AssertionError("a network socket was created")
            super().__init__(family, type, proto, fileno)

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("a network connection was opened")

    monkeypatch.setattr(socket, "socket", NoNetworkSocket)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "create_server", refuse)


def test_the_patch_refuses_network_sockets(no_sockets: None) -> None:
    with pytest.raises(AssertionError, match="network socket"):
        socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    with pytest.raises(AssertionError, match="network socket"):
        socket.socket()


def _content() -> RecordSet:
    import numpy as np

    return RecordSet(parameters_records={"w": ParametersRecord({"a": array_from_numpy(np.arange(4.0))})})


async def test_a_round_opens_no_socket(no_sockets: None) -> None:
    async with InMemoryCluster(_app(), num_nodes=3, run_config={"lr": 0.5}) as cluster:
        driver = cluster.driver
        assert sorted(await driver.get_node_ids()) == sorted(cluster.node_ids)
        msgs = [driver.create_message(_content(), MessageType.TRAIN, n, "1") for n in cluster.node_ids]
        replies = await driver.send_and_receive(msgs, timeout=10)
        assert sorted(r.metadata.src_node_id for r in replies) == sorted(cluster.node_ids)
        for reply in replies:
            assert not reply.has_error()
            assert reply.content.parameters_records["w"]["a"].numpy().tolist() == [0.0, 2.0, 4.0, 6.0]
            assert reply.content.metrics_records["m"]["lr"] == 0.5
        assert cluster.link.link.stats().nodes == 3


def test_sync_driver_round_opens_no_socket(no_sockets: None) -> None:
    with InMemoryCluster.in_thread(_app(), num_nodes=2, run_config={"lr": 1.0}) as cluster:
        driver = cluster.driver
        msgs = [driver.create_message(_content(), MessageType.TRAIN, n, "1") for n in cluster.node_ids]
        replies = driver.send_and_receive(msgs, timeout=10)
        assert sorted(r.metadata.src_node_id for r in replies) == sorted(cluster.node_ids)
        assert all(r.content.metrics_records["m"]["lr"] == 1.0 for r in replies)


async def test_a_raising_client_app_gets_an_error_reply(no_sockets: None) -> None:
    app = ClientApp()

    @app.train()
    def train(msg: Message, context: Context) -> Message:
        raise RuntimeError("boom")

    async with InMemoryCluster(app, num_nodes=1) as cluster:
        (node_id,) = cluster.node_ids
        msg = cluster.driver.create_message(RecordSet(), MessageType.TRAIN, node_id, "1")
        (reply,) = await cluster.driver.send_and_receive([msg], timeout=10)
        assert reply.has_error() and "boom" in reply.error.reason


async def test_the_patch_catches_a_tcp_driver(no_sockets: None) -> None:
    """The patch is effective against grpclib: a driver connecting over TCP fails at socket creation."""
    from fl_async.server import AsyncDriver

    with pytest.raises(AssertionError, match="network socket"):
        await AsyncDriver("127.0.0.1:9", insecure=True).connect()

"""TLS end to end, in process: link, node and server app over TLS with a throwaway CA; clear failures otherwise."""

from __future__ import annotations

import anyio
import pytest

from fl_async._net import ServerTLS
from fl_async.client import ClientApp
from fl_async.common import Context, LinkConnectionError, Message, MessageType, MetricsRecord, RecordSet
from fl_async.server import AsyncDriver, ServerApp, async_run_server_app
from fl_async.superlink import LinkConfig, SuperLink
from fl_async.supernode import SuperNode
from fl_async.testing.certs import make_certs, write_certs

echo = ClientApp()


@echo.query()
def answer(message: Message, context: Context) -> Message:
    return message.create_reply(RecordSet(metrics_records={"m": MetricsRecord({"node": context.node_config["i"]})}))


def tls_config(tmp_path=None) -> LinkConfig:
    c = make_certs()
    if tmp_path is not None:  # paths instead of bytes: what the CLI hands over
        f = write_certs(tmp_path)
        tls = ServerTLS(f.ca_cert, f.server_cert, f.server_key)
    else:
        tls = ServerTLS(c.ca_cert, c.server_cert, c.server_key)
    return LinkConfig(driver_api_address="127.0.0.1:0", fleet_api_address="127.0.0.1:0", tls=tls)


async def test_link_nodes_and_server_app_over_tls(tmp_path) -> None:
    ca = make_certs().ca_cert
    server = ServerApp()
    seen: list[int] = []

    @server.main()
    async def main(driver: AsyncDriver, context: Context) -> None:
        nodes = await driver.wait_for_nodes(3, timeout=10)
        for rnd in range(1, 3):
            msgs = [driver.create_message(RecordSet(), MessageType.QUERY, n, str(rnd)) for n in nodes]
            replies = await driver.send_and_receive(msgs, timeout=10)
            assert len(replies) == 3 and all(r.has_content() for r in replies)
            seen.extend(int(r.content.metrics_records["m"]["node"]) for r in replies)

    with anyio.fail_after(30):
        async with SuperLink(tls_config(tmp_path)) as link:
            async with (
                SuperNode(echo, link.fleet_address, root_certificates=ca, node_config={"i": 0}),
                SuperNode(echo, link.fleet_address, root_certificates=ca, node_config={"i": 1}),
                SuperNode(echo, link.fleet_address, root_certificates=ca, node_config={"i": 2}),
            ):
                await async_run_server_app(server, link.driver_address, root_certificates=ca)
    assert sorted(seen) == [0, 0, 1, 1, 2, 2]


async def test_plaintext_driver_against_tls_link_fails_clearly() -> None:
    with anyio.fail_after(30):
        async with SuperLink(tls_config()) as link:
            with pytest.raises(LinkConnectionError) as info:
                async with AsyncDriver(link.driver_address, insecure=True):
                    pass
            assert link.driver_address in str(info.value)


async def test_driver_trusting_another_ca_fails_clearly() -> None:
    other_ca = make_certs("some other CA").ca_cert
    with anyio.fail_after(30):
        async with SuperLink(tls_config()) as link:
            with pytest.raises(LinkConnectionError, match="(?i)certificate|TLS"):
                async with AsyncDriver(link.driver_address, root_certificates=other_ca):
                    pass


async def test_tls_driver_against_plaintext_link_fails_clearly() -> None:
    config = LinkConfig(driver_api_address="127.0.0.1:0", fleet_api_address="127.0.0.1:0")
    with anyio.fail_after(30):
        async with SuperLink(config) as link:
            with pytest.raises(LinkConnectionError):
                async with AsyncDriver(link.driver_address, root_certificates=make_certs().ca_cert):
                    pass


async def test_plaintext_node_against_tls_link_never_registers() -> None:
    """A plaintext node cannot talk to a TLS link: it keeps retrying (as Flower's node) and never registers."""
    with anyio.fail_after(30):
        async with SuperLink(tls_config()) as link:
            async with SuperNode(echo, link.fleet_address, insecure=True, max_backoff=0.2) as node:
                with pytest.raises(TimeoutError):
                    await node.wait_registered(timeout=1.0)
            assert link.stats().nodes == 0

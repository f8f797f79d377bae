"""The connection gate: idle and never-speaking connections are closed, caps evict idle ones first."""

from __future__ import annotations

import asyncio
import time

import anyio

from fl_async._net import parse_address
from fl_async.proto.fl_async import v1 as pb
from fl_async.superlink import SuperLink
from fl_async.superlink.gate import raise_fd_limit
from tests.link_stubs import RawDriver, RawNode, channel, instruction


async def _silent(address: str, n: int) -> list[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    host, port = parse_address(address)
    return [await asyncio.open_connection(host, port) for _ in range(n)]


async def test_silent_connections_closed_after_the_setup_timeout(superlink_factory) -> None:  # type: ignore[no-untyped-def]
    link: SuperLink = await superlink_factory(connection_setup_timeout=0.5)
    assert link.blob_address is not None
    conns = await _silent(link.fleet_address, 3) + await _silent(link.blob_address, 3)
    start = time.monotonic()
    with anyio.fail_after(5):
        for reader, _ in conns:
            await reader.read()  # until the link closes it (gRPC ports first send their HTTP/2 settings)
            assert reader.at_eof()
    assert 0.4 < time.monotonic() - start < 5
    for _, writer in conns:
        writer.close()


async def test_idle_connections_evicted_for_a_new_node(superlink_factory) -> None:  # type: ignore[no-untyped-def]
    link: SuperLink = await superlink_factory(max_connections_per_address=6)
    assert link.blob_address is not None
    conns = await _silent(link.fleet_address, 4) + await _silent(link.blob_address, 4)  # 8 > 6: 2 evicted
    await asyncio.sleep(0.1)  # let the link accept them
    assert link.gate is not None and link.gate.count <= 6 and link.gate.evicted >= 2
    drv_ch, fleet_ch = channel(link.driver_address), channel(link.fleet_address)
    try:
        with anyio.fail_after(10):  # a fresh node and driver still complete a round
            drv = await RawDriver.create(pb.DriverStub(drv_ch))
            node = await RawNode.create(pb.FleetStub(fleet_ch))
            async with anyio.create_task_group() as tg:
                tg.start_soon(node.serve_echo)
                assert len(await drv.send_and_receive([instruction(drv.run_id, node.node_id)])) == 1
                tg.cancel_scope.cancel()
    finally:
        drv_ch.close()
        fleet_ch.close()
        for _, writer in conns:
            writer.close()


def test_fd_limit_raised_to_the_hard_limit() -> None:
    import resource

    soft = raise_fd_limit()
    assert soft == resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    assert soft == hard or hard == resource.RLIM_INFINITY

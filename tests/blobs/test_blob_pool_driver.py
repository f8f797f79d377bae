"""The driver's download pool between rounds (found by an attack on the pool):
* rounds longer than max_idle_seconds still reuse buffers (time in use is not idle time);
* after the last round, the pool's janitor returns reply buffers beyond the budget without any allocation.
The driver gets a pool of its own (as in a separate server-app process) with an injectable clock."""

from __future__ import annotations

import anyio
import numpy as np

from fl_async.blobs import BufferPool
from fl_async.client.client_app import ClientApp
from fl_async.common import Context, Message, RecordSet
from fl_async.common.records import Array, ParametersRecord
from fl_async.server.async_driver import AsyncDriver
from tests.driver_fixtures import cluster

MiB = 1 << 20
N = 4


class Clock:
    now = 0.0

    def __call__(self) -> float:
        return self.now


def app() -> ClientApp:
    a = ClientApp()

    @a.train()
    def train(message: Message, context: Context) -> Message:
        w = np.full(MiB, context.node_id % 1000 + message.content.configs_records["c"]["r"], dtype=np.float32)
        return message.create_reply(RecordSet(parameters_records={"m": ParametersRecord({"w": Array.from_numpy(w)})}))

    return a


async def rounds(pool: BufferPool, clock: Clock | None, n_rounds: int) -> list:  # type: ignore[type-arg]
    from fl_async.common.records import ConfigsRecord

    async with cluster(app(), N) as c, AsyncDriver(c.link.driver_address, insecure=True) as driver:
        nids = await driver.wait_for_nodes(N, timeout=10)
        driver._blob_client.pool = pool  # the server app's process-wide pool  # type: ignore[union-attr]
        stats = []
        for r in range(n_rounds):
            content = RecordSet(configs_records={"c": ConfigsRecord({"r": r})})
            with anyio.fail_after(30):
                replies = await driver.send_and_receive(
                    [driver.create_message(content, "train", n, f"r{r}") for n in nids], timeout=25
                )
            avg = np.mean([x.content.parameters_records["m"]["w"].numpy() for x in replies], axis=0)
            if clock is not None:
                clock.now += 45.0  # the server app works on the round for 45 s (evaluation, checkpoint, ...)
            del replies, avg
            stats.append(pool.statistics())
        return stats


async def test_driver_reuses_buffers_when_rounds_take_longer_than_max_idle() -> None:
    clock = Clock()
    pool = BufferPool(max_idle_bytes=64 * MiB, max_idle_seconds=30.0, clock=clock)
    stats = await rounds(pool, clock, 3)
    assert stats[-1].reused > 0, stats  # before the fix: 12 fresh, 0 reused


async def test_driver_returns_idle_buffers_beyond_budget_after_the_last_round() -> None:
    pool = BufferPool(max_idle_bytes=8 * MiB, max_idle_seconds=0.5)
    await rounds(pool, None, 1)
    with anyio.move_on_after(5.0):  # bounded polling: 10x max_idle_seconds
        while pool.statistics().idle_bytes > pool.max_idle_bytes:
            await anyio.sleep(0.05)
    st = pool.statistics()
    assert st.idle_bytes <= pool.max_idle_bytes, st  # before the fix: 16 MiB idle kept for good

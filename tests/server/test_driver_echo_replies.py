"""N nodes return the received model unchanged and the driver pulls their replies in one call: the N reply
arrays (one digest) must be independent buffers, or a server app that scales each reply in place (FedAvg
weighting) would change its siblings."""

from __future__ import annotations

import anyio
import numpy as np

from fl_async.client.client_app import ClientApp
from fl_async.common import Context, Message, RecordSet
from fl_async.common.records import Array, ParametersRecord
from fl_async.server.async_driver import AsyncDriver
from tests.driver_fixtures import cluster

N = 3


def echo() -> ClientApp:
    app = ClientApp()

    @app.train()
    def train(message: Message, context: Context) -> Message:
        return message.create_reply(RecordSet(parameters_records=dict(message.content.parameters_records)))

    return app


async def test_echoed_replies_are_independent() -> None:
    async with cluster(echo(), N) as c, AsyncDriver(c.link.driver_address, insecure=True) as driver:
        superlink = c.link
        nids = await driver.wait_for_nodes(N, timeout=10)
        w = np.ones(1 << 19, dtype=np.float32)  # 2 MiB: external
        content = RecordSet(parameters_records={"m": ParametersRecord({"w": Array.from_numpy(w)})})
        ids = await driver.push_messages([driver.create_message(content, "train", n, "g") for n in nids])
        # wait until all replies are stored, then pull them in ONE call
        with anyio.fail_after(20):
            while superlink.stats().replies < N:
                await anyio.sleep(0.02)
        replies = []
        with anyio.fail_after(20):
            while len(replies) < N:
                replies += await driver.pull_messages(
                    [i for i in ids if i not in {r.metadata.reply_to_message for r in replies}], timeout=5
                )
        arrays = [r.content.parameters_records["m"]["w"].numpy() for r in replies]
        shared = [np.shares_memory(arrays[0], a) for a in arrays[1:]]
        for i, a in enumerate(arrays):
            a *= np.float32(i + 2)  # weight each reply in place
        got = [float(a[0]) for a in arrays]
        assert not any(shared) and got == [2.0, 3.0, 4.0], f"shares memory: {shared}; values {got}"

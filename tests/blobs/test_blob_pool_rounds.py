"""In one process (link + 3 nodes + driver sharing the default BufferPool), several rounds of
4 MiB and 17 MiB arrays (the latter prefaulted); ClientApps and the server app keep numpy views, torch
tensors, ctypes objects and Arrays (also in Context.state) across rounds, reply with the received array
modified in place, sometimes raise after keeping a view; each round half the kept objects are dropped so
that their buffers are reused. Every kept object is checked every round: a reused buffer that someone still
uses would show other bytes.
"""

from __future__ import annotations

import ctypes
import random
from contextlib import AsyncExitStack

import anyio
import numpy as np
import pytest

from fl_async.blobs import buffers
from fl_async.client.client_app import ClientApp
from fl_async.common import Context, Message, RecordSet
from fl_async.common.records import Array, ParametersRecord
from fl_async.server.async_driver import AsyncDriver
from fl_async.supernode import SuperNode

try:
    import torch
except ImportError:  # pragma: no cover
    torch = None

MiB = 1 << 20
SIZES = {"a": 4 * MiB, "b": 17 * MiB}  # bytes; "b" >= PREFAULT_MIN
N = 3
ROUNDS = 6


def pattern(seed: int, key: str) -> np.ndarray:
    n = SIZES[key] // 4
    return (np.arange(n, dtype=np.uint32) * np.uint32(2654435761)) ^ np.uint32(seed * 1000003 + ord(key))


class Kept:
    """Objects held across rounds, each with the bytes it must show."""

    def __init__(self) -> None:
        self.items: list[tuple[str, object, np.ndarray]] = []

    def add(self, label: str, obj: object, expected: np.ndarray) -> None:
        self.items.append((label, obj, expected))

    @staticmethod
    def _look(obj: object) -> np.ndarray:
        if torch is not None and isinstance(obj, torch.Tensor):
            return obj.numpy().view(np.uint32)
        if isinstance(obj, Array):
            return obj.numpy().view(np.uint32)
        if isinstance(obj, ctypes.Array):
            return np.frombuffer(obj, dtype=np.uint32)
        if isinstance(obj, Message):
            return obj.content.parameters_records["model"]["a"].numpy().view(np.uint32)
        if isinstance(obj, ParametersRecord):
            return next(iter(obj.values())).numpy().view(np.uint32)
        return np.asarray(obj).view(np.uint32)

    def check(self, where: str) -> None:
        bad = [label for label, obj, exp in self.items if not np.array_equal(self._look(obj), exp)]
        assert not bad, f"{where}: {len(bad)} kept objects changed under their holder: {bad[:5]}"

    def drop_half(self, rng: random.Random) -> None:
        rng.shuffle(self.items)
        del self.items[: len(self.items) // 2]


NODE_KEPT = Kept()


def make_app() -> ClientApp:
    app = ClientApp()

    @app.train()
    async def train(message: Message, context: Context) -> Message:
        r = int(message.content.configs_records["cfg"]["round"])
        nid = context.node_id
        rec = message.content.parameters_records["model"]
        out = {}
        for key in SIZES:
            arr = rec[key]
            w = arr.numpy().view(np.uint32)
            assert np.array_equal(w, pattern(r, key)), f"node {nid} round {r} key {key}: received wrong bytes"
            # different kinds of holders of the received buffer
            NODE_KEPT.add(f"n{nid}r{r}{key}-w", w, pattern(r, key) + np.uint32(nid % 251 + 1))  # modified below
            NODE_KEPT.add(f"n{nid}r{r}{key}-slice", w[1000:], (pattern(r, key) + np.uint32(nid % 251 + 1))[1000:])
            NODE_KEPT.add(
                f"n{nid}r{r}{key}-ctypes",
                (ctypes.c_uint32 * w.size).from_buffer(w),
                pattern(r, key) + np.uint32(nid % 251 + 1),
            )
            if torch is not None:
                NODE_KEPT.add(
                    f"n{nid}r{r}{key}-torch",
                    torch.frombuffer(arr.data, dtype=torch.uint8),
                    pattern(r, key) + np.uint32(nid % 251 + 1),
                )
            context.state.parameters_records[f"r{r}{key}"] = ParametersRecord({key: arr})
            NODE_KEPT.add(
                f"n{nid}r{r}{key}-state",
                context.state.parameters_records[f"r{r}{key}"],
                pattern(r, key) + np.uint32(nid % 251 + 1),
            )
            w += np.uint32(nid % 251 + 1)  # the reply is the received buffer, modified in place
            out[key] = Array.from_numpy(w)
        if nid % 2 == 0 and r % 2 == 1:
            raise RuntimeError("app fails after keeping views")
        return message.create_reply(RecordSet(parameters_records={"model": ParametersRecord(out)}))

    return app


@pytest.mark.parametrize("seed", [1, 2])
async def test_rounds_keep_everything_intact(superlink_factory, seed: int) -> None:  # type: ignore[no-untyped-def]
    rng = random.Random(seed)
    pool = buffers.BufferPool(max_idle_bytes=256 * MiB)
    buffers.set_default_pool(pool)  # the link, nodes and driver all share it, as in `fl-async run`
    NODE_KEPT.items.clear()
    drv_kept = Kept()
    try:
        link = await superlink_factory()
        link.blobs.store.max_blob_bytes = 64 << 20
        async with AsyncExitStack() as stack:
            nodes = [
                await stack.enter_async_context(
                    SuperNode(make_app(), link.fleet_address, insecure=True, heartbeat_interval=2.0)
                )
                for _ in range(N)
            ]
            with anyio.fail_after(20):
                for node in nodes:
                    await node.wait_registered()
            driver = await stack.enter_async_context(AsyncDriver(link.driver_address, insecure=True))
            node_ids = await driver.wait_for_nodes(N, timeout=10)
            from fl_async.common.records import ConfigsRecord

            for r in range(ROUNDS):
                model = ParametersRecord({k: Array.from_numpy(pattern(r, k)) for k in SIZES})
                content = RecordSet(
                    parameters_records={"model": model}, configs_records={"cfg": ConfigsRecord({"round": r})}
                )
                msgs = [driver.create_message(content, "train", nid, f"r{r}") for nid in node_ids]
                with anyio.fail_after(60):
                    replies = await driver.send_and_receive(msgs, timeout=50)
                assert len(replies) == N
                for rep in replies:
                    nid = rep.metadata.src_node_id
                    if rep.has_error():
                        assert nid % 2 == 0 and r % 2 == 1, rep.error
                        continue
                    for key in SIZES:
                        exp = pattern(r, key) + np.uint32(nid % 251 + 1)
                        a = rep.content.parameters_records["model"][key]
                        v = a.numpy().view(np.uint32)
                        assert np.array_equal(v, exp), f"driver: round {r} node {nid} key {key} wrong on arrival"
                        drv_kept.add(f"d{nid}r{r}{key}-view", v, exp)
                        drv_kept.add(f"d{nid}r{r}{key}-Array", a, exp)
                        if torch is not None:
                            drv_kept.add(f"d{nid}r{r}{key}-torch", torch.from_numpy(a.numpy()), exp)
                    drv_kept.add(f"d{nid}r{r}-msg", rep, pattern(r, "a") + np.uint32(nid % 251 + 1))
                replies = rep = a = v = None
                drv_kept.check(f"driver after round {r}")
                NODE_KEPT.check(f"nodes after round {r}")
                drv_kept.drop_half(rng)
                NODE_KEPT.drop_half(rng)
                for node in nodes:  # context.state: drop old rounds' arrays sometimes
                    pass
        st = pool.statistics()
        print("pool:", st)
        assert st.reused > 0, st  # the attack must actually exercise reuse
        drv_kept.check("driver at the end")
        NODE_KEPT.check("nodes at the end")
    finally:
        buffers.set_default_pool(None)
        NODE_KEPT.items.clear()

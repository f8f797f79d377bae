"""Link + 3 nodes in one thread/loop, two blocking Drivers (two portal threads) used from two user
threads at once, all sharing the process-wide pool; each user thread keeps reply views across rounds and
drops half each round; a janitor thread trims the pool all along."""

from __future__ import annotations

import random
import threading

import numpy as np

from fl_async.blobs import buffers
from fl_async.client.client_app import ClientApp
from fl_async.common import Context, Message, RecordSet
from fl_async.common.records import Array, ConfigsRecord, ParametersRecord
from fl_async.server.driver import Driver
from tests.driver_fixtures import cluster_in_thread

MiB = 1 << 20


def expected(nid: int, r: int, tag: int, n: int) -> np.ndarray:
    return np.arange(n, dtype=np.uint32) ^ np.uint32((nid % 9973) * 131 + r * 7 + tag)


def app() -> ClientApp:
    a = ClientApp()

    @a.train()
    def train(message: Message, context: Context) -> Message:
        c = message.content.configs_records["c"]
        r, tag, n = int(c["r"]), int(c["tag"]), int(c["n"])
        got = message.content.parameters_records["m"]["w"].numpy()
        assert np.array_equal(got, expected(0, r, tag, n)), "instruction corrupted"
        out = got.copy() if r % 2 else got  # odd rounds: a new array; even: the received buffer
        out ^= np.uint32((context.node_id % 9973) * 131) ^ np.uint32(0)
        return message.create_reply(RecordSet(parameters_records={"m": ParametersRecord({"w": Array.from_numpy(out)})}))

    return a


def user(address: str, tag: int, n: int, errors: list[str]) -> None:
    rng = random.Random(tag)
    kept: list[tuple[np.ndarray, np.ndarray]] = []
    with Driver(address, insecure=True) as d:
        nids = d.wait_for_nodes(3, timeout=10)
        for r in range(6):
            w = expected(0, r, tag, n)
            content = RecordSet(
                parameters_records={"m": ParametersRecord({"w": Array.from_numpy(w)})},
                configs_records={"c": ConfigsRecord({"r": r, "tag": tag, "n": n})},
            )
            replies = d.send_and_receive(
                [d.create_message(content, "train", x, f"{tag}-{r}") for x in nids], timeout=30
            )
            for rep in replies:
                if rep.has_error():
                    errors.append(f"user {tag}: error reply {rep.error}")
                    continue
                v = rep.content.parameters_records["m"]["w"].numpy()
                exp = w ^ np.uint32((rep.metadata.src_node_id % 9973) * 131)
                if not np.array_equal(v, exp):
                    errors.append(f"user {tag} round {r}: reply wrong on arrival")
                kept.append((v, exp))
            del replies
            for v, exp in kept:
                if not np.array_equal(v, exp):
                    errors.append(f"user {tag} after round {r}: a kept reply changed")
            rng.shuffle(kept)
            del kept[: len(kept) // 2]


def test_two_sync_drivers_two_threads() -> None:
    pool = buffers.BufferPool(max_idle_bytes=128 * MiB)
    buffers.set_default_pool(pool)
    stop = threading.Event()
    errors: list[str] = []
    try:
        with cluster_in_thread(app(), num_nodes=3) as (c, portal):
            janitor = threading.Thread(target=lambda: [pool.trim() for _ in iter(lambda: stop.is_set(), True)])
            janitor.start()
            users = [
                threading.Thread(target=user, args=(c.link.driver_address, t, (2 * MiB) // 4 + 1024 * t, errors))
                for t in (1, 2)
            ]
            for u in users:
                u.start()
            for u in users:
                u.join(90)
            stop.set()
            janitor.join()
        print(pool.statistics())
        assert not errors, errors[:5]
        assert pool.statistics().reused > 0
    finally:
        stop.set()
        buffers.set_default_pool(None)

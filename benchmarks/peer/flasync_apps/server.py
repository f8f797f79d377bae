"""fl-async ServerApp for the benchmarks: the guide's round structure, with waiting done on the link.

Run by ``fl-async server-app benchmarks.peer.flasync_apps.server:app --superlink H:P --insecure``. Per round:
select N online nodes, build one message per node, ``send_and_receive`` (push, then a long-poll that returns
when the last reply is in). In ``"kill"`` mode the replies are consumed one by one with ``driver.receive`` so
the error reply is timed the moment it arrives. In ``"ready"`` mode it touches ``BENCH_OUT + ".ready"`` once
connected and then only waits for N nodes (bring-up time). Settings and the result file: :mod:`benchmarks.peer.appcfg`.
"""

import random
import time

import anyio

from benchmarks.peer.appcfg import AppConfig, AppResult, payload
from fl_async.common import (
    ConfigsRecord,
    Context,
    Message,
    MessageType,
    ParametersRecord,
    RecordSet,
)
from fl_async.common.records import Array
from fl_async.server import AsyncDriver, ServerApp

app = ServerApp()


@app.main()
async def main(driver: AsyncDriver, context: Context) -> None:
    """Run the configured workload and write an :class:`AppResult` to ``BENCH_OUT``."""
    cfg = AppConfig.from_env()
    res = AppResult()
    t_end = time.monotonic() + cfg.deadline
    model = Array.from_numpy(payload(cfg.floats))

    def left() -> float:
        return max(0.0, t_end - time.monotonic())

    def tally(reply: Message) -> None:
        if reply.has_error():
            res.replies_error += 1
            if res.error_at is None:
                res.error_at = time.time()
                res.error_code = reply.error.code
        else:
            res.replies_ok += 1

    try:
        if cfg.mode == "ready":  # bring-up: say we are connected, then time until N nodes are listed
            await driver.get_node_ids()
            await anyio.Path(cfg.out + ".ready").touch()
        t0 = time.perf_counter()
        await driver.wait_for_nodes(cfg.n, timeout=left())
        res.wait_nodes = time.perf_counter() - t0
        res.nodes_seen_at = time.time()
        rounds = {"kill": 1, "ready": 0}.get(cfg.mode, cfg.rounds)
        for server_round in range(rounds):
            t0 = time.perf_counter()
            sampled = random.sample(await driver.wait_for_nodes(cfg.n, timeout=left()), cfg.n)
            content = RecordSet()
            content.parameters_records["model"] = ParametersRecord({"w": model})
            content.configs_records["config"] = ConfigsRecord({"round": server_round})
            messages = [
                driver.create_message(content, MessageType.TRAIN, node_id, group_id=str(server_round))
                for node_id in sampled
            ]
            if cfg.mode == "kill":
                ids = await driver.push_messages(messages)
                async with driver.receive(ids, timeout=left()) as replies:
                    async for reply in replies:
                        tally(reply)
                        if res.error_at is not None:
                            break
            else:
                replies = await driver.send_and_receive(messages, timeout=left())
                for reply in replies:
                    tally(reply)
                if len(replies) < len(messages):
                    res.timed_out = True
                    break
            res.rounds.append(time.perf_counter() - t0)
    except Exception as exc:
        res.timed_out = True
        res.note = f"{type(exc).__name__}: {exc}"
    res.write(cfg.out)

"""Flower 1.10 ServerApp for the benchmarks, written exactly as the "Use Driver API" guide shows.

Run by ``flower-server-app benchmarks.peer.flower_apps.server:app --insecure --superlink H:P``. The loops are
the guide's: ``get_node_ids()`` until enough nodes, ``push_messages``, then ``pull_messages`` until all replies,
with ``time.sleep(BENCH_SLEEP)`` between polls (3 s in the guide; the harness also runs a short sleep).
Settings and the result file: see :mod:`benchmarks.peer.appcfg`. In ``"ready"`` mode the app touches
``BENCH_OUT + ".ready"`` once connected and then only waits for N nodes (bring-up time).
"""

import random
import time
from pathlib import Path

from flwr.common import (
    DEFAULT_TTL,
    ConfigsRecord,
    Context,
    Message,
    MessageType,
    ParametersRecord,
    RecordSet,
    array_from_numpy,
)
from flwr.server import Driver, ServerApp

from benchmarks.peer.appcfg import AppConfig, AppResult, payload

app = ServerApp()


class _Deadline(Exception):
    pass


@app.main()
def main(driver: Driver, context: Context) -> None:
    """Run the configured workload and write an :class:`AppResult` to ``BENCH_OUT``."""
    cfg = AppConfig.from_env()
    res = AppResult()
    t_end = time.monotonic() + cfg.deadline
    model = array_from_numpy(payload(cfg.floats))

    def check() -> None:
        if time.monotonic() > t_end:
            raise _Deadline

    def select_nodes() -> list[int]:
        # Loop and wait until enough nodes are available (the guide's loop).
        while True:
            all_node_ids = driver.get_node_ids()
            if len(all_node_ids) >= cfg.n:
                return random.sample(all_node_ids, cfg.n)
            check()
            time.sleep(cfg.sleep)

    try:
        if cfg.mode == "ready":  # bring-up: say we are connected, then time until N nodes are listed
            driver.get_node_ids()
            Path(cfg.out + ".ready").touch()
        t0 = time.perf_counter()
        select_nodes()
        res.wait_nodes = time.perf_counter() - t0
        res.nodes_seen_at = time.time()
        rounds = {"kill": 1, "ready": 0}.get(cfg.mode, cfg.rounds)
        for server_round in range(rounds):
            t0 = time.perf_counter()
            sampled_nodes = select_nodes()
            recordset = RecordSet()
            recordset.parameters_records["model"] = ParametersRecord({"w": model}, keep_input=True)
            recordset.configs_records["config"] = ConfigsRecord({"round": server_round})
            messages = [
                driver.create_message(
                    content=recordset,
                    message_type=MessageType.TRAIN,
                    dst_node_id=node_id,
                    group_id=str(server_round),
                    ttl=DEFAULT_TTL,
                )
                for node_id in sampled_nodes
            ]
            message_ids = driver.push_messages(messages)
            message_ids = [message_id for message_id in message_ids if message_id != ""]
            all_replies: list[Message] = []
            while True:
                replies = list(driver.pull_messages(message_ids=message_ids))
                for reply in replies:
                    if reply.has_error():
                        res.replies_error += 1
                        if res.error_at is None:
                            res.error_at = time.time()
                            res.error_code = reply.error.code
                    else:
                        res.replies_ok += 1
                all_replies += replies
                if len(all_replies) == len(message_ids):
                    break
                if cfg.mode == "kill" and res.error_at is not None:
                    break
                check()
                time.sleep(cfg.sleep)
            res.rounds.append(time.perf_counter() - t0)
    except _Deadline:
        res.timed_out = True
    res.write(cfg.out)

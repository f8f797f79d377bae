"""Newest Flower ServerApp for the benchmarks: the same round as the other apps, through the Grid API.

Launched by ``flwr run`` against the local SuperLink (its SuperExec starts ``flwr-serverapp``). Per round:
``grid.get_node_ids()`` until N nodes are there, one ``Message`` per node with an ``ArrayRecord`` (the model)
and a ``ConfigRecord``, ``grid.push_messages``, then ``grid.pull_messages`` every ``sleep`` seconds until all
replies are in (``Grid.send_and_receive`` does the same with a fixed 3 s sleep). Settings come from the run
config (the keys of :class:`appcfg.AppConfig`); the result (with this process's own peak RSS and CPU seconds,
and the largest ClientApp figures from the replies' ``MetricRecord``) goes to the run config's ``out``.
With ``mode = "ready"`` the app writes ``out + ".ready"`` once it can list nodes, then waits for N of them.
"""

import random
import resource
import time
from pathlib import Path

from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MessageType, RecordDict
from flwr.serverapp import Grid, ServerApp

from .appcfg import AppConfig, AppResult, payload

app = ServerApp()


class _Deadline(Exception):
    pass


@app.main()
def main(grid: Grid, context: Context) -> None:
    """Run the configured workload and write an :class:`AppResult` to the run config's ``out``."""
    rc = context.run_config
    cfg = AppConfig(
        mode=str(rc["mode"]),
        n=int(rc["n"]),
        rounds=int(rc["rounds"]),
        sleep=float(rc["sleep"]),
        floats=int(rc["floats"]),
        deadline=float(rc["deadline"]),
        out=str(rc["out"]),
    )
    res = AppResult()
    t_end = time.monotonic() + cfg.deadline
    model = payload(cfg.floats)

    def check() -> None:
        if time.monotonic() > t_end:
            raise _Deadline

    def select_nodes() -> list[int]:
        while True:
            ids = list(grid.get_node_ids())
            if len(ids) >= cfg.n:
                return random.sample(ids, cfg.n)
            check()
            time.sleep(cfg.sleep)

    def tally(reply: Message) -> None:
        if reply.has_error():
            res.replies_error += 1
            if res.error_at is None:
                res.error_at = time.time()
                res.error_code = reply.error.code
            return
        res.replies_ok += 1
        if "proc" in reply.content:
            usage = reply.content["proc"]
            res.client_rss = max(res.client_rss or 0, int(usage["rss"]))
            res.client_cpu = max(res.client_cpu or 0.0, float(usage["cpu"]))

    try:
        if cfg.mode == "ready":
            list(grid.get_node_ids())
            Path(cfg.out + ".ready").touch()
        t0 = time.perf_counter()
        select_nodes()
        res.wait_nodes = time.perf_counter() - t0
        res.nodes_seen_at = time.time()
        rounds = {"kill": 1, "ready": 0}.get(cfg.mode, cfg.rounds)
        for server_round in range(rounds):
            t0 = time.perf_counter()
            sampled = select_nodes()
            arrays = ArrayRecord([model], keep_input=True)  # one record for all N messages, as a strategy does
            config = ConfigRecord({"round": server_round})
            messages = [
                Message(
                    RecordDict({"model": arrays, "config": config}),
                    node_id,
                    MessageType.TRAIN,
                    group_id=str(server_round),
                )
                for node_id in sampled
            ]
            pending = {mid for mid in grid.push_messages(messages) if mid}
            n_sent = len(pending)
            got = 0
            while pending:
                for reply in grid.pull_messages(pending):
                    pending.discard(reply.metadata.reply_to_message_id)
                    got += 1
                    tally(reply)
                if cfg.mode == "kill" and res.error_at is not None:
                    break
                if pending:
                    check()
                    time.sleep(cfg.sleep)
            if got < n_sent and cfg.mode != "kill":
                res.note = f"{n_sent - got} replies missing"
            res.rounds.append(time.perf_counter() - t0)
    except _Deadline:
        res.timed_out = True
    except Exception as exc:
        res.timed_out = True
        res.note = f"{type(exc).__name__}: {exc}"
    ru = resource.getrusage(resource.RUSAGE_SELF)
    res.self_rss = int(ru.ru_maxrss) * 1024
    res.self_cpu = float(ru.ru_utime + ru.ru_stime)
    res.write(cfg.out)

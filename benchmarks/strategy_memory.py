"""FedAvg's driver memory: the streaming strategy vs the naive list-of-replies mean, in one run.

``python -m benchmarks.strategy_memory [--mib 50] [--nodes 40] [--repeats 2]``

One cluster process (a SuperLink and N SuperNodes on 127.0.0.1, free ports) serves every measurement;
each measurement is a fresh driver process (so peak RSS is its own) that connects, builds a model of
``--mib`` MiB (float32; a few large tensors and a small one), waits for the N nodes, resets its peak RSS
(``/proc/self/clear_refs``) and runs one round of FedAvg:

* ``streaming``: ``fl_async.serverapp.strategy.FedAvg().start(grid=..., num_rounds=1)``: each reply is
  folded into a running weighted mean as it arrives (``receive()`` downloads one reply at a time);
* ``naive``: ``send_and_receive`` then newest Flower's ``aggregate_arrayrecords`` arithmetic over the list
  of all replies (``sum(x_i * w_i / W)``), which holds every reply at once.

Each node replies with the model plus a node-specific constant (so no two replies share a payload digest,
as real updates do not), weighted by a node-specific example count, so both variants must produce the same
mean (checked). Printed per run: driver peak RSS growth over the
baseline (after connect, model built, nodes online) in MiB and in models, round seconds; then the ratios
streaming / naive. Needs about ``(N + 2) * MiB`` of free memory for the link and the nodes, plus ``N * MiB``
for the naive driver (checked before starting).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _rss(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


# ------------------------------------------------------------------ the cluster process


def _client_app():  # type: ignore[no-untyped-def]
    import numpy as np

    from fl_async.app import ArrayRecord, Context, Message, MetricRecord, RecordDict
    from fl_async.clientapp import ClientApp

    app = ClientApp()

    @app.train()
    def train(msg: Message, context: Context) -> Message:
        k = context.node_id % 10 + 1  # the weight
        shift = np.float32(1 + (context.node_id % 1_000_003) / 997.0)  # distinct replies (no shared digests)
        arrays = msg.content["arrays"]
        out = ArrayRecord()
        for key, array in arrays.items():
            x = array.numpy()
            if not x.flags.writeable:
                x = x.copy()
            x += shift  # in place: the node holds one model
            out[key] = type(array).from_numpy(x)
        return Message(RecordDict({"arrays": out, "metrics": MetricRecord({"num-examples": k})}), reply_to=msg)

    return app


async def _serve(nodes: int) -> None:
    import anyio

    from fl_async.superlink import LinkConfig, SuperLink
    from fl_async.supernode import SuperNode

    config = LinkConfig(driver_api_address="127.0.0.1:0", fleet_api_address="127.0.0.1:0")
    async with SuperLink(config) as link, anyio.create_task_group() as tg:
        app = _client_app()
        started = [SuperNode(app, link.fleet_address, insecure=True) for _ in range(nodes)]
        for node in started:
            tg.start_soon(node.run)
        for node in started:
            await node.wait_registered()
        print(f"READY {link.driver_address}", flush=True)
        with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            async for _ in signals:
                break
        for node in started:
            node.stop()
        tg.cancel_scope.deadline = anyio.current_time() + 10


# ------------------------------------------------------------------ one driver measurement


def _model(mib: int):  # type: ignore[no-untyped-def]
    import numpy as np

    n = mib * 2**20 // 4
    rng = np.random.default_rng(0)
    parts = [n // 5] * 4 + [n - 4 * (n // 5) - 1000]
    return [rng.standard_normal(p, dtype=np.float32) for p in parts] + [np.zeros(1000, dtype=np.float32)]


AGGREGATING = [0.0]
"""Seconds spent averaging (the driver's own arithmetic, without waiting or downloading)."""


def _timed_add(add):  # type: ignore[no-untyped-def]
    def timed(self, record, weight):  # type: ignore[no-untyped-def]
        started = time.perf_counter()
        try:
            return add(self, record, weight)
        finally:
            AGGREGATING[0] += time.perf_counter() - started

    return timed


def _naive_round(grid, arrays, nodes: int, timeout: float):  # type: ignore[no-untyped-def]
    import numpy as np

    from fl_async.app import ArrayRecord, ConfigRecord, Message, MessageType, RecordDict

    content = RecordDict({"arrays": arrays, "config": ConfigRecord({"server-round": 1})})
    messages = [Message(content, n, MessageType.TRAIN, ttl=timeout) for n in grid.get_node_ids()]
    replies = [r for r in grid.send_and_receive(messages, timeout=timeout) if r.has_content()]
    started = time.perf_counter()
    weights = [float(r.content["metrics"]["num-examples"]) for r in replies]
    total = sum(weights)
    agg: dict[str, np.ndarray] = {}
    for reply, w in zip(replies, weights, strict=True):  # newest Flower's aggregate_arrayrecords
        for key, value in reply.content["arrays"].items():
            if key not in agg:
                agg[key] = value.numpy() * (w / total)
            else:
                agg[key] += value.numpy() * (w / total)
    out = ArrayRecord({k: type(arrays["0"]).from_numpy(np.asarray(v)) for k, v in agg.items()})
    AGGREGATING[0] += time.perf_counter() - started
    return out, len(replies)


def _drive(variant: str, superlink: str, mib: int, nodes: int) -> None:
    import logging

    import numpy as np

    from fl_async.app import ArrayRecord
    from fl_async.serverapp import Grid
    from fl_async.serverapp.strategy import FedAvg
    from fl_async.serverapp.strategy._streaming import WeightedArrayMean

    WeightedArrayMean.add = _timed_add(WeightedArrayMean.add)  # type: ignore[method-assign]
    logging.getLogger("fl_async").setLevel(logging.WARNING)
    arrays = ArrayRecord(_model(mib))
    model_bytes = sum(a.nbytes for a in arrays.values())
    with Grid(superlink, insecure=True) as grid:
        grid.wait_for_nodes(nodes, timeout=60)
        baseline = _rss("VmRSS")
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # reset VmHWM to the current RSS
        started = time.perf_counter()
        if variant == "streaming":
            strategy = FedAvg(fraction_evaluate=0.0, min_available_nodes=nodes, min_train_nodes=nodes)
            result = strategy.start(grid=grid, initial_arrays=arrays, num_rounds=1, timeout=600)
            out, count = result.arrays, result.train_replies[1].results
        else:
            out, count = _naive_round(grid, arrays, nodes, 600.0)
        seconds = time.perf_counter() - started
        peak = _rss("VmHWM")
    checksum = float(sum(np.asarray(a.numpy(), dtype=np.float64).sum() for a in out.values()))
    print(
        json.dumps(
            {
                "variant": variant,
                "growth": peak - baseline,
                "model": model_bytes,
                "seconds": seconds,
                "aggregating": AGGREGATING[0],
                "replies": count,
                "checksum": checksum,
            }
        ),
        flush=True,
    )


# ------------------------------------------------------------------ the comparison


def _available_bytes() -> int:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run the comparison and print its figures; returns the exit code."""
    p = argparse.ArgumentParser(prog="python -m benchmarks.strategy_memory")
    p.add_argument("--mib", type=int, default=50, help="model size in MiB")
    p.add_argument("--nodes", type=int, default=40, help="SuperNodes")
    p.add_argument("--repeats", type=int, default=2, help="measurements per variant (alternating)")
    p.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--drive", choices=["streaming", "naive"], help=argparse.SUPPRESS)
    p.add_argument("--superlink", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.serve:
        import anyio

        anyio.run(_serve, args.nodes)
        return 0
    if args.drive:
        _drive(args.drive, args.superlink, args.mib, args.nodes)
        return 0

    need = (2 * args.nodes + 4) * args.mib * 2**20
    if _available_bytes() < need:
        print(f"not enough free memory: need ~{need / 2**30:.1f} GiB, have {_available_bytes() / 2**30:.1f}")
        return 1
    from benchmarks._proc import Proc

    env = {"PYTHONPATH": str(ROOT)}
    with tempfile.TemporaryDirectory() as tmp:
        log = Path(tmp) / "cluster.log"
        cluster = Proc(
            "cluster",
            [sys.executable, "-m", "benchmarks.strategy_memory", "--serve", "--nodes", str(args.nodes)],
            env=env,
            cwd=ROOT,
            log_path=log,
        )
        try:
            deadline = time.monotonic() + 120
            address = None
            while address is None and time.monotonic() < deadline:
                match = re.search(r"READY (\S+)", log.read_text())
                address = match.group(1) if match else None
                if address is None:
                    time.sleep(0.2)  # waiting on another process's startup: nothing to wait on but its log
            if address is None:
                raise TimeoutError(f"cluster not ready after 120 s:\n{log.read_text()[-2000:]}")
            runs = []
            for i in range(args.repeats):
                for variant in ("naive", "streaming") if i % 2 == 0 else ("streaming", "naive"):
                    cmd = [sys.executable, "-m", "benchmarks.strategy_memory", "--drive", variant]
                    cmd += ["--superlink", address, "--mib", str(args.mib), "--nodes", str(args.nodes)]
                    proc = subprocess.run(
                        cmd, cwd=ROOT, env={**os.environ, **env}, capture_output=True, text=True, timeout=900
                    )
                    if proc.returncode != 0:
                        raise RuntimeError(f"{variant} driver failed:\n{proc.stderr[-3000:]}")
                    run = json.loads(proc.stdout.strip().splitlines()[-1])
                    runs.append(run)
                    print(
                        f"{variant:>9}: peak RSS growth {run['growth'] / 2**20:7.1f} MiB = "
                        f"{run['growth'] / run['model']:5.2f} models, round {run['seconds']:6.2f} s "
                        f"(averaging {run['aggregating']:5.2f} s), "
                        f"{run['replies']} replies",
                        flush=True,
                    )
        finally:
            cluster.stop()
    by = {v: [r for r in runs if r["variant"] == v] for v in ("streaming", "naive")}
    ref = runs[0]["checksum"]
    same = all(abs(r["checksum"] - ref) <= 1e-6 * abs(ref) for r in runs)  # float32 sums: ulps apart
    growth = {v: min(r["growth"] for r in rs) for v, rs in by.items()}
    secs = {v: min(r["seconds"] for r in rs) for v, rs in by.items()}
    model = runs[0]["model"]
    print(f"model {model / 2**20:.1f} MiB, {args.nodes} nodes; best of {args.repeats} per variant")
    print(f"streaming growth {growth['streaming'] / model:.2f} models, naive {growth['naive'] / model:.2f} models")
    print(
        f"ratio streaming/naive: memory growth {growth['streaming'] / growth['naive']:.3f}, "
        f"round time {secs['streaming'] / secs['naive']:.3f}"
    )
    print(f"same result in every run (1e-6 relative): {same} (checksums {[r['checksum'] for r in runs]})")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""``python -m benchmarks.peer``: six workloads on fl-async, Flower 1.10.0 and Flower 1.42.0, one after another.

Usage::

    python -m benchmarks.peer                   # everything, three systems (what `make bench-peer` runs)
    python -m benchmarks.peer --only fl-async   # fl-async only (what `make bench` runs)
    python -m benchmarks.peer --only flower-latest --workloads 1,4 --json build/bench.json
    python -m benchmarks.peer --quick           # smallest sizes (the smoke test uses this)
    python -m benchmarks.peer --with-guide      # also Flower 1.10 with the guide's 3 s sleep

Prints one Markdown table per workload (figure, fl-async, Flower 1.10, ratio, Flower 1.42, ratio) and, with
``--json PATH`` (``-`` = stdout), the same data as JSON. The systems never run at the same time. Exit code 0
when every workload produced its table (individual figures may still be ``n/a``; their reasons are in the
notes), 1 on a harness failure.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from benchmarks.peer import flasync, flower, flower_latest
from benchmarks.peer.harness import REPO
from benchmarks.peer.report import FLASYNC, FLOWER_FAST, FLOWER_GUIDE, FLOWER_LATEST, Table, dump_json
from benchmarks.peer.workloads import WORKLOADS, Settings, Variant

#: the guide's sleep between polls (seconds)
GUIDE_SLEEP = 3.0
#: the short sleep used for the tuned Flower variant (seconds); see docs/benchmarks.md for why this value
FAST_SLEEP = 0.1


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.peer", description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--only",
        default="all",
        help="which systems to run: all, or a comma-separated list of fl-async, flower (1.10), flower-latest (1.42)",
    )
    p.add_argument(
        "--workloads",
        default="1,2,3,4,5,6",
        help="comma-separated workload numbers (default 1,2,3,4,5,6)",
    )
    p.add_argument("--with-guide", action="store_true", help="add Flower 1.10 with the guide's 3 s sleep")
    p.add_argument(
        "--flower-latest-max-nodes",
        type=int,
        default=25,
        help="cap on Flower 1.42 node processes (workload 3)",
    )
    p.add_argument("--json", metavar="PATH", help="also write the results as JSON ('-' = stdout)")
    p.add_argument("--quick", action="store_true", help="smallest sizes only (smoke test)")
    p.add_argument(
        "--flower-max-nodes",
        type=int,
        default=200,
        help="cap on Flower node processes (workload 3)",
    )
    p.add_argument(
        "--kill-bound",
        type=float,
        default=None,
        help="seconds to wait for the error reply (workload 4)",
    )
    p.add_argument(
        "--fast-sleep",
        type=float,
        default=FAST_SLEEP,
        help="sleep of the tuned Flower variant (s)",
    )
    p.add_argument(
        "--logdir",
        type=Path,
        default=None,
        help="process logs (default build/bench-logs/<time>)",
    )
    args = p.parse_args(argv)
    systems = {"fl-async", "flower", "flower-latest"}
    args.systems = systems if args.only == "all" else {x.strip() for x in args.only.split(",")}
    if args.systems - systems:
        p.error(f"unknown system(s) in --only {args.only}; choose from all, {', '.join(sorted(systems))}")
    bad = [w for w in args.workloads.split(",") if w.strip() not in WORKLOADS]
    if bad:
        p.error(f"unknown workload(s) {','.join(bad)}; choose from {','.join(WORKLOADS)}")
    return args


def machine() -> dict[str, Any]:
    """Facts about this machine for the report."""
    mem = ""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem = f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
    except OSError:
        pass
    cpu = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cores": os.cpu_count(),
        "cpu": cpu,
        "memory": mem,
        "python": platform.python_version(),
        "kernel": platform.release(),
    }


def main(argv: list[str] | None = None) -> int:
    """Run the selected workloads and print their tables; returns the exit code."""
    args = parse_args(argv)
    started = time.monotonic()
    # absolute: the apps run in other working directories (Flower 1.10's is benchmarks/peer/flower_apps)
    logdir = (args.logdir or REPO / "build" / "bench-logs" / time.strftime("%Y%m%d-%H%M%S")).resolve()
    logdir.mkdir(parents=True, exist_ok=True)
    settings = Settings.quick(logdir) if args.quick else Settings(logdir=logdir)
    settings.flower_max_nodes = args.flower_max_nodes
    if args.kill_bound is not None:
        settings.kill_bound = args.kill_bound

    variants: list[Variant] = []
    notes: list[str] = []
    if "fl-async" in args.systems:
        gone = flasync.missing()
        if gone:
            notes.append(f"fl-async: n/a, not importable yet: {', '.join(gone)}")
        else:
            variants.append(
                Variant(
                    FLASYNC,
                    "fl-async",
                    flasync.system(),
                    in_process_nodes=True,
                    models_per_node=3,
                    node_mib=70,
                    idle_node_mib=70,
                )
            )
    if "flower" in args.systems:
        bindir = flower.ensure_venv()
        fsys = flower.system(bindir)
        if args.with_guide:
            variants.append(
                Variant(
                    FLOWER_GUIDE,
                    f"Flower {flower.FLWR_VERSION} (guide, sleep {GUIDE_SLEEP:g} s)",
                    fsys,
                    GUIDE_SLEEP,
                    models_per_node=15,
                    node_mib=75,
                )
            )
        variants.append(
            Variant(
                FLOWER_FAST,
                f"Flower {flower.FLWR_VERSION} (sleep {args.fast_sleep:g} s)",
                fsys,
                args.fast_sleep,
                models_per_node=15,
                node_mib=75,
                idle_node_mib=75,
            )
        )
    if "flower-latest" in args.systems:
        lsys = flower_latest.system(flower_latest.ensure_venv())
        variants.append(
            Variant(
                FLOWER_LATEST,
                f"Flower {flower_latest.FLWR_VERSION} (sleep {args.fast_sleep:g} s)",
                lsys,
                args.fast_sleep,
                max_nodes=args.flower_latest_max_nodes,
                models_per_node=4,
                node_mib=400,
                idle_node_mib=270,
            )
        )
    if not variants:
        print("nothing to run: " + "; ".join(notes), file=sys.stderr)
        return 1

    meta: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "command": "python -m benchmarks.peer " + " ".join(argv if argv is not None else sys.argv[1:]),
        "machine": machine(),
        "logdir": str(logdir),
        "notes": notes,
    }
    print(
        f"# fl-async benchmarks ({meta['date']}; {meta['machine']['cores']} cores, {meta['machine']['memory']}; "
        f"logs: {logdir})",
        flush=True,
    )
    for n in notes:
        print(f"- {n}", flush=True)
    tables: list[Table] = []
    failed = 0
    for w in [w.strip() for w in args.workloads.split(",")]:
        try:
            table = WORKLOADS[w](variants, settings)
        except Exception as exc:
            failed += 1
            table = Table(f"{w}. (failed)", {v.key: v.header for v in variants})
            table.notes.append(f"harness error: {type(exc).__name__}: {exc}")
            traceback.print_exc()
        for n in notes:
            table.notes.append(n)
        tables.append(table)
        print("\n" + table.render() + "\n", flush=True)
    meta["seconds"] = round(time.monotonic() - started, 1)
    print(f"total: {meta['seconds']} s", flush=True)
    if args.json:
        dump_json(tables, meta, args.json)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

"""Old vs new source tree in one run: a benchmark module run alternately from two checkouts, figures as ratios.

Each tree's ``fl_async`` (and ``benchmarks``) is imported from that tree (``PYTHONPATH`` first, the working
directory set to the tree), with this interpreter. Runs alternate (old, new, old, new, ...) so that the machine's
load drifts over both alike; the figures are the medians over the repeats, and the ratio is new / old (above 1:
new is slower for a latency, faster for a rate). The first figure of each table row is compared: the median
round latency, replies/s and link / client CPU per round of ``link_roundtrip`` per N (CPU time is the
figure least bent by other load on the machine), the push->start and push->reply medians of ``dispatch_latency``.

Make the old tree with ``git worktree add /tmp/old 310dc46`` (no install needed). Run::

    python -m benchmarks.compare_trees --old /tmp/old --new . --repeat 3 -- link_roundtrip --nodes 10,100
    python -m benchmarks.compare_trees --old /tmp/old --new . --repeat 3 -- dispatch_latency --iterations 200
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
from pathlib import Path

_ROUNDTRIP_ROW = re.compile(r"^\s*(\d+)\s+\d+\s+([\d.]+)\s+([\d.]+)\s+(\d+)")
_DISPATCH_ROW = re.compile(
    r"^(async handler|sync handler|reference)\s+([\d.]+) ms.*?(?:\s{3}([\d.]+) ms\s{3}([\d.]+) ms)?"
)


def _figures(module: str, output: str) -> dict[str, float]:
    """The compared figures of one run's output: ``label -> value``."""
    out: dict[str, float] = {}
    for line in output.splitlines():
        if module == "link_roundtrip":
            m = _ROUNDTRIP_ROW.match(line)
            if m:
                n, cols = m.group(1), line.split()
                out[f"N={n} median round ms"] = float(cols[2])
                out[f"N={n} p99 round ms"] = float(cols[3])
                out[f"N={n} replies/s"] = float(cols[4])
                out[f"N={n} link CPU ms/round"] = float(cols[5])
                out[f"N={n} client CPU ms/round"] = float(cols[6])
        elif module == "dispatch_latency":
            m = _DISPATCH_ROW.match(line)
            if m:
                ms = [float(x) for x in re.findall(r"([\d.]+) ms", line)]
                out[f"{m.group(1)} push->start median ms"] = ms[0]
                if len(ms) >= 6:  # handler rows: ..., node-side median, push->reply median, p99
                    out[f"{m.group(1)} node-side median ms"] = ms[3]
                    out[f"{m.group(1)} push->reply median ms"] = ms[4]
    return out


def _run(tree: Path, module: str, args: list[str]) -> str:
    env = dict(os.environ, PYTHONPATH=str(tree))
    proc = subprocess.run(
        [sys.executable, "-m", f"benchmarks.{module}", *args],
        cwd=tree,
        env=env,
        capture_output=True,
        text=True,
        timeout=1800,
        check=False,
    )
    if proc.returncode != 0:
        raise SystemExit(f"{module} in {tree} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc.stdout


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--old", type=Path, required=True, help="the old source tree")
    parser.add_argument("--new", type=Path, default=Path("."), help="the new source tree (default: here)")
    parser.add_argument("--repeat", type=int, default=3, help="runs per tree, alternating")
    parser.add_argument("module", choices=["link_roundtrip", "dispatch_latency"])
    parser.add_argument("args", nargs=argparse.REMAINDER, help="arguments of the benchmark (after --)")
    ns = parser.parse_args(argv)
    args = [a for a in ns.args if a != "--"]
    trees = {"old": ns.old.resolve(), "new": ns.new.resolve()}
    runs: dict[str, list[dict[str, float]]] = {"old": [], "new": []}
    for i in range(ns.repeat):
        for name, tree in trees.items():
            output = _run(tree, ns.module, args)
            runs[name].append(_figures(ns.module, output))
            print(f"--- run {i + 1} {name} ({tree})\n{output}", flush=True)
    labels = [k for k in runs["new"][0] if all(k in r for r in runs["old"] + runs["new"])]
    print(f"{ns.module} {' '.join(args)}: medians over {ns.repeat} alternating runs per tree; ratio = new / old")
    print(f"{'figure':<36} {'old':>10} {'new':>10} {'new/old':>8}")
    for label in labels:
        old = statistics.median(r[label] for r in runs["old"])
        new = statistics.median(r[label] for r in runs["new"])
        print(f"{label:<36} {old:>10.2f} {new:>10.2f} {new / old if old else float('nan'):>8.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

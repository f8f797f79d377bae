"""Run one benchmark module from two source trees in one invocation, alternating: old (a git ref) vs new.

Usage: ``python -m benchmarks.compare_trees --old REF [--repeat 2] -- MODULE [ARGS...]``, e.g.
``python -m benchmarks.compare_trees --old main -- benchmarks.link_roundtrip --nodes 10,100``.

The old tree is ``git archive REF`` unpacked into a temporary directory; each run is a child process started in
that tree (or in this one) with it first on ``PYTHONPATH``, so the client side and the link it starts both run
that tree's code. Runs alternate old, new, old, new... so that machine noise spreads over both. The outputs are
printed as they come, each under a header naming the tree and the run.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--old", required=True, help="git ref of the old tree (e.g. main or a commit)")
    parser.add_argument("--repeat", type=int, default=2, help="runs per tree (default 2)")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- MODULE [ARGS...]")
    args = parser.parse_args(argv)
    command = [c for c in args.command if c != "--"]
    with tempfile.TemporaryDirectory(prefix="fl-async-old-") as tmp:
        archive = Path(tmp) / "old.tar"
        subprocess.run(["git", "-C", str(ROOT), "archive", "-o", str(archive), args.old], check=True)
        old = Path(tmp) / "tree"
        old.mkdir()
        with tarfile.open(archive) as tar:
            tar.extractall(old, filter="data")
        for run in range(args.repeat):
            for label, tree in (("old", old), ("new", ROOT)):
                env = dict(os.environ, PYTHONPATH=str(tree))
                print(f"===== {label} ({args.old if label == 'old' else 'worktree'}) run {run + 1}", flush=True)
                subprocess.run([sys.executable, "-m", *command], cwd=tree, env=env, check=False, timeout=1800)


if __name__ == "__main__":
    main()

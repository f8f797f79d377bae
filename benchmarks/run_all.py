"""``make bench``: fl-async's benchmarks alone (no Flower), printed as tables.

Runs the four peer workloads (:mod:`benchmarks.peer.workloads`) for fl-async only; ``make bench-peer``
runs the same workloads side by side with Flower 1.10.0. Extra arguments are passed through, e.g.
``python -m benchmarks.run_all --workloads 1,3 --json build/bench.json``.
"""

from __future__ import annotations

import sys

from benchmarks.peer.__main__ import main as peer_main


def main(argv: list[str] | None = None) -> int:
    """Run every fl-async workload; returns the exit code."""
    args = list(sys.argv[1:] if argv is None else argv)
    return peer_main(["--only", "fl-async", *args])


if __name__ == "__main__":
    sys.exit(main())

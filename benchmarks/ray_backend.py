"""``fl-async run`` with N nodes in-process vs in Ray actors on a local Ray instance: round time and memory.

Each variant is one ``fl-async run benchmarks.ray_apps:server benchmarks.ray_apps:client --num-supernodes N``
child process (``--backend ray --nodes-per-actor K`` for the Ray rows; without ``--ray-address`` the command
starts a local Ray instance and stops it at the end). The apps (:mod:`benchmarks.ray_apps`) run tiny rounds:
one small ``train`` message to every node, an ``async def`` handler that answers at once, all replies awaited.

Figures per variant:

* startup: seconds from the command's start to its first round (Ray start, actor placement, N registrations);
* round: median and p90 wall time of the rounds after the first (the first is reported apart: warm-up);
* memory: peak over the run of the summed memory of the command's whole process tree (the command itself with
  link, server app and, in-process, the nodes; for Ray also its services (GCS, raylet, agents) and the actor
  processes). Both RSS (counts shared pages in every process) and PSS (shares them out; the fair total) are
  given, sampled every 0.5 s with psutil; for Ray rows the actors' share is given apart, and per node.

Run (check ``free -g`` first: 1,000 nodes take ~1-2 GiB with Ray)::

    python -m benchmarks.ray_backend [--nodes 1000] [--rounds 10] [--actors 2,10]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import psutil  # type: ignore[import-untyped]

REPO = Path(__file__).resolve().parents[1]
FL_ASYNC = str(Path(sys.executable).with_name("fl-async"))
MIB = 2**20


@dataclass
class Peak:
    """Peak summed memory of a process tree (bytes), split into the root, Ray's actors and everything else."""

    rss: int = 0
    pss: int = 0
    root_pss: int = 0
    actors_pss: int = 0
    services_pss: int = 0
    processes: int = 0
    samples: int = 0
    kinds: dict[str, int] = field(default_factory=dict)


def _kind(proc: psutil.Process) -> str:
    """``actor``, or a short name of the Ray service (``gcs_server``, ``raylet``, ``dashboard.py``, ...)."""
    try:
        argv = proc.cmdline()
    except psutil.Error:
        return "gone"
    title = " ".join(argv)
    if title.startswith("ray::NodeHost"):
        return "actor"
    if title.startswith("ray::"):
        return title.split()[0]
    script = next((a for a in argv[1:] if a.endswith(".py")), None)
    return Path(script).name if script else proc.name()


def sample_tree(root: psutil.Process, peak: Peak) -> None:
    """Add one sample of ``root``'s process tree to ``peak`` (keeps the maxima)."""
    try:
        procs = [root, *root.children(recursive=True)]
    except psutil.Error:
        return
    rss = pss = root_pss = actors = 0
    kinds: dict[str, int] = {}
    for p in procs:
        try:
            info = p.memory_full_info()
        except psutil.Error:
            continue
        rss += info.rss
        pss += info.pss
        kind = "fl-async run" if p.pid == root.pid else _kind(p)
        kinds[kind] = kinds.get(kind, 0) + info.pss
        if p.pid == root.pid:
            root_pss = info.pss
        elif kind == "actor":
            actors += info.pss
    peak.samples += 1
    if pss > peak.pss:
        peak.rss, peak.pss, peak.root_pss, peak.actors_pss = rss, pss, root_pss, actors
        peak.services_pss = pss - root_pss - actors
        peak.processes = len(procs)
        peak.kinds = kinds


@dataclass
class Result:
    """Figures of one variant (seconds and MiB)."""

    variant: str
    nodes: int
    replies: list[int]
    first_round_s: float
    round_median_s: float
    round_p90_s: float
    startup_s: float
    wall_s: float
    peak_rss_mib: float
    peak_pss_mib: float
    command_pss_mib: float
    actors_pss_mib: float
    services_pss_mib: float
    processes: int
    samples: int
    by_kind_mib: dict[str, float]


def run_variant(nodes: int, rounds: int, per_actor: int | None, timeout: float) -> Result:
    """Run one ``fl-async run`` (in-process when ``per_actor`` is None) and return its figures."""
    argv = [FL_ASYNC, "run", "benchmarks.ray_apps:server", "benchmarks.ray_apps:client", "--num-supernodes", str(nodes)]
    argv += ["--run-config", f"rounds={rounds} nodes={nodes}"]
    if per_actor is not None:
        argv += ["--backend", "ray", "--nodes-per-actor", str(per_actor)]
    started = time.perf_counter()
    child = subprocess.Popen(argv, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    root = psutil.Process(child.pid)
    peak = Peak()
    done = threading.Event()

    def sampler() -> None:
        while not done.wait(0.5):
            sample_tree(root, peak)

    thread = threading.Thread(target=sampler, daemon=True)
    thread.start()
    try:
        out, err = child.communicate(timeout=timeout)
    finally:
        done.set()
        thread.join(timeout=5)
        if child.poll() is None:
            child.kill()  # by our own child's PID only
            child.wait(timeout=30)
    wall = time.perf_counter() - started
    line = next((x for x in out.splitlines() if x.startswith("ROUNDS ")), None)
    if child.returncode != 0 or line is None:
        raise RuntimeError(f"{' '.join(argv)} exited {child.returncode}: {err.strip()[-2000:]}")
    data = json.loads(line[len("ROUNDS ") :])
    seconds: list[float] = data["seconds"]
    steady = sorted(seconds[1:] or seconds)
    return Result(
        variant="in-process" if per_actor is None else f"ray, {-(-nodes // per_actor)} actors x {per_actor}",
        nodes=nodes,
        replies=data["replies"],
        first_round_s=seconds[0],
        round_median_s=statistics.median(steady),
        round_p90_s=steady[min(len(steady) - 1, int(0.9 * len(steady)))],
        startup_s=wall - sum(seconds),
        wall_s=wall,
        peak_rss_mib=peak.rss / MIB,
        peak_pss_mib=peak.pss / MIB,
        command_pss_mib=peak.root_pss / MIB,
        actors_pss_mib=peak.actors_pss / MIB,
        services_pss_mib=peak.services_pss / MIB,
        processes=peak.processes,
        samples=peak.samples,
        by_kind_mib={k: round(v / MIB, 1) for k, v in sorted(peak.kinds.items())},
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=10, help="rounds per variant (the first is warm-up)")
    parser.add_argument("--actors", default="2,10", help="Ray rows: actor counts (nodes per actor = N / count)")
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds each variant may take")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args(argv)
    counts = [int(x) for x in args.actors.split(",") if x.strip()]
    variants: list[int | None] = [None] + [-(-args.nodes // c) for c in counts]
    results: list[Result] = []
    for per_actor in variants:
        try:
            r = run_variant(args.nodes, args.rounds, per_actor, args.timeout)
        except (RuntimeError, subprocess.TimeoutExpired) as exc:  # reported, the other variants still run
            print(f"FAILED {'in-process' if per_actor is None else f'ray x {per_actor}'}: {exc}", flush=True)
            continue
        results.append(r)
        print(json.dumps(asdict(r)), file=sys.stderr, flush=True)
    if not results:
        return 1
    base = next((r for r in results if r.variant == "in-process"), results[0])
    print(f"\n{args.nodes} nodes, {args.rounds} tiny rounds (first = warm-up), peak memory of the whole process tree")
    print(
        "| variant | startup | 1st round | round median | p90 | ratio | peak PSS | peak RSS "
        "| of which actors (PSS) | PSS per node |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in results:
        print(
            f"| {r.variant} | {r.startup_s:.1f} s | {r.first_round_s:.2f} s | {r.round_median_s * 1000:.0f} ms | "
            f"{r.round_p90_s * 1000:.0f} ms | {r.round_median_s / base.round_median_s:.2f} x {base.variant} | "
            f"{r.peak_pss_mib:.0f} MiB | {r.peak_rss_mib:.0f} MiB | {r.actors_pss_mib:.0f} MiB | "
            f"{r.peak_pss_mib * 1024 / r.nodes:.0f} KiB |"
        )
    for r in results:
        print(f"{r.variant}: {r.processes} processes at peak; PSS by kind (MiB): {r.by_kind_mib}")
    if args.json:
        args.json.write_text(json.dumps([asdict(r) for r in results], indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

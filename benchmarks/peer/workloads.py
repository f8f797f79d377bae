"""The four peer workloads, each run on every variant back to back, each returning one :class:`Table`.

1. round latency, tiny payload (one 10-float array), N = 2, 10, 50 nodes, 5 rounds: median and p99;
2. 100 MiB model to N = 2, 5 nodes and back: round seconds, link peak RSS, server app peak RSS;
3. scale: rounds with N = 100, 1,000 (fl-async: in-process nodes over real gRPC in one process; Flower: one
   process per node, capped at what this machine bears);
4. a node killed mid-round: seconds from the SIGKILL until the server app holds the error reply.

A *variant* is a system plus the sleep used by Flower's guide-style loops (3 s = the guide; a short sleep =
the same loops tuned). fl-async's apps do not sleep: they wait on the link (long-poll), so its sleep is unused.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks._proc import Proc
from benchmarks.peer.appcfg import FLOATS_100MIB, AppResult
from benchmarks.peer.harness import (
    Cluster,
    ServerRun,
    System,
    cpu_sum,
    mib,
    wait_for_file,
)
from benchmarks.peer.report import FLASYNC, Table, Value, median, p99


@dataclass(frozen=True)
class Variant:
    """One column: a system and the poll sleep its server app uses (seconds)."""

    key: str
    header: str
    system: System
    sleep: float = 0.0
    in_process_nodes: bool = False


@dataclass
class Settings:
    """Sizes and bounds of a benchmark run (defaults = the full sizes; ``quick()`` = smoke-test sizes).

    Attributes:
        latency_sizes: N for workload 1.
        latency_rounds: rounds per N in workload 1.
        big_sizes: N for workload 2.
        big_rounds: rounds per N in workload 2.
        big_floats: float32 values in the workload-2 model (26,214,400 = 100 MiB).
        scale_sizes: N for workload 3.
        scale_rounds: rounds per N in workload 3.
        flower_max_nodes: most Flower node processes started at once (workload 3).
        kill_bound: seconds to wait for the error reply after the kill before reporting ``> bound``.
        kill_defaults: run workload 4 with default liveness settings too (fl-async's takes up to 60 s).
        kill_heartbeat: ``--heartbeat-interval`` (s) of fl-async nodes in workload 4's second row.
        logdir: where process logs and result files go.
    """

    latency_sizes: Sequence[int] = (2, 10, 50)
    latency_rounds: int = 5
    big_sizes: Sequence[int] = (2, 5)
    big_rounds: int = 2
    big_floats: int = FLOATS_100MIB
    scale_sizes: Sequence[int] = (100, 1000)
    scale_rounds: int = 3
    flower_max_nodes: int = 200
    kill_bound: float = 70.0
    kill_defaults: bool = True
    kill_heartbeat: float = 1.0
    logdir: Path = field(default_factory=lambda: Path("build/bench-logs"))

    @classmethod
    def quick(cls, logdir: Path) -> Settings:
        """Smallest sizes: N = 2 / 2 / 100, one or two rounds, a 1 MiB model, workload 4 with a 1 s heartbeat
        only (20 s bound)."""
        return cls(
            latency_sizes=(2,),
            latency_rounds=2,
            big_sizes=(2,),
            big_rounds=1,
            big_floats=256 * 1024,
            scale_sizes=(100,),
            scale_rounds=1,
            kill_bound=20.0,
            kill_defaults=False,
            logdir=logdir,
        )


def _columns(variants: Sequence[Variant]) -> dict[str, str]:
    return {v.key: v.header for v in variants}


def _groups(variants: Sequence[Variant]) -> list[list[Variant]]:
    """Variants sharing one system (same cluster can serve them one after the other)."""
    out: dict[str, list[Variant]] = {}
    for v in variants:
        out.setdefault(v.system.name, []).append(v)
    return list(out.values())


def _tag(v: Variant) -> str:
    return v.key.replace(" ", "")


def _rounds_value(run: ServerRun | None, fn) -> Value:
    if run is None:
        return Value(note="not run")
    r = run.result
    if not r.rounds:
        return Value(note=r.note or ("timed out" if r.timed_out else "no rounds"))
    note = ""
    if r.replies_error:
        note = f"{r.replies_error} error replies"
    if r.timed_out:
        note = (note + "; " if note else "") + f"timed out after {len(r.rounds)} rounds"
    return Value(fn(r.rounds), note=note)


def _bring_up(run: ServerRun, started_at: float, first: bool) -> Value:
    """Seconds from starting the (added) nodes to the server app seeing all N, for the first run on them."""
    if not first:
        return Value(note="nodes already up (same cluster as the previous column)")
    seen = run.result.nodes_seen_at
    if seen is None:
        return Value(note=run.result.note or "never saw N nodes")
    return Value(seen - started_at)


def _log(msg: str) -> None:
    print(f"[bench] {time.strftime('%H:%M:%S')} {msg}", flush=True)


def latency(variants: Sequence[Variant], s: Settings) -> Table:
    """Workload 1: round latency with a 10-float array, N = ``s.latency_sizes``, ``s.latency_rounds`` rounds.

    One cluster per system, grown from the smallest N to the largest; each variant's server app runs on it in
    turn. Round = select nodes, push one message per node, hold every reply (server-side wall clock).
    """
    runs: dict[tuple[int, str], ServerRun] = {}
    for group in _groups(variants):
        with Cluster(group[0].system, s.logdir, f"w1-{_tag(group[0])}") as c:
            c.start_link()
            have = 0
            for n in s.latency_sizes:
                c.add_nodes(n - have)
                have = n
                for v in group:
                    deadline = 60 + 1.5 * n + 12 * s.latency_rounds
                    _log(f"w1 {v.key} N={n}")
                    runs[n, v.key] = c.run_server(
                        {
                            "mode": "rounds",
                            "n": n,
                            "rounds": s.latency_rounds,
                            "sleep": v.sleep,
                            "floats": 10,
                            "deadline": deadline,
                        },
                        timeout=deadline + 30,
                    )
    t = Table(
        f"1. Round latency, tiny payload (one 10-float array), {s.latency_rounds} rounds",
        _columns(variants),
    )
    for n in s.latency_sizes:
        t.add(
            f"N={n}: round median (s)",
            **{v.key: _rounds_value(runs.get((n, v.key)), median) for v in variants},
        )
        t.add(
            f"N={n}: round p99 (s)",
            **{v.key: _rounds_value(runs.get((n, v.key)), p99) for v in variants},
        )
    t.notes.append(
        f"p99 of {s.latency_rounds} rounds (linear interpolation), so close to the slowest round; "
        "a round = select nodes, push N messages, hold all N replies, timed in the server app."
    )
    return t


def big_model(variants: Sequence[Variant], s: Settings) -> Table:
    """Workload 2: a ``s.big_floats``-float32 model to N nodes and back (echoed), fresh cluster per variant."""
    size_mib = s.big_floats * 4 / (1024 * 1024)
    rows: dict[tuple[int, str], dict[str, Value]] = {}
    for n in s.big_sizes:
        for v in variants:
            _log(f"w2 {v.key} N={n}")
            with Cluster(v.system, s.logdir, f"w2-{_tag(v)}-n{n}") as c:
                c.start_link()
                c.add_nodes(n)
                deadline = 60 + n * 5 + s.big_rounds * (20 + n * size_mib / 10)
                run = c.run_server(
                    {
                        "mode": "rounds",
                        "n": n,
                        "rounds": s.big_rounds,
                        "sleep": v.sleep,
                        "floats": s.big_floats,
                        "deadline": deadline,
                    },
                    timeout=deadline + 30,
                )
            link = c.link
            rows[n, v.key] = {
                "round": _rounds_value(run, median),
                "link_rss": Value(mib(link.peak_rss) if link else None),
                "server_rss": Value(mib(run.proc.peak_rss)),
                "node_rss": Value(mib(max((p.peak_rss or 0) for p in c.nodes)) if c.nodes else None),
                "link_cpu": Value(link.cpu_seconds if link else None),
                "server_cpu": Value(run.proc.cpu_seconds),
            }
    t = Table(
        f"2. {size_mib:g} MiB model to N nodes and back, {s.big_rounds} rounds",
        _columns(variants),
    )
    labels = {
        "round": "round (s, median)",
        "link_rss": "link peak RSS (MiB)",
        "server_rss": "server app peak RSS (MiB)",
        "node_rss": "node peak RSS (MiB, max over nodes)",
        "link_cpu": "link CPU (s, whole run)",
        "server_cpu": "server app CPU (s, whole run)",
    }
    for n in s.big_sizes:
        for k, label in labels.items():
            t.add(f"N={n}: {label}", **{v.key: rows[n, v.key][k] for v in variants})
    t.notes.append(
        "peak RSS = VmHWM from /proc/<pid>/status (ru_maxrss from wait4 for processes that exited); "
        "each node echoes the model back, so every round moves 2 x N x the model."
    )
    return t


def scale(variants: Sequence[Variant], s: Settings) -> Table:
    """Workload 3: rounds with N = ``s.scale_sizes`` (tiny payload).

    fl-async: the nodes run in-process (``Variant.in_process_nodes``): one host process per size step, talking
    to the link process over real gRPC. Flower: one ``flower-supernode`` process per node, at most
    ``s.flower_max_nodes``. One cluster per system, grown from the smallest N to the largest.
    """
    rows: dict[tuple[int, str], dict[str, Value]] = {}
    actual: dict[tuple[int, str], int] = {}
    for group in _groups(variants):
        group = sorted(group, key=lambda v: v.sleep)  # shortest poll first: it times the bring-up best
        v0 = group[0]
        with Cluster(v0.system, s.logdir, f"w3-{_tag(v0)}") as c:
            c.start_link()
            have = 0
            for n in s.scale_sizes:
                want = n if v0.in_process_nodes else min(n, s.flower_max_nodes)
                if want > have:
                    if v0.in_process_nodes:
                        c.add_host(want - have)
                    else:
                        c.add_nodes(want - have)
                first = want > have
                have = want
                for v in group:
                    actual[n, v.key] = want
                    deadline = 90 + 0.5 * want + 15 * s.scale_rounds
                    _log(f"w3 {v.key} N={n} (running {want})")
                    run = c.run_server(
                        {
                            "mode": "rounds",
                            "n": want,
                            "rounds": s.scale_rounds,
                            "sleep": v.sleep,
                            "floats": 10,
                            "deadline": deadline,
                        },
                        timeout=deadline + 30,
                    )
                    c.sample()
                    node_procs: list[Proc] = [*c.nodes, *c.hosts]
                    rows[n, v.key] = {
                        "round": _rounds_value(run, median),
                        "p99": _rounds_value(run, p99),
                        "up": _bring_up(run, c.nodes_started_at, first),
                        "link_rss": Value(mib(c.link.peak_rss) if c.link else None),
                        "nodes_rss": Value(mib(sum(p.peak_rss or 0 for p in node_procs))),
                        "link_cpu": Value(c.link.cpu_seconds if c.link else None),
                        "nodes_cpu": Value(cpu_sum(node_procs)),
                    }
                    first = False
    t = Table(f"3. Scale, tiny payload, {s.scale_rounds} rounds", _columns(variants))
    labels = {
        "round": "round (s, median)",
        "p99": "round (s, p99)",
        "up": "nodes started -> all N seen by the server app (s)",
        "link_rss": "link peak RSS (MiB)",
        "nodes_rss": "node processes, sum of peak RSS (MiB)",
        "link_cpu": "link CPU (s, so far)",
        "nodes_cpu": "node processes CPU (s, sum, so far)",
    }
    for n in s.scale_sizes:
        for k, label in labels.items():
            t.add(
                f"N={n}: {label}",
                **{v.key: rows[n, v.key][k] for v in variants if (n, v.key) in rows},
            )
        for v in variants:
            if actual.get((n, v.key), n) != n:
                t.notes.append(
                    f"N={n}: {v.header} ran {actual[n, v.key]} node processes (cap --flower-max-nodes: "
                    "each Flower node is its own process of ~70 MiB RSS); its ratios compare different N."
                )
    t.notes.append(
        "fl-async nodes run in-process (one host process per size step) over real gRPC to the link "
        "process; Flower nodes are flower-supernode processes. 'so far' = cumulative since the cluster "
        "started (shared by the variants of one system, grown from the smaller N)."
    )
    return t


def _kill_once(v: Variant, s: Settings, tag: str, node_args: Sequence[str] = ()) -> Value:
    """One workload-4 measurement on a fresh cluster (see :func:`node_killed`)."""
    with Cluster(v.system, s.logdir, f"w4-{tag}") as c:
        c.start_link()
        c.add_nodes(1, extra_args=node_args)
        marker = s.logdir / f"w4-{tag}.marker"
        marker.unlink(missing_ok=True)
        victim = c.add_nodes(
            1,
            env={"BENCH_VICTIM": "1", "BENCH_MARKER": str(marker)},
            extra_args=node_args,
        )[0]
        proc, out = c.start_server(
            {
                "mode": "kill",
                "n": 2,
                "sleep": v.sleep,
                "floats": 10,
                "deadline": s.kill_bound + 120,
            }
        )
        try:
            wait_for_file(marker, 90)
        except TimeoutError:
            return Value(note="the victim never received the instruction")
        t_kill = victim.kill()
        run = c.finish_server(proc, out, timeout=s.kill_bound)
        r: AppResult = run.result
        if r.error_at is not None:
            return Value(r.error_at - t_kill, note=f"error code {r.error_code}")
        return Value(
            s.kill_bound,
            lower_bound=True,
            note=r.note or "no error reply within the bound",
        )


def node_killed(variants: Sequence[Variant], s: Settings) -> Table:
    """Workload 4: two nodes; one blocks on the instruction and is SIGKILLed; time until the error reply.

    The harness waits for the victim's marker file (it holds the instruction), SIGKILLs it by PID, and compares
    the wall clock of the kill with the wall clock at which the server app received the error reply. A wait
    longer than ``s.kill_bound`` seconds is cut short and reported as ``> bound``.

    Row 1 uses every system's default liveness settings (Flower 1.10: 30 s ping window, not settable from
    its CLI; fl-async: 30 s heartbeat x patience 2). Row 2 runs fl-async nodes with
    ``--heartbeat-interval 1`` (``s.kill_heartbeat``), a setting Flower 1.10 does not offer.
    """
    t = Table(
        "4. Node killed mid-round (SIGKILL): time until the server app holds the error reply",
        _columns(variants),
    )
    if s.kill_defaults:
        vals: dict[str, Value] = {}
        for v in variants:
            _log(f"w4 {v.key} (default liveness)")
            vals[v.key] = _kill_once(v, s, _tag(v))
        t.add("kill -> error reply (s), default liveness settings", **vals)
    tuned: dict[str, Value] = {}
    for v in variants:
        if v.key == FLASYNC:
            _log(f"w4 {v.key} (--heartbeat-interval {s.kill_heartbeat:g})")
            tuned[v.key] = _kill_once(v, s, f"{_tag(v)}-hb", ["--heartbeat-interval", f"{s.kill_heartbeat:g}"])
        else:
            tuned[v.key] = Value(note="no heartbeat setting in Flower 1.10's CLI")
    t.add(
        f"kill -> error reply (s), fl-async nodes --heartbeat-interval {s.kill_heartbeat:g}",
        **tuned,
    )
    t.notes.append(
        f"bound {s.kill_bound:g} s: a longer wait is cut short and shown as '> bound'. Flower marks a "
        "node offline when its last ping (sent every 17.5-22.5 s) is 30 s old; fl-async when it has "
        "shown no sign of life for heartbeat interval x patience (default 30 s x 2)."
    )
    return t


WORKLOADS = {"1": latency, "2": big_model, "3": scale, "4": node_killed}

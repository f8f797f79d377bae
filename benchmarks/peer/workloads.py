"""The four workloads of issue 8, each run on every variant back to back, each returning one :class:`Table`.

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
from collections.abc import Callable, Sequence
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
    #: most node processes this variant starts at once (workload 3), ``None`` = no cap
    max_nodes: int | None = None
    #: rough peak memory of one big-model round, in models per node (link + server app + nodes), measured
    #: with 100 MiB x 5 (workload 2); workloads 5 and 6 skip a run that would not fit in available memory
    models_per_node: float = 3.0
    #: MiB per node process tree during rounds (memory checks of workloads 1 and 3)
    node_mib: float = 80.0
    #: MiB per idle node process tree (memory check of workload 6)
    idle_node_mib: float = 80.0


@dataclass
class Settings:
    """Sizes and bounds of a benchmark run (defaults = issue 8; ``quick()`` = smoke-test sizes).

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
        huge_sizes: N for workload 5 (the larger model).
        huge_floats: float32 values in the workload-5 model (104,857,600 = 400 MiB).
        huge_rounds: rounds in workload 5.
        bringup_n: N for workload 6 (node processes started at once).
        bringup_bound: seconds workload 6 waits for all N to be listed.
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
    huge_sizes: Sequence[int] = (5,)
    huge_floats: int = 4 * FLOATS_100MIB
    huge_rounds: int = 2
    bringup_n: int = 50
    bringup_bound: float = 240.0
    logdir: Path = field(default_factory=lambda: Path("build/bench-logs"))

    @classmethod
    def quick(cls, logdir: Path) -> Settings:
        """Smallest sizes: N = 2 / 2 / 100 / - / 2 / 2, one or two rounds, 1 and 2 MiB models, workload 4 with a
        1 s heartbeat only (20 s bound)."""
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
            huge_sizes=(2,),
            huge_floats=512 * 1024,
            huge_rounds=1,
            bringup_n=2,
            bringup_bound=60.0,
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


def _rounds_value(run: ServerRun | str | None, fn: Callable[[list[float]], float | None]) -> Value:
    if run is None:
        return Value(note="not run")
    if isinstance(run, str):
        return Value(note=run)
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
    runs: dict[tuple[int, str], ServerRun | str] = {}
    for group in _groups(variants):
        with Cluster(group[0].system, s.logdir, f"w1-{_tag(group[0])}") as c:
            c.start_link()
            have = 0
            for n in s.latency_sizes:
                if _fit(n - have, group[0].node_mib) < n - have:
                    for v in group:
                        runs[n, v.key] = f"skipped: {n} nodes need ~{n * v.node_mib / 1024:.1f} GiB; not available"
                    _log(f"w1 {group[0].system.name} N={n}: {runs[n, group[0].key]}")
                    break
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
                        timeout=deadline + 90,
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


def _available_mib() -> float | None:
    """``MemAvailable`` from ``/proc/meminfo`` in MiB (``None`` if unreadable)."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def _too_big(need_mib: float) -> str:
    """A skip note if ``need_mib`` (+ 2 GiB headroom for the other users of this machine) is not available."""
    avail = _available_mib()
    if avail is not None and need_mib + 2048 > avail:
        return f"skipped: needs ~{need_mib / 1024:.1f} GiB, {avail / 1024:.1f} GiB available"
    return ""


def _fit(k: int, node_mib: float) -> int:
    """How many of ``k`` more node processes of ``node_mib`` MiB fit in MemAvailable (2 GiB headroom kept)."""
    avail = _available_mib()
    if avail is None:
        return k
    return max(0, min(k, int((avail - 2048) // node_mib)))


def _server_rss(run: ServerRun) -> Value:
    """Server app peak RSS: its own report when the harness cannot see its process, else the process's."""
    rss = run.result.self_rss if run.result.self_rss is not None else run.proc.peak_rss
    return Value(mib(rss))


def _server_cpu(run: ServerRun) -> Value:
    return Value(run.result.self_cpu if run.result.self_cpu is not None else run.proc.cpu_seconds)


def _node_rss(c: Cluster, run: ServerRun) -> Value:
    """Largest node peak RSS; for systems with child processes: node tree + the largest ClientApp process."""
    if c.node_tree_rss:
        return Value(mib(max(c.node_tree_rss) + (run.result.client_rss or 0)))
    return Value(mib(max((p.peak_rss or 0) for p in c.nodes)) if c.nodes else None)


def _models(
    variants: Sequence[Variant], s: Settings, floats: int, sizes: Sequence[int], rounds: int, tag: str
) -> dict[tuple[int, str], dict[str, Value]]:
    """Big-model rounds: for each N and variant, a fresh cluster, ``rounds`` echo rounds of a ``floats`` model."""
    size_mib = floats * 4 / (1024 * 1024)
    rows: dict[tuple[int, str], dict[str, Value]] = {}
    for n in sizes:
        for v in variants:
            skip = _too_big(v.models_per_node * n * size_mib)
            if skip:
                _log(f"{tag} {v.key} N={n}: {skip}")
                rows[n, v.key] = {"round": Value(note=skip)}
                continue
            _log(f"{tag} {v.key} N={n}")
            with Cluster(v.system, s.logdir, f"{tag}-{_tag(v)}-n{n}") as c:
                c.start_link(timeout=120)
                c.add_nodes(n)
                deadline = 90 + n * 5 + rounds * (30 + n * size_mib / 5)
                run = c.run_server(
                    {
                        "mode": "rounds",
                        "n": n,
                        "rounds": rounds,
                        "sleep": v.sleep,
                        "floats": floats,
                        "deadline": deadline,
                    },
                    timeout=deadline + 150,
                )
            link = c.link
            rows[n, v.key] = {
                "round": _rounds_value(run, median),
                "link_rss": Value(mib(link.peak_rss) if link else None),
                "server_rss": _server_rss(run),
                "node_rss": _node_rss(c, run),
                "link_cpu": Value(link.cpu_seconds if link else None),
                "server_cpu": _server_cpu(run),
            }
    return rows


_MODEL_LABELS = {
    "round": "round (s, median)",
    "link_rss": "link peak RSS (MiB)",
    "server_rss": "server app peak RSS (MiB)",
    "node_rss": "node peak RSS (MiB, max over nodes)",
    "link_cpu": "link CPU (s, whole run)",
    "server_cpu": "server app CPU (s, whole run)",
}
_MODEL_NOTE = (
    "peak RSS = VmHWM from /proc/<pid>/status (ru_maxrss from wait4 for processes that exited); "
    "each node echoes the model back, so every round moves 2 x N x the model. Flower 1.42: link = the "
    "flower-superlink process; server app = the flwr-serverapp process's own getrusage peak and CPU; "
    "node = flower-supernode + its SuperExec (VmHWM at the end) + the largest flwr-clientapp process "
    "(its getrusage peak, sent back in its reply)."
)


def big_model(variants: Sequence[Variant], s: Settings) -> Table:
    """Workload 2: a ``s.big_floats``-float32 model to N nodes and back (echoed), fresh cluster per variant."""
    size_mib = s.big_floats * 4 / (1024 * 1024)
    rows = _models(variants, s, s.big_floats, s.big_sizes, s.big_rounds, "w2")
    t = Table(
        f"2. {size_mib:g} MiB model to N nodes and back, {s.big_rounds} rounds",
        _columns(variants),
    )
    for n in s.big_sizes:
        for k, label in _MODEL_LABELS.items():
            t.add(f"N={n}: {label}", **{v.key: rows[n, v.key].get(k, Value()) for v in variants})
    t.notes.append(_MODEL_NOTE)
    return t


def huge_model(variants: Sequence[Variant], s: Settings) -> Table:
    """Workload 5: a ``s.huge_floats``-float32 model (400 MiB) to ``s.huge_sizes`` nodes and back.

    As workload 2; a run whose estimated peak (``Variant.models_per_node`` x N x model, + 2 GiB headroom) does
    not fit in ``MemAvailable`` is skipped with a note instead of pushing the shared machine into swap/OOM.
    """
    size_mib = s.huge_floats * 4 / (1024 * 1024)
    rows = _models(variants, s, s.huge_floats, s.huge_sizes, s.huge_rounds, "w5")
    t = Table(
        f"5. {size_mib:g} MiB model to N nodes and back, {s.huge_rounds} rounds",
        _columns(variants),
    )
    for n in s.huge_sizes:
        for k, label in _MODEL_LABELS.items():
            t.add(f"N={n}: {label}", **{v.key: rows[n, v.key].get(k, Value()) for v in variants})
    t.notes.append(_MODEL_NOTE)
    t.notes.append(
        "a run is skipped when its estimated peak (models per node x N x model: fl-async 3, Flower 1.10 15, "
        "Flower 1.42 4, from workload 2) plus 2 GiB headroom exceeds MemAvailable."
    )
    return t


def bring_up(variants: Sequence[Variant], s: Settings) -> Table:
    """Workload 6: seconds from starting ``s.bringup_n`` node processes to the server app listing all of them.

    Per system: a link, then a server app in ``"ready"`` mode (it touches a marker once connected), then all N
    node processes at once; the figure is the server app's wall clock when it first lists N nodes minus the
    wall clock when the harness started the nodes. Every system runs real node processes here (fl-async too:
    ``fl-async supernode``, not the in-process host). Flower's apps list nodes every ``sleep`` seconds.
    """
    vals: dict[str, Value] = {}
    rss: dict[str, Value] = {}
    for group in _groups(variants):
        v = sorted(group, key=lambda x: x.sleep)[0]  # shortest poll: it times the bring-up best
        skip = _too_big(v.idle_node_mib * s.bringup_n)
        if skip:
            _log(f"w6 {v.key}: {skip}")
            vals[v.key] = Value(note=skip)
            continue
        _log(f"w6 {v.key} N={s.bringup_n}")
        with Cluster(v.system, s.logdir, f"w6-{_tag(v)}") as c:
            c.start_link(timeout=120)
            proc, out = c.start_server(
                {
                    "mode": "ready",
                    "n": s.bringup_n,
                    "rounds": 0,
                    "sleep": v.sleep,
                    "floats": 10,
                    "deadline": s.bringup_bound + 60,
                }
            )
            try:
                wait_for_file(Path(str(out) + ".ready"), 180)
            except TimeoutError:
                vals[v.key] = Value(note="the server app never connected")
                continue
            c.add_nodes(s.bringup_n)
            run = c.finish_server(proc, out, timeout=s.bringup_bound)
            seen = run.result.nodes_seen_at
            if seen is None:
                vals[v.key] = Value(s.bringup_bound, lower_bound=True, note=run.result.note or "not all listed")
            else:
                vals[v.key] = Value(seen - c.nodes_started_at)
            c.sample()
            trees = [c.tree_rss(p) for p in c.nodes] if v.system.child_processes else [p.peak_rss for p in c.nodes]
            rss[v.key] = Value(mib(sum(r or 0 for r in trees)))
    t = Table(
        f"6. Bring-up: {s.bringup_n} node processes started -> all listed by the server app",
        _columns(variants),
    )
    t.add(f"N={s.bringup_n}: nodes started -> all listed (s)", **vals)
    t.add(f"N={s.bringup_n}: node processes, sum of peak RSS (MiB)", **rss)
    t.notes.append(
        "one column per system (the variants of a system share it: the shortest poll sleep is used); "
        f"bound {s.bringup_bound:g} s. Flower 1.42 node = flower-supernode + its SuperExec process."
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
                cap = s.flower_max_nodes if v0.max_nodes is None else min(v0.max_nodes, s.flower_max_nodes)
                want = n if v0.in_process_nodes else min(n, cap)
                if want > have and not v0.in_process_nodes:
                    want = have + _fit(want - have, v0.node_mib)  # the largest N that fits in memory now
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
                        timeout=deadline + 90,
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
                    f"N={n}: {v.header} ran {actual[n, v.key]} node processes (--flower-max-nodes, "
                    "--flower-latest-max-nodes, or what fit in MemAvailable: each Flower 1.10 node is a ~70 MiB "
                    "process, each Flower 1.42 node two processes of ~130 MiB plus a ~125 MiB ClientApp "
                    "process per message); its ratios compare different N."
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
        t_kill = c.kill_node(victim)
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
            tuned[v.key] = Value(note=f"no heartbeat setting in {v.system.name}'s flower-supernode CLI")
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


WORKLOADS = {"1": latency, "2": big_model, "3": scale, "4": node_killed, "5": huge_model, "6": bring_up}

"""Many nodes on one SuperLink: formation time, round latency, link CPU and memory per node, old tree vs new.

Layout (one TCP connection per node, as real nodes have): the SuperLink runs in its own process; N SDK SuperNodes
(an ``async def`` ClientApp answering at once with an empty RecordSet, ``max_concurrency=1``) run in one other
process; the driver (:class:`fl_async.server.AsyncDriver`, ``send_and_receive`` of N tiny messages per round) in a
third. All three are started from the tree under test (``PYTHONPATH`` and working directory set to it) with this
interpreter, so ``--old-tree`` measures the old code in every role; the processes are started and ended by PID.

Figures, per tree and N:

* ``formation s``: from starting the node process (all N nodes start at once) until ``wait_for_nodes(N)``
  returns;
* ``median round s`` / ``p90 round s`` of ``send_and_receive`` (every reply must carry content);
* ``link CPU ms/node-round``: the link process's CPU time over the measured rounds / (N x rounds); ``nodes CPU``
  and ``driver CPU``: the same for the node process and the driver process (ms per node-round);
* ``link KB/idle node``: link RSS with N nodes connected and idle (each holding its long-poll) minus its RSS
  before any node connected, / N;
* ``host KB/node``: the node process's RSS with N nodes registered and idle minus its RSS before the nodes were
  made, / N;
* ``teardown s``: from asking every node to stop until the node process exited.

With ``--repeat R`` each tree runs R times at ``--nodes``, alternating, and each figure is the median.

The old tree needs no install: ``git archive <commit> | tar -x -C /tmp/old``. Run::

    python -m benchmarks.scale --nodes 1000 --old-tree /tmp/old [--repeat 2] [--big 10000] [--rounds 5]
    python -m benchmarks.scale --nodes 1000 --profile-link /tmp/link.prof   # cProfile of the link process
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks._proc import read_cpu_seconds

LINK_MAIN = r"""
import asyncio, cProfile, signal, sys, resource
from fl_async.superlink import LinkConfig, SuperLink

def rss():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024

async def main(profile):
    cfg = LinkConfig(driver_api_address="127.0.0.1:0", fleet_api_address="127.0.0.1:0", max_poll_timeout=30,
                     max_connections_per_address=60000)
    async with SuperLink(cfg) as link:
        print("ADDR", link.driver_address, link.fleet_address, flush=True)
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        prof = cProfile.Profile() if profile else None
        if prof is not None:
            asyncio.get_running_loop().add_signal_handler(signal.SIGUSR1, prof.enable)
            asyncio.get_running_loop().add_signal_handler(signal.SIGUSR2, prof.disable)
        await stop.wait()
        if prof is not None:
            prof.dump_stats(profile)

asyncio.run(main(sys.argv[1] if len(sys.argv) > 1 else ""))
"""

NODES_MAIN = r"""
import asyncio, json, sys, time
import anyio
from fl_async.client import ClientApp
from fl_async.common import Context, Message, RecordSet
from fl_async.supernode import SuperNode

def rss():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024

fleet, n = sys.argv[1], int(sys.argv[2])
app = ClientApp()

@app.train()
async def train(msg: Message, ctx: Context) -> Message:
    return msg.create_reply(RecordSet())

async def main():
    before = rss()
    nodes = [SuperNode(app, fleet, insecure=True, heartbeat_interval=60.0, poll_timeout=30.0) for _ in range(n)]
    async with anyio.create_task_group() as tg:
        for node in nodes:
            tg.start_soon(node.run)
        for node in nodes:
            await node.wait_registered(timeout=600)
        print("REGISTERED", flush=True)
        await anyio.to_thread.run_sync(sys.stdin.readline)  # the driver has connected and waited: idle now
        print("RSS", json.dumps({"before": before, "idle": rss()}), flush=True)
        await anyio.to_thread.run_sync(sys.stdin.readline)  # STOP
        t0 = time.perf_counter()
        for node in nodes:
            node.stop()
    print("STOPPED", json.dumps({"teardown_s": time.perf_counter() - t0}), flush=True)

asyncio.run(main())
"""

DRIVER_MAIN = r"""
import asyncio, json, sys, time
from fl_async.common import MessageType, RecordSet
from fl_async.server import AsyncDriver

driver_address, n, rounds = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])

async def main():
    async with AsyncDriver(driver_address, insecure=True) as driver:
        print("CONNECTED", flush=True)
        sys.stdin.readline()  # GO: the node process starts now
        t0 = time.perf_counter()
        node_ids = await driver.wait_for_nodes(n, timeout=600)
        formation = time.perf_counter() - t0
        assert len(node_ids) >= n, f"only {len(node_ids)} of {n} nodes"
        print("FORMED", json.dumps({"formation_s": formation}), flush=True)
        sys.stdin.readline()  # measured idle: go on

        async def one_round(group):
            msgs = [driver.create_message(RecordSet(), MessageType.TRAIN, nid, str(group)) for nid in node_ids]
            t = time.perf_counter()
            replies = await driver.send_and_receive(msgs, timeout=600)
            dt = time.perf_counter() - t
            ok = sum(1 for r in replies if r.has_content())
            assert len(replies) == n and ok == n, f"{ok} of {n} replies with content ({len(replies)} replies)"
            return dt

        for i in range(2):
            await one_round(i)
        print("WARM", flush=True)
        sys.stdin.readline()  # the link's CPU clock is read: measure
        lat = [await one_round(2 + i) for i in range(rounds)]
        print("ROUNDS", json.dumps({"lat": lat}), flush=True)
        sys.stdin.readline()

asyncio.run(main())
"""


def read_rss(pid: int) -> int:
    """Current ``VmRSS`` of ``pid`` in bytes (0 if unreadable)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


class _Child:
    """A Python child running ``code`` from ``tree``, talked to line by line (started and ended by PID)."""

    def __init__(self, tree: Path, code: str, *args: str) -> None:
        env = dict(os.environ, PYTHONPATH=str(tree))
        self.stderr = tempfile.TemporaryFile(mode="w+")  # noqa: SIM115 - lives as long as the child; shown on failure
        self.proc = subprocess.Popen(
            [sys.executable, "-c", code, *args],
            cwd=tree,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.stderr,
            text=True,
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def expect(self, word: str) -> str:
        """Read lines until one starts with ``word``; return the rest of it."""
        assert self.proc.stdout is not None
        while True:
            line = self.proc.stdout.readline()
            if not line:
                self.stderr.seek(0)
                tail = "".join(self.stderr.readlines()[-15:])
                raise RuntimeError(f"child {self.pid} ended (exit {self.proc.poll()}) before {word!r}:\n{tail}")
            if line.startswith(word):
                return line[len(word) :].strip()

    def say(self, text: str = "go") -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(text + "\n")
        self.proc.stdin.flush()

    def end(self, timeout: float = 30.0) -> None:
        """SIGTERM, wait, then SIGKILL (this child only)."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=timeout)


def measure(tree: Path, n: int, rounds: int, profile_link: str = "") -> dict[str, float]:
    """One tree at one N: start link, driver and nodes; return the figures (see the module docstring)."""
    link = _Child(tree, LINK_MAIN, *([profile_link] if profile_link else []))
    children = [link]
    try:
        driver_address, fleet_address = link.expect("ADDR").split()
        driver = _Child(tree, DRIVER_MAIN, driver_address, str(n), str(rounds))
        children.append(driver)
        driver.expect("CONNECTED")
        time.sleep(0.5)  # benchmark only: let the link settle before its baseline RSS
        link_before = read_rss(link.pid)
        driver.say()
        nodes = _Child(tree, NODES_MAIN, fleet_address, str(n))
        children.append(nodes)
        formation = json.loads(driver.expect("FORMED"))["formation_s"]
        nodes.expect("REGISTERED")
        time.sleep(2.0)  # benchmark only: every node's long-poll reaches the link
        link_idle = read_rss(link.pid)
        nodes.say()
        host = json.loads(nodes.expect("RSS"))
        driver.say()
        driver.expect("WARM")
        if profile_link:
            os.kill(link.pid, signal.SIGUSR1)
        pids = (link.pid, nodes.pid, driver.pid)
        cpu0 = [read_cpu_seconds(pid) or 0.0 for pid in pids]
        driver.say()
        lat = json.loads(driver.expect("ROUNDS"))["lat"]
        cpu, nodes_cpu, driver_cpu = ((read_cpu_seconds(pid) or 0.0) - c0 for pid, c0 in zip(pids, cpu0, strict=True))
        if profile_link:
            os.kill(link.pid, signal.SIGUSR2)
        driver.say()
        nodes.say("STOP")
        teardown = json.loads(nodes.expect("STOPPED"))["teardown_s"]
        nodes.proc.wait(timeout=120)
    finally:
        for child in reversed(children):
            child.end()
    lat.sort()
    return {
        "n": n,
        "rounds": rounds,
        "formation_s": formation,
        "median_s": statistics.median(lat),
        "p90_s": lat[min(len(lat) - 1, round(0.9 * (len(lat) - 1)))],
        "link_cpu_ms_per_node_round": cpu / (n * rounds) * 1e3,
        "nodes_cpu_ms_per_node_round": nodes_cpu / (n * rounds) * 1e3,
        "driver_cpu_ms_per_node_round": driver_cpu / (n * rounds) * 1e3,
        "link_kb_per_idle_node": (link_idle - link_before) / n / 1024,
        "host_kb_per_node": (host["idle"] - host["before"]) / n / 1024,
        "teardown_s": teardown,
    }


_COLUMNS = (
    ("formation_s", "formation s", 12, 2),
    ("median_s", "median round s", 15, 3),
    ("p90_s", "p90 round s", 12, 3),
    ("link_cpu_ms_per_node_round", "link CPU ms/node-round", 23, 3),
    ("nodes_cpu_ms_per_node_round", "nodes CPU", 10, 3),
    ("driver_cpu_ms_per_node_round", "driver CPU", 11, 3),
    ("link_kb_per_idle_node", "link KB/idle node", 18, 1),
    ("host_kb_per_node", "host KB/node", 13, 1),
    ("teardown_s", "teardown s", 11, 2),
)


def _row(label: str, r: dict[str, float]) -> str:
    cells = "".join(f"{r[key]:>{width}.{digits}f}" for key, _, width, digits in _COLUMNS)
    return f"{label:<8}{int(r['n']):>7}{int(r['rounds']):>7}{cells}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nodes", type=int, default=1000, help="N compared old vs new (default 1000)")
    parser.add_argument("--rounds", type=int, default=5, help="measured rounds (after 2 warm-up rounds)")
    parser.add_argument("--old-tree", type=Path, default=None, help="the old source tree (compared at --nodes)")
    parser.add_argument("--new-tree", type=Path, default=Path("."), help="the new source tree (default: here)")
    parser.add_argument("--big", type=int, default=0, help="also measure the new tree at this N (e.g. 10000)")
    parser.add_argument("--repeat", type=int, default=1, help="runs per tree at --nodes, alternating (medians)")
    parser.add_argument("--profile-link", default="", help="cProfile the link process over the measured rounds")
    args = parser.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = max(args.nodes, args.big) + 512
    if soft < need:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(need, hard) if hard != resource.RLIM_INFINITY else need, hard))
    new = args.new_tree.resolve()
    results: list[tuple[str, dict[str, float]]] = []
    runs: dict[str, list[dict[str, float]]] = {"old": [], "new": []}
    for _ in range(args.repeat):  # alternating, so the machine's load drifts over both alike
        if args.old_tree is not None:
            runs["old"].append(measure(args.old_tree.resolve(), args.nodes, args.rounds))
        runs["new"].append(measure(new, args.nodes, args.rounds, args.profile_link))
    for label, done in runs.items():
        if done:
            results.append((label, {k: statistics.median(r[k] for r in done) for k in done[0]}))
    if args.big:
        results.append(("new", measure(new, args.big, args.rounds)))
    print(
        "scale: link | N SDK SuperNodes (one connection each, async ClientApp) | AsyncDriver.send_and_receive, "
        "3 processes, 127.0.0.1, empty RecordSet"
    )
    print(f"{'tree':<8}{'N':>7}{'rounds':>7}" + "".join(f"{title:>{width}}" for _, title, width, _ in _COLUMNS))
    for label, r in results:
        print(_row(label, r))
    old = next((r for label, r in results if label == "old"), None)
    if old is not None:
        cur = next(r for label, r in results if label == "new" and r["n"] == old["n"])
        ratios = "  ".join(f"{title} {cur[key] / old[key]:.2f}" for key, title, _, _ in _COLUMNS if old[key])
        print(f"new/old at N={old['n']}: {ratios}")


if __name__ == "__main__":
    main()

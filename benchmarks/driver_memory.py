"""Driver memory while consuming many large replies one at a time with ``receive()``.

Workload: a SuperLink process, a process of N SuperNodes, and a driver process (all on 127.0.0.1). Each round
the driver pushes one M-MiB float32 array to every node; each node adds its own number to it (distinct replies,
as after local training) and replies; the driver consumes the replies with ``AsyncDriver.receive()``, checks
each one, and drops it before taking the next.

Measured in the driver process: peak RSS growth while receiving (``VmHWM`` reset through
``/proc/self/clear_refs`` right after the push; growth = peak - RSS at that moment), and the round time (push to
last reply consumed). Printed as MiB and as a multiple of the array size.

With ``--old-tree DIR`` the same workload also runs against another checkout of fl-async (e.g. a ``git worktree``
of an older commit): its link, nodes and driver all import ``fl_async`` from ``DIR`` (the wire formats of two
versions need not match), in the same run, so the two figures compare as a ratio on this shared machine.

Usage::

    python -m benchmarks.driver_memory --nodes 50 --mib 30 --rounds 2 [--old-tree /tmp/old]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

MiB = 1 << 20
HERE = Path(__file__).resolve()


def _status_bytes(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


def _reset_peak() -> bool:
    """Reset this process's VmHWM to its current RSS (Linux >= 4.0); ``False`` if the kernel refuses."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


# ------------------------------------------------------------------------------------------ roles


async def _link_main(driver_port: int, fleet_port: int) -> None:
    from fl_async.superlink import LinkConfig, SuperLink

    cfg = LinkConfig(
        driver_api_address=f"127.0.0.1:{driver_port}",
        fleet_api_address=f"127.0.0.1:{fleet_port}",
        max_poll_timeout=30.0,
    )
    async with SuperLink(cfg):
        print("READY", flush=True)
        await asyncio.Event().wait()  # until SIGTERM


async def _nodes_main(fleet: str, n: int) -> None:
    import numpy as np

    from fl_async.client.client_app import ClientApp
    from fl_async.common import Context, Message, RecordSet
    from fl_async.common.records import ParametersRecord
    from fl_async.supernode import SuperNode

    app = ClientApp()

    @app.train()  # type: ignore[untyped-decorator]
    async def train(message: Message, context: Context) -> Message:
        arr = message.content.parameters_records["model"]["w"]
        k = context.node_config["k"]
        assert isinstance(k, int)
        w = arr.numpy().view(np.float32)
        w += np.float32(1 + k)  # in place: a distinct reply per node
        return message.create_reply(RecordSet(parameters_records={"model": ParametersRecord({"w": arr})}))

    async with contextlib.AsyncExitStack() as stack:
        nodes = [
            await stack.enter_async_context(
                SuperNode(app, fleet, insecure=True, heartbeat_interval=30.0, poll_timeout=20.0, node_config={"k": k})
            )
            for k in range(n)
        ]
        for node in nodes:
            await node.wait_registered(timeout=120)
        print("READY", flush=True)
        await asyncio.Event().wait()  # until SIGTERM


async def _driver_main(address: str, n: int, mib: int, rounds: int) -> None:
    import numpy as np

    from fl_async.common import RecordSet
    from fl_async.common.records import Array, ParametersRecord
    from fl_async.server.async_driver import AsyncDriver

    out: dict[str, list[float]] = {"growth": [], "seconds": [], "replies": []}
    async with AsyncDriver(address, insecure=True, call_timeout=300) as driver:
        node_ids = await driver.wait_for_nodes(n, timeout=120)
        base = np.random.default_rng(0).random(mib * MiB // 4, dtype=np.float32)
        probe = [0, base.size // 2, base.size - 1]
        for r in range(rounds):
            model = base + np.float32(1000 * r)  # a new model each round
            content = RecordSet(parameters_records={"model": ParametersRecord({"w": Array.from_numpy(model)})})
            msgs = [driver.create_message(content, "train", nid, f"round-{r}") for nid in node_ids]
            t0 = time.perf_counter()
            ids = await driver.push_messages(msgs)
            del msgs, content
            if not _reset_peak():
                raise SystemExit("cannot reset VmHWM (/proc/self/clear_refs): needs Linux >= 4.0")
            rss0 = _status_bytes("VmRSS")
            got = 0
            async with driver.receive(ids, timeout=600) as replies:
                async for reply in replies:
                    w = reply.content.parameters_records["model"]["w"].numpy()
                    step = np.rint(w[probe].astype(np.float64) - model[probe])
                    assert reply.metadata.src_node_id in node_ids and 1 <= step[0] <= n, step
                    got += 1
                    del w, reply  # consumed one at a time and dropped
            out["seconds"].append(time.perf_counter() - t0)
            out["growth"].append(_status_bytes("VmHWM") - rss0)
            out["replies"].append(got)
    print("RESULT " + json.dumps(out), flush=True)


# ------------------------------------------------------------------------------------------ orchestration


def _spawn(role_args: list[str], tree: Path | None, log: Path) -> subprocess.Popen[bytes]:
    """Start a role of this script; with ``tree``, ``fl_async`` is imported from that checkout."""
    env = dict(os.environ)
    if tree is not None:
        env["PYTHONPATH"] = str(tree)
    with open(log, "wb") as f:
        return subprocess.Popen(
            [sys.executable, str(HERE), *role_args],
            env=env,
            cwd=tempfile.gettempdir() if tree is not None else HERE.parent.parent,
            stdin=subprocess.DEVNULL,
            stdout=f,
            stderr=subprocess.STDOUT,
        )


def _wait_line(proc: subprocess.Popen[bytes], log: Path, prefix: str, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for line in log.read_text(errors="replace").splitlines():
            if line.startswith(prefix):
                return line
        if proc.poll() is not None:
            raise RuntimeError(f"{log.name} exited with {proc.returncode}:\n{log.read_text(errors='replace')[-3000:]}")
        time.sleep(0.05)
    raise TimeoutError(f"no {prefix!r} from {log.name} within {timeout} s")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()  # by its own PID
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def run_variant(label: str, tree: Path | None, n: int, mib: int, rounds: int) -> dict[str, list[float]]:
    """Run the workload with ``fl_async`` from ``tree`` (``None``: this checkout); return the driver's figures."""
    sys.path.insert(0, str(HERE.parent.parent))
    from benchmarks._proc import free_port

    logs = Path(tempfile.mkdtemp(prefix=f"driver_memory_{label}_"))
    dport, fport = free_port(), free_port()
    procs: list[subprocess.Popen[bytes]] = []
    try:
        link = _spawn(["link", str(dport), str(fport)], tree, logs / "link.log")
        procs.append(link)
        _wait_line(link, logs / "link.log", "READY", 60)
        nodes = _spawn(["nodes", f"127.0.0.1:{fport}", str(n)], tree, logs / "nodes.log")
        procs.append(nodes)
        _wait_line(nodes, logs / "nodes.log", "READY", 180)
        driver = _spawn(["driver", f"127.0.0.1:{dport}", str(n), str(mib), str(rounds)], tree, logs / "driver.log")
        procs.append(driver)
        line = _wait_line(driver, logs / "driver.log", "RESULT ", 60 + rounds * (60 + n * mib / 10))
        return json.loads(line[len("RESULT ") :])  # type: ignore[no-any-return]
    finally:
        for proc in reversed(procs):
            _stop(proc)


def _report(label: str, res: dict[str, list[float]], mib: int) -> tuple[float, float]:
    growth = max(res["growth"]) / MiB
    seconds = statistics.median(res["seconds"])
    per_round = ", ".join(f"{g / MiB:.0f}" for g in res["growth"])
    print(
        f"{label:>4}: peak driver RSS growth while receiving {growth:7.0f} MiB = {growth / mib:5.1f}x the array "
        f"(per round: {per_round} MiB); round {seconds:6.2f} s (median of {len(res['seconds'])}); "
        f"replies per round {[int(r) for r in res['replies']]}"
    )
    return growth, seconds


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if args and args[0] == "link":
        asyncio.run(_link_main(int(args[1]), int(args[2])))
        return
    if args and args[0] == "nodes":
        asyncio.run(_nodes_main(args[1], int(args[2])))
        return
    if args and args[0] == "driver":
        asyncio.run(_driver_main(args[1], int(args[2]), int(args[3]), int(args[4])))
        return
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nodes", type=int, default=50)
    parser.add_argument("--mib", type=int, default=30, help="array size in MiB")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--old-tree", type=Path, default=None, help="another fl-async checkout to compare with")
    parser.add_argument("--old-first", action="store_true", help="run the old tree first (order effects)")
    ns = parser.parse_args(args)
    print(f"driver memory: {ns.nodes} nodes, {ns.mib} MiB float32 array each way, {ns.rounds} rounds, receive()")
    variants: list[tuple[str, Path | None]] = [("new", None)]
    if ns.old_tree is not None:
        variants.insert(0 if ns.old_first else 1, ("old", ns.old_tree.resolve()))
    figures = {
        label: _report(label, run_variant(label, tree, ns.nodes, ns.mib, ns.rounds), ns.mib) for label, tree in variants
    }
    if "old" in figures:
        new, old = figures["new"], figures["old"]
        print(f"new/old: peak growth {new[0] / max(old[0], 1e-9):.3f}, round time {new[1] / old[1]:.2f}")


if __name__ == "__main__":
    main()

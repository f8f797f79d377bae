"""A SuperLink with ``--database`` killed with SIGKILL (by PID) mid-round and restarted with the same arguments:
real link and node processes, a real driver, a real SQLite file.

At the moment of the kill one node runs a handler (an instruction in flight) and has two more queued (one names a
50 MiB array on the blob path), and another run has two replies stored that its driver has not pulled. After the
restart every instruction ends in exactly one reply at its driver, each ClientApp call happened exactly once, the
node ids are unchanged and listed once, and the same ``AsyncDriver`` finishes a ``send_and_receive`` that spans
the crash.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sqlite3
import subprocess
import sys
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import numpy as np
import pytest
from anyio.abc import Process

from fl_async.common import ConfigsRecord, MessageType, ParametersRecord, RecordSet
from fl_async.common.arrays import Array
from fl_async.server import AsyncDriver
from tests.node_driver import free_port

APPS = Path(__file__).parent / "apps"


@pytest.fixture
async def processes() -> AsyncIterator[list[Process]]:
    procs: list[Process] = []
    try:
        yield procs
    finally:
        for p in procs:
            if p.returncode is None:
                p.kill()  # only processes this test started, by handle (PID)
            with anyio.move_on_after(5):
                await p.wait()


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "fl_async", *args]


async def _start(argv: list[str], log: Path, env: dict[str, str] | None = None) -> Process:
    with open(log, "ab") as out:
        return await anyio.open_process(argv, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})})


async def _wait_text(path: Path, text: str, count: int = 1, timeout: float = 30.0) -> None:
    with anyio.fail_after(timeout):
        while (path.read_text(errors="replace") if path.exists() else "").count(text) < count:
            await anyio.sleep(0.02)


def _db_count(db: Path, sql: str) -> int:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        return int(conn.execute(sql).fetchone()[0])


async def _wait_db(db: Path, sql: str, at_least: int, timeout: float = 30.0) -> None:
    with anyio.fail_after(timeout):
        while _db_count(db, sql) < at_least:
            await anyio.sleep(0.02)


def _content(sleep: float, array: np.ndarray | None = None) -> RecordSet:
    rs = RecordSet(configs_records={"cfg": ConfigsRecord({"sleep": sleep})})
    if array is not None:
        rs.parameters_records["p"] = ParametersRecord({"w": Array.from_numpy(array)})
    return rs


async def test_kill_9_link_loses_nothing(tmp_path: Path, processes: list[Process]) -> None:
    db = tmp_path / "link.db"
    driver_addr, fleet_addr, blob_addr = (f"127.0.0.1:{free_port()}" for _ in range(3))
    link_argv = _cli(
        "superlink",
        "--insecure",
        "--driver-api-address",
        driver_addr,
        "--fleet-api-address",
        fleet_addr,
        "--blob-api-address",
        blob_addr,
        "--database",
        str(db),
    )
    link_log, app_log = tmp_path / "link.log", tmp_path / "app.log"
    link = await _start(link_argv, link_log)
    processes.append(link)
    await _wait_text(link_log, "Driver API on")
    node_logs = [tmp_path / f"node{i}.log" for i in range(2)]
    for log in node_logs:
        node = await _start(
            _cli("supernode", "durable_app:app", "--superlink", fleet_addr, "--insecure", "--dir", str(APPS)),
            log,
            env={"DURABLE_APP_LOG": str(app_log)},
        )
        processes.append(node)

    big = np.random.default_rng(1).standard_normal(50 * 2**20 // 4).astype(np.float32)  # 50 MiB
    async with AsyncDriver(driver_addr, insecure=True) as spanning, AsyncDriver(driver_addr, insecure=True) as idle:
        node_ids = sorted(await spanning.wait_for_nodes(2, timeout=60))
        slow, fast = node_ids
        # run 1 (spanning): 3 instructions to the slow node (one runs 3 s, the others queue behind it, one of them
        # naming a 50 MiB array), answered only after the restart
        msgs = [
            spanning.create_message(_content(3.0), MessageType.QUERY, slow, "g"),
            spanning.create_message(_content(0.2, big), MessageType.QUERY, slow, "g"),
            spanning.create_message(_content(0.2), MessageType.QUERY, slow, "g"),
        ]
        # run 2 (idle): 2 instructions answered by the other node, pulled only after the restart
        idle_ids = await idle.push_messages(
            [idle.create_message(_content(0.0), MessageType.QUERY, fast, "g") for _ in range(2)]
        )
        replies: list = []

        async def round_spanning_the_crash() -> None:
            replies.extend(await spanning.send_and_receive(msgs, timeout=60))

        async with anyio.create_task_group() as tg:
            tg.start_soon(round_spanning_the_crash)
            await _wait_db(db, "SELECT COUNT(*) FROM instructions WHERE answered = 1", 2)  # run 2's replies
            await _wait_db(db, "SELECT COUNT(*) FROM instructions WHERE answered = 0", 3)  # run 1's instructions
            await _wait_text(app_log, "start", count=3)  # 2 answered + the slow one running
            assert (app_log.read_text().count("done")) == 2
            os.kill(link.pid, signal.SIGKILL)
            await link.wait()
            restarted = await _start(link_argv, link_log)
            processes.append(restarted)
            await _wait_text(link_log, "Driver API on", count=2)
            with anyio.fail_after(60):
                idle_replies = await idle.pull_messages(idle_ids, timeout=30)
        assert sorted(r.metadata.reply_to_message for r in idle_replies) == sorted(idle_ids)
        assert len(replies) == 3 and all(not r.has_error() for r in replies), [
            r.error for r in replies if r.has_error()
        ]
        assert len({r.metadata.reply_to_message for r in replies}) == 3  # one reply to each, none twice
        echoed = next(r for r in replies if "p" in r.content.parameters_records)
        np.testing.assert_array_equal(echoed.content.parameters_records["p"]["w"].numpy(), big)
        assert sorted(await spanning.get_node_ids()) == node_ids  # same ids, listed once

    runs = Counter(line.split()[1] for line in app_log.read_text().splitlines() if line.startswith("start"))
    assert len(runs) == 5 and set(runs.values()) == {1}, runs  # every ClientApp call happened exactly once
    for log in node_logs:
        assert "registered again" not in log.read_text()
    restart_log = link_log.read_text().split("Driver API on")[1]
    assert "taken over" in link_log.read_text() and "Traceback" not in restart_log


MAX_KILLS = 10
"""The crash loop stops killing after this many kills (the rounds then finish on the last link)."""


async def test_crash_loop_kill_every_2_s_during_20_rounds_of_5_nodes(
    tmp_path: Path, processes: list[Process], monkeypatch: pytest.MonkeyPatch
) -> None:
    import random

    from fl_async.supernode import SuperNode
    from tests.superlink.apps.durable_app import app

    app_log = tmp_path / "app.log"
    monkeypatch.setenv("DURABLE_APP_LOG", str(app_log))
    db = tmp_path / "link.db"
    driver_addr, fleet_addr, blob_addr = (f"127.0.0.1:{free_port()}" for _ in range(3))
    link_argv = _cli(
        "superlink",
        "--insecure",
        "--driver-api-address",
        driver_addr,
        "--fleet-api-address",
        fleet_addr,
        "--blob-api-address",
        blob_addr,
        "--database",
        str(db),
    )
    link_log = tmp_path / "link.log"
    links = [await _start(link_argv, link_log)]
    processes.append(links[0])
    await _wait_text(link_log, "Driver API on")
    done = anyio.Event()
    kills = 0

    async def crash_loop() -> None:
        nonlocal kills
        rng = random.Random(7)
        while not done.is_set() and kills < MAX_KILLS:  # bounded: on a loaded machine rounds progress slowly
            with anyio.move_on_after(rng.uniform(1.5, 2.5)):
                await done.wait()
            if done.is_set():
                return
            os.kill(links[-1].pid, signal.SIGKILL)  # our own child, by PID
            await links[-1].wait()
            kills += 1
            links.append(await _start(link_argv, link_log))
            processes.append(links[-1])
            await _wait_text(link_log, "Driver API on", count=len(links))

    nodes = [SuperNode(app, fleet_addr, insecure=True, max_backoff=0.5, heartbeat_interval=5.0) for _ in range(5)]
    replies_per_round: list[int] = []
    async with contextlib.AsyncExitStack() as stack:
        for node in nodes:
            await stack.enter_async_context(node)
        driver = await stack.enter_async_context(AsyncDriver(driver_addr, insecure=True))
        node_ids = sorted(await driver.wait_for_nodes(5, timeout=60))
        async with anyio.create_task_group() as tg:
            tg.start_soon(crash_loop)
            for rnd in range(20):
                msgs = [driver.create_message(_content(0.3), MessageType.QUERY, n, str(rnd)) for n in node_ids]
                replies = await driver.send_and_receive(msgs, timeout=60)
                errors = [r.error for r in replies if r.has_error()]
                assert not errors, (rnd, errors)
                assert len({r.metadata.reply_to_message for r in replies}) == len(replies) == 5
                assert sorted(r.metadata.src_node_id for r in replies) == node_ids
                replies_per_round.append(len(replies))
            done.set()
        assert sorted(await driver.get_node_ids()) == node_ids
    starts = Counter(line.split()[1] for line in app_log.read_text().splitlines() if line.startswith("start"))
    assert len(starts) == 100 and set(starts.values()) == {1}, starts.most_common(3)  # each ran exactly once
    assert kills >= 3, kills
    print(f"20 rounds of 5 nodes completed through {kills} kills of the link")

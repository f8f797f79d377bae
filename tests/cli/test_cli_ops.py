"""``fl-async ls`` / ``stop`` against a real link, the INFO log of ``fl-async run``, and app errors in the CLI."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import anyio
from typer.testing import CliRunner

from fl_async._loading import load_object
from fl_async.cli import app
from fl_async.common import ConfigsRecord, MessageType, RecordSet
from fl_async.errors import AppLoadError
from fl_async.server import AsyncDriver
from tests.driver_fixtures import GATES, cluster
from tests.superlink.test_operations import gated_app

ROOT = Path(__file__).resolve().parents[2]
runner = CliRunner()


async def cli(*args: str) -> Any:
    """Invoke the CLI in a worker thread (it runs its own event loop)."""
    return await anyio.to_thread.run_sync(lambda: runner.invoke(app, list(args)))


async def test_ls_nodes_json_lists_online_ids_and_creates_no_run() -> None:
    async with cluster(num_nodes=3) as c:
        r = await cli("ls", "nodes", "--superlink", c.link.driver_address, "--insecure", "--json")
        assert r.exit_code == 0, r.output
        rows = json.loads(r.stdout)
        assert sorted(row["node_id"] for row in rows) == sorted(c.node_ids)
        assert all(row["address"].startswith("127.0.0.1:") and row["online_since"] > 0 for row in rows)
        assert c.link.stats().runs == 0  # no stray run
        table = await cli("ls", "nodes", "--superlink", c.link.driver_address, "--insecure")
        assert table.exit_code == 0 and all(str(n) in table.stdout for n in c.node_ids)


async def test_ls_runs_and_messages_counts() -> None:
    async with cluster(gated_app(), num_nodes=1) as c, AsyncDriver(c.link.driver_address, insecure=True) as driver:
        (node,) = await driver.get_node_ids()
        content = RecordSet(configs_records={"wait": ConfigsRecord({"event": "ls"})})
        ids = await driver.push_messages([driver.create_message(content, MessageType.QUERY, node, "g")] * 3)
        with anyio.fail_after(5):
            await GATES.wait("started-ls")
        r = await cli("ls", "runs", "--superlink", c.link.driver_address, "--insecure", "--json")
        assert r.exit_code == 0, r.output
        assert r.stdout.lstrip().startswith("["), (r.stdout, r.stderr)
        (run,) = json.loads(r.stdout)
        assert (run["run_id"], run["queued"], run["in_flight"], run["answered"]) == (driver.run_id, 2, 1, 0)
        link = ["--superlink", c.link.driver_address, "--insecure", "--json"]
        m = await cli("ls", "messages", *link, str(driver.run_id))
        assert m.exit_code == 0, m.output
        assert sorted(row["state"] for row in json.loads(m.stdout)) == ["in_flight", "queued", "queued"]
        GATES.release("ls")
        assert len(await driver.pull_messages(ids, timeout=10)) == 3


async def test_stop_command() -> None:
    async with cluster(num_nodes=1) as c, AsyncDriver(c.link.driver_address, insecure=True) as driver:
        link = ["--superlink", c.link.driver_address, "--insecure"]
        r = await cli("stop", *link, str(driver.run_id))
        assert r.exit_code == 0 and f"run {driver.run_id} stopped" in r.output
        again = await cli("stop", *link, str(driver.run_id))
        assert again.exit_code == 0 and "already stopped" in again.output
        missing = await cli("stop", *link, "12345")
        assert missing.exit_code == 1 and "unknown run 12345" in missing.output


def test_run_info_log_is_short_and_names_each_node_once() -> None:
    cmd = [sys.executable, "-m", "fl_async", "run", "tests.cli.ops_apps:server", "tests.cli.ops_apps:client"]
    cmd += ["--dir", str(ROOT), "--num-supernodes", "3", "--run-config", "num-server-rounds=3", "--no-progress"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) < 30, proc.stderr
    (registered,) = [line for line in lines if "nodes registered with" in line]
    ids = registered.rsplit(": ", 1)[1].split(", ")
    assert len(ids) == 3
    for node_id in ids:
        assert len(re.findall(rf"(?<!\d){node_id}(?!\d)", proc.stderr)) == 1, proc.stderr
    assert "hpack" not in proc.stderr and "run " in proc.stderr and "created" in proc.stderr


def test_verbose_shows_fl_async_debug_but_no_http2_noise() -> None:
    cmd = [sys.executable, "-m", "fl_async", "run", "tests.cli.ops_apps:server", "tests.cli.ops_apps:client", "-v"]
    cmd += ["--dir", str(ROOT), "--num-supernodes", "1", "--run-config", "num-server-rounds=1", "--no-progress"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    assert " DEBUG fl_async." in proc.stderr
    assert "hpack" not in proc.stderr and " DEBUG grpclib" not in proc.stderr


def test_server_app_oserror_is_reported_as_the_apps(tmp_path: Path) -> None:
    cmd = [sys.executable, "-m", "fl_async", "run", "tests.cli.ops_apps:failing", "tests.cli.ops_apps:client"]
    cmd += ["--dir", str(ROOT), "--num-supernodes", "1", "--no-progress", "--log-format", "json"]
    cmd += ["--log-file", str(tmp_path / "log.jsonl")]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert proc.returncode == 1
    assert "Traceback" in proc.stderr and "ops_apps.py" in proc.stderr
    assert "the server app raised FileNotFoundError" in proc.stderr.splitlines()[-1]
    records = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert any(r.get("event") == "run_created" and "run_id" in r for r in records)


def test_import_error_names_file_and_line(tmp_path: Path) -> None:
    (tmp_path / "broken_app_mod.py").write_text("x = 1\napp = print(\n")
    try:
        load_object("broken_app_mod:app", dir=tmp_path)
    except AppLoadError as exc:
        assert "broken_app_mod.py, line 2" in str(exc) and "SyntaxError" in str(exc)
    else:
        raise AssertionError("expected AppLoadError")

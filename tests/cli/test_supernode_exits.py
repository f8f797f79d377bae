"""Every way ``fl-async supernode`` ends prints one line saying why, with a meaningful exit code: 0 stopped by a
signal (SIGINT, SIGTERM, SIGHUP), 1 failed (the link refuses it; an internal error), 2 refused command line (tested
in ``test_cli.py``). Real processes against a real link on 127.0.0.1."""

from __future__ import annotations

import signal
import sys
from pathlib import Path

import anyio
import pytest
import typer

from fl_async.cli.process import EXIT_FAILURE, run_async_command
from fl_async.superlink import SuperLink

FL_ASYNC = str(Path(sys.executable).with_name("fl-async"))
APP = "from fl_async.client import ClientApp\napp = ClientApp()\n"


async def _node(tmp_path: Path, superlink: str) -> tuple[anyio.abc.Process, Path]:
    (tmp_path / "exit_app.py").write_text(APP)
    err = tmp_path / "stderr.txt"
    args = ["supernode", "exit_app:app", "--dir", str(tmp_path), "--insecure", "--superlink", superlink]
    with err.open("w") as sink:
        proc = await anyio.open_process([FL_ASYNC, *args], stdout=sink, stderr=sink)
    return proc, err


async def _wait_line(err: Path, text: str, within: float = 30) -> None:
    with anyio.fail_after(within):
        while text not in await anyio.Path(err).read_text():  # noqa: ASYNC110 (a child's stderr file; bounded)
            await anyio.sleep(0.05)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP])
async def test_stopped_by_a_signal_says_so_and_exits_0(superlink: SuperLink, tmp_path: Path, signum: int) -> None:
    proc, err = await _node(tmp_path, superlink.fleet_address)
    try:
        await _wait_line(err, "running exit_app:app")
        with anyio.fail_after(30):  # registered: the link lists it
            while not superlink.state.store.node_count():  # noqa: ASYNC110 (no event for it; bounded)
                await anyio.sleep(0.05)
        proc.send_signal(signum)
        with anyio.fail_after(10):
            rc = await proc.wait()
    finally:
        if proc.returncode is None:
            proc.kill()
    text = err.read_text()
    assert rc == 0, text
    assert f"fl-async supernode: {signal.Signals(signum).name} received, shutting down" in text
    assert text.rstrip().endswith("fl-async supernode: stopped")


async def test_refused_by_the_link_exits_1_with_one_line(superlink: SuperLink, tmp_path: Path) -> None:
    proc, err = await _node(tmp_path, superlink.driver_address)  # the Driver API's port: not a Fleet API
    try:
        with anyio.fail_after(30):
            rc = await proc.wait()
    finally:
        if proc.returncode is None:
            proc.kill()
    lines = [line for line in err.read_text().splitlines() if line.startswith("fl-async supernode: error:")]
    assert rc == EXIT_FAILURE and len(lines) == 1
    assert "this port serves the Driver API, not the Fleet API" in lines[0]


def test_internal_error_prints_one_line_after_the_traceback(capsys: pytest.CaptureFixture[str]) -> None:
    async def broken() -> None:
        raise KeyError("a bug")

    with pytest.raises(typer.Exit) as exc:
        run_async_command("supernode", broken)
    assert exc.value.exit_code == EXIT_FAILURE
    err = capsys.readouterr().err
    assert "Traceback" in err
    assert err.rstrip().splitlines()[-1] == (
        "fl-async supernode: error: internal error (a bug in fl-async): KeyError: 'a bug'"
    )

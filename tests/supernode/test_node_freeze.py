"""A real ``fl-async supernode`` process frozen (SIGSTOP) long enough for the link to declare it offline, then
continued (SIGCONT): it must be listed again and answer within 30 s, and still be running.

The freeze lasts ``FL_ASYNC_FREEZE_SECONDS`` (default 4 s, with a 1 s heartbeat: the link forgets the node after
2 s). The long version (a 30 s heartbeat frozen 100 s) is ``python -m benchmarks.attack freeze --seconds 100``.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

import anyio
import pytest

from fl_async.common import MessageType, RecordSet
from fl_async.server import AsyncDriver

FREEZE_SECONDS = float(os.environ.get("FL_ASYNC_FREEZE_SECONDS", "4"))
FL_ASYNC = str(Path(sys.executable).with_name("fl-async"))

APP = """
from fl_async.client import ClientApp
from fl_async.common import RecordSet

app = ClientApp()

@app.query()
def query(msg, ctx):
    return msg.create_reply(RecordSet())
"""


@pytest.mark.skipif(not hasattr(signal, "SIGSTOP"), reason="needs SIGSTOP/SIGCONT")
async def test_frozen_node_is_listed_again_and_answers(superlink_factory, tmp_path: Path) -> None:
    link = await superlink_factory(heartbeat_patience=2.0)
    (tmp_path / "freeze_app.py").write_text(APP)
    log = (tmp_path / "node.log").open("w")
    args = ["supernode", "freeze_app:app", "--dir", str(tmp_path), "--insecure", "--heartbeat-interval", "1"]
    node = await anyio.open_process([FL_ASYNC, *args, "--superlink", link.fleet_address], stdout=log, stderr=log)
    try:
        async with AsyncDriver(link.driver_address, insecure=True) as driver:
            (before,) = await driver.wait_for_nodes(1, timeout=30)
            msg = driver.create_message(RecordSet(), MessageType.QUERY, before, "1")
            (reply,) = await driver.send_and_receive([msg], timeout=30)
            assert not reply.has_error()
            os.kill(node.pid, signal.SIGSTOP)
            stopped_at = time.monotonic()
            with anyio.fail_after(FREEZE_SECONDS + 30):  # the link forgets the frozen node (1 s x patience 2)
                while before in await driver.wait_for_nodes(0, timeout=0):  # noqa: ASYNC110 (bounded; no event)
                    await anyio.sleep(0.1)
            await anyio.sleep(max(0.0, FREEZE_SECONDS - (time.monotonic() - stopped_at)))  # the freeze itself
            os.kill(node.pid, signal.SIGCONT)
            resumed = time.monotonic()
            with anyio.fail_after(30):
                (after,) = await driver.wait_for_nodes(1, timeout=30)
                listed = time.monotonic() - resumed
                msg = driver.create_message(RecordSet(), MessageType.QUERY, after, "2")
                (reply,) = await driver.send_and_receive([msg], timeout=30)
            answered = time.monotonic() - resumed
            assert not reply.has_error(), reply.error
        assert node.returncode is None, "the node exited after the freeze"
        assert listed < 30 and answered < 30
        print(f"frozen {FREEZE_SECONDS:g} s: listed again after {listed:.2f} s, answered after {answered:.2f} s")
    finally:
        if node.returncode is None:
            os.kill(node.pid, signal.SIGCONT)
            node.terminate()
            with anyio.fail_after(10):
                await node.wait()
        log.close()

"""SuperNode shutdown: signals to a node process (link down or up), stop() with running handlers."""

from __future__ import annotations

import signal
import threading
import time

import anyio
import pytest

from fl_async.client import ClientApp
from fl_async.common import Context, ErrorCode, Message, RecordSet
from fl_async.supernode import SuperNode
from fl_async.testing.wire import RawDriver
from tests.node_driver import end_process, free_port, spawn, wait_for_text

NODE_PROCESS = """
import logging, sys, functools, anyio
logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(name)s %(message)s")
from fl_async.client import ClientApp
from fl_async.supernode import run_supernode
app = ClientApp()

@app.train()
def train(msg, ctx):
    print("handler started", flush=True)
    import time; time.sleep(60)  # never finishes in time: must be abandoned

grace = float(sys.argv[2]) if len(sys.argv) > 2 else 2.0
anyio.run(functools.partial(run_supernode, app, sys.argv[1], insecure=True, max_backoff=0.5, shutdown_grace=grace))
print("node process returned", flush=True)
"""


async def _signal_and_time(proc, signum: int) -> float:
    start = time.monotonic()
    proc.send_signal(signum)  # by PID: the process we started
    with anyio.fail_after(10):
        await proc.wait()
    return time.monotonic() - start


async def test_sigterm_with_the_link_down_exits_0_within_3s(tmp_path) -> None:
    log = tmp_path / "node.log"
    proc = await spawn(NODE_PROCESS, f"127.0.0.1:{free_port()}", log_path=log)
    try:
        await wait_for_text(log, "not usable", count=2)  # running, retrying with backoff
        elapsed = await _signal_and_time(proc, signal.SIGTERM)
    finally:
        await end_process(proc)
    assert proc.returncode == 0, log.read_text()
    assert elapsed < 3.0
    assert "node process returned" in log.read_text()


async def test_sigint_with_the_link_up_deletes_the_node_and_exits_0(superlink, tmp_path) -> None:
    log = tmp_path / "node.log"
    proc = await spawn(NODE_PROCESS, superlink.fleet_address, log_path=log)
    try:
        await wait_for_text(log, "registered with SuperLink")
        assert superlink.stats().nodes == 1
        elapsed = await _signal_and_time(proc, signal.SIGINT)
    finally:
        await end_process(proc)
    assert proc.returncode == 0, log.read_text()
    assert elapsed < 3.0
    assert superlink.stats().nodes == 0  # DeleteNode went through


async def test_sigterm_with_a_blocked_handler_abandons_it_and_exits_0_within_3s(superlink, tmp_path) -> None:
    log = tmp_path / "node.log"
    proc = await spawn(NODE_PROCESS, superlink.fleet_address, "1.0", log_path=log)
    try:
        async with RawDriver(superlink.driver_address) as drv:
            run = await drv.create_run()
            (node_id,) = await drv.wait_for_nodes(run, 1)
            mid = await drv.push_message(run, node_id)
            await wait_for_text(log, "handler started")
            elapsed = await _signal_and_time(proc, signal.SIGTERM)
            reply = await drv.reply(run, mid)
    finally:
        await end_process(proc)
    assert proc.returncode == 0, log.read_text()
    assert elapsed < 3.0  # grace 1 s, DeleteNode, exit: the handler's daemon thread does not block it
    assert reply.error.code == ErrorCode.NODE_UNAVAILABLE


def blocking_app(started: threading.Event, release: threading.Event) -> ClientApp:
    app = ClientApp()

    @app.train()
    def train(msg: Message, ctx: Context) -> Message:
        started.set()
        release.wait(30)
        return msg.create_reply(RecordSet())

    return app


async def _wait_thread_event(event: threading.Event, timeout: float = 10.0) -> None:
    with anyio.fail_after(timeout):
        while not event.is_set():
            await anyio.sleep(0.01)


async def test_stop_waits_for_a_handler_that_finishes_within_the_grace(superlink) -> None:
    started, release = threading.Event(), threading.Event()
    node = SuperNode(blocking_app(started, release), superlink.fleet_address, insecure=True, shutdown_grace=5.0)
    async with RawDriver(superlink.driver_address) as drv, anyio.create_task_group() as tg:
        tg.start_soon(node.run)
        node_id = await node.wait_registered(timeout=5)
        run = await drv.create_run()
        mid = await drv.push_message(run, node_id)
        await _wait_thread_event(started)
        node.stop()
        release.set()  # the handler finishes during the grace period
        reply = await drv.reply(run, mid)
    assert reply.has_content(), reply.error  # the reply was pushed before the node left
    assert superlink.stats().nodes == 0


async def test_stop_abandons_a_handler_after_the_grace(superlink) -> None:
    started, release = threading.Event(), threading.Event()
    node = SuperNode(blocking_app(started, release), superlink.fleet_address, insecure=True, shutdown_grace=0.3)
    try:
        async with RawDriver(superlink.driver_address) as drv:
            async with anyio.create_task_group() as tg:
                tg.start_soon(node.run)
                node_id = await node.wait_registered(timeout=5)
                run = await drv.create_run()
                mid = await drv.push_message(run, node_id)
                await _wait_thread_event(started)
                t0 = time.monotonic()
                node.stop()
            assert time.monotonic() - t0 < 2.0  # grace 0.3 s + DeleteNode; the thread is abandoned
            reply = await drv.reply(run, mid)
        assert reply.error.code == ErrorCode.NODE_UNAVAILABLE  # the link was told the node left
        assert node.running_handlers == 0
    finally:
        release.set()


async def test_run_twice_is_refused_and_wait_registered_after_stop_raises(superlink) -> None:
    node = SuperNode(ClientApp(), superlink.fleet_address, insecure=True)
    async with node:
        await node.wait_registered(timeout=5)
    with pytest.raises(RuntimeError, match="run only once"):
        await node.run()
    with pytest.raises(RuntimeError, match="has stopped"):
        await node.wait_registered(timeout=1)

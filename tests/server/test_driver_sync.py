"""The blocking Driver facade: scripts, threads, inside a running event loop, and thread hygiene."""

from __future__ import annotations

import gc
import socket
import threading
import time
import warnings

import anyio
import anyio.lowlevel
import anyio.to_thread
import numpy as np
import pytest

from fl_async.common import ConfigsRecord, LinkConnectionError, Message, MessageType, ParametersRecord, RecordSet
from fl_async.server import Driver, DriverState
from fl_async.server.driver import THREAD_NAME
from tests.driver_fixtures import cluster, cluster_in_thread


def _content() -> RecordSet:
    return RecordSet(parameters_records={"w": ParametersRecord.from_numpy_dict({"a": np.ones(4, np.float32)})})


def _gate(name: str) -> RecordSet:
    return RecordSet(configs_records={"wait": ConfigsRecord({"event": name})})


def _driver_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith(THREAD_NAME)]


def _guide_round(driver: Driver, node_ids: list[int], server_round: int) -> tuple[list[Message], int]:
    """The guide's push / pull loop; returns the replies and how many times it reached its sleep."""
    messages = [driver.create_message(_content(), MessageType.TRAIN, n, str(server_round)) for n in node_ids]
    message_ids = [mid for mid in driver.push_messages(messages) if mid != ""]
    all_replies: list[Message] = []
    sleeps = 0
    while True:
        replies = driver.pull_messages(message_ids=message_ids)
        all_replies += replies
        if len(all_replies) == len(message_ids):
            break
        sleeps += 1
        time.sleep(3)
    return all_replies, sleeps


async def test_guide_loop_from_a_thread_never_reaches_its_sleep() -> None:
    async with cluster(num_nodes=3) as c:
        address = c.link.driver_address

        def script() -> list[float]:
            durations = []
            with Driver(address, insecure=True, run_config={"rounds": 3}) as driver:
                assert driver.run.run_config == {"rounds": 3}
                node_ids = driver.get_node_ids()
                assert len(node_ids) == 3
                for rnd in range(3):
                    started = time.monotonic()
                    replies, sleeps = _guide_round(driver, node_ids, rnd)
                    durations.append(time.monotonic() - started)
                    assert sleeps == 0 and len(replies) == 3 and all(r.has_content() for r in replies)
            return durations

        with anyio.fail_after(30):
            durations = await anyio.to_thread.run_sync(script)
        assert max(durations) < 1.0, durations


async def test_sync_driver_inside_running_event_loop_does_not_deadlock() -> None:
    # The link and nodes run in another thread: a blocking call here freezes only this loop.
    with cluster_in_thread(num_nodes=2) as (c, _portal):
        with pytest.warns(RuntimeWarning, match="AsyncDriver"):
            driver = Driver(c.link.driver_address, insecure=True, call_timeout=10)
        try:
            node_ids = driver.get_node_ids()
            assert sorted(node_ids) == sorted(c.node_ids)
            replies, sleeps = _guide_round(driver, node_ids, 0)
            assert sleeps == 0 and len(replies) == 2
            assert (
                len(
                    driver.send_and_receive(
                        [driver.create_message(_content(), MessageType.TRAIN, n, "1") for n in node_ids], timeout=10
                    )
                )
                == 2
            )
        finally:
            driver.close()
        await anyio.lowlevel.checkpoint()  # this loop is still alive and usable


def test_close_leaves_no_threads() -> None:
    with cluster_in_thread(num_nodes=1) as (c, _portal):
        before = set(threading.enumerate())
        with Driver(c.link.driver_address, insecure=True) as driver:
            assert len(_driver_threads()) == 1
            ids = driver.push_messages([driver.create_message(_content(), MessageType.TRAIN, c.node_ids[0], "1")])
            with driver.receive(ids, timeout=5) as stream:
                assert len(list(stream)) == 1
        assert set(threading.enumerate()) - before == set()  # nothing new (others may have ended)
        assert driver.state is DriverState.CLOSED
        driver.close()  # idempotent
        with pytest.raises(RuntimeError, match="closed"):
            driver.get_node_ids()

        # A forgotten driver is closed by its finalizer when collected.
        forgotten = Driver(c.link.driver_address, insecure=True)
        forgotten.get_node_ids()
        del forgotten
        gc.collect()
        assert set(threading.enumerate()) - before == set()  # nothing new (others may have ended)


def test_construction_errors_leave_no_threads() -> None:
    before = set(threading.enumerate())
    with pytest.raises(ValueError, match="no transport security"):
        Driver("127.0.0.1:9091")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(LinkConnectionError):
        Driver(f"127.0.0.1:{port}", insecure=True, call_timeout=5)
    assert set(threading.enumerate()) - before == set()


def test_one_driver_shared_by_threads() -> None:
    with cluster_in_thread(num_nodes=3) as (c, _portal), Driver(c.link.driver_address, insecure=True) as driver:
        results: dict[int, int] = {}
        errors: list[BaseException] = []

        def worker(k: int) -> None:
            try:
                msgs = [driver.create_message(_content(), MessageType.TRAIN, n, f"t{k}") for n in c.node_ids]
                results[k] = len(driver.send_and_receive(msgs, timeout=10))
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=worker, args=(k,)) for k in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=30)
        assert not errors and results == {0: 3, 1: 3, 2: 3, 3: 3}


def test_sync_send_and_receive_timeout_with_silent_node() -> None:
    with cluster_in_thread(num_nodes=2) as (c, _portal), Driver(c.link.driver_address, insecure=True) as driver:
        answering, silent = c.node_ids
        msgs = [
            driver.create_message(_content(), MessageType.TRAIN, answering, "1"),
            driver.create_message(_gate("never"), MessageType.QUERY, silent, "1"),
        ]
        started = time.monotonic()
        replies = driver.send_and_receive(msgs, timeout=0.5)
        elapsed = time.monotonic() - started
        assert elapsed < 0.5 + 0.05, elapsed
        assert [r.metadata.src_node_id for r in replies] == [answering]
        # the sync pull waits (default 3 s) for the outstanding reply, then returns what is there
        ids = driver.push_messages([driver.create_message(_gate("never"), MessageType.QUERY, silent, "2")])
        started = time.monotonic()
        assert driver.pull_messages(ids, timeout=0.2) == []
        assert 0.2 - 0.01 <= time.monotonic() - started < 0.2 + 0.05


def test_no_warning_outside_event_loop() -> None:
    with cluster_in_thread(num_nodes=0) as (c, _portal), warnings.catch_warnings():
        warnings.simplefilter("error")
        with Driver(c.link.driver_address, insecure=True) as driver:
            assert driver.get_node_ids() == []

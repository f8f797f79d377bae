"""``fl-async run`` with many nodes: bounded teardown without recursion, progress while nodes start, and the
quickstart with more nodes than its data fills (empty partitions: 0 examples, no nan, no warnings)."""

from __future__ import annotations

import logging
import re
import time
import warnings

import anyio
import anyio.lowlevel
import numpy as np
import pytest

from examples.quickstart import client as qclient
from examples.quickstart import server as qserver
from examples.quickstart import task
from fl_async.cli.embedded import REGISTER_WAVE, run_embedded, running_nodes


class FakeNode:
    """Just what ``running_nodes`` uses of a SuperNode: run until stopped, registered at once."""

    def __init__(self) -> None:
        self.node_id: int | None = None
        self._stop = anyio.Event()
        self._registered = anyio.Event()
        self.stopped = False

    async def run(self) -> None:
        self.node_id = id(self)
        self._registered.set()
        await self._stop.wait()
        await anyio.lowlevel.checkpoint()  # on the way out, as a real node's goodbye
        self.stopped = True

    async def wait_registered(self) -> int:
        await self._registered.wait()
        assert self.node_id is not None
        return self.node_id

    def stop(self) -> None:
        self._stop.set()


async def test_thousands_of_nodes_start_with_progress_and_stop_without_recursion() -> None:
    nodes = [FakeNode() for _ in range(2_500)]
    seen: list[tuple[int, int]] = []
    with anyio.fail_after(30):
        async with running_nodes(nodes, on_registered=lambda done, total: seen.append((done, total))):
            assert all(n.node_id is not None for n in nodes)
        assert all(n.stopped for n in nodes)
    assert [done for done, _ in seen] == list(range(REGISTER_WAVE, 2_501, REGISTER_WAVE))
    assert {total for _, total in seen} == {2_500}


async def test_a_failing_body_is_raised_unwrapped_after_every_node_stopped() -> None:
    nodes = [FakeNode() for _ in range(1_200)]
    with pytest.raises(KeyError, match="boom"), anyio.fail_after(30):
        async with running_nodes(nodes):
            raise KeyError("boom")
    assert all(n.stopped for n in nodes)


def test_partitions_of_more_nodes_than_samples_are_disjoint_and_some_are_empty() -> None:
    _, y_train, _, _ = task.load_dataset()
    n = 2 * len(y_train)
    t0 = time.perf_counter()
    parts = [task.load_partition(i, n)[1] for i in range(n)]
    assert time.perf_counter() - t0 < 10
    assert sum(len(y) for y in parts) == len(y_train)
    empty = [y for y in parts if len(y) == 0]
    assert len(empty) >= n - len(y_train)
    x, y = task.load_partition(parts.index(empty[0]), n)
    params = task.init_params()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # numpy's "Mean of empty slice" would fail here
        assert task.evaluate(params, x, y) == (0.0, 0.0)
        trained, loss = task.train(params, x, y, epochs=2)
    assert loss == 0.0 and all(np.array_equal(trained[k], params[k]) for k in params)


async def test_quickstart_with_empty_partitions_has_no_nan_and_no_warnings(
    capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    n = 200  # 1,347 training samples: some of 200 Dirichlet partitions stay empty
    assert any(len(task.load_partition(i, n)[1]) == 0 for i in range(n))
    config = {"num-server-rounds": 1, "local-epochs": 1}
    caplog.set_level(logging.WARNING)
    with warnings.catch_warnings(record=True) as caught, anyio.fail_after(120):
        warnings.simplefilter("always")
        await run_embedded(qserver.app, qclient.app, num_supernodes=n, run_config=config, progress=False)
    out = capsys.readouterr().out
    assert re.search(r"round +1/1: test accuracy +\d+\.\d+%", out), out
    assert f"federated evaluation on {n} nodes' own data: accuracy" in out
    assert "nan" not in out.lower()
    assert [str(w.message) for w in caught] == []
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []

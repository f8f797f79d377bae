"""The quickstart (examples/quickstart): the numpy model alone, and the real runtime via the embedded runner."""

from __future__ import annotations

import re

import anyio
import numpy as np
import pytest
from typer.testing import CliRunner

from examples.quickstart import client as qclient
from examples.quickstart import server as qserver
from examples.quickstart import task
from fl_async.cli import app
from fl_async.cli.embedded import run_embedded

ROUND_LINE = re.compile(r"round +(\d+)/(\d+): test accuracy +([\d.]+)%")


def accuracies(text: str) -> list[float]:
    return [float(m.group(3)) / 100 for m in ROUND_LINE.finditer(text)]


def test_partitions_are_disjoint_non_iid_and_cover_the_training_set() -> None:
    x_train, y_train, x_test, _ = task.load_dataset()
    parts = [task.load_partition(i, 10) for i in range(10)]
    assert sum(len(y) for _, y in parts) == len(y_train)
    assert len(x_test) > 400 and all(len(y) >= 8 for _, y in parts)
    # Label skew: every node's majority class holds at least twice a tenth of its data.
    assert all(np.bincount(y, minlength=10).max() / len(y) >= 0.2 for _, y in parts)
    with pytest.raises(ValueError, match="partition-id"):
        task.load_partition(10, 10)


def test_numpy_fedavg_simulation_reaches_90_percent() -> None:
    accs = task.simulate_fedavg(
        num_rounds=int(qserver.DEFAULTS["num-server-rounds"]),
        local_epochs=int(qserver.DEFAULTS["local-epochs"]),
        lr=float(qserver.DEFAULTS["lr"]),
    )
    assert accs[-1] >= 0.90, accs
    assert accs[-1] > accs[0]


async def test_embedded_run_matches_the_simulation_and_improves(capsys: pytest.CaptureFixture[str], tmp_path) -> None:
    plot = tmp_path / "acc.png"
    config = {"num-server-rounds": 3, "local-epochs": 1, "plot": str(plot)}
    with anyio.fail_after(60):
        await run_embedded(qserver.app, qclient.app, num_supernodes=10, run_config=config, progress=False)
    out = capsys.readouterr().out
    accs = accuracies(out)
    assert len(accs) == 3, out
    assert accs[-1] > accs[0], accs
    expected = task.simulate_fedavg(num_rounds=3, local_epochs=1, lr=float(qserver.DEFAULTS["lr"]))
    assert np.allclose(accs, expected, atol=0.006), (accs, expected)  # same data, seeds and arithmetic
    assert "federated evaluation on 10 nodes" in out
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_fl_async_run_full_quickstart_reaches_90_percent() -> None:
    """What `make run` runs (20 rounds, 10 nodes), through the CLI."""
    result = CliRunner().invoke(
        app,
        [
            "run",
            "examples.quickstart.server:app",
            "examples.quickstart.client:app",
            "--num-supernodes",
            "10",
            "--progress",
        ],
    )
    assert result.exit_code == 0, result.output
    accs = accuracies(result.stdout)
    assert len(accs) == 20
    assert accs[-1] >= 0.90, accs
    assert "rounds (10 nodes)" in result.stderr  # the progress display went to stderr
    assert "rounds (10 nodes)" not in result.stdout


def test_unknown_run_config_key_is_reported_by_the_app() -> None:
    result = CliRunner().invoke(
        app,
        [
            "run",
            "examples.quickstart.server:app",
            "examples.quickstart.client:app",
            "--num-supernodes",
            "2",
            "--run-config",
            "num-rounds=3",
        ],
    )
    assert result.exit_code == 1
    assert "unknown run config key(s) ['num-rounds']" in result.stderr.strip().splitlines()[-1]

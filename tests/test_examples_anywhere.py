"""Every example runs from the repository root and from its own folder (through the real CLI, in a subprocess)."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# The other half of each pair runs elsewhere: the quickstart from the root in test_quickstart.py, the
# driver-api example from its folder in test_example_driver_api.py, examples/flower-numpy both ways in
# test_strategies.py.
CASES = {
    ("quickstart", "folder"): ["server_loop:app", "client:app", "--run-config", "num-server-rounds=1 local-epochs=1"],
    ("driver-api", "root"): ["server:app", "client:app", "--dir", "examples/driver-api"],
}


@pytest.mark.parametrize(("example", "where"), sorted(CASES))
def test_example_runs_from_root_and_own_folder(example: str, where: str) -> None:
    if example == "driver-api" and importlib.util.find_spec("torch") is None:
        pytest.skip("the driver-api example needs PyTorch")
    folder = ROOT / "examples" / example
    args = [*CASES[(example, where)], "--num-supernodes", "3"]
    proc = subprocess.run(
        [sys.executable, "-m", "fl_async", "run", *args],
        cwd=folder if where == "folder" else ROOT,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    if example == "quickstart":
        assert "round   1/1: test accuracy" in proc.stdout, proc.stdout


async def test_quickstart_loop_and_strategy_servers_agree() -> None:
    """server.py (FedAvg strategy) and server_loop.py (the loop by hand) train the same model."""
    import anyio

    from examples.quickstart import client, server, server_loop
    from fl_async._embedded import run_embedded

    config = {"num-server-rounds": 2, "local-epochs": 1}
    with anyio.fail_after(120):
        await run_embedded(server.app, client.app, num_supernodes=4, run_config=config, progress=False)
        await run_embedded(server_loop.app, client.app, num_supernodes=4, run_config=config, progress=False)

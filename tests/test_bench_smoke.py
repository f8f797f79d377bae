"""Smoke test of the benchmark harness: all six fl-async workloads once, at their smallest sizes (no Flower).

Runs ``python -m benchmarks.peer --only fl-async --quick`` as a subprocess (real link, node and server app
processes on 127.0.0.1, bounded) and checks that each workload produced a figure. Figures are not asserted:
performance is measured in benchmarks/, never in tests.
"""

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_every_flasync_workload_runs_at_smallest_size(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks.peer",
            "--only",
            "fl-async",
            "--quick",
            "--logdir",
            str(tmp_path / "logs"),
            "--json",
            str(out),
        ],
        cwd=REPO,
        check=False,
        capture_output=True,
        text=True,
        timeout=360,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    data = json.loads(out.read_text())
    assert data["meta"]["notes"] == [], data["meta"]["notes"]  # every fl-async piece was importable
    titles = [t["title"] for t in data["tables"]]
    assert [t[:2] for t in titles] == ["1.", "2.", "3.", "4.", "5.", "6."], titles
    for table in data["tables"]:
        assert table["rows"], table["title"]
        for row in table["rows"]:
            value = row["values"]["fl-async"]
            assert value["v"] is not None, (
                table["title"],
                row["figure"],
                value["note"],
            )
            assert not value["lower_bound"], (
                table["title"],
                row["figure"],
                value["note"],
            )
    # workload 4: the server app got the link's NODE_UNAVAILABLE (3) error reply for the killed node
    kill_row = data["tables"][3]["rows"][-1]["values"]["fl-async"]
    assert kill_row["note"] == "error code 3"
    assert "| figure | fl-async |" in proc.stdout

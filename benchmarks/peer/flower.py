"""Flower 1.10.0 from PyPI, in its own virtual environment under ``build/peer-venv`` (created here, idempotent).

Processes are started as Flower 1.10 documents them (reference: flower-1.9.md §5 and §6.1)::

    flower-superlink --insecure --driver-api-address 127.0.0.1:P --fleet-api-address 127.0.0.1:Q
    flower-supernode client:app --insecure --superlink 127.0.0.1:Q
    flower-server-app server:app --insecure --superlink 127.0.0.1:P

with ``FLWR_TELEMETRY_ENABLED=0`` and the working directory ``benchmarks/peer/flower_apps``. That directory
matters: Flower 1.10 reloads, on every message after the first, every imported module whose file lies under
the project directory (default: the working directory), so running from the repository root would also try
to reload the ``flower-supernode`` script itself (it lives in ``build/peer-venv/bin``) and fail.
"""

from __future__ import annotations

import subprocess
import sys
import venv
from pathlib import Path

from benchmarks.peer.harness import HOST, REPO, System

FLWR_VERSION = "1.10.0"
VENV = REPO / "build" / "peer-venv"
APPS = REPO / "benchmarks" / "peer" / "flower_apps"


def ensure_venv(timeout: float = 900.0, venv_dir: Path = VENV, version: str = FLWR_VERSION) -> Path:
    """Create ``build/peer-venv`` with ``flwr==1.10.0`` unless it is already there.

    Args:
        timeout: seconds allowed for ``pip install`` (bounded).
        venv_dir: the venv to create (another Flower version gets its own).
        version: the pinned ``flwr`` version to install there.

    Returns:
        The venv's ``bin`` directory.

    Raises:
        RuntimeError: pip failed (its output is in ``build/<venv name>-pip.log``).
        subprocess.TimeoutExpired: pip took longer than ``timeout``.
    """
    bindir = venv_dir / "bin"
    stamp = venv_dir / f".flwr-{version}"
    if stamp.exists() and (bindir / "flower-superlink").exists():
        return bindir
    if not (bindir / "python").exists():
        venv.EnvBuilder(with_pip=True, clear=False).create(venv_dir)
    log = venv_dir.parent / f"{venv_dir.name}-pip.log"
    print(
        f"[bench-peer] installing flwr=={version} into {venv_dir} (log: {log})",
        file=sys.stderr,
        flush=True,
    )
    with open(log, "wb") as out:
        proc = subprocess.run(
            [
                str(bindir / "python"),
                "-m",
                "pip",
                "install",
                "-q",
                f"flwr=={version}",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            timeout=timeout,
            check=False,
        )
    if proc.returncode != 0:
        raise RuntimeError(f"pip install flwr=={version} failed (exit {proc.returncode}); see {log}")
    stamp.touch()
    return bindir


def system(bindir: Path) -> System:
    """The Flower :class:`System` using the executables in ``bindir``."""
    b = str(bindir)
    return System(
        name=f"Flower {FLWR_VERSION}",
        link=lambda d, f: [
            f"{b}/flower-superlink",
            "--insecure",
            "--driver-api-address",
            f"{HOST}:{d}",
            "--fleet-api-address",
            f"{HOST}:{f}",
        ],
        node=lambda f: [
            f"{b}/flower-supernode",
            "client:app",
            "--insecure",
            "--superlink",
            f"{HOST}:{f}",
        ],
        server=lambda d: [
            f"{b}/flower-server-app",
            "server:app",
            "--insecure",
            "--superlink",
            f"{HOST}:{d}",
        ],
        env={"FLWR_TELEMETRY_ENABLED": "0"},
        cwd=str(APPS),
    )

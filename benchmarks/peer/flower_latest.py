"""Newest Flower (``flwr==1.42.0``) from PyPI, in its own virtual environment under ``build/flwr142-venv``.

A local deployment as Flower 1.42 documents it: one SuperLink, SuperNodes, and the ServerApp launched with
``flwr run`` against the local SuperLink (the SuperLink's SuperExec starts a ``flwr-serverapp`` process for
the run; each SuperNode's SuperExec starts a ``flwr-clientapp`` process per message)::

    FLWR_HOME=<link dir> flower-superlink --insecure --host 127.0.0.1 --port P \\
        --disable-runtime-dependency-installation
    FLWR_HOME=<node dir> flower-supernode --insecure --superlink 127.0.0.1:P --host 127.0.0.1 --port <free>
    FLWR_HOME=<cli dir>  flwr run <app dir> bench --run-config 'mode="rounds" n=2 ...'

One port serves the Fleet, Control and ServerApp (Runtime) APIs; ``<cli dir>/config.toml`` names the SuperLink
``bench`` (``address = "127.0.0.1:P"``, ``insecure = true``). The app project (``pyproject.toml`` with the
components and the run config keys, plus the :mod:`benchmarks.peer.flower_latest_app` package and a copy of
:mod:`benchmarks.peer.appcfg`) is generated into ``build/flwr142-app`` by :func:`prepare_app`.

Every process gets ``FLWR_TELEMETRY_ENABLED=0`` and ``FLWR_DISABLE_UPDATE_CHECK=1`` (no network), the venv's
``bin`` first on ``PATH`` (the SuperLink and SuperNodes find ``flower-superexec`` there), and a ``FLWR_HOME`` of
its own. ``flwr run`` returns once the run is submitted, so the server-app process of the harness is
``python -m benchmarks.peer.flower_latest run ...``: it writes the CLI config, calls ``flwr run``, and waits
(bounded) for the ServerApp's result file. Node authentication stays off (``--enable-supernode-auth`` is an
opt-in of the SuperLink in 1.42).
"""

from __future__ import annotations

import argparse
import itertools
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from benchmarks._proc import free_port
from benchmarks.peer import flower
from benchmarks.peer.harness import HOST, REPO, System

FLWR_VERSION = "1.42.0"
VENV = REPO / "build" / "flwr142-venv"
APP_DIR = REPO / "build" / "flwr142-app"
HOMES = REPO / "build" / "flwr142-homes"
_SRC = Path(__file__).resolve().parent
_PKG = "benchflwr"
#: run config keys and their defaults (TOML); the ServerApp reads them from ``context.run_config``
RUN_CONFIG = {"mode": '"rounds"', "n": "2", "rounds": "5", "sleep": "0.1", "floats": "10", "deadline": "120.0"}
_ENV = {"FLWR_TELEMETRY_ENABLED": "0", "FLWR_DISABLE_UPDATE_CHECK": "1"}
_counter = itertools.count()

_PYPROJECT = """\
[build-system]
requires = ["hatchling"]
build-backend = "hatchling.build"

[project]
name = "benchflwr"
version = "1.0.0"
description = "fl-async peer benchmark: echo rounds through the Grid API"
license = "Apache-2.0"
dependencies = ["flwr=={version}", "numpy"]

[tool.hatch.build.targets.wheel]
packages = ["."]

[tool.flwr.app]
publisher = "fl-async"

[tool.flwr.app.components]
serverapp = "{pkg}.server_app:app"
clientapp = "{pkg}.client_app:app"

[tool.flwr.app.config]
{config}
"""


def ensure_venv(timeout: float = 900.0) -> Path:
    """Create ``build/flwr142-venv`` with ``flwr==1.42.0`` unless it is already there; returns its ``bin``.

    Raises:
        RuntimeError, subprocess.TimeoutExpired: as :func:`benchmarks.peer.flower.ensure_venv`.
    """
    return flower.ensure_venv(timeout, venv_dir=VENV, version=FLWR_VERSION)


def prepare_app() -> Path:
    """(Re)generate the Flower app project in ``build/flwr142-app``; returns its directory.

    ``out`` (the result file) is a run config key too, with an empty default.
    """
    pkg = APP_DIR / _PKG
    if APP_DIR.exists():
        shutil.rmtree(APP_DIR)
    pkg.mkdir(parents=True)
    for name in ("__init__.py", "server_app.py", "client_app.py"):
        shutil.copy(_SRC / "flower_latest_app" / name, pkg / name)
    shutil.copy(_SRC / "appcfg.py", pkg / "appcfg.py")
    config = "\n".join(f"{k} = {v}" for k, v in {**RUN_CONFIG, "out": '""'}.items())
    (APP_DIR / "pyproject.toml").write_text(_PYPROJECT.format(version=FLWR_VERSION, pkg=_PKG, config=config))
    return APP_DIR


def _home(kind: str) -> str:
    """A fresh ``FLWR_HOME`` directory for one process."""
    d = HOMES / f"{os.getpid()}-{kind}-{next(_counter)}"
    d.mkdir(parents=True, exist_ok=True)
    return str(d)


def system(bindir: Path) -> System:
    """The newest-Flower :class:`System` using the executables in ``bindir`` (one port per SuperLink)."""
    b = str(bindir)
    app = prepare_app()
    return System(
        name=f"Flower {FLWR_VERSION}",
        link=lambda d, f: [
            "env",
            f"FLWR_HOME={_home('link')}",
            f"{b}/flower-superlink",
            "--insecure",
            "--host",
            HOST,
            "--port",
            str(d),
            "--disable-runtime-dependency-installation",
        ],
        node=lambda f: [
            "env",
            f"FLWR_HOME={_home('node')}",
            f"{b}/flower-supernode",
            "--insecure",
            "--superlink",
            f"{HOST}:{f}",
            "--host",
            HOST,
            "--port",
            str(free_port()),
        ],
        server=lambda d: [
            sys.executable,
            "-m",
            "benchmarks.peer.flower_latest",
            "run",
            "--bindir",
            b,
            "--app",
            str(app),
            "--superlink",
            f"{HOST}:{d}",
        ],
        env={**_ENV, "PATH": f"{b}:{os.environ.get('PATH', '/usr/bin:/bin')}"},
        cwd=str(REPO),
        one_port=True,
        child_processes=True,
    )


def _toml(v: str) -> str:
    """A ``BENCH_*`` value as a TOML literal (numbers stay numbers)."""
    try:
        float(v)
    except ValueError:
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return v


def run(bindir: Path, app: Path, superlink: str) -> int:
    """Submit one run with ``flwr run`` and wait (bounded by ``BENCH_DEADLINE`` + 120 s) for its result file.

    The settings are this process's ``BENCH_*`` variables, passed as ``--run-config`` (``BENCH_OUT`` -> ``out``).

    Returns:
        0 once the result file exists; 1 if ``flwr run`` failed; 2 if the result never appeared.
    """
    home = Path(_home("cli"))
    (home / "config.toml").write_text(
        f'[superlink]\ndefault = "bench"\n\n[superlink.bench]\naddress = "{superlink}"\ninsecure = true\n'
    )
    keys = [*RUN_CONFIG, "out"]
    pairs = [f"{k}={_toml(os.environ[f'BENCH_{k.upper()}'])}" for k in keys if f"BENCH_{k.upper()}" in os.environ]
    out = Path(os.environ["BENCH_OUT"])
    env = {**os.environ, "FLWR_HOME": str(home)}
    proc = subprocess.run(
        [str(bindir / "flwr"), "run", str(app), "bench", "--run-config", " ".join(pairs)],
        env=env,
        timeout=120,
        check=False,
        capture_output=True,
        text=True,
    )
    print(proc.stdout, proc.stderr, sep="\n", flush=True)
    if proc.returncode != 0:
        return 1
    deadline = time.monotonic() + float(os.environ.get("BENCH_DEADLINE", "120")) + 120
    while time.monotonic() < deadline:
        if out.exists():
            return 0
        time.sleep(0.05)  # a file written by another process tree: nothing to wait on but the file itself
    return 2


def main(argv: list[str] | None = None) -> int:
    """``python -m benchmarks.peer.flower_latest run --bindir B --app DIR --superlink H:P``."""
    p = argparse.ArgumentParser(prog="python -m benchmarks.peer.flower_latest")
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="submit one benchmark run with `flwr run` and wait for its result")
    r.add_argument("--bindir", type=Path, required=True)
    r.add_argument("--app", type=Path, required=True)
    r.add_argument("--superlink", required=True)
    args = p.parse_args(argv)
    return run(args.bindir, args.app, args.superlink)


if __name__ == "__main__":
    sys.exit(main())

"""fl-async's side of the benchmarks: its processes, started through its CLI (as a user would).

Processes::

    fl-async superlink --insecure --driver-api-address 127.0.0.1:P --fleet-api-address 127.0.0.1:Q
    fl-async supernode benchmarks.peer.flasync_apps.client:app --superlink 127.0.0.1:Q --insecure
    fl-async server-app benchmarks.peer.flasync_apps.server:app --superlink 127.0.0.1:P --insecure
    python -m benchmarks.peer.flasync_host --superlink 127.0.0.1:Q --nodes N     # workload 3 only

The link runs as its own process so that its peak RSS and CPU seconds compare with Flower's SuperLink.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

from benchmarks.peer.harness import HOST, REPO, System

#: modules/attributes the benchmark needs; a missing one makes the fl-async column "n/a"
_NEEDED = [
    ("fl_async.superlink", "SuperLink"),
    ("fl_async.supernode", "SuperNode"),
    ("fl_async.server", "ServerApp"),
    ("fl_async.server", "AsyncDriver"),
    ("fl_async.client", "ClientApp"),
    ("fl_async.cli", "main"),
]


def missing() -> list[str]:
    """Names from fl-async that the benchmark needs and that cannot be imported now (empty = all there)."""
    out = []
    for mod, attr in _NEEDED:
        try:
            if not hasattr(importlib.import_module(mod), attr):
                out.append(f"{mod}.{attr}")
        except Exception:
            out.append(f"{mod}.{attr}")
    return out


def _cli() -> list[str]:
    script = Path(sys.executable).parent / "fl-async"
    if script.exists():
        return [str(script)]
    return [
        sys.executable,
        "-c",
        "import sys; from fl_async.cli import main; sys.exit(main())",
    ]


def system() -> System:
    """The fl-async :class:`System` (CLI processes; in-process node host for workload 3)."""
    cli = _cli()
    return System(
        name="fl-async",
        link=lambda d, f: [
            *cli,
            "superlink",
            "--insecure",
            "--driver-api-address",
            f"{HOST}:{d}",
            "--fleet-api-address",
            f"{HOST}:{f}",
            "--blob-api-address",  # a free port: the default 9093 may be taken by another link on this machine
            f"{HOST}:0",
        ],
        node=lambda f: [
            *cli,
            "supernode",
            "benchmarks.peer.flasync_apps.client:app",
            "--superlink",
            f"{HOST}:{f}",
            "--insecure",
        ],
        server=lambda d: [
            *cli,
            "server-app",
            "benchmarks.peer.flasync_apps.server:app",
            "--superlink",
            f"{HOST}:{d}",
            "--insecure",
        ],
        host=lambda f, n: [
            sys.executable,
            "-m",
            "benchmarks.peer.flasync_host",
            "--superlink",
            f"{HOST}:{f}",
            "--nodes",
            str(n),
        ],
        cwd=str(REPO),
    )

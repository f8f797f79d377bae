"""The typer option types the ``fl-async`` commands share (:mod:`fl_async.cli.app`): flag names, metavars, help.

Each is an ``Annotated`` alias a command uses as a parameter's type; the values are checked by
:mod:`fl_async.cli.args`, not here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

__all__ = [
    "AppDir",
    "Database",
    "Insecure",
    "LogFile",
    "LogFormat",
    "LogLevelAll",
    "MetricsAddress",
    "RootCertificates",
    "Verbose",
]

Insecure = Annotated[bool, typer.Option("--insecure", help="Plaintext gRPC (no TLS). For prototyping only.")]
RootCertificates = Annotated[
    Path | None,
    typer.Option(
        "--root-certificates",
        metavar="FILE",
        help="PEM file with the CA certificate(s) that signed the SuperLink's certificate (enables TLS).",
    ),
]
AppDir = Annotated[
    Path | None,
    typer.Option(
        "--dir",
        metavar="DIR",
        help="Directory put first on sys.path before importing MODULE (default: the current directory).",
    ),
]
Verbose = Annotated[
    bool, typer.Option("--verbose", "-v", help="Log fl-async's debug messages (other libraries stay at WARNING).")
]
LogFile = Annotated[
    Path | None, typer.Option("--log-file", metavar="PATH", help="Append the log to PATH instead of stderr.")
]
LogFormat = Annotated[
    str,
    typer.Option("--log-format", metavar="text|json", help="Log lines as text (default) or as JSON objects."),
]
LogLevelAll = Annotated[
    bool,
    typer.Option(
        "--log-level-all", help="Give third-party loggers (grpclib, hpack, ...) fl-async's level, not WARNING."
    ),
]
MetricsAddress = Annotated[
    str | None,
    typer.Option(
        "--metrics-address",
        metavar="HOST:PORT",
        help="Serve Prometheus metrics over HTTP at http://HOST:PORT/metrics (default: off; see docs/operations.md).",
    ),
]
Database = Annotated[
    str,
    typer.Option(
        metavar="FILE",
        help="Keep the link's state in this SQLite file (blob payloads in FILE.blobs/): restarted on it, the link "
        "continues its runs, nodes and messages. Default :memory: (lost at exit).",
    ),
]

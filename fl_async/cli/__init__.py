"""The ``fl-async`` command line: ``superlink``, ``supernode``, ``server-app``, ``run``.

* :mod:`fl_async.cli.app`: the typer commands (argument declarations, nothing else);
* :mod:`fl_async.cli.process`: the one runner every command uses (signals, exit codes, one-line errors);
* :mod:`fl_async.cli.args`: parsing and checking of command-line values;
* :mod:`fl_async.cli.embedded`: ``fl-async run`` (a link, N nodes and a ServerApp in one process);
* :mod:`fl_async.cli.progress`: the round progress display of ``fl-async run``.

The console script ``fl-async`` calls :func:`main`.
"""

from fl_async.cli.app import app, main

__all__ = ["app", "main"]

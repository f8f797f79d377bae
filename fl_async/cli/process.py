"""The one runner of every ``fl-async`` command: logging, SIGINT/SIGTERM, exit codes, one-line errors.

A command parses its options (:mod:`fl_async.cli.app`, whose typer group is :class:`OneLineErrors`: a refused
command line is one line too) and hands an async function to :func:`run_async_command`, which
runs it on a fresh asyncio loop and maps how it ends to the process's exit status:

* ``0``: it returned, or a SIGINT/SIGTERM (or SIGHUP, unless ignored, e.g. under ``nohup``) stopped it
  (``fl-async CMD: SIGTERM received, shutting down``, then ``fl-async CMD: stopped``);
* ``1`` (:data:`EXIT_FAILURE`): it started but failed (an fl-async error, an OS error such as an address in use, or
  the user's app raising), with one line ``fl-async CMD: error: ...`` on stderr; an unexpected exception (a bug in
  fl-async) prints its traceback, then the same one line naming it an internal error;
* ``2`` (:data:`EXIT_USAGE`): the command line or an app reference was refused.

Only SIGKILL (and the kernel's OOM killer) end a command without a line saying why.

Signals: until the loop installs its handlers SIGTERM acts like Ctrl-C; then :func:`until_stop_signal` (or
:func:`cancel_on_signal`) is the one place a command learns of a stop signal. After one, a safety net leaves the
process with ``os._exit`` once :data:`SHUTDOWN_GRACE` seconds have passed (only when running as the program, see
:func:`own_the_process`): user code blocked in a worker thread must not keep a stopped command alive.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

import typer
from typer.core import TyperGroup

__all__ = [
    "EXIT_FAILURE",
    "EXIT_USAGE",
    "NODE_SHUTDOWN_GRACE",
    "SHUTDOWN_GRACE",
    "OneLineErrors",
    "cancel_on_signal",
    "fail",
    "info",
    "own_the_process",
    "run_async_command",
    "setup_logging",
    "until_stop_signal",
]

EXIT_USAGE = 2
"""The command line was refused."""
EXIT_FAILURE = 1
"""The command started but failed."""
SHUTDOWN_GRACE = 2.2
"""Seconds a command may spend shutting down after Ctrl-C / SIGTERM before it is forced out (exit 0)."""
NODE_SHUTDOWN_GRACE = 1.0
"""Seconds a stopping ``fl-async supernode`` lets running handlers finish before abandoning them."""

_owns_process = False
"""True when running as the ``fl-async`` program (:func:`main`), not in-process (typer's CliRunner, tests):
only then may a stopping command leave with ``os._exit`` right after its graceful shutdown."""

_stop_requested = False
"""Set once a SIGINT / SIGTERM arrived: a cancellation escaping the loop then means a clean stop."""


def fail(command: str, reason: object, code: int = EXIT_USAGE) -> NoReturn:
    """Print ``fl-async COMMAND: error: REASON`` (one line) on stderr and exit with ``code``."""
    text = " ".join(str(reason).split()) or type(reason).__name__
    typer.echo(f"fl-async {command}: error: {text}", err=True)
    raise typer.Exit(code)


def info(command: str, text: str) -> None:
    typer.echo(f"fl-async {command}: {text}", err=True)


def setup_logging(
    command: str, verbose: bool, log_file: Path | None = None, log_format: str = "text", log_level_all: bool = False
) -> None:
    """Configure logging (see :mod:`fl_async.cli.logsetup`); a bad ``--log-format`` / ``--log-file`` exits 2."""
    from fl_async.cli.logsetup import configure_logging

    try:
        configure_logging(verbose=verbose, log_file=log_file, log_format=log_format, log_level_all=log_level_all)
    except (ValueError, OSError) as exc:
        fail(command, exc)


def _force_exit_after(seconds: float, code: int = 0) -> None:
    """Safety net after a stop signal: if the process is still alive after ``seconds``, leave (``os._exit``).

    Graceful shutdown normally finishes well before; this only bounds it when user code (e.g. a blocked
    synchronous ClientApp handler in a worker thread) would keep the interpreter from exiting.
    """
    import threading

    if not _owns_process:
        return
    timer = threading.Timer(seconds, _exit_now, args=(code,))
    timer.daemon = True
    timer.start()


def _exit_now(code: int = 0) -> None:
    """Flush stdout, stderr and logging, then leave at once (``os._exit``), skipping interpreter teardown.

    Used once a stop signal's graceful shutdown is done: tearing down a big interpreter (numpy, sklearn,
    idle worker threads) can take longer than the 3 s a stopping command is allowed.
    """
    import os

    with contextlib.suppress(Exception):
        logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(code)


def _unwrap(exc: BaseException) -> BaseException:
    """The single leaf of (nested) exception groups, as task groups wrap what they raise; else ``exc``."""
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc


def _connection_hint(tls: bool | None, exc: BaseException) -> str:
    """A hint for a connection failure that is most likely a TLS mismatch with the link."""
    from fl_async.errors import LinkConnectionError

    if tls is None or not isinstance(exc, LinkConnectionError):
        return ""
    text = str(exc)
    if not tls:
        return " (if the SuperLink uses TLS, pass --root-certificates FILE instead of --insecure)"
    if "CERTIFICATE_VERIFY_FAILED" in text:
        return " (--root-certificates must hold the CA that signed the SuperLink's certificate)"
    return " (if the SuperLink runs with --insecure, pass --insecure here too)"


def run_async_command(command: str, fn: Any, *args: Any, app_errors: bool = False, tls: bool | None = None) -> None:
    """Run ``fn(*args)`` on a fresh asyncio loop; map failures to one line and an exit status.

    ``AppLoadError`` exits 2; other fl-async errors and OS errors (address in use, ...) exit 1 with their
    one-line message. With ``app_errors`` any other exception is the user's app failing: its traceback is
    printed, then the one-line summary (exit 1). Without it, it propagates (a bug in fl-async).
    ``tls`` (client commands: whether TLS is used) adds a hint to connection failures.
    """
    import anyio

    from fl_async.blobs.buffers import default_pool
    from fl_async.errors import AppLoadError, FlAsyncError

    try:
        default_pool()  # reads FL_ASYNC_BUFFER_POOL: a bad value is refused before anything starts
    except ValueError as exc:
        fail(command, exc)
    previous = {signum: signal.getsignal(signum) for signum in _stop_signals()[1:]}
    _sigterm_as_interrupt()
    try:
        anyio.run(fn, *args)
    except BaseException as raw:
        error = _unwrap(raw)
        if isinstance(error, (SystemExit, typer.Exit)):
            raise error from None
        if isinstance(error, KeyboardInterrupt) or (_stop_requested and isinstance(error, asyncio.CancelledError)):
            _force_exit_after(SHUTDOWN_GRACE)
            info(command, "interrupted, stopped")
            return
        if isinstance(error, AppLoadError):
            fail(command, error, EXIT_USAGE)
        from fl_async.server.server_app import raised_by_app

        if app_errors and raised_by_app(error) and isinstance(error, Exception) and not isinstance(error, FlAsyncError):
            import traceback

            traceback.print_exception(error, file=sys.stderr)
            fail(command, f"the server app raised {type(error).__name__}: {error} (traceback above)", EXIT_FAILURE)
        if isinstance(error, (FlAsyncError, OSError)):
            fail(command, f"{error}{_connection_hint(tls, error)}", EXIT_FAILURE)
        if isinstance(error, Exception):
            import traceback

            traceback.print_exception(error, file=sys.stderr)
            if app_errors:
                fail(command, f"the app raised {type(error).__name__}: {error}", EXIT_FAILURE)
            fail(command, f"internal error (a bug in fl-async): {type(error).__name__}: {error}", EXIT_FAILURE)
        raise
    finally:
        if _in_main_thread():
            for signum, handler in previous.items():
                if handler is not None:
                    signal.signal(signum, handler)
    if _stop_requested and _owns_process:
        info(command, "stopped")
        _exit_now(0)


async def until_stop_signal(command: str, *, task_status: Any = None) -> None:
    """Return at the first SIGINT or SIGTERM (and arm the shutdown safety net).

    With ``task_status`` (``await tg.start(...)``), reports started once the handlers are installed.
    """
    import anyio

    with anyio.open_signal_receiver(*_stop_signals()) as signals:
        if task_status is not None:
            task_status.started()
        async for signum in signals:
            global _stop_requested
            _stop_requested = True
            _force_exit_after(SHUTDOWN_GRACE)
            info(command, f"{signal.Signals(signum).name} received, shutting down")
            return


async def cancel_on_signal(command: str, scope: Any, *, task_status: Any = None) -> None:
    """Cancel ``scope`` at the first SIGINT / SIGTERM (start it with ``await tg.start(...)``)."""
    await until_stop_signal(command, task_status=task_status)
    scope.cancel()


def _stop_signals() -> tuple[signal.Signals, ...]:
    """The signals that stop a command: SIGINT, SIGTERM, and SIGHUP unless it is ignored (``nohup``); by default
    SIGHUP would end the process without a word."""
    hup = getattr(signal, "SIGHUP", None)
    if hup is not None and _in_main_thread() and signal.getsignal(hup) in (signal.SIG_DFL, _as_interrupt):
        return signal.SIGINT, signal.SIGTERM, hup
    return signal.SIGINT, signal.SIGTERM


def _sigterm_as_interrupt() -> None:
    """Until the event loop installs its own handlers, treat SIGTERM (and SIGHUP, see :func:`_stop_signals`) like
    Ctrl-C (a clean exit 0)."""

    if _in_main_thread():
        for signum in _stop_signals()[1:]:
            signal.signal(signum, _as_interrupt)


def _as_interrupt(signum: int, frame: Any) -> None:
    """The handler of :func:`_sigterm_as_interrupt`."""
    global _stop_requested
    _stop_requested = True
    raise KeyboardInterrupt


def _in_main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


def own_the_process() -> None:
    """Declare that the command runs as the ``fl-async`` program (:func:`fl_async.cli.main`), not in-process
    (typer's CliRunner, tests): only then may a stopped command leave with ``os._exit``."""
    global _owns_process
    _owns_process = True


class OneLineErrors(TyperGroup):
    """Typer group whose usage errors are printed as one line (``fl-async CMD: error: ...``), status 2."""

    def main(
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        windows_expand_args: bool = True,
        **extra: Any,
    ) -> Any:
        try:
            rv = super().main(
                args=args,
                prog_name=prog_name,
                complete_var=complete_var,
                standalone_mode=False,
                windows_expand_args=windows_expand_args,
                **extra,
            )
        except typer.TyperException as exc:  # click's ClickException/UsageError derive from it
            if type(exc).__name__ == "NoArgsIsHelpError":
                exc.show()  # type: ignore[attr-defined]
                rv = EXIT_USAGE
            else:
                ctx = getattr(exc, "ctx", None)
                where = ctx.command_path if ctx is not None else "fl-async"
                text = " ".join(exc.format_message().split())
                typer.echo(f"{where}: error: {text} (see --help)", err=True)
                rv = getattr(exc, "exit_code", EXIT_USAGE) or EXIT_USAGE
        except typer.Abort:
            rv = EXIT_FAILURE
        if not standalone_mode:
            return rv
        sys.exit(rv if isinstance(rv, int) else 0)

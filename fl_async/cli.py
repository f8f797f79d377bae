"""The ``fl-async`` command line: typer commands and nothing else.

Commands (Flower 1.9 equivalents in brackets; flags and behaviour are documented in ``docs/cli.md``):

- ``fl-async superlink``   [``flower-superlink``]: serve the Driver API and the Fleet API.
- ``fl-async supernode``   [``flower-client-app`` / ``flower-supernode``]: run a ClientApp on a node.
- ``fl-async server-app``  [``flower-server-app``]: run a ServerApp against a SuperLink.
- ``fl-async run``         [simulation]: link, N nodes and a server app in one process and one event loop.

Exit status: 0 on success and after a clean Ctrl-C / SIGTERM shutdown; 2 when the command line is refused
(bad address, TLS flags, unreadable file, ``MODULE:ATTR`` that does not load, bad ``KEY=VALUE``), always
with one line on stderr and before anything listens or connects; 1 when the run itself fails (link
unreachable, TLS handshake refused, the app raised).
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from typer.core import TyperGroup

from fl_async._cli_args import (
    CliArgumentError,
    check_address,
    parse_config_pairs,
    resolve_client_tls,
    resolve_link_tls,
    split_app_ref,
)
from fl_async._link_limits import limit_error, with_limit_options

__all__ = ["app", "main"]

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


class _OneLineErrors(TyperGroup):
    """Typer group whose usage errors are printed as one line (``fl-async CMD: error: ...``), status 2."""

    def main(
        self,
        args: Any = None,
        prog_name: Any = None,
        complete_var: Any = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> Any:
        try:
            rv = super().main(args=args, prog_name=prog_name, complete_var=complete_var, standalone_mode=False, **extra)
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


app = typer.Typer(
    name="fl-async",
    cls=_OneLineErrors,
    help="fl-async: an asyncio-native SuperLink, SuperNode and Driver SDK (Flower 1.9 Driver API).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
    rich_markup_mode=None,
)


def _show_version(value: bool) -> None:
    if value:
        from fl_async import __version__

        typer.echo(f"fl-async {__version__}")
        raise typer.Exit(0)


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_show_version, is_eager=True, help="Print the fl-async version and exit."),
    ] = False,
) -> None:
    """fl-async: an asyncio-native SuperLink, SuperNode and Driver SDK (Flower 1.9 Driver API)."""


def _fail(command: str, reason: object, code: int = EXIT_USAGE) -> NoReturn:
    """Print ``fl-async COMMAND: error: REASON`` (one line) on stderr and exit with ``code``."""
    text = " ".join(str(reason).split()) or type(reason).__name__
    typer.echo(f"fl-async {command}: error: {text}", err=True)
    raise typer.Exit(code)


def _info(command: str, text: str) -> None:
    typer.echo(f"fl-async {command}: {text}", err=True)


def _setup_logging(command: str, verbose: bool, log_file: Path | None, log_format: str, log_level_all: bool) -> None:
    """Configure logging (see :mod:`fl_async._logsetup`); a bad ``--log-format`` / ``--log-file`` exits 2."""
    from fl_async._logsetup import configure_logging

    try:
        configure_logging(verbose=verbose, log_file=log_file, log_format=log_format, log_level_all=log_level_all)
    except (ValueError, OSError) as exc:
        _fail(command, exc)


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

    try:
        logging.shutdown()
    except Exception:
        pass
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:
            pass
    os._exit(code)


def _load_app(command: str, ref: str, *, what: str, directory: Path | None, expected: type) -> Any:
    """Load ``MODULE:ATTR`` (``directory`` first on ``sys.path``; the current directory by default)."""
    from fl_async._loading import load_object
    from fl_async.common.errors import AppLoadError

    try:
        split_app_ref(ref, what=what)
        return load_object(ref, dir=str(directory if directory is not None else Path.cwd()), expected=expected)
    except CliArgumentError as exc:
        _fail(command, exc)
    except AppLoadError as exc:
        _fail(command, exc)


def _check_main(command: str, ref: str, server_app: Any) -> None:
    """Refuse (exit 2, one line) a ServerApp without ``@app.main()`` before anything connects or starts."""
    if server_app.main_function is None:
        _fail(command, f"{ref}: this ServerApp has no main function: decorate one with @app.main()")


def _unwrap(exc: BaseException) -> BaseException:
    """The single leaf of (nested) exception groups, as task groups wrap what they raise; else ``exc``."""
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc


def _connection_hint(tls: bool | None, exc: BaseException) -> str:
    """A hint for a connection failure that is most likely a TLS mismatch with the link."""
    from fl_async.common.errors import LinkConnectionError

    if tls is None or not isinstance(exc, LinkConnectionError):
        return ""
    text = str(exc)
    if not tls:
        return " (if the SuperLink uses TLS, pass --root-certificates FILE instead of --insecure)"
    if "CERTIFICATE_VERIFY_FAILED" in text:
        return " (--root-certificates must hold the CA that signed the SuperLink's certificate)"
    return " (if the SuperLink runs with --insecure, pass --insecure here too)"


def _run_async(command: str, fn: Any, *args: Any, app_errors: bool = False, tls: bool | None = None) -> None:
    """Run ``fn(*args)`` on a fresh asyncio loop; map failures to one line and an exit status.

    ``AppLoadError`` exits 2; other fl-async errors and OS errors (address in use, ...) exit 1 with their
    one-line message. With ``app_errors`` any other exception is the user's app failing: its traceback is
    printed, then the one-line summary (exit 1). Without it, it propagates (a bug in fl-async).
    ``tls`` (client commands: whether TLS is used) adds a hint to connection failures.
    """
    import anyio

    from fl_async.blobs.buffers import default_pool
    from fl_async.common.errors import AppLoadError, FlAsyncError

    try:
        default_pool()  # reads FL_ASYNC_BUFFER_POOL: a bad value is refused before anything starts
    except ValueError as exc:
        _fail(command, exc)
    previous = signal.getsignal(signal.SIGTERM)
    _sigterm_as_interrupt()
    try:
        anyio.run(fn, *args)
    except BaseException as raw:
        exc = _unwrap(raw)
        if isinstance(exc, (SystemExit, typer.Exit)):
            raise exc from None
        if isinstance(exc, KeyboardInterrupt) or (_stop_requested and isinstance(exc, asyncio.CancelledError)):
            _force_exit_after(SHUTDOWN_GRACE)
            _info(command, "interrupted, stopped")
            return
        if isinstance(exc, AppLoadError):
            _fail(command, exc, EXIT_USAGE)
        from fl_async.server.server_app import raised_by_app

        if app_errors and raised_by_app(exc) and isinstance(exc, Exception) and not isinstance(exc, FlAsyncError):
            import traceback

            traceback.print_exception(exc, file=sys.stderr)
            _fail(command, f"the server app raised {type(exc).__name__}: {exc} (traceback above)", EXIT_FAILURE)
        if isinstance(exc, (FlAsyncError, OSError)):
            _fail(command, f"{exc}{_connection_hint(tls, exc)}", EXIT_FAILURE)
        if app_errors and isinstance(exc, Exception):
            import traceback

            traceback.print_exception(exc, file=sys.stderr)
            _fail(command, f"the app raised {type(exc).__name__}: {exc}", EXIT_FAILURE)
        raise
    finally:
        if _in_main_thread() and previous is not None:
            signal.signal(signal.SIGTERM, previous)
    if _stop_requested and _owns_process:
        _info(command, "stopped")
        _exit_now(0)


async def _until_stop_signal(command: str, *, task_status: Any = None) -> None:
    """Return at the first SIGINT or SIGTERM (and arm the shutdown safety net).

    With ``task_status`` (``await tg.start(...)``), reports started once the handlers are installed.
    """
    import anyio

    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        if task_status is not None:
            task_status.started()
        async for signum in signals:
            global _stop_requested
            _stop_requested = True
            _force_exit_after(SHUTDOWN_GRACE)
            _info(command, f"{signal.Signals(signum).name} received, shutting down")
            return


async def _cancel_on_signal(command: str, scope: Any, *, task_status: Any = None) -> None:
    """Cancel ``scope`` at the first SIGINT / SIGTERM (start it with ``await tg.start(...)``)."""
    await _until_stop_signal(command, task_status=task_status)
    scope.cancel()


def _sigterm_as_interrupt() -> None:
    """Until the event loop installs its own handlers, treat SIGTERM like Ctrl-C (a clean exit 0)."""

    def handler(signum: int, frame: Any) -> None:
        global _stop_requested
        _stop_requested = True
        raise KeyboardInterrupt

    if _in_main_thread():
        signal.signal(signal.SIGTERM, handler)


def _in_main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


# --------------------------------------------------------------------------------------------- options

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


# -------------------------------------------------------------------------------------------- commands


@app.command("superlink")
@with_limit_options
def superlink_command(
    driver_api_address: Annotated[
        str,
        typer.Option(
            metavar="HOST:PORT", help="Where to serve the Driver API for server apps (port 0: any free port)."
        ),
    ] = "0.0.0.0:9091",
    fleet_api_address: Annotated[
        str,
        typer.Option(metavar="HOST:PORT", help="Where to serve the Fleet API for SuperNodes (port 0: any free port)."),
    ] = "0.0.0.0:9092",
    insecure: Insecure = False,
    ssl_ca_certfile: Annotated[
        Path | None,
        typer.Option(metavar="FILE", help="PEM CA certificate (TLS; with --ssl-certfile and --ssl-keyfile)."),
    ] = None,
    ssl_certfile: Annotated[
        Path | None, typer.Option(metavar="FILE", help="PEM server certificate chain (TLS).")
    ] = None,
    ssl_keyfile: Annotated[
        Path | None, typer.Option(metavar="FILE", help="PEM private key of the certificate (TLS).")
    ] = None,
    heartbeat_patience: Annotated[
        float,
        typer.Option(
            min=1.0,
            metavar="FACTOR",
            help="A node silent for longer than its heartbeat interval times FACTOR is declared offline.",
        ),
    ] = 2.0,
    disconnect_grace: Annotated[
        float,
        typer.Option(
            metavar="SECONDS",
            help="A node whose connection was lost (e.g. its process died) is declared offline unless it comes "
            "back within SECONDS (> 0).",
        ),
    ] = 3.0,
    blob_api_address: Annotated[
        str | None,
        typer.Option(
            metavar="HOST:PORT",
            help="Where to serve the blob data path for arrays above 1 MiB (default: the Fleet API's host, "
            "port 9093; port 0: any free port). Open it in firewalls too.",
        ),
    ] = None,
    metrics_address: MetricsAddress = None,
    verbose: Verbose = False,
    log_file: LogFile = None,
    log_format: LogFormat = "text",
    log_level_all: LogLevelAll = False,
    limits: dict[str, Any] | None = None,
) -> None:
    """Serve the Driver API (server apps) and the Fleet API (nodes) until Ctrl-C / SIGTERM.

    As Flower 1.9's flower-superlink. TLS needs all three --ssl-* files; plaintext needs --insecure.
    """
    cmd = "superlink"
    try:
        check_address(driver_api_address, option="--driver-api-address")
        check_address(fleet_api_address, option="--fleet-api-address")
        if blob_api_address is not None:
            check_address(blob_api_address, option="--blob-api-address")
        if metrics_address is not None:
            check_address(metrics_address, option="--metrics-address")
        if not 0 < disconnect_grace < float("inf"):
            raise CliArgumentError(f"--disconnect-grace must be a number of seconds > 0, got {disconnect_grace}")
        tls = resolve_link_tls(
            insecure=insecure, ssl_ca_certfile=ssl_ca_certfile, ssl_certfile=ssl_certfile, ssl_keyfile=ssl_keyfile
        )
    except CliArgumentError as exc:
        _fail(cmd, exc)
    _setup_logging(cmd, verbose, log_file, log_format, log_level_all)
    from fl_async.superlink import LinkConfig
    from fl_async.superlink.config import address_conflict, default_blob_api_address

    blob_flag = "--blob-api-address" + ("" if blob_api_address is not None else " (default)")
    conflict = address_conflict(
        {
            "--driver-api-address": driver_api_address,
            "--fleet-api-address": fleet_api_address,
            blob_flag: blob_api_address
            if blob_api_address is not None
            else default_blob_api_address(fleet_api_address),
        }
    )
    if conflict:  # before binding anything (LinkConfig refuses it too, without the flag names)
        _fail(cmd, conflict)
    try:
        config = LinkConfig(
            driver_api_address=driver_api_address,
            fleet_api_address=fleet_api_address,
            blob_api_address=blob_api_address,
            tls=tls,
            heartbeat_patience=heartbeat_patience,
            disconnect_grace=disconnect_grace,
            metrics_address=metrics_address,
            **(limits or {}),
        )
    except (TypeError, ValueError) as exc:
        _fail(cmd, limit_error(exc))

    async def serve() -> None:
        import anyio

        from fl_async.superlink import SuperLink

        async with anyio.create_task_group() as tg:
            stopped = anyio.Event()

            async def watch(*, task_status: Any = None) -> None:
                await _until_stop_signal(cmd, task_status=task_status)
                stopped.set()

            await tg.start(watch)
            async with SuperLink(config) as link:
                mode = "TLS" if tls is not None else "plaintext (--insecure)"
                metrics = f", metrics on http://{link.metrics_address}/metrics" if link.metrics_address else ""
                _info(
                    cmd,
                    f"Driver API on {link.driver_address}, Fleet API on {link.fleet_address}, "
                    f"blob data path on {link.blob_address}{metrics}, {mode}",
                )
                await stopped.wait()

    _run_async(cmd, serve)
    _info(cmd, "stopped")


@app.command("supernode")
def supernode_command(
    client_app: Annotated[str, typer.Argument(metavar="MODULE:ATTR", help="The ClientApp to run, e.g. client:app.")],
    superlink: Annotated[
        str, typer.Option(metavar="HOST:PORT", help="The SuperLink's Fleet API address.")
    ] = "127.0.0.1:9092",
    insecure: Insecure = False,
    root_certificates: RootCertificates = None,
    dir: AppDir = None,
    max_concurrency: Annotated[
        int, typer.Option(min=1, metavar="K", help="How many messages the ClientApp may handle at once.")
    ] = 1,
    heartbeat_interval: Annotated[
        float, typer.Option(min=0.05, metavar="SECONDS", help="Seconds between heartbeats to the link.")
    ] = 30.0,
    node_config: Annotated[
        list[str] | None,
        typer.Option(
            "--node-config",
            metavar="KEY=VALUE",
            help="Node settings for Context.node_config, e.g. 'partition-id=0 num-partitions=10'; repeatable. "
            "Values: true/false, int, float, 'quoted str', else str.",
        ),
    ] = None,
    verbose: Verbose = False,
    log_file: LogFile = None,
    log_format: LogFormat = "text",
    log_level_all: LogLevelAll = False,
) -> None:
    """Connect to a SuperLink and run a ClientApp on the messages sent to this node, until Ctrl-C / SIGTERM.

    As Flower 1.9's flower-client-app (1.10's flower-supernode).
    """
    cmd = "supernode"
    try:
        check_address(superlink, option="--superlink")
        roots = resolve_client_tls(insecure=insecure, root_certificates=root_certificates)
        config = parse_config_pairs(node_config, option="--node-config")
    except CliArgumentError as exc:
        _fail(cmd, exc)
    _setup_logging(cmd, verbose, log_file, log_format, log_level_all)
    from fl_async.client import ClientApp

    capp = _load_app(cmd, client_app, what="client app", directory=dir, expected=ClientApp)

    async def serve() -> None:
        import anyio

        from fl_async.supernode import SuperNode

        try:
            node = SuperNode(
                capp,
                superlink,
                insecure=roots is None,
                root_certificates=roots,
                max_concurrency=max_concurrency,
                heartbeat_interval=heartbeat_interval,
                node_config=config,
                shutdown_grace=NODE_SHUTDOWN_GRACE,
            )
        except (TypeError, ValueError) as exc:
            _fail(cmd, exc)
        async with anyio.create_task_group() as tg:

            async def watch(*, task_status: Any = None) -> None:
                await _until_stop_signal(cmd, task_status=task_status)
                node.stop()  # graceful: stop pulling, finish or abandon handlers, delete the node
                await _until_stop_signal(cmd)
                tg.cancel_scope.cancel()  # a second signal: stop at once

            await tg.start(watch)
            _info(cmd, f"running {client_app} against {superlink} ({'TLS' if roots else 'plaintext'})")
            await node.run()
            tg.cancel_scope.cancel()

    _run_async(cmd, serve, tls=roots is not None)
    _info(cmd, "stopped")


@app.command("server-app")
def server_app_command(
    server_app: Annotated[str, typer.Argument(metavar="MODULE:ATTR", help="The ServerApp to run, e.g. server:app.")],
    superlink: Annotated[
        str, typer.Option(metavar="HOST:PORT", help="The SuperLink's Driver API address.")
    ] = "127.0.0.1:9091",
    insecure: Insecure = False,
    root_certificates: RootCertificates = None,
    dir: AppDir = None,
    run_config: Annotated[
        list[str] | None,
        typer.Option(
            "--run-config",
            metavar="KEY=VALUE",
            help="Run settings for Context.run_config, e.g. 'num-server-rounds=5 lr=0.1'; repeatable. "
            "Values: true/false, int, float, 'quoted str', else str.",
        ),
    ] = None,
    verbose: Verbose = False,
    log_file: LogFile = None,
    log_format: LogFormat = "text",
    log_level_all: LogLevelAll = False,
) -> None:
    """Create a run on a SuperLink and run a ServerApp's main(driver, context) to completion.

    As Flower 1.9's 'flower-server-app server:app --insecure'.
    """
    cmd = "server-app"
    try:
        check_address(superlink, option="--superlink")
        roots = resolve_client_tls(insecure=insecure, root_certificates=root_certificates)
        config = parse_config_pairs(run_config, option="--run-config")
    except CliArgumentError as exc:
        _fail(cmd, exc)
    _setup_logging(cmd, verbose, log_file, log_format, log_level_all)
    from fl_async.server import ServerApp

    sapp = _load_app(cmd, server_app, what="server app", directory=dir, expected=ServerApp)
    _check_main(cmd, server_app, sapp)

    async def run() -> None:
        import anyio

        from fl_async.server import async_run_server_app

        async with anyio.create_task_group() as tg:
            await tg.start(_cancel_on_signal, cmd, tg.cancel_scope)
            _info(cmd, f"running {server_app} against {superlink} ({'TLS' if roots else 'plaintext'})")
            await async_run_server_app(
                sapp, superlink=superlink, insecure=roots is None, root_certificates=roots, run_config=config
            )
            tg.cancel_scope.cancel()

    _run_async(cmd, run, app_errors=True, tls=roots is not None)


@app.command("run")
def run_command(
    server_app: Annotated[str, typer.Argument(metavar="SERVER_APP", help="The ServerApp, MODULE:ATTR.")],
    client_app: Annotated[str, typer.Argument(metavar="CLIENT_APP", help="The ClientApp, MODULE:ATTR.")],
    num_supernodes: Annotated[
        int, typer.Option(min=1, metavar="N", help="How many in-process SuperNodes to start.")
    ] = 2,
    run_config: Annotated[
        list[str] | None,
        typer.Option(
            "--run-config",
            metavar="KEY=VALUE",
            help="Run settings for Context.run_config; repeatable. Values: true/false, int, float, "
            "'quoted str', else str.",
        ),
    ] = None,
    dir: AppDir = None,
    max_concurrency: Annotated[
        int, typer.Option(min=1, metavar="K", help="Messages each node may handle at once.")
    ] = 1,
    progress: Annotated[
        bool | None,
        typer.Option(
            "--progress/--no-progress",
            help="Show the rounds progress display on stderr (default: only when stderr is a terminal).",
        ),
    ] = None,
    metrics_address: MetricsAddress = None,
    backend: Annotated[
        str,
        typer.Option(
            metavar="in-process|ray",
            help="Where the nodes run: in this process, or in Ray actors (pip install 'fl-async[ray]').",
        ),
    ] = "in-process",
    ray_address: Annotated[
        str | None,
        typer.Option(
            metavar="ADDR",
            help="Ray backend: join this cluster ('auto', HOST:PORT or ray://HOST:PORT) instead of starting "
            "a local Ray instance for the run.",
        ),
    ] = None,
    node_resources: Annotated[
        str | None,
        typer.Option(
            metavar="NAME=NUMBER,...",
            help="Ray backend: resources one node needs, e.g. num_cpus=0.5,num_gpus=0.1 (an actor of K nodes "
            "asks for K times each).",
        ),
    ] = None,
    nodes_per_actor: Annotated[
        int | None,
        typer.Option(
            min=1, metavar="K", help="Ray backend: nodes per Ray actor (default: spread over one actor per CPU)."
        ),
    ] = None,
    verbose: Verbose = False,
    log_file: LogFile = None,
    log_format: LogFormat = "text",
    log_level_all: LogLevelAll = False,
) -> None:
    """Run a federation: a SuperLink and the ServerApp in this process, N SuperNodes in it or in Ray actors.

    Everything runs in one event loop over the same code paths as the separate commands (real gRPC on
    loopback, plaintext). Node i gets node_config partition-id=i, num-partitions=N. The ServerApp starts
    once all N nodes are online. Progress goes to stderr, the app's output to stdout. With --backend ray
    the nodes run in Ray actors, each node with its own connection (see docs/simulation.md).
    """
    cmd = "run"
    try:
        config = parse_config_pairs(run_config, option="--run-config")
        if metrics_address is not None:
            check_address(metrics_address, option="--metrics-address")
        ray_options = _ray_options(backend, ray_address, node_resources, nodes_per_actor)
    except CliArgumentError as exc:
        _fail(cmd, exc)
    _setup_logging(cmd, verbose, log_file, log_format, log_level_all)
    from fl_async.client import ClientApp
    from fl_async.server import ServerApp

    sapp = _load_app(cmd, server_app, what="server app", directory=dir, expected=ServerApp)
    capp = _load_app(cmd, client_app, what="client app", directory=dir, expected=ClientApp)
    _check_main(cmd, server_app, sapp)

    async def run() -> None:
        import anyio

        from fl_async._embedded import run_embedded

        async with anyio.create_task_group() as tg:
            await tg.start(_cancel_on_signal, cmd, tg.cancel_scope)
            if ray_options is not None:
                from fl_async._ray_backend import run_on_ray

                await run_on_ray(
                    sapp,
                    client_app,
                    num_supernodes=num_supernodes,
                    app_dir=str(dir if dir is not None else Path.cwd()),
                    run_config=config,
                    max_concurrency=max_concurrency,
                    options=ray_options,
                    metrics_address=metrics_address,
                )
            else:
                await run_embedded(
                    sapp,
                    capp,
                    num_supernodes=num_supernodes,
                    run_config=config,
                    max_concurrency=max_concurrency,
                    progress=progress,
                    metrics_address=metrics_address,
                )
            tg.cancel_scope.cancel()

    _run_async(cmd, run, app_errors=True)


def _ray_options(backend: str, address: str | None, resources: str | None, per_actor: int | None) -> Any:
    """The Ray backend's options (``None`` for the in-process backend); refuses misplaced or bad flags.

    Raises:
        CliArgumentError: an unknown backend, Ray flags without ``--backend ray``, bad ``--node-resources``,
            or Ray not installed (its message says what to install).
    """
    if backend not in ("in-process", "ray"):
        raise CliArgumentError(f"--backend must be 'in-process' or 'ray', got {backend!r}")
    if backend != "ray":
        given = [f for f, v in (("--ray-address", address), ("--node-resources", resources)) if v is not None]
        given += ["--nodes-per-actor"] if per_actor is not None else []
        if given:
            raise CliArgumentError(f"{' and '.join(given)} {'needs' if len(given) == 1 else 'need'} --backend ray")
        return None
    from fl_async._ray_backend import RayNotInstalledError, RayOptions, parse_node_resources, require_ray

    try:
        parsed = parse_node_resources(resources or "")
        require_ray()
    except (ValueError, RayNotInstalledError) as exc:
        raise CliArgumentError(str(exc)) from None
    return RayOptions(address=address or None, node_resources=parsed, nodes_per_actor=per_actor)


def main() -> None:
    """Console-script entry point (``fl-async``)."""
    global _owns_process
    _owns_process = True
    app()


def _register_operations() -> None:
    from fl_async._cli_ops import register

    register(app)


_register_operations()


if __name__ == "__main__":  # pragma: no cover
    main()

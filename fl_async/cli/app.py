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

from pathlib import Path
from typing import Annotated, Any

import typer

from fl_async._link_limits import limit_error, with_limit_options
from fl_async.cli import process
from fl_async.cli.args import (
    CliArgumentError,
    check_address,
    check_identity_files,
    parse_config_pairs,
    parse_ray_options,
    read_token_file,
    resolve_client_tls,
    resolve_link_tls,
    split_app_ref,
)
from fl_async.cli.options import (
    AppDir,
    Database,
    Insecure,
    LogFile,
    LogFormat,
    LogLevelAll,
    MetricsAddress,
    RootCertificates,
    Verbose,
)
from fl_async.cli.process import (
    NODE_SHUTDOWN_GRACE,
    OneLineErrors,
    cancel_on_signal,
    fail,
    info,
    run_async_command,
    setup_logging,
    until_stop_signal,
)

__all__ = ["app", "main"]


app = typer.Typer(
    name="fl-async",
    cls=OneLineErrors,
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


def _load_app(command: str, ref: str, *, what: str, directory: Path | None, expected: type) -> Any:
    """Load ``MODULE:ATTR`` (``directory`` first on ``sys.path``; the current directory by default)."""
    from fl_async._loading import load_object
    from fl_async.errors import AppLoadError

    try:
        split_app_ref(ref, what=what)
        return load_object(ref, dir=str(directory if directory is not None else Path.cwd()), expected=expected)
    except CliArgumentError as exc:
        fail(command, exc)
    except AppLoadError as exc:
        fail(command, exc)


def _check_main(command: str, ref: str, server_app: Any) -> None:
    """Refuse (exit 2, one line) a ServerApp without ``@app.main()`` before anything connects or starts."""
    if server_app.main_function is None:
        fail(command, f"{ref}: this ServerApp has no main function: decorate one with @app.main()")


# -------------------------------------------------------------------------------------------- commands


@app.command("superlink")
@with_limit_options
def superlink_command(
    driver_api_address: Annotated[
        str,
        typer.Option(
            metavar="HOST:PORT", help="Where to serve the Driver API for server apps (port 0: any free port)."
        ),
    ] = "127.0.0.1:9091",
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
    database: Database = ":memory:",
    database_sync: Annotated[
        str,
        typer.Option(
            metavar="normal|full",
            help="Durability of --database FILE: normal survives a crash of the link process (kill -9); full "
            "also survives power loss (an fsync per commit).",
        ),
    ] = "normal",
    metrics_address: MetricsAddress = None,
    driver_auth_token_file: Annotated[
        Path | None,
        typer.Option(
            metavar="FILE",
            help="Driver tokens, one per line: every Driver API call must carry one (server-app --auth-token-file).",
        ),
    ] = None,
    auth_list_public_keys: Annotated[
        Path | None,
        typer.Option(
            metavar="FILE",
            help="CSV of the OpenSSH ECDSA public keys of the nodes allowed to register (needs TLS); re-read on "
            "SIGHUP and when it changes.",
        ),
    ] = None,
    auth_superlink_private_key: Annotated[
        Path | None,
        typer.Option(
            metavar="FILE",
            help="The link's ECDSA private key for the nodes' per-call proofs (default: one generated at start).",
        ),
    ] = None,
    auth_superlink_public_key: Annotated[
        Path | None, typer.Option(metavar="FILE", help="Its OpenSSH public key (checked to match; as Flower 1.9).")
    ] = None,
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
        if database_sync not in ("normal", "full"):
            raise CliArgumentError(f"--database-sync must be 'normal' or 'full', got {database_sync!r}")
        if metrics_address is not None:
            check_address(metrics_address, option="--metrics-address")
        if not 0 < disconnect_grace < float("inf"):
            raise CliArgumentError(f"--disconnect-grace must be a number of seconds > 0, got {disconnect_grace}")
        tls = resolve_link_tls(
            insecure=insecure, ssl_ca_certfile=ssl_ca_certfile, ssl_certfile=ssl_certfile, ssl_keyfile=ssl_keyfile
        )
        check_identity_files(
            insecure=insecure,
            driver_auth_token_file=driver_auth_token_file,
            auth_list_public_keys=auth_list_public_keys,
            auth_superlink_keys=(auth_superlink_private_key, auth_superlink_public_key),
        )
    except CliArgumentError as exc:
        fail(cmd, exc)
    setup_logging(cmd, verbose, log_file, log_format, log_level_all)
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
        fail(cmd, conflict)
    try:
        config = LinkConfig(
            driver_api_address=driver_api_address,
            fleet_api_address=fleet_api_address,
            blob_api_address=blob_api_address,
            tls=tls,
            heartbeat_patience=heartbeat_patience,
            disconnect_grace=disconnect_grace,
            database=database,
            database_sync=database_sync,
            metrics_address=metrics_address,
            driver_auth_token_file=str(driver_auth_token_file) if driver_auth_token_file else None,
            auth_list_public_keys=str(auth_list_public_keys) if auth_list_public_keys else None,
            auth_superlink_private_key=str(auth_superlink_private_key) if auth_superlink_private_key else None,
            **(limits or {}),
        )
    except (TypeError, ValueError) as exc:
        fail(cmd, limit_error(exc))

    async def serve() -> None:
        import anyio

        from fl_async.superlink import SuperLink

        async with anyio.create_task_group() as tg:
            stopped = anyio.Event()

            async def watch(*, task_status: Any = None) -> None:
                await until_stop_signal(cmd, task_status=task_status)
                stopped.set()

            await tg.start(watch)
            async with SuperLink(config) as link:
                mode = "TLS" if tls is not None else "plaintext (--insecure)"
                metrics = f", metrics on http://{link.metrics_address}/metrics" if link.metrics_address else ""
                info(
                    cmd,
                    f"Driver API on {link.driver_address}, Fleet API on {link.fleet_address}, "
                    f"blob data path on {link.blob_address}{metrics}, {mode}",
                )
                if database != ":memory:":
                    stats = link.stats()
                    info(
                        cmd,
                        f"state in {database} (--database-sync {database_sync}): {stats.runs} run(s), "
                        f"{stats.nodes} node(s), {link.recovered} instruction(s) taken over",
                    )
                await stopped.wait()

    run_async_command(cmd, serve)
    info(cmd, "stopped")


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
    auth_supernode_private_key: Annotated[
        Path | None,
        typer.Option(metavar="FILE", help="The node's ECDSA private key (ssh-keygen -t ecdsa -b 384); needs TLS."),
    ] = None,
    auth_supernode_public_key: Annotated[
        Path | None, typer.Option(metavar="FILE", help="The node's OpenSSH public key (the .pub file).")
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
        from fl_async._keys import node_key

        try:  # before connecting: a key with --insecure, a missing or mismatched file
            node_key(auth_supernode_private_key, auth_supernode_public_key, insecure=insecure)
        except ValueError as exc:
            raise CliArgumentError(str(exc)) from None
    except CliArgumentError as exc:
        fail(cmd, exc)
    setup_logging(cmd, verbose, log_file, log_format, log_level_all)
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
                auth_private_key=auth_supernode_private_key,
                auth_public_key=auth_supernode_public_key,
            )
        except (TypeError, ValueError) as exc:
            fail(cmd, exc)
        async with anyio.create_task_group() as tg:

            async def watch(*, task_status: Any = None) -> None:
                await until_stop_signal(cmd, task_status=task_status)
                node.stop()  # graceful: stop pulling, finish or abandon handlers, delete the node
                await until_stop_signal(cmd)
                tg.cancel_scope.cancel()  # a second signal: stop at once

            await tg.start(watch)
            info(cmd, f"running {client_app} against {superlink} ({'TLS' if roots else 'plaintext'})")
            await node.run()
            tg.cancel_scope.cancel()

    run_async_command(cmd, serve, tls=roots is not None)
    info(cmd, "stopped")


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
    auth_token_file: Annotated[
        Path | None,
        typer.Option(
            metavar="FILE",
            help="File holding the driver token (the link's --driver-auth-token-file); default: env "
            "FL_ASYNC_AUTH_TOKEN.",
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
        token = read_token_file(auth_token_file) if auth_token_file is not None else None
    except CliArgumentError as exc:
        fail(cmd, exc)
    setup_logging(cmd, verbose, log_file, log_format, log_level_all)
    from fl_async.server import ServerApp

    sapp = _load_app(cmd, server_app, what="server app", directory=dir, expected=ServerApp)
    _check_main(cmd, server_app, sapp)

    async def run() -> None:
        import anyio

        from fl_async.server import async_run_server_app

        async with anyio.create_task_group() as tg:
            await tg.start(cancel_on_signal, cmd, tg.cancel_scope)
            info(cmd, f"running {server_app} against {superlink} ({'TLS' if roots else 'plaintext'})")
            await async_run_server_app(
                sapp,
                superlink=superlink,
                insecure=roots is None,
                root_certificates=roots,
                run_config=config,
                auth_token=token,
            )
            tg.cancel_scope.cancel()

    run_async_command(cmd, run, app_errors=True, tls=roots is not None)


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
    database: Database = ":memory:",
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
        ray_options = parse_ray_options(backend, ray_address, node_resources, nodes_per_actor)
    except CliArgumentError as exc:
        fail(cmd, exc)
    setup_logging(cmd, verbose, log_file, log_format, log_level_all)
    from fl_async.client import ClientApp
    from fl_async.server import ServerApp

    sapp = _load_app(cmd, server_app, what="server app", directory=dir, expected=ServerApp)
    capp = _load_app(cmd, client_app, what="client app", directory=dir, expected=ClientApp)
    _check_main(cmd, server_app, sapp)

    async def run() -> None:
        import anyio

        from fl_async.cli.embedded import run_embedded

        async with anyio.create_task_group() as tg:
            await tg.start(cancel_on_signal, cmd, tg.cancel_scope)
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
                    database=database,
                    metrics_address=metrics_address,
                )
            tg.cancel_scope.cancel()

    run_async_command(cmd, run, app_errors=True)


def main() -> None:
    """Console-script entry point (``fl-async``)."""
    process.own_the_process()
    app()


def _register_operations() -> None:
    from fl_async.cli.ops import register

    register(app)


_register_operations()


if __name__ == "__main__":  # pragma: no cover
    main()

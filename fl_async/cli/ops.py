"""``fl-async ls nodes|runs|messages`` and ``fl-async stop``: look at and steer a live SuperLink.

Both use the link's Admin API (served on the Driver API's port, default 9091; ``proto/fl_async/v1/admin.proto``),
whose calls never create a run. Output: a table by default, ``--json`` for scripts (a JSON array of objects on
stdout, times as Unix seconds). Exit status: 0 on success, 2 when the command line is refused, 1 when the call
fails (link unreachable, unknown run), always with one line on stderr.
"""

from __future__ import annotations

import datetime
import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from fl_async.cli.args import CliArgumentError, check_address, read_token_file, resolve_client_tls
from fl_async.cli.options import Insecure, RootCertificates
from fl_async.cli.process import EXIT_FAILURE, fail, info

__all__ = ["AdminClient", "register"]

ADMIN_TIMEOUT = 10.0
"""Seconds an Admin API call may take."""


class AdminClient:
    """A grpclib channel to a link's Admin API (create inside the event loop that uses it).

    Args:
        superlink: ``"HOST:PORT"`` of the link's Driver API.
        root_certificates: PEM bytes of the CA to trust (TLS), or ``None`` for plaintext.
        auth_token: sent as ``authorization: Bearer <token>`` metadata with every call, for links that require
            tokens on the Driver API (``None``: none sent).
    """

    def __init__(self, superlink: str, *, root_certificates: bytes | None, auth_token: str | None = None) -> None:
        from fl_async._grpc import open_channel
        from fl_async._net import client_ssl_context, parse_address
        from fl_async.proto.fl_async import v1 as pb

        host, port = parse_address(superlink)
        ssl_ctx = client_ssl_context(root_certificates) if root_certificates is not None else None
        self.address = superlink
        self._channel = open_channel(host, port, ssl_ctx)
        self._stub = pb.AdminStub(self._channel)
        self._metadata = {"authorization": f"Bearer {auth_token}"} if auth_token else None

    async def call(self, rpc: str, request: Any) -> Any:
        """Call ``rpc`` (e.g. ``"ListNodes"``) with ``request``.

        Raises:
            FlAsyncError: a subclass, mapped from the transport failure (see ``from_grpc``).
        """
        from fl_async._grpc import TRANSPORT_ERRORS, from_grpc, rpc_methods
        from fl_async.proto.fl_async import v1 as pb

        names = {r.name: r.method for r in rpc_methods(pb.AdminBase)}
        method = getattr(self._stub, names[rpc])
        try:
            return await method(request, timeout=ADMIN_TIMEOUT, metadata=self._metadata)
        except TRANSPORT_ERRORS as exc:
            raise from_grpc(exc, what=f"{rpc} to {self.address}", api="Driver", address=self.address) from exc

    def close(self) -> None:
        """Close the channel."""
        self._channel.close()


# ------------------------------------------------------------------------------------------------ options

Superlink = Annotated[str, typer.Option("--superlink", metavar="HOST:PORT", help="The SuperLink's Driver API address.")]
AuthTokenFile = Annotated[
    Path | None,
    typer.Option("--auth-token-file", metavar="FILE", help="File holding a token sent to links that require one."),
]
AsJson = Annotated[bool, typer.Option("--json", help="Print a JSON array instead of a table.")]


def _connect_args(
    cmd: str, superlink: str, insecure: bool, root_certificates: Path | None, auth_token_file: Path | None
) -> tuple[bytes | None, str | None]:
    try:
        check_address(superlink, option="--superlink")
        roots = resolve_client_tls(insecure=insecure, root_certificates=root_certificates)
        token = read_token_file(auth_token_file) if auth_token_file is not None else None
    except CliArgumentError as exc:
        fail(cmd, exc)
    return roots, token


def _admin_call(cmd: str, superlink: str, roots: bytes | None, token: str | None, rpc: str, request: Any) -> Any:
    """Make one Admin call on a fresh loop; a failure exits 1 with one line."""
    import anyio

    from fl_async.errors import FlAsyncError

    async def go() -> Any:
        client = AdminClient(superlink, root_certificates=roots, auth_token=token)
        try:
            return await client.call(rpc, request)
        finally:
            client.close()

    try:
        return anyio.run(go)
    except FlAsyncError as exc:
        fail(cmd, exc, EXIT_FAILURE)


def _when(ts: float) -> str:
    if not ts:
        return "-"
    return datetime.datetime.fromtimestamp(ts).astimezone().strftime("%Y-%m-%d %H:%M:%S")


def _ago(ts: float) -> str:
    import time

    if not ts:
        return "-"
    return f"{max(0.0, time.time() - ts):.1f} s ago"


def _print(rows: list[dict[str, Any]], as_json: bool, columns: list[tuple[str, str]], title: str) -> None:
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    for key, header in columns:
        table.add_column(header, no_wrap=key.endswith("_id") or key == "address")
    for row in rows:
        table.add_row(*(str(row[key]) if key in row else "" for key, _ in columns))
    Console(width=200 if not sys.stdout.isatty() else None).print(table)


# ------------------------------------------------------------------------------------------------ commands

ls_app = typer.Typer(
    name="ls", help="List what a SuperLink holds: nodes, runs, or one run's messages.", no_args_is_help=True
)


@ls_app.command("nodes")
def ls_nodes(
    superlink: Superlink = "127.0.0.1:9091",
    insecure: Insecure = False,
    root_certificates: RootCertificates = None,
    auth_token_file: AuthTokenFile = None,
    as_json: AsJson = False,
) -> None:
    """The online nodes: id, address, online since, last seen, queued and in-flight instructions."""
    from fl_async.proto.fl_async import v1 as pb

    cmd = "ls nodes"
    roots, token = _connect_args(cmd, superlink, insecure, root_certificates, auth_token_file)
    resp = _admin_call(cmd, superlink, roots, token, "ListNodes", pb.ListNodesRequest())
    rows = [
        {
            "node_id": n.node_id,
            "address": n.address,
            "online_since": n.online_since,
            "last_seen": n.last_seen,
            "queued": n.queued,
            "in_flight": n.in_flight,
            "heartbeat_interval": n.heartbeat_interval,
        }
        for n in resp.nodes
    ]
    if not as_json:
        for row in rows:
            row["online_since"] = _when(row["online_since"])
            row["last_seen"] = _ago(row["last_seen"])
    cols = [("node_id", "node id"), ("address", "address"), ("online_since", "online since")]
    cols += [("last_seen", "last seen"), ("queued", "queued"), ("in_flight", "in flight")]
    _print(rows, as_json, cols, f"{len(rows)} node(s) online on {superlink}")


@ls_app.command("runs")
def ls_runs(
    superlink: Superlink = "127.0.0.1:9091",
    insecure: Insecure = False,
    root_certificates: RootCertificates = None,
    auth_token_file: AuthTokenFile = None,
    as_json: AsJson = False,
) -> None:
    """Every run: id, created, queued / in-flight / answered (not yet pulled) instructions, stopped."""
    from fl_async.proto.fl_async import v1 as pb

    cmd = "ls runs"
    roots, token = _connect_args(cmd, superlink, insecure, root_certificates, auth_token_file)
    resp = _admin_call(cmd, superlink, roots, token, "ListRuns", pb.ListRunsRequest())
    rows = [
        {
            "run_id": r.run_id,
            "created_at": r.created_at,
            "fab_id": r.fab_id,
            "queued": r.queued,
            "in_flight": r.in_flight,
            "answered": r.answered,
            "stopped": r.stopped,
        }
        for r in resp.runs
    ]
    if not as_json:
        for row in rows:
            row["created_at"] = _when(row["created_at"])
    cols = [("run_id", "run id"), ("created_at", "created"), ("queued", "queued"), ("in_flight", "in flight")]
    cols += [("answered", "answered"), ("stopped", "stopped")]
    _print(rows, as_json, cols, f"{len(rows)} run(s) on {superlink}")


@ls_app.command("messages")
def ls_messages(
    run_id: Annotated[
        int,
        typer.Argument(
            metavar="RUN_ID", min=1, max=2**64 - 1, help="The run whose messages to list (unsigned 64-bit id)."
        ),
    ],
    superlink: Superlink = "127.0.0.1:9091",
    insecure: Insecure = False,
    root_certificates: RootCertificates = None,
    auth_token_file: AuthTokenFile = None,
    as_json: AsJson = False,
) -> None:
    """The instructions of one run the link still holds, with their state (queued, in_flight, answered)."""
    from fl_async.common.message import ErrorCode
    from fl_async.proto.fl_async import v1 as pb

    cmd = "ls messages"
    roots, token = _connect_args(cmd, superlink, insecure, root_certificates, auth_token_file)
    resp = _admin_call(cmd, superlink, roots, token, "ListMessages", pb.ListMessagesRequest(run_id=run_id))
    rows = [
        {
            "message_id": m.message_id,
            "dst_node_id": m.dst_node_id,
            "message_type": m.message_type,
            "group_id": m.group_id,
            "state": m.state,
            "pushed_at": m.pushed_at,
            "expires_at": m.expires_at,
            "error": ErrorCode.name(m.error_code) if m.error_code else "",
        }
        for m in resp.messages
    ]
    if not as_json:
        for row in rows:
            row["pushed_at"] = _when(row["pushed_at"])
    cols = [("message_id", "message id"), ("dst_node_id", "node"), ("message_type", "type")]
    cols += [("group_id", "group"), ("state", "state"), ("pushed_at", "pushed"), ("error", "error")]
    _print(rows, as_json, cols, f"{len(rows)} message(s) of run {run_id}")


def stop_command(
    run_id: Annotated[
        int, typer.Argument(metavar="RUN_ID", min=1, max=2**64 - 1, help="The run to stop (unsigned 64-bit id).")
    ],
    superlink: Superlink = "127.0.0.1:9091",
    insecure: Insecure = False,
    root_certificates: RootCertificates = None,
    auth_token_file: AuthTokenFile = None,
) -> None:
    """Stop a run: cancel its queued and in-flight instructions (each gets a CANCELLED error reply) and make its
    driver's next call fail with "run stopped". Other runs are not affected."""
    from fl_async.proto.fl_async import v1 as pb

    cmd = "stop"
    roots, token = _connect_args(cmd, superlink, insecure, root_certificates, auth_token_file)
    resp = _admin_call(cmd, superlink, roots, token, "StopRun", pb.StopRunRequest(run_id=run_id))
    if resp.already_stopped:
        info(cmd, f"run {run_id} was already stopped")
    else:
        info(cmd, f"run {run_id} stopped; {resp.cancelled} instruction(s) cancelled")


def register(app: typer.Typer) -> None:
    """Add ``ls`` and ``stop`` to the ``fl-async`` command line."""
    app.add_typer(ls_app, name="ls")
    app.command("stop")(stop_command)

"""CLI refusals: every bad command line exits 2 with one line on stderr, before listening or connecting.

Run in-process with typer's CliRunner (fast, all cases) and, for a representative set, as real
``fl-async`` subprocesses (the console script, exit status and stderr as a user sees them).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from certs import make_certs, write_certs
from typer.testing import CliRunner

from fl_async._cli_args import CliArgumentError, parse_config_pairs, parse_config_value
from fl_async.cli import app

runner = CliRunner()
FL_ASYNC = Path(sys.executable).with_name("fl-async")


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory):
    return write_certs(tmp_path_factory.mktemp("certs"))


@pytest.fixture(scope="module")
def junk(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("junk")
    not_pem = d / "not.pem"
    not_pem.write_text("hello\n")
    (d / "other").mkdir()
    other = write_certs(d / "other", make_certs("another CA"))
    return {"not_pem": not_pem, "missing": d / "missing.pem", "other_key": other.server_key, "dir": d}


@pytest.fixture(scope="module")
def apps(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A directory with modules: a ClientApp, a ServerApp, a non-app, and one that fails to import."""
    d = tmp_path_factory.mktemp("apps")
    tag = uuid.uuid4().hex[:8]
    (d / f"good_{tag}.py").write_text(
        "from fl_async.client import ClientApp\nfrom fl_async.server import ServerApp\n"
        "client = ClientApp()\nserver = ServerApp()\nnot_an_app = 42\n"
    )
    (d / f"broken_{tag}.py").write_text("raise RuntimeError('boom at import')\n")
    return d, tag


def one_line_error(result, command: str, *needles: str) -> str:
    """Assert exit 2, exactly one output line naming the command, no traceback; return the line."""
    out = result.output.strip()
    assert result.exit_code == 2, (result.exit_code, out)
    assert len(out.splitlines()) == 1, out
    assert out.startswith(f"fl-async {command}: error:"), out
    assert "Traceback" not in out
    for needle in needles:
        assert needle in out, (needle, out)
    return out


# ------------------------------------------------------------------------------ superlink


def test_superlink_requires_tls_or_insecure() -> None:
    r = runner.invoke(app, ["superlink", "--driver-api-address", "127.0.0.1:0", "--fleet-api-address", "127.0.0.1:0"])
    one_line_error(r, "superlink", "--insecure", "--ssl-ca-certfile")


@pytest.mark.parametrize(
    "flags",
    [
        ["--ssl-ca-certfile"],
        ["--ssl-certfile", "--ssl-keyfile"],
        ["--ssl-ca-certfile", "--ssl-certfile", "--ssl-keyfile"],
    ],
)
def test_superlink_insecure_conflicts_with_certificates(certs, flags: list[str]) -> None:
    files = {"--ssl-ca-certfile": certs.ca_cert, "--ssl-certfile": certs.server_cert, "--ssl-keyfile": certs.server_key}
    args = ["superlink", "--insecure"] + [x for f in flags for x in (f, str(files[f]))]
    one_line_error(runner.invoke(app, args), "superlink", "--insecure cannot be combined", *flags)


@pytest.mark.parametrize("missing", ["--ssl-ca-certfile", "--ssl-certfile", "--ssl-keyfile"])
def test_superlink_incomplete_tls_flags(certs, missing: str) -> None:
    files = {"--ssl-ca-certfile": certs.ca_cert, "--ssl-certfile": certs.server_cert, "--ssl-keyfile": certs.server_key}
    args = ["superlink"] + [x for f, p in files.items() if f != missing for x in (f, str(p))]
    one_line_error(runner.invoke(app, args), "superlink", "incomplete TLS flags", f"{missing} missing")


def test_superlink_single_tls_flag(certs) -> None:
    r = runner.invoke(app, ["superlink", "--ssl-certfile", str(certs.server_cert)])
    one_line_error(r, "superlink", "--ssl-ca-certfile, --ssl-keyfile missing")


@pytest.mark.parametrize("which", ["--ssl-ca-certfile", "--ssl-certfile", "--ssl-keyfile"])
@pytest.mark.parametrize("bad", ["missing", "not_pem"])
def test_superlink_unreadable_certificate_files(certs, junk, which: str, bad: str) -> None:
    files = {"--ssl-ca-certfile": certs.ca_cert, "--ssl-certfile": certs.server_cert, "--ssl-keyfile": certs.server_key}
    files[which] = junk[bad]
    args = ["superlink"] + [x for f, p in files.items() for x in (f, str(p))]
    out = one_line_error(runner.invoke(app, args), "superlink", which)
    assert ("cannot read" in out) if bad == "missing" else ("not PEM" in out)


def test_superlink_key_not_matching_certificate(certs, junk) -> None:
    args = [
        "superlink",
        "--ssl-ca-certfile",
        str(certs.ca_cert),
        "--ssl-certfile",
        str(certs.server_cert),
        "--ssl-keyfile",
        str(junk["other_key"]),
    ]
    one_line_error(runner.invoke(app, args), "superlink", "cannot load certificate/key")


@pytest.mark.parametrize("option", ["--driver-api-address", "--fleet-api-address", "--blob-api-address"])
@pytest.mark.parametrize("address", ["localhost", "127.0.0.1:99999", "::1:9091", ":9091", "127.0.0.1:port"])
def test_superlink_bad_address(option: str, address: str) -> None:
    r = runner.invoke(app, ["superlink", "--insecure", option, address])
    one_line_error(r, "superlink", option, "invalid address")


def test_superlink_same_port_twice_refused_before_binding() -> None:
    r = runner.invoke(
        app,
        [
            "superlink",
            "--insecure",
            "--driver-api-address",
            "127.0.0.1:19600",
            "--fleet-api-address",
            "127.0.0.1:19600",
        ],
    )
    one_line_error(r, "superlink", "--driver-api-address (127.0.0.1:19600) and --fleet-api-address", "same port")
    r = runner.invoke(
        app,
        ["superlink", "--insecure", "--fleet-api-address", "127.0.0.1:19601", "--blob-api-address", "0.0.0.0:19601"],
    )
    one_line_error(r, "superlink", "--fleet-api-address", "--blob-api-address", "same port")
    r = runner.invoke(app, ["superlink", "--insecure", "--driver-api-address", "127.0.0.1:9093"])
    one_line_error(r, "superlink", "--blob-api-address (default) (0.0.0.0:9093)", "same port")


@pytest.mark.parametrize("value", ["0", "-5", "lots"])
def test_superlink_max_request_bytes(value: str) -> None:
    one_line_error(
        runner.invoke(app, ["superlink", "--insecure", "--max-request-bytes", value]),
        "superlink",
        "--max-request-bytes",
    )


def test_superlink_heartbeat_patience_below_one() -> None:
    r = runner.invoke(app, ["superlink", "--insecure", "--heartbeat-patience", "0.5"])
    one_line_error(r, "superlink", "--heartbeat-patience")


def test_superlink_unknown_option() -> None:
    one_line_error(runner.invoke(app, ["superlink", "--insecure", "--no-such-flag"]), "superlink", "--no-such-flag")


# ------------------------------------------------------------------------- supernode / server-app

CLIENT_COMMANDS = [("supernode", "client", "--node-config"), ("server-app", "server", "--run-config")]


@pytest.mark.parametrize(("command", "attr", "config_flag"), CLIENT_COMMANDS)
def test_client_side_requires_tls_choice(apps, command: str, attr: str, config_flag: str) -> None:
    d, tag = apps
    r = runner.invoke(app, [command, f"good_{tag}:{attr}", "--dir", str(d), "--superlink", "127.0.0.1:1"])
    one_line_error(r, command, "--root-certificates", "--insecure")


@pytest.mark.parametrize(("command", "attr", "config_flag"), CLIENT_COMMANDS)
def test_client_side_insecure_conflicts_with_root_certificates(
    apps, certs, command: str, attr: str, config_flag: str
) -> None:
    d, tag = apps
    r = runner.invoke(
        app, [command, f"good_{tag}:{attr}", "--dir", str(d), "--insecure", "--root-certificates", str(certs.ca_cert)]
    )
    one_line_error(r, command, "--insecure cannot be combined with --root-certificates")


@pytest.mark.parametrize(("command", "attr", "config_flag"), CLIENT_COMMANDS)
@pytest.mark.parametrize("bad", ["missing", "not_pem"])
def test_client_side_unreadable_root_certificates(
    apps, junk, command: str, attr: str, config_flag: str, bad: str
) -> None:
    d, tag = apps
    r = runner.invoke(app, [command, f"good_{tag}:{attr}", "--dir", str(d), "--root-certificates", str(junk[bad])])
    one_line_error(r, command, "--root-certificates")


@pytest.mark.parametrize(("command", "attr", "config_flag"), CLIENT_COMMANDS)
@pytest.mark.parametrize("address", ["nohost", "127.0.0.1:70000", "[::1:9092"])
def test_client_side_bad_address(apps, command: str, attr: str, config_flag: str, address: str) -> None:
    d, tag = apps
    r = runner.invoke(app, [command, f"good_{tag}:{attr}", "--dir", str(d), "--insecure", "--superlink", address])
    one_line_error(r, command, "--superlink", "invalid address")


@pytest.mark.parametrize(("command", "attr", "config_flag"), CLIENT_COMMANDS)
@pytest.mark.parametrize(
    ("pairs", "needle"),
    [
        (["novalue"], "expected KEY=VALUE"),
        (["a=1 a=2"], "given twice"),
        (["a=1", "a=3"], "given twice"),
        (["=5"], "key must be"),
        (['msg="open'], "unbalanced"),
        (["big=99999999999999999999"], "64-bit"),
        (["big=18446744073709551616"], "64-bit"),
    ],
)
def test_client_side_bad_config_pairs(
    apps, command: str, attr: str, config_flag: str, pairs: list[str], needle: str
) -> None:
    d, tag = apps
    args = [command, f"good_{tag}:{attr}", "--dir", str(d), "--insecure"]
    for p in pairs:
        args += [config_flag, p]
    one_line_error(runner.invoke(app, args), command, config_flag, needle)


@pytest.mark.parametrize(("command", "attr", "config_flag"), CLIENT_COMMANDS)
def test_client_side_app_reference_failures(apps, command: str, attr: str, config_flag: str) -> None:
    d, tag = apps
    other = "server" if attr == "client" else "client"
    cases = {
        "nocolon": "not MODULE:ATTR",
        f"good_{tag}:": "not MODULE:ATTR",
        f"missing_{tag}:app": "not found",
        f"good_{tag}:nothing": "has no attribute 'nothing'",
        f"good_{tag}:not_an_app": "int",
        f"good_{tag}:{other}": "expected a",
        f"broken_{tag}:app": "boom at import",
    }
    for ref, needle in cases.items():
        r = runner.invoke(app, [command, ref, "--dir", str(d), "--insecure"])
        one_line_error(r, command, needle)


def test_app_dir_not_a_directory(apps) -> None:
    d, tag = apps
    r = runner.invoke(app, ["supernode", f"good_{tag}:client", "--dir", str(d / "nope"), "--insecure"])
    one_line_error(r, "supernode", "not a directory")


@pytest.mark.parametrize(
    ("option", "value"), [("--max-concurrency", "0"), ("--heartbeat-interval", "0"), ("--heartbeat-interval", "soon")]
)
def test_supernode_numeric_options(apps, option: str, value: str) -> None:
    d, tag = apps
    r = runner.invoke(app, ["supernode", f"good_{tag}:client", "--dir", str(d), "--insecure", option, value])
    one_line_error(r, "supernode", option)


def test_missing_app_argument() -> None:
    one_line_error(runner.invoke(app, ["supernode", "--insecure"]), "supernode", "MODULE:ATTR")
    one_line_error(runner.invoke(app, ["server-app", "--insecure"]), "server-app", "MODULE:ATTR")


# ------------------------------------------------------------------------------------ run


def test_run_refusals(apps) -> None:
    d, tag = apps
    base = ["run", f"good_{tag}:server", f"good_{tag}:client", "--dir", str(d)]
    one_line_error(runner.invoke(app, [*base, "--num-supernodes", "0"]), "run", "--num-supernodes")
    one_line_error(runner.invoke(app, [*base, "--run-config", "x"]), "run", "--run-config", "expected KEY=VALUE")
    r = runner.invoke(app, ["run", f"good_{tag}:client", f"good_{tag}:client", "--dir", str(d)])
    one_line_error(r, "run", "expected a ServerApp")
    r = runner.invoke(app, ["run", f"good_{tag}:server", f"good_{tag}:server", "--dir", str(d)])
    one_line_error(r, "run", "expected a ClientApp")
    one_line_error(runner.invoke(app, ["run", f"good_{tag}:server"]), "run", "CLIENT_APP")


def test_server_app_without_main_refused_before_connecting(apps) -> None:
    """A ServerApp with no @app.main(): one line, exit 2, before connecting (nobody listens on the port) or
    starting a link and nodes."""
    d, tag = apps
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        r = runner.invoke(
            app, ["server-app", f"good_{tag}:server", "--dir", str(d), "--insecure", "--superlink", f"127.0.0.1:{port}"]
        )
    one_line_error(r, "server-app", f"good_{tag}:server", "no main function", "@app.main()")
    r = runner.invoke(app, ["run", f"good_{tag}:server", f"good_{tag}:client", "--dir", str(d)])
    one_line_error(r, "run", "no main function")


def test_version() -> None:
    from fl_async import __version__

    r = runner.invoke(app, ["--version"])
    assert r.exit_code == 0 and r.output.strip() == f"fl-async {__version__}", r.output


@pytest.mark.parametrize(("command", "attr", "config_flag"), CLIENT_COMMANDS)
def test_client_side_address_with_scheme(apps, command: str, attr: str, config_flag: str) -> None:
    d, tag = apps
    r = runner.invoke(
        app, [command, f"good_{tag}:{attr}", "--dir", str(d), "--insecure", "--superlink", "http://127.0.0.1:19092"]
    )
    one_line_error(r, command, "--superlink", "no scheme, use HOST:PORT")


def test_unknown_command_and_help() -> None:
    r = runner.invoke(app, ["flower-superlink"])
    assert r.exit_code == 2 and len(r.output.strip().splitlines()) == 1 and "No such command" in r.output
    for command in ("superlink", "supernode", "server-app", "run"):
        r = runner.invoke(app, [command, "--help"])
        assert r.exit_code == 0, r.output
        assert "--help" in r.output


def test_every_option_has_help() -> None:
    """Every option and argument of every command carries a help text."""
    from typer.main import get_command

    group = get_command(app)
    for name, command in group.commands.items():  # type: ignore[attr-defined]
        for param in command.params:
            if param.name == "help":
                continue
            assert getattr(param, "help", None), f"{name}: {param.name} has no help"


# ----------------------------------------------------------------------- config value rule


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("true", True),
        ("FALSE", False),
        ("42", 42),
        ("-7", -7),
        ("1_000", 1000),
        ("0x1f", 31),
        ("0.5", 0.5),
        ("1e-3", 0.001),
        (".25", 0.25),
        ("007", "007"),
        ("nan", "nan"),
        ("inf", "inf"),
        ('"42"', "42"),
        ("'true'", "true"),
        ("acc.png", "acc.png"),
        ("", ""),
        ("1.2.3", "1.2.3"),
        ("1e999", "1e999"),
        ("-1e999", "-1e999"),
        ("1e308", 1e308),
        ("18446744073709551615", 2**64 - 1),  # the record integer range: [-2**63, 2**64 - 1]
        ("-9223372036854775808", -(2**63)),
    ],
)
def test_config_value_rule(text: str, value: object) -> None:
    got = parse_config_value(text)
    assert got == value and type(got) is type(value)


def test_config_pairs_split_and_quotes() -> None:
    got = parse_config_pairs(["a=1 b='x y'", "c=true"], option="--run-config")
    assert got == {"a": 1, "b": "x y", "c": True}
    with pytest.raises(CliArgumentError, match="--run-config"):
        parse_config_pairs(["   "], option="--run-config")


# ---------------------------------------------------------------------- real subprocesses


def _cli(*args: str, timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(FL_ASYNC), *args], capture_output=True, text=True, timeout=timeout)


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (
            ["superlink", "--driver-api-address", "127.0.0.1:0", "--fleet-api-address", "127.0.0.1:0"],
            "TLS certificates are required",
        ),
        (["superlink", "--insecure", "--ssl-certfile", "x.pem"], "--insecure cannot be combined"),
        (["superlink", "--ssl-ca-certfile", "ca.pem"], "incomplete TLS flags"),
        (["superlink", "--insecure", "--fleet-api-address", "nowhere"], "invalid address"),
        (["supernode", "nosuchmodule_xyz:app", "--insecure"], "not found"),
        (["supernode", "x:app", "--insecure", "--root-certificates", "ca.pem"], "--insecure cannot be combined"),
        (["server-app", "x:app", "--superlink", "127.0.0.1:9091"], "choose transport security"),
        (["server-app", "x:app", "--insecure", "--run-config", "oops"], "expected KEY=VALUE"),
        (["run", "a:b", "c:d", "--num-supernodes", "0"], "--num-supernodes"),
    ],
)
def test_refusals_as_subprocess(tmp_path: Path, args: list[str], needle: str) -> None:
    proc = subprocess.run([str(FL_ASYNC), *args], capture_output=True, text=True, timeout=30, cwd=tmp_path)
    assert proc.returncode == 2, proc
    assert proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"fl-async {args[0]}: error:"), proc.stderr
    assert needle in lines[0]


@pytest.mark.parametrize("value", ["lots", "-1"])
def test_bad_buffer_pool_environment_refused(tmp_path: Path, value: str) -> None:
    env = {**os.environ, "FL_ASYNC_BUFFER_POOL": value}
    proc = subprocess.run(
        [
            str(FL_ASYNC),
            "superlink",
            "--insecure",
            "--driver-api-address",
            "127.0.0.1:0",
            "--fleet-api-address",
            "127.0.0.1:0",
        ],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=tmp_path,
        env=env,
    )
    assert proc.returncode == 2, proc
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("fl-async superlink: error: FL_ASYNC_BUFFER_POOL="), proc.stderr


def test_python_dash_m_is_the_same_cli() -> None:
    proc = subprocess.run([sys.executable, "-m", "fl_async", "--help"], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0 and "superlink" in proc.stdout and "server-app" in proc.stdout

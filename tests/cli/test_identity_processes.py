"""Node keys and driver tokens with real processes over TLS on 127.0.0.1: ``fl-async superlink`` with an allow-list
and a token file, ``fl-async supernode`` with key pairs, ``fl-async server-app --auth-token-file``, and a
:class:`~fl_async.server.Driver` in this process. Every wait is bounded; every process is ended by its PID."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from test_cli_processes import ADDRESSES, FL_ASYNC, Proc, terminate_all_within

from fl_async._keys import load_private_key, node_id_for
from fl_async.common import MessageType, RecordSet
from fl_async.errors import NotAuthorizedError
from fl_async.server import Driver
from fl_async.testing.certs import CertFiles, write_certs, write_node_keys

APP = """
import os
from fl_async.client import ClientApp
from fl_async.common import MetricsRecord, RecordSet
from fl_async.server import ServerApp

app = ClientApp()

@app.query()
def answer(message, context):
    return message.create_reply(RecordSet(metrics_records={"m": MetricsRecord({"pid": os.getpid()})}))

server = ServerApp()

@server.main()
def main(driver, context):
    nodes = driver.wait_for_nodes(1, timeout=20)
    replies = driver.send_and_receive(
        [driver.create_message(RecordSet(), "query", n, "1") for n in nodes], timeout=20
    )
    print(f"server-app: {len(replies)} replies from nodes {sorted(r.metadata.src_node_id for r in replies)}")
"""


@pytest.fixture
def procs():
    started: list[Proc] = []
    yield started
    for p in started:  # end whatever is left, by PID
        p.kill()


def node(tmp_path: Path, fleet: str, certs: CertFiles, key: tuple[Path, Path] | None) -> Proc:
    args = ["supernode", "idapp:app", "--dir", str(tmp_path), "--superlink", fleet]
    args += ["--root-certificates", str(certs.ca_cert), "--heartbeat-interval", "2", "--verbose"]
    if key is not None:
        args += ["--auth-supernode-private-key", str(key[0]), "--auth-supernode-public-key", str(key[1])]
    return Proc(*args)


def query(driver: Driver, node_id: int, n: int) -> list[int]:
    """Send ``n`` queries to ``node_id``; the pids of the processes that answered, one per reply."""
    msgs = [driver.create_message(RecordSet(), MessageType.QUERY, node_id, "1") for _ in range(n)]
    replies = driver.send_and_receive(msgs, timeout=30)
    assert len(replies) == n and len({r.metadata.reply_to_message for r in replies}) == n
    return [int(r.content.metrics_records["m"]["pid"]) for r in replies]


def test_node_keys_and_tokens_over_tls(tmp_path: Path, procs: list[Proc]) -> None:
    (tmp_path / "idapp.py").write_text(textwrap.dedent(APP))
    certs = write_certs(tmp_path)
    key_a = write_node_keys(tmp_path, "a")
    key_b = write_node_keys(tmp_path, "b")
    (tmp_path / "keys.csv").write_text(key_a[1].read_text())
    (tmp_path / "tokens").write_text("s3cret-token\n")
    id_a = node_id_for(load_private_key(key_a[0]).public_key())

    link = Proc(
        "superlink",
        "--driver-api-address",
        "127.0.0.1:0",
        "--fleet-api-address",
        "127.0.0.1:0",
        "--blob-api-address",
        "127.0.0.1:0",
        "--ssl-ca-certfile",
        str(certs.ca_cert),
        "--ssl-certfile",
        str(certs.server_cert),
        "--ssl-keyfile",
        str(certs.server_key),
        "--auth-list-public-keys",
        str(tmp_path / "keys.csv"),
        "--driver-auth-token-file",
        str(tmp_path / "tokens"),
    )
    procs.append(link)
    driver_addr, fleet = link.wait_for(ADDRESSES).groups()

    # a key not on the allow-list: refused with a clear error, the node exits
    outsider = node(tmp_path, fleet, certs, key_b)
    procs.append(outsider)
    assert outsider.finish(timeout=30) == 1, outsider.describe()
    assert any("not on the link's allow-list" in line for line in outsider.err), outsider.describe()

    # a listed key registers and serves, under the id bound to its key
    first = node(tmp_path, fleet, certs, key_a)
    procs.append(first)
    first.wait_for(rf"node {id_a}: registered")

    with pytest.raises(NotAuthorizedError, match="requires a driver token"):
        Driver(driver_addr, root_certificates=certs.ca_cert)
    with Driver(driver_addr, root_certificates=certs.ca_cert, auth_token="s3cret-token") as driver:
        assert driver.get_node_ids() == [id_a]
        assert set(query(driver, id_a, 3)) == {first.popen.pid}

        # a second live process with the same key: refused while the first is online, every message reaches
        # exactly one process exactly once
        second = node(tmp_path, fleet, certs, key_a)
        procs.append(second)
        second.wait_for("already online")
        assert set(query(driver, id_a, 10)) == {first.popen.pid}
        assert driver.get_node_ids() == [id_a]

        # the first exits: the second registers under the same id and is listed once
        terminate_all_within([first], 5.0)
        second.wait_for(rf"node {id_a}: registered", timeout=30)
        assert driver.get_node_ids() == [id_a]
        assert set(query(driver, id_a, 5)) == {second.popen.pid}

        # restarted with the same key: the same id again
        terminate_all_within([second], 5.0)
        third = node(tmp_path, fleet, certs, key_a)
        procs.append(third)
        third.wait_for(rf"node {id_a}: registered", timeout=30)
        assert driver.get_node_ids() == [id_a]

    # fl-async server-app with --auth-token-file
    app = Proc(
        "server-app",
        "idapp:server",
        "--dir",
        str(tmp_path),
        "--superlink",
        driver_addr,
        "--root-certificates",
        str(certs.ca_cert),
        "--auth-token-file",
        str(tmp_path / "tokens"),
    )
    procs.append(app)
    assert app.finish(timeout=60) == 0, app.describe()
    assert f"server-app: 1 replies from nodes [{id_a}]" in app.out, app.describe()

    # the key leaves the allow-list, SIGHUP: the node is disconnected, refused when it registers again, and exits
    (tmp_path / "keys.csv").write_text(key_b[1].read_text())
    link.popen.send_signal(signal.SIGHUP)
    assert third.finish(timeout=30) == 1, third.describe()
    assert any("not on the link's allow-list" in line for line in third.err), third.describe()
    link.wait_for(r"allow-list reloaded: 1 key\(s\); 1 node\(s\) disconnected")
    terminate_all_within([link], 5.0)


def test_key_with_insecure_exits_2_before_connecting(tmp_path: Path) -> None:
    priv, pub = write_node_keys(tmp_path)
    args = ["supernode", "idapp:app", "--superlink", "127.0.0.1:1", "--insecure"]
    args += ["--auth-supernode-private-key", str(priv), "--auth-supernode-public-key", str(pub)]
    done = subprocess.run([FL_ASYNC, *args], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, done
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "--insecure" in lines[0] and "--auth-supernode-private-key" in lines[0], lines


def test_superlink_help_shows_the_loopback_driver_default() -> None:
    done = subprocess.run([FL_ASYNC, "superlink", "--help"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0
    assert re.search(r"127\.0\.0\.1:9091", done.stdout), done.stdout
    assert sys.executable  # the fl-async next to this interpreter ran

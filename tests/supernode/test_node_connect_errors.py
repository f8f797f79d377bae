"""SuperNode facing a link it cannot use: a TLS mismatch gets one WARNING with a hint (and the node keeps retrying),
the Driver API port is fatal at once (in-process and ``fl-async supernode``, exit 1, one line)."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import anyio
import pytest

from fl_async._net import ServerTLS
from fl_async.client import ClientApp
from fl_async.errors import RefusedByLinkError
from fl_async.supernode import SuperNode
from fl_async.testing.certs import make_certs, write_certs

HINT = "hint:"


async def _hints_after_retries(caplog, node: SuperNode, retries: int = 3) -> list[str]:
    """Wait until the node failed ``retries`` times; return the messages of its warnings that carry a hint."""
    with anyio.fail_after(15):
        while sum("not usable" in r.getMessage() for r in caplog.records) < retries:
            await anyio.sleep(0.02)
    assert node.node_id is None
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and HINT in r.getMessage()]


async def test_plaintext_node_against_tls_link_warns_once_with_a_hint(superlink_factory, tmp_path, caplog) -> None:
    files = write_certs(tmp_path)
    link = await superlink_factory(tls=ServerTLS(files.ca_cert, files.server_cert, files.server_key))
    caplog.set_level(logging.WARNING, logger="fl_async.supernode")
    async with SuperNode(ClientApp(), link.fleet_address, insecure=True, max_backoff=0.05) as node:
        hints = await _hints_after_retries(caplog, node)
    assert len(hints) == 1, hints
    assert "uses TLS" in hints[0] and "root_certificates" in hints[0]


async def test_wrong_ca_warns_once_with_a_hint(superlink_factory, tmp_path, caplog) -> None:
    files = write_certs(tmp_path)
    link = await superlink_factory(tls=ServerTLS(files.ca_cert, files.server_cert, files.server_key))
    caplog.set_level(logging.WARNING, logger="fl_async.supernode")
    other_ca = make_certs(common_name="another CA").ca_cert
    async with SuperNode(ClientApp(), link.fleet_address, root_certificates=other_ca, max_backoff=0.05) as node:
        hints = await _hints_after_retries(caplog, node)
    assert len(hints) == 1, hints
    assert "CA that signed" in hints[0]


async def test_tls_node_against_plaintext_link_warns_once_with_a_hint(superlink, tmp_path, caplog) -> None:
    files = write_certs(tmp_path)
    caplog.set_level(logging.WARNING, logger="fl_async.supernode")
    async with SuperNode(
        ClientApp(), superlink.fleet_address, root_certificates=files.ca_cert, max_backoff=0.05
    ) as node:
        hints = await _hints_after_retries(caplog, node)
    assert len(hints) == 1, hints
    assert "plaintext" in hints[0] and "insecure" in hints[0]


async def test_link_not_up_yet_gets_no_tls_hint(caplog) -> None:
    from tests.node_driver import free_port

    caplog.set_level(logging.WARNING, logger="fl_async.supernode")
    async with SuperNode(ClientApp(), f"127.0.0.1:{free_port()}", insecure=True, max_backoff=0.05) as node:
        assert await _hints_after_retries(caplog, node) == []


async def test_node_pointed_at_the_driver_api_stops_with_a_hint(superlink, caplog) -> None:
    caplog.set_level(logging.WARNING, logger="fl_async.supernode")
    node = SuperNode(ClientApp(), superlink.driver_address, insecure=True, max_backoff=0.05)
    with anyio.fail_after(5), pytest.raises(RefusedByLinkError, match="UNIMPLEMENTED") as info:
        await node.run()
    assert "Fleet API" in str(info.value)
    assert not any("not usable" in r.getMessage() for r in caplog.records)  # no retry


def test_cli_supernode_pointed_at_the_driver_api_exits_1_with_one_line(tmp_path) -> None:
    import asyncio

    from fl_async.superlink import LinkConfig, SuperLink
    from tests.conftest import TEST_LINK_DEFAULTS

    (tmp_path / "capp.py").write_text("from fl_async.client import ClientApp\napp = ClientApp()\n")
    fl_async = str(Path(sys.executable).with_name("fl-async"))

    async def main() -> subprocess.CompletedProcess[str]:
        async with SuperLink(LinkConfig(**TEST_LINK_DEFAULTS)) as link:
            proc = await asyncio.create_subprocess_exec(
                fl_async,
                "supernode",
                "capp:app",
                "--dir",
                str(tmp_path),
                "--insecure",
                "--superlink",
                link.driver_address,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
            )
            try:
                out, err = await asyncio.wait_for(proc.communicate(), 30)
            finally:
                if proc.returncode is None:
                    proc.kill()
                    await proc.wait()
            return subprocess.CompletedProcess([], proc.returncode or 0, out.decode(), err.decode())

    done = asyncio.run(main())
    assert done.returncode == 1, done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("fl-async supernode: error:")]
    assert len(errors) == 1, done.stderr
    assert "UNIMPLEMENTED" in errors[0] and "Fleet API" in errors[0]
    assert "Traceback" not in done.stderr

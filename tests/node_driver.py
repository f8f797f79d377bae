"""Process helpers for SuperNode tests: free ports, a SuperLink in a child process, a TCP proxy that can cut
connections. The raw driver double is :class:`fl_async.testing.wire.RawDriver`."""

from __future__ import annotations

from typing import Any

import anyio

from fl_async._net import parse_address

# ---------------------------------------------------------------------------- processes


def free_port() -> int:
    """A port on 127.0.0.1 that nothing listens on right now."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


LINK_PROCESS = """
import logging, sys, anyio
logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(name)s %(message)s")
from fl_async.superlink import LinkConfig, serve
cfg = LinkConfig(driver_api_address=sys.argv[1], fleet_api_address=sys.argv[2], max_poll_timeout=5.0,
                 min_heartbeat_interval=0.01, blob_api_address="127.0.0.1:0")
anyio.run(serve, cfg)
"""
"""A SuperLink process: ``python -c LINK_PROCESS DRIVER_ADDR FLEET_ADDR`` (SIGTERM stops it)."""


async def spawn(code: str, *args: str, log_path: Any) -> anyio.abc.Process:
    """Start ``python -c code args...`` with stdout+stderr going to ``log_path``."""
    import os
    import subprocess
    import sys

    log = open(log_path, "wb")  # noqa: SIM115 - closed by the child's exit; the parent keeps no reader
    try:
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        return await anyio.open_process(
            [sys.executable, "-c", code, *args], stdout=log, stderr=subprocess.STDOUT, env=env, cwd=os.getcwd()
        )
    finally:
        log.close()


async def wait_for_text(path: Any, text: str, timeout: float = 20.0, *, count: int = 1) -> None:
    """Wait until ``path`` contains ``text`` (``count`` times), polling the file within ``timeout``."""
    from pathlib import Path

    with anyio.fail_after(timeout):
        while Path(path).read_text(errors="replace").count(text) < count:
            await anyio.sleep(0.02)


async def end_process(proc: anyio.abc.Process, timeout: float = 5.0) -> None:
    """SIGTERM the process (by its PID), then SIGKILL if it has not exited within ``timeout``."""
    if proc.returncode is None:
        proc.terminate()
        with anyio.move_on_after(timeout):
            await proc.wait()
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


class TcpProxy:
    """A real TCP forwarder ``127.0.0.1:port -> target`` whose link can be cut and restored (network blip).

    ``cut()`` stops listening and aborts every connection (both sides see a reset); ``restore()`` listens
    again on the same port.
    """

    def __init__(self, target: str) -> None:
        self.target = parse_address(target)
        self.port = 0
        self._server: Any = None
        self._writers: set[Any] = set()

    async def start(self) -> TcpProxy:
        import asyncio

        self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port, reuse_address=True)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def _handle(self, reader: Any, writer: Any) -> None:
        import asyncio

        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.transport.abort()
            return
        self._writers |= {writer, up_writer}

        async def pipe(src: Any, dst: Any) -> None:
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            except (OSError, asyncio.IncompleteReadError):
                pass
            finally:
                dst.transport.abort()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        self._writers -= {writer, up_writer}

    async def cut(self) -> None:
        self._server.close()
        for w in list(self._writers):
            w.transport.abort()
        self._writers.clear()

    async def restore(self) -> None:
        await self.start()

    async def aclose(self) -> None:
        await self.cut()

"""A minimal driver over the raw Driver API stub, for SuperNode tests (independent of the Driver SDK).

Every wait is a link-side long-poll bounded by ``anyio.fail_after``.
"""

from __future__ import annotations

from typing import Any

import anyio
from grpclib.client import Channel

from fl_async._net import parse_address
from fl_async.codec import config_to_proto, message_from_proto, message_to_proto
from fl_async.common import Message, Metadata, RecordSet
from fl_async.proto.fl_async import v1 as pb


class RawDriver:
    """Driver API calls for tests. Create inside the running event loop; use as an async context manager."""

    def __init__(self, address: str) -> None:
        host, port = parse_address(address)
        self.channel = Channel(host, port)
        self.stub = pb.DriverStub(self.channel)

    async def __aenter__(self) -> RawDriver:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.channel.close()

    async def create_run(self, run_config: dict[str, Any] | None = None) -> int:
        resp = await self.stub.create_run(pb.CreateRunRequest(run_config=config_to_proto(run_config or {})), timeout=5)
        return resp.run_id

    async def node_ids(self, run_id: int) -> list[int]:
        return list((await self.stub.get_nodes(pb.GetNodesRequest(run_id=run_id), timeout=5)).node_ids)

    async def wait_for_nodes(self, run_id: int, n: int, timeout: float = 10.0) -> list[int]:
        with anyio.fail_after(timeout):
            while True:
                resp = await self.stub.wait_for_nodes(
                    pb.WaitForNodesRequest(run_id=run_id, min_nodes=n, timeout=1.0), timeout=6
                )
                if len(resp.node_ids) >= n:
                    return list(resp.node_ids)

    async def push(
        self,
        run_id: int,
        node_id: int,
        message_type: str = "train",
        content: RecordSet | None = None,
        *,
        ttl: float = 60.0,
        group_id: str = "g",
    ) -> str:
        md = Metadata(
            run_id=run_id,
            message_id="",
            src_node_id=0,
            dst_node_id=node_id,
            reply_to_message="",
            group_id=group_id,
            ttl=ttl,
            message_type=message_type,
        )
        msg = Message(md, content=content if content is not None else RecordSet())
        resp = await self.stub.push_messages(
            pb.PushMessagesRequest(run_id=run_id, messages=[message_to_proto(msg)]), timeout=5
        )
        assert resp.message_ids[0], f"push refused: {list(resp.reasons)}"
        return resp.message_ids[0]

    async def pull(self, run_id: int, message_ids: list[str], timeout: float) -> list[Message]:
        resp = await self.stub.pull_messages(
            pb.PullMessagesRequest(run_id=run_id, message_ids=message_ids, timeout=timeout), timeout=timeout + 5
        )
        return [message_from_proto(m) for m in resp.messages]

    async def replies(self, run_id: int, message_ids: list[str], timeout: float = 10.0) -> dict[str, Message]:
        """Long-poll until every id has its reply (keyed by ``reply_to_message``)."""
        got: dict[str, Message] = {}
        with anyio.fail_after(timeout):
            while len(got) < len(message_ids):
                missing = [i for i in message_ids if i not in got]
                for m in await self.pull(run_id, missing, timeout=1.0):
                    got[m.metadata.reply_to_message] = m
        return got

    async def reply(self, run_id: int, message_id: str, timeout: float = 10.0) -> Message:
        return (await self.replies(run_id, [message_id], timeout))[message_id]


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

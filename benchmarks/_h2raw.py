"""A raw HTTP/2 gRPC client for attacks on the link: requests that declare one size and send less, and stall.

grpclib's client always sends whole messages; this one writes the 5-byte gRPC frame header and any prefix of the
body, respecting HTTP/2 flow control, then stops. Loopback only (tests and ``benchmarks.attack``).
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
from collections.abc import Sequence

import h2.config
import h2.connection
import h2.events

__all__ = ["RawH2"]


class RawH2:
    """One plaintext HTTP/2 connection speaking just enough gRPC to start calls and read their statuses.

    Attributes:
        status: stream id -> ``(grpc-status, grpc-message)`` once the link answered it (trailers or reset).
    """

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding="utf-8"))
        self.status: dict[int, tuple[str, str]] = {}
        self.closed = False
        self._window = asyncio.Event()
        self._answered = asyncio.Event()
        self._pump: asyncio.Task[None] | None = None

    @classmethod
    async def connect(cls, host: str, port: int) -> RawH2:
        """Open the connection and start reading its events."""
        reader, writer = await asyncio.open_connection(host, port)
        self = cls(reader, writer)
        self.conn.initiate_connection()
        self.conn.increment_flow_control_window(2**30)
        self._flush()
        self._pump = asyncio.create_task(self._read())
        return self

    def _flush(self) -> None:
        data = self.conn.data_to_send()
        if data and not self.writer.is_closing():
            self.writer.write(data)

    async def _read(self) -> None:
        try:
            while True:
                data = await self.reader.read(65536)
                if not data:
                    break
                for event in self.conn.receive_data(data):
                    if isinstance(event, h2.events.TrailersReceived | h2.events.ResponseReceived):
                        headers = dict(event.headers)
                        if "grpc-status" in headers:
                            self.status[event.stream_id] = (headers["grpc-status"], headers.get("grpc-message", ""))
                    elif isinstance(event, h2.events.StreamReset):
                        self.status.setdefault(event.stream_id, ("reset", str(event.error_code)))
                    elif isinstance(event, h2.events.DataReceived):
                        self.conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
                    elif isinstance(event, h2.events.WindowUpdated):
                        self._window.set()
                self._answered.set()
                self._flush()
        except (ConnectionError, h2.exceptions.ProtocolError):
            pass
        finally:
            self.closed = True
            self._window.set()
            self._answered.set()

    def start(self, path: str, metadata: Sequence[tuple[str, str]] = ()) -> int:
        """Send the headers of a unary call to ``path``; returns the stream id."""
        sid = self.conn.get_next_available_stream_id()
        headers = [
            (":method", "POST"),
            (":scheme", "http"),
            (":path", path),
            (":authority", "127.0.0.1"),
            ("content-type", "application/grpc+proto"),
            ("te", "trailers"),
            *metadata,
        ]
        self.conn.send_headers(sid, headers)
        self._flush()
        return sid

    async def send(self, sid: int, data: bytes, *, end: bool = False, within: float = 30.0) -> int:
        """Send ``data`` on stream ``sid`` as flow control allows, within ``within`` s; returns bytes sent."""
        view = memoryview(data)
        sent = 0
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        while sent < len(view) and not self.closed and sid not in self.status:
            try:
                window = min(self.conn.local_flow_control_window(sid), self.conn.max_outbound_frame_size)
            except (h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError):
                break
            if window <= 0:
                self._window.clear()
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                try:
                    await asyncio.wait_for(self._window.wait(), remaining)
                except TimeoutError:
                    break
                continue
            chunk = view[sent : sent + window]
            self.conn.send_data(sid, bytes(chunk))
            sent += len(chunk)
            self._flush()
            await self.writer.drain()
        if end and not self.closed and sid not in self.status:
            self.conn.end_stream(sid)
            self._flush()
        return sent

    async def call_prefix(
        self, path: str, declared: int, prefix: bytes, metadata: Sequence[tuple[str, str]] = (), within: float = 30.0
    ) -> tuple[int, int]:
        """Start a call whose gRPC frame declares ``declared`` body bytes and send ``prefix`` of it (no end);
        returns ``(stream id, bytes of prefix sent)``."""
        sid = self.start(path, metadata)
        sent = await self.send(sid, struct.pack(">?I", False, declared) + prefix, within=within)
        return sid, max(0, sent - 5)

    async def wait_status(self, sid: int, within: float) -> tuple[str, str] | None:
        """The stream's ``(grpc-status, grpc-message)`` once answered, or ``None`` after ``within`` s."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        while sid not in self.status and not self.closed and loop.time() < deadline:
            self._answered.clear()
            try:
                await asyncio.wait_for(self._answered.wait(), deadline - loop.time())
            except TimeoutError:
                break
        return self.status.get(sid)

    async def close(self) -> None:
        """Close the connection."""
        if self._pump is not None:
            self._pump.cancel()
        self.writer.close()
        with contextlib.suppress(ConnectionError, OSError):
            await self.writer.wait_closed()

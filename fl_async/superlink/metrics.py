"""Prometheus metrics of a SuperLink (``--metrics-address``), with ``prometheus-client``.

Cheap by construction: counters and histograms are updated on the state's transitions (a push accepted, an
instruction handed out, a reply stored: see :class:`~fl_async.superlink.events.LinkEvents`) and after each RPC;
every gauge (nodes online, runs, queue depths, connections, blob store size) is computed from the link's state
when ``/metrics`` is scraped, by a custom collector, so nothing is updated per message for them.

The HTTP endpoint is prometheus-client's own server (a thread); a scrape reads the link's state on the link's
event loop (``run_coroutine_threadsafe``), never from the server's thread. See ``docs/operations.md`` for the
metric reference.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from fl_async._net import format_address, parse_address
from fl_async.common.message import ErrorCode
from fl_async.proto.fl_async import v1 as pb
from fl_async.superlink.store import InstructionRecord

if TYPE_CHECKING:
    from fl_async.superlink.link import SuperLink

__all__ = ["MAX_RUN_SERIES", "LinkMetrics"]

MAX_RUN_SERIES = 50
"""Most runs given their own ``run`` label on the per-run gauges (those with the most stored instructions);
the rest are summed under ``run="other"``, so a long-lived link's series stay bounded."""

_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
_ROUND_TRIP_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)
_SCRAPE_TIMEOUT = 5.0
"""Seconds a scrape waits for the link's event loop to compute the gauges."""


class LinkMetrics:
    """Counters and histograms of one link, and the collector of its gauges, in a registry of their own.

    Implements :class:`~fl_async.superlink.events.LinkEvents` (the state calls it) and the RPC observer of
    :class:`~fl_async.superlink.wire.CallTracker`. :meth:`attach` binds it to a started link's state, loop and
    servers; :meth:`serve` starts the HTTP endpoint.

    Attributes:
        registry: the ``CollectorRegistry`` holding every fl-async metric of this link (one per link, so that
            several links in one process do not clash).
    """

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.pushed_total = Counter("fl_async_messages_pushed", "Instructions accepted from drivers.", registry=r)
        self.delivered_total = Counter("fl_async_messages_delivered", "Instructions handed to nodes.", registry=r)
        self.replied = Counter("fl_async_messages_replied", "Replies received from nodes and stored.", registry=r)
        self.expired = Counter("fl_async_messages_expired", "Instructions whose TTL ran out unanswered.", registry=r)
        self.cancelled = Counter(
            "fl_async_messages_cancelled", "Instructions cancelled by a driver or a stopped run.", registry=r
        )
        self.error_replies = Counter(
            "fl_async_error_replies", "Error replies stored (from nodes or the link), by code.", ["code"], registry=r
        )
        self.runs_created = Counter("fl_async_runs_created", "Runs created.", registry=r)
        self.runs_stopped = Counter("fl_async_runs_stopped", "Runs stopped by an operator.", registry=r)
        self.node_registrations = Counter("fl_async_node_registrations", "Node registrations.", registry=r)
        self.node_departures = Counter(
            "fl_async_node_departures", "Nodes that unregistered or went offline.", registry=r
        )
        self.limit_hits = Counter(
            "fl_async_limit_hits", "Requests refused by a configured limit, by limit.", ["limit"], registry=r
        )
        self.rpc_duration = Histogram(
            "fl_async_rpc_duration_seconds",
            "Duration of gRPC calls handled by the link (long-polls include their hold time), by method and status.",
            ["method", "status"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.round_trip = Histogram(
            "fl_async_round_trip_seconds",
            "From a driver's push being accepted to the node's reply being stored.",
            buckets=_ROUND_TRIP_BUCKETS,
            registry=r,
        )
        self._link: SuperLink | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: Any = None
        self._thread: threading.Thread | None = None
        self.address: str | None = None
        """``"HOST:PORT"`` the endpoint listens on (after :meth:`serve`)."""
        r.register(_GaugeCollector(self))

    # ------------------------------------------------------------------------------ LinkEvents
    def run_created(self, run_id: int) -> None:
        """Count a run."""
        self.runs_created.inc()

    def run_stopped(self, run_id: int, cancelled: int) -> None:
        """Count a stopped run."""
        self.runs_stopped.inc()

    def node_registered(self, node_id: int) -> None:
        """Count a registration."""
        self.node_registrations.inc()

    def node_left(self, node_id: int) -> None:
        """Count a departure."""
        self.node_departures.inc()

    def pushed(self, count: int) -> None:
        """Count accepted instructions."""
        if count:
            self.pushed_total.inc(count)

    def delivered(self, count: int) -> None:
        """Count instructions handed to nodes."""
        if count:
            self.delivered_total.inc(count)

    def answered(self, instruction: InstructionRecord, reply: pb.Message, by_link: bool, now: float) -> None:
        """Count a stored reply (by kind and error code); observe the round trip of a node's reply."""
        err = reply.error
        if err is not None:
            self.error_replies.labels(ErrorCode.name(err.code)).inc()
            if err.code == ErrorCode.MESSAGE_EXPIRED and by_link:
                self.expired.inc()
            elif err.code == ErrorCode.CANCELLED and by_link:
                self.cancelled.inc()
        if not by_link:
            self.replied.inc()
            if instruction.pushed_at:
                self.round_trip.observe(max(0.0, now - instruction.pushed_at))

    def limit_hit(self, limit: str) -> None:
        """Count a refusal by ``limit``."""
        self.limit_hits.labels(limit).inc()

    # ------------------------------------------------------------------------------ RPC observer
    def observe_rpc(self, method: str, seconds: float, status: str) -> None:
        """Record one RPC (``CallTracker.observe``); RESOURCE_EXHAUSTED counts as a hit of ``max_request_bytes``."""
        self.rpc_duration.labels(method, status).observe(seconds)
        if status == "RESOURCE_EXHAUSTED":
            self.limit_hits.labels("max_request_bytes").inc()

    # ------------------------------------------------------------------------------ lifecycle
    def attach(self, link: SuperLink) -> None:
        """Read gauges from ``link`` (call from its event loop, once it is started)."""
        self._link = link
        self._loop = asyncio.get_running_loop()

    def serve(self, address: str) -> str:
        """Start the HTTP endpoint (``GET /metrics``) on ``address`` (``"HOST:PORT"``, port 0: any free port).

        Returns:
            The bound ``"HOST:PORT"``.

        Raises:
            OSError: the address cannot be bound.
            ValueError: the address is malformed.
        """
        host, port = parse_address(address)
        self._server, self._thread = start_http_server(port, addr=host, registry=self.registry)
        self.address = format_address(host, self._server.server_port)
        return self.address

    def close(self) -> None:
        """Stop the HTTP endpoint (idempotent)."""
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=2.0)
            self._thread = None

    # ------------------------------------------------------------------------------ gauges
    def _gauges(self) -> list[GaugeMetricFamily | CounterMetricFamily]:
        """Compute the gauge families from the link's state (on the link's loop)."""
        link = self._link
        families: list[GaugeMetricFamily | CounterMetricFamily] = []
        if link is None:
            return families
        stats = link.state.stats()
        nodes = GaugeMetricFamily("fl_async_nodes_online", "Nodes registered and online.")
        nodes.add_metric([], stats.nodes)
        runs = GaugeMetricFamily("fl_async_runs", "Runs held by the link, by state.", labels=["state"])
        stopped = sum(1 for run in link.state.store.runs() if run.stopped)
        runs.add_metric(["active"], stats.runs - stopped)
        runs.add_metric(["stopped"], stopped)
        messages = GaugeMetricFamily("fl_async_messages", "Instructions held by the link, by state.", labels=["state"])
        messages.add_metric(["queued"], stats.queued)
        messages.add_metric(["in_flight"], stats.in_flight)
        messages.add_metric(["answered"], stats.replies)
        per_run = GaugeMetricFamily(
            "fl_async_run_messages",
            f'Instructions held by the link per run (top {MAX_RUN_SERIES} runs; the rest as run="other"), by state.',
            labels=["run", "state"],
        )
        counts = link.control.run_counts()
        ranked = sorted(counts.items(), key=lambda item: -sum(item[1]))
        other = [0, 0, 0]
        for i, (run_id, row) in enumerate(ranked):
            if i >= MAX_RUN_SERIES:
                other = [a + b for a, b in zip(other, row, strict=True)]
                continue
            for state, value in zip(("queued", "in_flight", "answered"), row, strict=True):
                per_run.add_metric([str(run_id), state], value)
        if len(ranked) > MAX_RUN_SERIES:
            for state, value in zip(("queued", "in_flight", "answered"), other, strict=True):
                per_run.add_metric(["other", state], value)
        conns = GaugeMetricFamily("fl_async_connections_open", "HTTP/2 connections open on the gRPC APIs.")
        conns.add_metric([], link.connections_open)
        families += [nodes, runs, messages, per_run, conns]
        blobs = link.blobs
        if blobs is not None:
            st = blobs.statistics()
            held = GaugeMetricFamily("fl_async_blob_store_bytes", "Bytes of payload buffers held by the blob store.")
            held.add_metric([], st.bytes_held)
            count = GaugeMetricFamily("fl_async_blob_store_blobs", "Blobs held by the blob store.")
            count.add_metric([], st.blobs)
            families += [held, count]
            server = blobs.server
            if server is not None:
                moved = CounterMetricFamily(
                    "fl_async_blob_bytes",
                    "Payload bytes moved on the blob data path, by direction.",
                    labels=["direction"],
                )
                moved.add_metric(["in"], server.bytes_in)
                moved.add_metric(["out"], server.bytes_out)
                too_large = CounterMetricFamily(
                    "fl_async_blob_uploads_too_large", "Blob uploads refused for exceeding a size limit."
                )
                too_large.add_metric([], server.too_large)
                families += [moved, too_large]
        return families

    def snapshot(self) -> list[GaugeMetricFamily | CounterMetricFamily]:
        """The gauge families, computed on the link's event loop (from any thread); empty before :meth:`attach`
        or if the loop does not answer within a few seconds."""
        loop = self._loop
        if loop is None or loop.is_closed():
            return []
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            return self._gauges()

        async def compute() -> list[GaugeMetricFamily | CounterMetricFamily]:
            return self._gauges()

        try:
            return asyncio.run_coroutine_threadsafe(compute(), loop).result(timeout=_SCRAPE_TIMEOUT)
        except Exception:
            return []


class _GaugeCollector(Collector):
    """Yields :meth:`LinkMetrics.snapshot` at every scrape."""

    def __init__(self, metrics: LinkMetrics) -> None:
        self._metrics = metrics

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        yield from self._metrics.snapshot()

    def describe(self) -> list[Any]:
        return []  # computed at scrape time; nothing to check at registration

"""Prometheus metrics of a SuperLink (``--metrics-address``), with ``prometheus-client``.

Cheap by construction: counters and histograms are plain numbers updated on the state's transitions (a push
accepted, an instruction handed out, a reply stored: see :class:`~fl_async.superlink.events.LinkEvents`) and after
each RPC, on the link's event loop, without locks; every gauge (nodes online, runs, queue depths, connections,
blob store size) is computed from the link's state when ``/metrics`` is scraped, by a custom collector, which also
turns the counters into Prometheus families.

The HTTP endpoint is prometheus-client's own server (a thread); a scrape reads the link's state on the link's
event loop (``run_coroutine_threadsafe``), never from the server's thread. See ``docs/operations.md`` for the
metric reference.
"""

from __future__ import annotations

import asyncio
import bisect
import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

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
_COUNTERS = {
    "messages_pushed": "Instructions accepted from drivers.",
    "messages_delivered": "Instructions handed to nodes.",
    "messages_replied": "Replies received from nodes and stored.",
    "messages_expired": "Instructions whose TTL ran out unanswered.",
    "messages_cancelled": "Instructions cancelled by a driver or a stopped run.",
    "runs_created": "Runs created.",
    "runs_stopped": "Runs stopped by an operator.",
    "node_registrations": "Node registrations.",
    "node_departures": "Nodes that unregistered or went offline.",
}
_SCRAPE_TIMEOUT = 5.0
"""Seconds a scrape waits for the link's event loop to compute the gauges."""


class _Hist:
    """A histogram kept as plain numbers on the link's loop (no locks): per-bucket counts and the sum."""

    __slots__ = ("bounds", "counts", "total")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # last: above every bound (+Inf)
        self.total = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1  # bucket le=b holds values <= b
        self.total += value

    def buckets(self) -> list[tuple[str, float]]:
        """Cumulative ``(le, count)`` pairs, as the Prometheus text format wants them."""
        out, running = [], 0
        for bound, count in zip((*map(floatToGoString, self.bounds), "+Inf"), self.counts, strict=True):
            running += count
            out.append((bound, float(running)))
        return out


class LinkMetrics:
    """The counters and histograms of one link, and the collector exposing them with its gauges, in a
    ``CollectorRegistry`` of its own.

    Counters and histograms are plain numbers updated on the link's event loop (no lock, no label lookup per
    message; a hook costs well under a microsecond) and turned into Prometheus families at scrape time, together
    with the gauges read from the state. Implements :class:`~fl_async.superlink.events.LinkEvents` (the state
    calls it) and the RPC observer of :class:`~fl_async.superlink.rpc.CallTracker`. :meth:`attach` binds it to a
    started link; :meth:`serve` starts the HTTP endpoint.

    Attributes:
        registry: the registry holding every fl-async metric of this link (one per link, so that several links
            in one process do not clash).
        counts: counter name (without ``_total``) -> value, for the unlabelled counters.
    """

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.counts: dict[str, int] = dict.fromkeys(_COUNTERS, 0)
        self.error_replies: dict[str, int] = {}
        self.limit_hits: dict[str, int] = {}
        self.rpc: dict[tuple[str, str], _Hist] = {}
        self.round_trip = _Hist(_ROUND_TRIP_BUCKETS)
        self._link: SuperLink | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: Any = None
        self._thread: threading.Thread | None = None
        self.address: str | None = None
        """``"HOST:PORT"`` the endpoint listens on (after :meth:`serve`)."""
        self.registry.register(_Collector(self))

    # ------------------------------------------------------------------------------ LinkEvents
    def run_created(self, run_id: int) -> None:
        """Count a run."""
        self.counts["runs_created"] += 1

    def run_stopped(self, run_id: int, cancelled: int) -> None:
        """Count a stopped run."""
        self.counts["runs_stopped"] += 1

    def node_registered(self, node_id: int) -> None:
        """Count a registration."""
        self.counts["node_registrations"] += 1

    def node_left(self, node_id: int) -> None:
        """Count a departure."""
        self.counts["node_departures"] += 1

    def pushed(self, count: int) -> None:
        """Count accepted instructions."""
        self.counts["messages_pushed"] += count

    def delivered(self, count: int) -> None:
        """Count instructions handed to nodes."""
        self.counts["messages_delivered"] += count

    def answered(self, instruction: InstructionRecord, reply: pb.Message, by_link: bool, now: float) -> None:
        """Count a stored reply (by kind and error code); observe the round trip of a node's reply."""
        err = reply.error
        if err is not None:
            name = ErrorCode.name(err.code)
            self.error_replies[name] = self.error_replies.get(name, 0) + 1
            if by_link and err.code == ErrorCode.MESSAGE_EXPIRED:
                self.counts["messages_expired"] += 1
            elif by_link and err.code == ErrorCode.CANCELLED:
                self.counts["messages_cancelled"] += 1
        if not by_link:
            self.counts["messages_replied"] += 1
            if instruction.pushed_at:
                self.round_trip.observe(max(0.0, now - instruction.pushed_at))

    def limit_hit(self, limit: str) -> None:
        """Count a refusal by ``limit``."""
        self.limit_hits[limit] = self.limit_hits.get(limit, 0) + 1

    # ------------------------------------------------------------------------------ RPC observer
    def observe_rpc(self, method: str, seconds: float, status: str) -> None:
        """Record one RPC (``CallTracker.observe``); RESOURCE_EXHAUSTED counts as a hit of ``max_request_bytes``."""
        hist = self.rpc.get((method, status))
        if hist is None:
            hist = self.rpc[(method, status)] = _Hist(_LATENCY_BUCKETS)
        hist.observe(seconds)
        if status == "RESOURCE_EXHAUSTED":
            self.limit_hit("max_request_bytes")

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
    def _counters(self) -> list[Metric]:
        """The counter and histogram families (read on the link's loop)."""
        families: list[Metric] = []
        for key, help_text in _COUNTERS.items():
            family = CounterMetricFamily(f"fl_async_{key}", help_text)
            family.add_metric([], self.counts[key])
            families.append(family)
        for name, help_text, label, values in (
            (
                "fl_async_error_replies",
                "Error replies stored (from nodes or the link), by code.",
                "code",
                self.error_replies,
            ),
            ("fl_async_limit_hits", "Requests refused by a configured limit, by limit.", "limit", self.limit_hits),
        ):
            family = CounterMetricFamily(name, help_text, labels=[label])
            for value, count in sorted(values.items()):
                family.add_metric([value], count)
            families.append(family)
        rpc = HistogramMetricFamily(
            "fl_async_rpc_duration_seconds",
            "Duration of gRPC calls handled by the link (long-polls include their hold time), by method and status.",
            labels=["method", "status"],
        )
        for (method, status), hist in sorted(self.rpc.items()):
            rpc.add_metric([method, status], hist.buckets(), hist.total)
        trip = HistogramMetricFamily(
            "fl_async_round_trip_seconds", "From a driver's push being accepted to the node's reply being stored."
        )
        trip.add_metric([], self.round_trip.buckets(), self.round_trip.total)
        return [*families, rpc, trip]

    def _gauges(self) -> list[Metric]:
        """Compute every family: counters, histograms and the gauges read from the link's state (on its loop)."""
        link = self._link
        families = self._counters()
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

    def snapshot(self) -> list[Metric]:
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

        async def compute() -> list[Metric]:
            return self._gauges()

        try:
            return asyncio.run_coroutine_threadsafe(compute(), loop).result(timeout=_SCRAPE_TIMEOUT)
        except Exception:
            return []


class _Collector(Collector):
    """Yields :meth:`LinkMetrics.snapshot` at every scrape."""

    def __init__(self, metrics: LinkMetrics) -> None:
        self._metrics = metrics

    def collect(self) -> Iterator[Metric]:
        yield from self._metrics.snapshot()

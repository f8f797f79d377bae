"""What the link state reports about its transitions, for counters and logs (:class:`LinkEvents`).

The state calls these hooks synchronously on the transitions themselves (a push accepted, an instruction handed
to a node, a reply stored, a node registered or gone, a limit hit), so an observer such as
:class:`~fl_async.superlink.metrics.LinkMetrics` keeps counters without reading per-message state on a scrape.
Hooks must be cheap and must not raise.
"""

from __future__ import annotations

from typing import Protocol

from fl_async.proto.fl_async import v1 as pb
from fl_async.superlink.store import InstructionRecord

__all__ = ["LinkEvents", "NullEvents"]


class LinkEvents(Protocol):
    """Observer of the link state's transitions (all times are the link clock's Unix seconds)."""

    def run_created(self, run_id: int) -> None:
        """A run was created (``CreateRun``)."""

    def run_stopped(self, run_id: int, cancelled: int) -> None:
        """An operator stopped a run; ``cancelled`` of its instructions were answered CANCELLED."""

    def node_registered(self, node_id: int) -> None:
        """A node registered (``CreateNode``)."""

    def node_left(self, node_id: int) -> None:
        """A node unregistered or went offline."""

    def pushed(self, count: int) -> None:
        """``count`` instructions were accepted from a driver."""

    def delivered(self, count: int) -> None:
        """``count`` instructions were handed to a node."""

    def answered(self, instruction: InstructionRecord, reply: pb.Message, by_link: bool, now: float) -> None:
        """``instruction`` got its ``reply``: from its node, or synthesized by the link (``by_link``: expired,
        node unavailable, cancelled)."""

    def limit_hit(self, limit: str) -> None:
        """A request was refused by the configured limit named ``limit`` (e.g. ``"max_request_bytes"``)."""


class NullEvents:
    """A :class:`LinkEvents` that ignores everything (the default)."""

    def run_created(self, run_id: int) -> None:
        """Ignored."""

    def run_stopped(self, run_id: int, cancelled: int) -> None:
        """Ignored."""

    def node_registered(self, node_id: int) -> None:
        """Ignored."""

    def node_left(self, node_id: int) -> None:
        """Ignored."""

    def pushed(self, count: int) -> None:
        """Ignored."""

    def delivered(self, count: int) -> None:
        """Ignored."""

    def answered(self, instruction: InstructionRecord, reply: pb.Message, by_link: bool, now: float) -> None:
        """Ignored."""

    def limit_hit(self, limit: str) -> None:
        """Ignored."""

"""Wake-ups for long-polls: asyncio Events only signal; the items themselves stay in the link's state.

Held calls re-read the state after every wake-up and take items synchronously right before returning, so a
handler cancelled by grpclib (a raw ``Task.cancel()``) never loses an item (libraries.md §3.3).
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import math
from collections.abc import Callable, Sequence

__all__ = ["NodesWaiter", "ReplyWaiter", "Wakeups"]


class NodesWaiter:
    """A WaitForNodes waiting until at least ``min_nodes`` nodes are registered; ``event`` is set then."""

    __slots__ = ("event", "live", "min_nodes")

    def __init__(self, min_nodes: int) -> None:
        self.min_nodes = min_nodes
        self.event = asyncio.Event()
        self.live = True


class ReplyWaiter:
    """A driver pull waiting for replies to ``pending`` instruction ids; ``event`` is set when ``needed`` of them
    have a reply (default: all of them)."""

    __slots__ = ("event", "needed", "pending")

    def __init__(self, pending: Sequence[str], needed: int | None = None) -> None:
        self.pending = set(pending)
        self.needed = len(self.pending) if needed is None else min(needed, len(self.pending))
        self.event = asyncio.Event()


class Wakeups:
    """The I/O side of :class:`~fl_async.superlink.state.LinkListener`.

    * node pulls wait on :meth:`node_event` (one Event per node and generation, replaced when set);
    * driver pulls register a :class:`ReplyWaiter`, woken when every id it waits for has a reply (O(1) per reply);
    * WaitForNodes registers a :class:`NodesWaiter` (:meth:`wait_nodes`), woken only when the node count
      (``node_count()``) reaches its threshold: a node change costs O(log n) per waiter it wakes, nothing for
      the others (waking every waiter to re-count cost O(waiters x nodes) per change);
    * :attr:`nodes_event` is still set on every change (for other listeners);
    * the deadline timer waits on :attr:`deadline_event`, set only when a deadline earlier than the armed
      one is added.
    """

    def __init__(self, node_count: Callable[[], int] | None = None) -> None:
        self.node_count = node_count
        """Returns how many nodes are registered (set by the link; ``None``: wake every nodes waiter)."""
        self._nodes_waiters: list[tuple[int, int, NodesWaiter]] = []  # heap by threshold
        self._seq = itertools.count()
        self._dropped = 0
        self.closing = False
        self._node_events: dict[int, asyncio.Event] = {}
        self._reply_waiters: dict[str, set[ReplyWaiter]] = {}
        self.nodes_event = asyncio.Event()
        self.deadline_event = asyncio.Event()
        self.armed_at = math.inf

    # listener side ---------------------------------------------------------------------------
    def instructions_queued(self, node_id: int) -> None:
        """Wake the held pulls of ``node_id``."""
        event = self._node_events.pop(node_id, None)
        if event is not None:
            event.set()

    def replies_ready(self, message_ids: Sequence[str]) -> None:
        """Tick these ids off every driver pull waiting for them; wake those with none left."""
        waiters = self._reply_waiters
        for mid in message_ids:
            for waiter in waiters.pop(mid, ()):
                waiter.pending.discard(mid)
                waiter.needed -= 1
                if waiter.needed <= 0 or not waiter.pending:
                    waiter.event.set()

    def nodes_changed(self) -> None:
        """Wake the WaitForNodes whose threshold the node count reached (every one without ``node_count``)."""
        event, self.nodes_event = self.nodes_event, asyncio.Event()
        event.set()
        heap = self._nodes_waiters
        count = self.node_count() if self.node_count is not None else math.inf
        while heap and heap[0][0] <= count:
            waiter = heapq.heappop(heap)[2]
            if waiter.live:
                waiter.live = False
                waiter.event.set()
            else:
                self._dropped -= 1

    def wait_nodes(self, min_nodes: int) -> NodesWaiter:
        """Register a waiter woken when at least ``min_nodes`` nodes are registered (call :meth:`drop_nodes`)."""
        waiter = NodesWaiter(min_nodes)
        if self.closing:
            waiter.event.set()
            waiter.live = False
            return waiter
        heapq.heappush(self._nodes_waiters, (min_nodes, next(self._seq), waiter))
        return waiter

    def drop_nodes(self, waiter: NodesWaiter) -> None:
        """Unregister a nodes waiter (idempotent); its heap entry is dropped lazily."""
        if waiter.live:
            waiter.live = False
            self._dropped += 1
            if self._dropped > 64 and self._dropped > len(self._nodes_waiters) // 2:
                self._nodes_waiters = [e for e in self._nodes_waiters if e[2].live]
                heapq.heapify(self._nodes_waiters)
                self._dropped = 0

    def deadline_added(self, at: float) -> None:
        """Wake the deadline timer if ``at`` is earlier than the deadline it sleeps until."""
        if at < self.armed_at:
            self.armed_at = at
            self.deadline_event.set()

    # waiter side -----------------------------------------------------------------------------
    def node_event(self, node_id: int) -> asyncio.Event:
        """The Event set the next time instructions are queued for ``node_id`` (or it is removed)."""
        event = self._node_events.get(node_id)
        if event is None:
            event = self._node_events[node_id] = asyncio.Event()
            if self.closing:
                event.set()
        return event

    def wait_replies(self, message_ids: Sequence[str], needed: int | None = None) -> ReplyWaiter:
        """Register a waiter for replies to ``message_ids``, woken when ``needed`` of them (default: all) have a
        reply (call :meth:`drop` when done)."""
        waiter = ReplyWaiter(message_ids, needed)
        for mid in waiter.pending:
            self._reply_waiters.setdefault(mid, set()).add(waiter)
        if self.closing or not waiter.pending or waiter.needed <= 0:
            waiter.event.set()
        return waiter

    def drop(self, waiter: ReplyWaiter) -> None:
        """Unregister a waiter (idempotent)."""
        for mid in waiter.pending:
            group = self._reply_waiters.get(mid)
            if group is not None:
                group.discard(waiter)
                if not group:
                    del self._reply_waiters[mid]
        waiter.pending.clear()

    def close(self) -> None:
        """Shutting down: wake every held call now and any later one at once."""
        self.closing = True
        for event in self._node_events.values():
            event.set()
        self._node_events.clear()
        for group in self._reply_waiters.values():
            for waiter in group:
                waiter.event.set()
        self.nodes_event.set()
        for _, _, nodes_waiter in self._nodes_waiters:
            nodes_waiter.event.set()
        self._nodes_waiters.clear()
        self.deadline_event.set()

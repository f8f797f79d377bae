"""Lifetimes of runs and replies (sans-IO): when an idle or abandoned run ends and when an unpulled reply is dropped.

:class:`Lifetimes` only keeps deadlines; :class:`~fl_async.superlink.state.LinkState` asks it what is due
(:meth:`Lifetimes.due`) when it applies deadlines and does the freeing itself, through its
:class:`~fl_async.superlink.store.LinkStore`.

* A run ends when its driver has made no Driver API call for ``run_idle_ttl`` seconds (a held long-poll
  counts as a call while it is held). Its queued and in-flight instructions and its unpulled replies are
  dropped, and so are the payloads they reference.
* A run also ends when its driver's connection was lost (:meth:`Lifetimes.driver_lost`) and its driver made no
  call within ``driver_grace`` seconds after that (a reconnect within the grace keeps it). A run restored from a
  durable store starts in that state at link start: its driver has the grace to come back.
* A reply no driver pulls within ``reply_ttl`` seconds of its arrival is dropped, with a log line.
* Ended runs are remembered (at most :data:`ENDED_RUNS_KEPT`, oldest forgotten first) so that a late call for one
  is told why it ended rather than only that the run is unknown.

Each run has one heap entry and each waiting reply one entry of an insertion-ordered dict (the TTL is the same
for all, so arrival order is deadline order; a pulled reply's entry is removed at once), so both stay as large
as what they track.
"""

from __future__ import annotations

import heapq
import math
from collections import OrderedDict

__all__ = ["ENDED_RUNS_KEPT", "Lifetimes"]

ENDED_RUNS_KEPT = 4096
"""How many ended runs (id and reason) :class:`Lifetimes` remembers for error messages."""


class Lifetimes:
    """Deadlines of runs (idle TTL) and replies (reply TTL).

    Args:
        run_idle_ttl: seconds without a Driver API call after which a run ends (``inf``: never).
        reply_ttl: seconds an unpulled reply is kept (``inf``: until its run ends).
        driver_grace: seconds a run's driver gets to make a call after its connection was lost (``inf``:
            the run waits for its idle TTL).
    """

    def __init__(
        self, run_idle_ttl: float = math.inf, reply_ttl: float = math.inf, driver_grace: float = math.inf
    ) -> None:
        self.run_idle_ttl = run_idle_ttl
        self.reply_ttl = reply_ttl
        self.driver_grace = driver_grace
        self._lost: dict[int, float] = {}  # run_id -> end of its driver's grace
        self._lost_heap: list[tuple[float, int]] = []  # (grace ends, run_id), lazily cleaned
        self._ended: OrderedDict[int, str] = OrderedDict()  # run_id -> why it ended (bounded)
        self._run_seen: dict[int, float] = {}
        self._run_heap: list[tuple[float, int]] = []  # (deadline, run_id): one entry per run
        self._replies: OrderedDict[str, float] = OrderedDict()  # message_id -> deadline, in deadline order

    def touch_run(self, run_id: int, now: float) -> bool:
        """The run's driver made a call at ``now``; returns whether a new deadline was armed (first call)."""
        first = run_id not in self._run_seen
        self._run_seen[run_id] = now
        if first and math.isfinite(self.run_idle_ttl):
            heapq.heappush(self._run_heap, (now + self.run_idle_ttl, run_id))
        return first

    def forget_run(self, run_id: int, reason: str = "") -> None:
        """The run ended (its heap entries are dropped lazily); ``reason`` is remembered for :meth:`ended`."""
        self._run_seen.pop(run_id, None)
        self._lost.pop(run_id, None)
        if reason:
            self._ended[run_id] = reason
            self._ended.move_to_end(run_id)
            while len(self._ended) > ENDED_RUNS_KEPT:
                self._ended.popitem(last=False)

    def ended(self, run_id: int) -> str:
        """Why the run ended (``""``: not an ended run this process remembers)."""
        return self._ended.get(run_id, "")

    def driver_lost(self, run_id: int, now: float) -> float | None:
        """The connection of the run's driver's latest call was lost at ``now``: the run ends at the returned
        time unless :meth:`driver_back` is called first (``None``: no grace deadline, ``driver_grace`` is
        infinite). A run already in its grace keeps the earlier deadline."""
        if not math.isfinite(self.driver_grace):
            return None
        at = self._lost.get(run_id)
        if at is None:
            at = now + self.driver_grace
            self._lost[run_id] = at
            heapq.heappush(self._lost_heap, (at, run_id))
            if len(self._lost_heap) > 64 and len(self._lost_heap) > 4 * len(self._lost):
                self._lost_heap = [(t, r) for r, t in self._lost.items()]
                heapq.heapify(self._lost_heap)
        return at

    def driver_back(self, run_id: int) -> bool:
        """The run's driver made a call: its grace (if any) is over; returns whether it was in one."""
        return self._lost.pop(run_id, None) is not None

    def abandoned(self) -> dict[int, float]:
        """Runs whose driver is in its grace: ``run_id -> time the run ends`` (a copy)."""
        return dict(self._lost)

    def reply_stored(self, message_id: str, now: float) -> float | None:
        """A reply for ``message_id`` is waiting for its driver; returns its deadline (``None``: kept)."""
        if not math.isfinite(self.reply_ttl):
            return None
        deadline = now + self.reply_ttl
        self._replies[message_id] = deadline
        self._replies.move_to_end(message_id)
        return deadline

    def reply_taken(self, message_id: str) -> None:
        """The reply was delivered or dropped: forget its deadline."""
        self._replies.pop(message_id, None)

    def due_abandoned(self, now: float) -> list[int]:
        """Runs whose driver's grace ended by ``now`` without a call (forgotten here; the caller ends them)."""
        runs: list[int] = []
        heap = self._lost_heap
        while heap and heap[0][0] <= now:
            at, run_id = heapq.heappop(heap)
            if self._lost.get(run_id) == at:
                del self._lost[run_id]
                runs.append(run_id)
        return runs

    def due(self, now: float) -> tuple[list[int], list[str]]:
        """``(runs idle past their TTL, message ids whose reply TTL passed)`` at ``now``; the caller checks that
        each reply is still waiting (a pulled one has gone already)."""
        runs: list[int] = []
        heap = self._run_heap
        while heap and heap[0][0] <= now:
            _, run_id = heapq.heappop(heap)
            seen = self._run_seen.get(run_id)
            if seen is None:
                continue  # ended already
            if seen + self.run_idle_ttl <= now:
                runs.append(run_id)
                del self._run_seen[run_id]
            else:
                heapq.heappush(heap, (seen + self.run_idle_ttl, run_id))
        replies: list[str] = []
        waiting = self._replies
        while waiting:
            message_id, deadline = next(iter(waiting.items()))
            if deadline > now:
                break
            del waiting[message_id]
            replies.append(message_id)
        return runs, replies

    def next_deadline(self) -> float | None:
        """The earliest deadline kept (may be stale: :meth:`due` then re-arms or skips it)."""
        times = [self._run_heap[0][0]] if self._run_heap else []
        if self._lost_heap:
            times.append(self._lost_heap[0][0])
        if self._replies:
            times.append(next(iter(self._replies.values())))
        return min(times) if times else None

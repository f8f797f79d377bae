"""Lifetimes of runs and replies (sans-IO): when an idle run ends and when an unpulled reply is dropped.

:class:`Lifetimes` only keeps deadlines; :class:`~fl_async.superlink.state.LinkState` asks it what is due
(:meth:`Lifetimes.due`) when it applies deadlines and does the freeing itself, through its
:class:`~fl_async.superlink.store.LinkStore`.

* A run ends when its driver has made no Driver API call for ``run_idle_ttl`` seconds (a held long-poll
  counts as a call while it is held). Its queued and in-flight instructions and its unpulled replies are
  dropped, and so are the payloads they reference.
* A reply no driver pulls within ``reply_ttl`` seconds of its arrival is dropped, with a log line.

Each run has one heap entry and each waiting reply one entry of an insertion-ordered dict (the TTL is the same
for all, so arrival order is deadline order; a pulled reply's entry is removed at once), so both stay as large
as what they track.
"""

from __future__ import annotations

import heapq
import math
from collections import OrderedDict

__all__ = ["Lifetimes"]


class Lifetimes:
    """Deadlines of runs (idle TTL) and replies (reply TTL).

    Args:
        run_idle_ttl: seconds without a Driver API call after which a run ends (``inf``: never).
        reply_ttl: seconds an unpulled reply is kept (``inf``: until its run ends).
    """

    def __init__(self, run_idle_ttl: float = math.inf, reply_ttl: float = math.inf) -> None:
        self.run_idle_ttl = run_idle_ttl
        self.reply_ttl = reply_ttl
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

    def forget_run(self, run_id: int) -> None:
        """The run ended (its heap entry is dropped lazily)."""
        self._run_seen.pop(run_id, None)

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
        if self._replies:
            times.append(next(iter(self._replies.values())))
        return min(times) if times else None

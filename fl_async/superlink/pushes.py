"""Idempotent retried pushes: the link's answers to recent ``(run, push id)`` pairs.

A driver that retries a PushMessages whose response it never got sends the same ``fl-async-push-id`` header;
:class:`PushMemory` (``LinkState.pushes``) keeps the first answer of the last :data:`REMEMBERED_PUSHES` pushes so
that :meth:`~fl_async.superlink.state.LinkState.push_instructions` answers the retry the same way and queues
nothing. With a durable store the answers are rebuilt from the recovered instructions at restart
(:meth:`PushMemory.recover`).
"""

from __future__ import annotations

import logging
from collections import OrderedDict, defaultdict
from collections.abc import Iterable

from fl_async.superlink.store import InstructionRecord

__all__ = ["REMEMBERED_PUSHES", "PushMemory"]

log = logging.getLogger("fl_async.superlink")

REMEMBERED_PUSHES = 4096
"""How many ``(run, push id)`` answers the link keeps for retried pushes (the oldest are forgotten first)."""

RESTARTED = "refused before the link restarted"
"""The reason given for refused positions of a push answered before a restart (only accepted ones are stored)."""


class PushMemory:
    """The answers ``(message_ids, reasons)`` of the last :data:`REMEMBERED_PUSHES` pushes, by ``(run, push id)``."""

    def __init__(self) -> None:
        self._pushes: OrderedDict[tuple[int, str], tuple[list[str], list[str]]] = OrderedDict()

    def remember(self, run_id: int, push_id: str, ids: list[str], reasons: list[str]) -> None:
        """Keep the answer to push ``push_id`` of ``run_id`` (forgetting the oldest beyond the limit)."""
        self._pushes[(run_id, push_id)] = (ids, reasons)
        while len(self._pushes) > REMEMBERED_PUSHES:
            self._pushes.popitem(last=False)

    def repeat(self, run_id: int, push_id: str, count: int) -> tuple[list[str], list[str]] | None:
        """The first answer to a push of ``count`` messages seen before (logged as a retry), else ``None``."""
        first = self._pushes.get((run_id, push_id))
        if first is None:
            return None
        first_ids, first_reasons = first
        log.info("PushMessages run %d: push %s repeated (a retry): answered as the first time", run_id, push_id)
        missing = max(0, count - len(first_ids))  # trailing refused positions (not kept on disk)
        return [*first_ids, *[""] * missing], [*first_reasons, *[RESTARTED] * missing]

    def recover(self, recovered: Iterable[InstructionRecord]) -> None:
        """Rebuild the answers of the pushes that queued the instructions a durable store recovered."""
        pushes: dict[tuple[int, str], dict[int, str]] = defaultdict(dict)
        for ins in recovered:
            if ins.push is not None:
                pushes[(ins.run_id, ins.push[0])][ins.push[1]] = ins.message_id
        for (run_id, push_id), positions in pushes.items():  # a retried push gets its first answer
            ids = [positions.get(i, "") for i in range(max(positions) + 1)]
            self.remember(run_id, push_id, ids, ["" if mid else RESTARTED for mid in ids])

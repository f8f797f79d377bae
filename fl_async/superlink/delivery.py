"""The exactly-once delivery of replies to the driver.

:class:`ReplyDelivery` is the reply part of the Driver API of :class:`~fl_async.superlink.state.LinkState`, which
composes it as ``state.delivery`` (sans-IO, same store, clock, listener and payload tracker). It applies the
**exactly-once** rule of :mod:`fl_async.superlink.state`: a reply leaves the link once, when a driver pull takes it
(:meth:`ReplyDelivery.take_replies`), undone only if the response could not be sent
(:meth:`ReplyDelivery.restore_replies`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

from fl_async.superlink.store import InstructionRecord, Status

if TYPE_CHECKING:
    from fl_async.superlink.state import LinkState

__all__ = ["ReplyDelivery"]


class ReplyDelivery:
    """Hands a run's ready replies to its driver, once (see the module docstring).

    Args:
        state: the link state composing this part (its store, clock, listener, payload tracker and lifetimes are
            shared; it checks the run and applies passed deadlines first).
    """

    def __init__(self, state: LinkState) -> None:
        self._state = state
        self.store = state.store
        self.clock = state.clock
        self.listener = state.listener
        self.payloads = state.payloads
        self.lifetimes = state.lifetimes

    def outstanding(self, run_id: int, message_ids: Iterable[str]) -> tuple[list[str], list[str]]:
        """Split requested ids into ``(ready, waiting)``: outstanding instructions of ``run_id`` with a reply
        ready, and those still waiting for one. Unknown, foreign-run, delivered and ``""`` ids are left out.

        Raises:
            NotFoundError: no such run.
        """
        self._state.advance()
        self._state._run(run_id)
        ready: list[str] = []
        waiting: list[str] = []
        for mid in dict.fromkeys(message_ids):
            ins = self.store.get_instruction(mid) if mid else None
            if ins is None or ins.run_id != run_id:
                continue
            (ready if ins.status is Status.ANSWERED else waiting).append(mid)
        return ready, waiting

    def take_replies(self, run_id: int, message_ids: Iterable[str], limit: int = 0) -> list[InstructionRecord]:
        """Remove and return the answered instructions among ``message_ids`` (in request order), each with its
        ``reply``: this is the one delivery of those replies. Other ids are ignored, never an error.

        Args:
            limit: take at most this many (0: all); the others stay ready for a later take.

        Raises:
            NotFoundError: no such run.
        """
        ready, _ = self.outstanding(run_id, message_ids)
        if limit > 0:
            del ready[limit:]
        taken: list[InstructionRecord] = []
        for mid in ready:
            ins = self.store.get_instruction(mid)
            assert ins is not None and ins.reply is not None
            self.store.pop_reply(mid)
            self.payloads.release(ins.reply)
            self.lifetimes.reply_taken(mid)
            taken.append(ins)
        return taken

    def restore_replies(self, taken: Sequence[InstructionRecord]) -> None:
        """Undo :meth:`take_replies` for replies whose response could not be sent (nothing is lost)."""
        for ins in taken:
            if self.store.get_instruction(ins.message_id) is None and ins.reply is not None:
                self.store.restore_reply(ins)
                self.payloads.retain(ins.reply)
                self.lifetimes.reply_stored(ins.message_id, self.clock())
        if taken:
            self.listener.replies_ready([ins.message_id for ins in taken])

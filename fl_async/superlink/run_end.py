"""How runs end on the SuperLink: EndRun, the idle TTL, a driver gone past its disconnect grace.

:class:`RunEnds` is the run-lifetime part of :class:`~fl_async.superlink.state.LinkState`, which composes it as
``state.run_ends`` (sans-IO, same clock, store and listener). It applies the deadlines that
:class:`~fl_async.superlink.lifetimes.Lifetimes` computes (which runs are idle or abandoned, which unpulled replies
are past ``reply_ttl``) and the **run end** rule of :mod:`fl_async.superlink.state`: a run ends by
:meth:`RunEnds.end_run` (its driver's EndRun), by its idle TTL, or when the connection of its driver's latest call
was lost (:meth:`RunEnds.driver_lost`) and the driver made no call within ``driver_grace`` seconds; its queued and
in-flight instructions are answered ``CANCELLED``, its unpulled replies and their payloads are freed, and the nodes
handling its in-flight instructions are to be told to stop (:meth:`RunEnds.take_ended_in_flight`).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import TYPE_CHECKING

from fl_async.common.message import ErrorCode
from fl_async.proto.fl_async import v1 as pb
from fl_async.superlink.replies import synthetic_error_reply
from fl_async.superlink.store import Status

if TYPE_CHECKING:
    from fl_async.superlink.state import LinkState

__all__ = ["RunEnds"]

log = logging.getLogger("fl_async.superlink")


class RunEnds:
    """Ends the runs of a :class:`~fl_async.superlink.state.LinkState` (see the module docstring).

    Args:
        state: the link state composing this part (its store, clock, listener, payload tracker and
            :class:`~fl_async.superlink.lifetimes.Lifetimes` are shared; it answers the ended runs' instructions).

    Attributes:
        runs_ended: how many runs :meth:`end_run` ended (the I/O layer trims the heap after one).
    """

    def __init__(self, state: LinkState) -> None:
        self._state = state
        self.store = state.store
        self.clock = state.clock
        self.listener = state.listener
        self.payloads = state.payloads
        self.lifetimes = state.lifetimes
        self.runs_ended = 0
        self._ended_in_flight: dict[int, list[str]] = {}  # node -> in-flight ids of ended runs, not yet told

    def apply(self, now: float) -> None:
        """End the runs whose idle TTL or driver grace passed by ``now``; drop replies unpulled past their TTL."""
        runs, replies = self.lifetimes.due(now)
        for message_id in replies:
            ins = self.store.get_instruction(message_id)
            if ins is None or ins.status is not Status.ANSWERED or ins.reply is None:
                continue  # pulled already
            self.store.pop_reply(message_id)
            self.payloads.release(ins.reply)
            log.warning(
                "reply to instruction %s of run %d dropped: not pulled within %g s (reply_ttl, --reply-ttl)",
                message_id,
                ins.run_id,
                self.lifetimes.reply_ttl,
            )
        for run_id in runs:
            self.end_run(
                run_id, f"no Driver API call for {self.lifetimes.run_idle_ttl:g} s (run_idle_ttl, --run-idle-ttl)"
            )
        for run_id in self.lifetimes.due_abandoned(now):
            self.end_run(
                run_id,
                f"its driver's connection was lost and it made no call within {self.lifetimes.driver_grace:g} s "
                "(driver_disconnect_grace, --driver-disconnect-grace)",
            )

    def take_ended_in_flight(self) -> dict[int, list[str]]:
        """``node_id -> ids`` of the instructions that were in flight at a node when their run ended (by any
        cause), since the last call; the I/O layer tells those nodes to stop handling them (cancel notices)."""
        taken, self._ended_in_flight = self._ended_in_flight, {}
        return taken

    def adopt_stored_runs(self) -> None:
        """Arm the lifetimes of the runs already in the store (restored from a durable store at link start):
        each gets its idle TTL and its driver's disconnect grace from now, as if its driver's connection had just
        been lost. Runs already known are not changed. Called by the constructor; a store filled later calls it
        again."""
        runs = getattr(self.store, "runs", None)
        if runs is None:
            return
        try:
            records = list(runs())
        except NotImplementedError:
            return
        now = self.clock()
        for run in records:
            if self.lifetimes.touch_run(run.run_id, now):
                self.lifetimes.driver_lost(run.run_id, now)
        if records:
            deadline = self.lifetimes.next_deadline()
            if deadline is not None:
                self.listener.deadline_added(deadline)

    def driver_lost(self, run_ids: Iterable[int]) -> None:
        """The connection on which these runs' drivers made their latest call is gone (the peer closed or reset
        it). Each existing run ends ``driver_grace`` seconds from now unless its driver makes a call by then
        (:meth:`driver_back`). Unknown ids are ignored. The I/O layer calls this; the link's own closing of a
        connection (shutdown, idle timeout, eviction) must not."""
        now = self.clock()
        marked = 0
        for run_id in run_ids:
            if self.store.get_run(run_id) is not None and self.lifetimes.driver_lost(run_id, now) is not None:
                marked += 1
        if marked:
            log.info(
                "%d run(s) lost their driver's connection: ended at +%g s unless it comes back",
                marked,
                self.lifetimes.driver_grace,
            )
            deadline = self.lifetimes.next_deadline()
            if deadline is not None:
                self.listener.deadline_added(deadline)

    def driver_back(self, run_id: int) -> None:
        """The run's driver made an authenticated call: a disconnect grace it was in is over."""
        if self.lifetimes.driver_back(run_id):
            log.info("run %d: its driver is back after losing its connection", run_id)

    def touch_run(self, run_id: int) -> None:
        """The run's driver made a Driver API call: the run's idle TTL starts again (unknown runs: nothing)."""
        if self.store.get_run(run_id) is not None and self.lifetimes.touch_run(run_id, self.clock()):
            deadline = self.lifetimes.next_deadline()
            if deadline is not None:
                self.listener.deadline_added(deadline)

    def end_run(self, run_id: int, reason: str) -> tuple[list[pb.Message], list[str]]:
        """End a run: answer its queued and in-flight instructions with ``CANCELLED`` error replies, drop its
        unpulled replies, release their payloads and forget the run (a node's later reply to one of its
        instructions is refused as unknown; a later call for the run gets NOT_FOUND naming ``reason``).

        Returns:
            ``(error_replies, unpulled)``: the CANCELLED replies of the instructions that were still queued or
            in flight (EndRun hands them to the driver, so each still gets its one reply), and the ids of
            instructions whose ready reply was never pulled (dropped). Both empty for an unknown run.
        """
        if self.store.get_run(run_id) is None:
            return [], []
        now = self.clock()
        cancelled: list[pb.Message] = []
        unpulled: list[str] = []
        for ins in self.store.run_instructions(run_id):
            if ins.status is Status.IN_FLIGHT:  # its node is handling it: to be told to stop
                self._ended_in_flight.setdefault(ins.node_id, []).append(ins.message_id)
            if ins.status is not Status.ANSWERED:
                reply = synthetic_error_reply(ins, ErrorCode.CANCELLED, f"run {run_id} ended: {reason}", now)
                self._state._answer(ins, reply, by_link=True)
                cancelled.append(reply)
            else:
                unpulled.append(ins.message_id)
            reply = self.store.pop_reply(ins.message_id)
            self.payloads.release(reply)
            self.lifetimes.reply_taken(ins.message_id)
        self.store.remove_run(run_id)
        self.lifetimes.forget_run(run_id, reason)
        self.runs_ended += 1
        ended = getattr(self.payloads, "run_ended", None)
        if ended is not None:
            ended(run_id)
        log.info(
            "run %d ended: %s; %d instruction(s) cancelled, %d unpulled reply(ies) dropped",
            run_id,
            reason,
            len(cancelled),
            len(unpulled),
            extra={"event": "run_ended", "run_id": run_id},
        )
        woken = [m.metadata.reply_to_message for m in cancelled if m.metadata is not None] + unpulled
        if woken:
            self.listener.replies_ready(woken)  # held pulls of the run return (NOT_FOUND: the run ended)
        return cancelled, unpulled

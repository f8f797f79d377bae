"""Operator and driver control of a live link, sans-IO: list what it holds, cancel instructions, stop runs.

:class:`LinkControl` works on a :class:`~fl_async.superlink.state.LinkState` (same event loop, no I/O) and keeps
the one piece of state of its own: which cancelled in-flight instructions each node has not been told about yet.

* **cancel** (:meth:`LinkControl.cancel`): a queued instruction is answered at once with a ``CANCELLED`` error
  reply and is never handed out; an in-flight one is answered the same way and its id is queued as a *notice*
  for its node, carried by the next response the link sends that node (``cancelled`` in the Heartbeat,
  PullInstructions and PushReplies responses; a held pull of that node returns at once to carry it). An
  instruction already answered keeps its reply (the real one reaches the driver). So every cancelled id ends
  in exactly one reply.
* **stop** (:meth:`LinkControl.stop_run`): cancels every queued and in-flight instruction of the run as above and
  marks the run stopped: its driver's later calls fail with ``FAILED_PRECONDITION`` "run ... stopped" (a pull
  still delivers replies that are ready, so nothing accepted is lost); other runs are not touched.
* **list** (:meth:`list_nodes`, :meth:`list_runs`, :meth:`list_messages`): snapshots for ``fl-async ls``; none
  creates a run. Listing runs and messages walks the stored instructions (O(stored)); it is for operators,
  never on a hot path.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from fl_async.common.message import ErrorCode
from fl_async.proto.fl_async import v1 as pb
from fl_async.superlink.replies import synthetic_error_reply
from fl_async.superlink.state import LinkState
from fl_async.superlink.store import InstructionRecord, Status

__all__ = ["MAX_CANCEL_IDS", "LinkControl"]

log = logging.getLogger("fl_async.superlink")

MAX_CANCEL_IDS = 100_000
"""Most message ids one ``CancelMessages`` request may name (more is INVALID_ARGUMENT)."""


class LinkControl:
    """Cancel, stop and list over one :class:`LinkState` (see the module docstring). Only touch it from the
    link's event loop.

    Args:
        state: the link's state.
    """

    def __init__(self, state: LinkState) -> None:
        self.state = state
        self._notices: dict[int, list[str]] = {}  # node_id -> cancelled in-flight ids not yet told

    # ------------------------------------------------------------------------------ cancel / stop
    def cancel(self, run_id: int, message_ids: Iterable[str], *, reason: str = "") -> list[str]:
        """Cancel the run's queued and in-flight instructions among ``message_ids``; return the ids cancelled.

        Each gets a ``CANCELLED`` error reply at once (``reason``, default: "cancelled by the driver"). Unknown,
        foreign-run, ``""`` and already answered ids are ignored (an answered one keeps its reply).

        Raises:
            NotFoundError: no such run.
        """
        state = self.state
        state.advance()
        state._run(run_id)
        now = state.clock()
        cancelled: list[str] = []
        for mid in dict.fromkeys(message_ids):
            ins = state.store.get_instruction(mid) if mid else None
            if ins is None or ins.run_id != run_id or ins.status is Status.ANSWERED:
                continue
            self._cancel_one(ins, reason or f"instruction {mid} was cancelled by the driver", now)
            cancelled.append(mid)
        if cancelled:
            state.listener.replies_ready(cancelled)
            log.info("run %d: %d instruction(s) cancelled", run_id, len(cancelled), extra={"event": "cancelled"})
        return cancelled

    def _cancel_one(self, ins: InstructionRecord, reason: str, now: float) -> None:
        state = self.state
        in_flight = ins.status is Status.IN_FLIGHT
        state._answer(ins, synthetic_error_reply(ins, ErrorCode.CANCELLED, reason, now), by_link=True)
        if in_flight and state.store.get_node(ins.node_id) is not None:
            self._notices.setdefault(ins.node_id, []).append(ins.message_id)
            state.listener.instructions_queued(ins.node_id)  # a held pull of that node returns to carry it

    def stop_run(self, run_id: int) -> tuple[int, bool]:
        """Stop a run: cancel its queued and in-flight instructions and refuse its driver's later calls.

        Returns:
            ``(cancelled, already_stopped)``: how many instructions were answered CANCELLED, and whether the run
            was stopped before (then nothing changes).

        Raises:
            NotFoundError: no such run.
        """
        state = self.state
        state.advance()
        run = state._run(run_id)
        if run.stopped:
            return 0, True
        run.stopped = True
        state.store.add_run(run)  # write-through for stores that copy records
        now = state.clock()
        reason = f"run {run_id} was stopped by an operator"
        ids = [ins.message_id for ins in state.store.run_instructions(run_id) if ins.status is not Status.ANSWERED]
        for mid in ids:
            ins = state.store.get_instruction(mid)
            if ins is not None and ins.status is not Status.ANSWERED:
                self._cancel_one(ins, reason, now)
        if ids:
            state.listener.replies_ready(ids)
        state.events.run_stopped(run_id, len(ids))
        log.info(
            "run %d stopped by an operator: %d instruction(s) cancelled",
            run_id,
            len(ids),
            extra={"event": "run_stopped", "run_id": run_id},
        )
        return len(ids), False

    # ------------------------------------------------------------------------------ notices
    def notify_cancelled(self, node_id: int, message_ids: Iterable[str]) -> None:
        """Tell ``node_id`` with its next response that these in-flight instructions were answered by the link
        (e.g. their run ended by EndRun), so that it stops handling them."""
        ids = list(message_ids)
        if ids and self.state.store.get_node(node_id) is not None:
            self._notices.setdefault(node_id, []).extend(ids)
            self.state.listener.instructions_queued(node_id)  # a held pull of that node returns to carry it

    def has_notices(self, node_id: int) -> bool:
        """Whether ``node_id`` has cancellations it was not told about yet."""
        return node_id in self._notices

    def take_notices(self, node_id: int) -> list[str]:
        """The cancelled in-flight ids to tell ``node_id`` (removed: each is told once)."""
        if not self._notices:
            return []
        taken = self._notices.pop(node_id, [])
        if len(self._notices) > 64 and len(self._notices) > 2 * self.state.store.node_count():
            self._notices = {n: ids for n, ids in self._notices.items() if self.state.store.get_node(n) is not None}
        return taken

    # ------------------------------------------------------------------------------ listings
    def list_nodes(self) -> list[pb.AdminNode]:
        """The online nodes with their address, registration time, last sign of life and load."""
        state = self.state
        state.advance()
        _, _, _, per_node = state.store.counts()
        nodes = []
        for node in state.store.nodes():
            queued, in_flight = per_node.get(node.node_id, (0, 0))
            last_seen = node.online_until - node.heartbeat_interval * state.patience
            nodes.append(
                pb.AdminNode(
                    node_id=node.node_id,
                    address=node.address,
                    online_since=node.registered_at,
                    last_seen=max(last_seen, node.registered_at),
                    queued=queued,
                    in_flight=in_flight,
                    heartbeat_interval=node.heartbeat_interval,
                )
            )
        return nodes

    def run_counts(self) -> dict[int, tuple[int, int, int]]:
        """``run_id -> (queued, in_flight, answered)`` over the stored instructions (runs with none are absent)."""
        counts: dict[int, list[int]] = {}
        index = {Status.QUEUED: 0, Status.IN_FLIGHT: 1, Status.ANSWERED: 2}
        for ins in self.state.store.instructions():
            row = counts.setdefault(ins.run_id, [0, 0, 0])
            row[index[ins.status]] += 1
        return {run_id: (q, f, a) for run_id, (q, f, a) in counts.items()}

    def list_runs(self) -> list[pb.AdminRun]:
        """Every run with its creation time, whether it was stopped, and its instruction counts."""
        state = self.state
        state.advance()
        counts = self.run_counts()
        runs = []
        for run in state.store.runs():
            queued, in_flight, answered = counts.get(run.run_id, (0, 0, 0))
            runs.append(
                pb.AdminRun(
                    run_id=run.run_id,
                    created_at=run.created_at,
                    fab_id=run.fab_id,
                    fab_version=run.fab_version,
                    queued=queued,
                    in_flight=in_flight,
                    answered=answered,
                    stopped=run.stopped,
                )
            )
        return runs

    def list_messages(self, run_id: int) -> list[pb.AdminMessage]:
        """The run's stored instructions (queued, in flight, or answered and not yet pulled), oldest push first.

        Raises:
            NotFoundError: no such run.
        """
        state = self.state
        state.advance()
        state._run(run_id)
        rows = []
        for ins in state.store.instructions():
            if ins.run_id != run_id:
                continue
            md = ins.message.metadata
            assert md is not None
            err = ins.reply.error if ins.reply is not None else None
            rows.append(
                pb.AdminMessage(
                    message_id=ins.message_id,
                    run_id=ins.run_id,
                    dst_node_id=ins.node_id,
                    message_type=md.message_type,
                    group_id=md.group_id,
                    state=ins.status.value,
                    pushed_at=ins.pushed_at,
                    expires_at=ins.expires_at,
                    error_code=err.code if err is not None else 0,
                )
            )
        rows.sort(key=lambda m: m.pushed_at)
        return rows

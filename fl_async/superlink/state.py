"""The SuperLink's sans-IO core: every rule of the broker, with an injected clock and no I/O.

:class:`LinkState` owns runs, the node registry, per-node inboxes, in-flight instructions and replies (kept in
a :class:`~fl_async.superlink.store.LinkStore`), and applies the rules:

* **ids**: run and node ids are random unsigned 64-bit integers in ``[1, 2**64 - 1]`` (as Flower since 1.12;
  0 means the server app in metadata); an id outside that range arriving in a request is INVALID_ARGUMENT.
  Message ids are ``str(uuid4())`` assigned by the link when a message is accepted.
* **liveness**: a node is online until ``last sign of life + interval * patience``; heartbeats, pulls (and
  pushes of replies) are signs of life, and a node holding a long-poll open counts as alive while it holds
  it. An offline or deleted node is forgotten (it must register again) and each of its queued or in-flight
  instructions at once becomes a ``NODE_UNAVAILABLE`` error reply for the driver.
* **connection loss**: when the I/O layer reports that the connection of a node's latest call was lost
  (:meth:`LinkState.connection_lost`), the node gets ``disconnect_grace`` seconds: any authenticated call
  within them (a reconnect) keeps it online with its normal deadline; otherwise it goes offline as above.
* **TTL**: an instruction whose ``created_at + ttl`` has passed is never handed out; if no reply arrived by
  then, the driver gets a ``MESSAGE_EXPIRED`` error reply (Flower 1.9 never enforced TTLs).
* **authorization**: Fleet calls carry ``(node_id, token)``; unknown node or wrong token -> UNAUTHENTICATED;
  answering another node's instruction or claiming another ``src_node_id`` -> PERMISSION_DENIED, and the
  whole call changes nothing.
* **run end**: a run ends by :meth:`LinkState.end_run` (its driver's EndRun), by its idle TTL, or when the
  connection of its driver's latest call was lost (:meth:`LinkState.driver_lost`) and the driver made no call
  within ``driver_grace`` seconds; its instructions, replies and payloads are freed (:mod:`.lifetimes`).
* **exactly-once**: a reply leaves the link once, when a driver pull takes it (undone only if the
  response could not be sent, see :meth:`LinkState.restore_replies`).

Nothing here awaits: the I/O layer calls in, learns what to wake through a :class:`LinkListener`, and arms one
timer at :meth:`LinkState.next_deadline`. Every public method first applies the deadlines that have passed by
the clock, so the state is consistent even if the timer is late.
"""

from __future__ import annotations

import heapq
import hmac
import logging
import os
import secrets
import time
import uuid
from collections import OrderedDict, defaultdict
from collections.abc import Callable, Iterable, Sequence

from fl_async.codec import config_from_proto
from fl_async.common.message import ErrorCode
from fl_async.proto.fl_async import v1 as pb
from fl_async.superlink.config import LinkConfig
from fl_async.superlink.errors import (
    AlreadyExistsError,
    InvalidArgumentError,
    LinkStateError,
    NotFoundError,
    PermissionDeniedError,
    RunStoppedError,
    UnauthenticatedError,
)
from fl_async.superlink.events import LinkEvents, NullEvents
from fl_async.superlink.hooks import (
    DigestRefCounts,
    LinkListener,
    LinkStats,
    NullListener,
    PayloadTracker,
    payload_problem,
)
from fl_async.superlink.lifetimes import Lifetimes
from fl_async.superlink.replies import SYNTHETIC_REPLY_TTL, answered_reason, synthetic_error_reply
from fl_async.superlink.store import InstructionRecord, LinkStore, MemoryStore, NodeRecord, RunRecord, Status
from fl_async.superlink.validation import id_problem, instruction_problem, interval_problem, reply_shape_problem

__all__ = [
    "MAX_REGISTRATION_ID_BYTES",
    "SYNTHETIC_REPLY_TTL",
    "DigestRefCounts",
    "InvalidArgumentError",
    "LinkListener",
    "LinkState",
    "LinkStateError",
    "LinkStats",
    "NotFoundError",
    "PayloadTracker",
    "PermissionDeniedError",
    "UnauthenticatedError",
]

log = logging.getLogger("fl_async.superlink")


REMEMBERED_PUSHES = 4096
"""How many ``(run, push id)`` answers the link keeps for retried pushes (the oldest are forgotten first)."""

RESUME_GRACE = 30.0
"""Seconds every node gets after a link restart to show a sign of life (see :meth:`LinkState.resume`)."""


def _code(message: pb.Message) -> int | None:
    return message.error.code if message.error is not None else None


MAX_REGISTRATION_ID_BYTES = 64
"""Longest ``CreateNodeRequest.registration_id`` the link accepts."""


def random_id() -> int:
    """A random node or run id, uniform in ``[1, 2**64 - 1]``."""
    while True:
        value = int.from_bytes(os.urandom(8), "little")
        if value:
            return value


# --------------------------------------------------------------------------------------------
# the state


class LinkState:
    """All broker state and rules, without I/O (see the module docstring for the rules).

    Args:
        heartbeat_patience: offline after ``interval * patience`` seconds without a sign of life.
        min_heartbeat_interval: lower clamp of a node's requested interval (seconds).
        max_heartbeat_interval: upper clamp (seconds).
        disconnect_grace: seconds a node whose connection was lost gets to make an authenticated call
            before it goes offline (see :meth:`connection_lost`); > 0.
        clock: returns the current Unix time in seconds; used for TTLs, ``created_at`` and liveness.
        store: where records live (default: a new :class:`MemoryStore`).
        listener: told what to wake (default: nobody).
        payloads: told which messages are held (default: a :class:`DigestRefCounts`).
        run_idle_ttl: seconds without a Driver API call after which a run ends (see :meth:`end_run`).
        reply_ttl: seconds an unpulled reply is kept before it is dropped (logged).
        driver_grace: seconds a run's driver gets to make a call after its connection was lost, before the run
            ends (:meth:`driver_lost`); also counted from construction for runs already in ``store`` (restored
            from a durable store).
        id_source: returns candidate run and node ids (default :func:`random_id`); candidates that are taken
            or outside ``[1, 2**64 - 1]`` are skipped. A test hook, e.g. to make the link assign ``2**64 - 1``.
        events: told about transitions, for metrics (default: nobody; see :mod:`fl_async.superlink.events`).

    Attributes:
        id_source: as the argument; may be replaced between calls (tests).
    """

    def __init__(
        self,
        *,
        heartbeat_patience: float = 2.0,
        min_heartbeat_interval: float = 0.05,
        max_heartbeat_interval: float = 300.0,
        disconnect_grace: float = 3.0,
        clock: Callable[[], float] = time.time,
        store: LinkStore | None = None,
        listener: LinkListener | None = None,
        payloads: PayloadTracker | None = None,
        run_idle_ttl: float = float("inf"),
        reply_ttl: float = float("inf"),
        id_source: Callable[[], int] = random_id,
        driver_grace: float = float("inf"),
        events: LinkEvents | None = None,
    ) -> None:
        self.events: LinkEvents = events if events is not None else NullEvents()
        self.id_source = id_source
        self.patience = float(heartbeat_patience)
        self.min_interval = float(min_heartbeat_interval)
        self.max_interval = float(max_heartbeat_interval)
        self.disconnect_grace = float(disconnect_grace)
        self.clock = clock
        self.store: LinkStore = store if store is not None else MemoryStore()
        self.listener: LinkListener = listener if listener is not None else NullListener()
        self.payloads: PayloadTracker = payloads if payloads is not None else DigestRefCounts()
        self._node_deadlines: list[tuple[float, int]] = []  # (online_until, node_id), lazily cleaned
        self._ttl_deadlines: list[tuple[float, str]] = []  # (expires_at, message_id), lazily cleaned
        self._active_pulls: dict[int, int] = defaultdict(int)
        self._disconnected: dict[int, float] = {}  # node_id -> end of its reconnect grace
        self._disconnect_deadlines: list[tuple[float, int]] = []  # (grace ends, node_id), lazily cleaned
        self._unanswered = 0  # instructions QUEUED or IN_FLIGHT (for compacting the TTL heap)
        self._registration_ids: dict[bytes, int] = {}  # CreateNode registration_id -> node id (online nodes)
        self._registered_as: dict[int, bytes] = {}  # node id -> its registration_id (to forget it with the node)
        self.lifetimes = Lifetimes(run_idle_ttl, reply_ttl, driver_grace)
        self.runs_ended = 0
        self._ended_in_flight: dict[int, list[str]] = {}  # node -> in-flight ids of ended runs, not yet told
        """How many runs :meth:`end_run` ended (the I/O layer trims the heap after one)."""
        self._pushes: OrderedDict[tuple[int, str], tuple[list[str], list[str]]] = OrderedDict()
        self.adopt_stored_runs()

    @classmethod
    def from_config(cls, config: LinkConfig, **kwargs: object) -> LinkState:
        """A state using ``config``'s liveness settings; ``kwargs`` as the constructor's (clock, store...)."""
        return cls(
            heartbeat_patience=config.heartbeat_patience,
            min_heartbeat_interval=config.min_heartbeat_interval,
            max_heartbeat_interval=config.max_heartbeat_interval,
            disconnect_grace=config.disconnect_grace,
            run_idle_ttl=config.run_idle_ttl,
            reply_ttl=config.reply_ttl,
            driver_grace=config.driver_disconnect_grace,
            **kwargs,  # type: ignore[arg-type]
        )

    def resume(self, grace: float = RESUME_GRACE) -> int:
        """Take over what a durable store loaded at start (a link restarting on its database); return how many
        instructions it recovered.

        Every node gets ``max(interval * patience, grace)`` seconds from now to show a sign of life (its
        reconnect backoff may exceed its liveness window); every run's idle TTL starts again now; unanswered
        instructions are queued again for their node (in push order, in-flight ones included: they were leased,
        not consumed) with their TTLs re-armed, or answered NODE_UNAVAILABLE if their node is gone; stored
        replies wait for their driver again. Instructions of runs that no longer exist are dropped.
        """
        now = self.clock()
        for node in self.store.nodes():
            until = now + max(node.heartbeat_interval * self.patience, grace)
            self.store.set_liveness(node.node_id, node.heartbeat_interval, until)
            self._push_node_deadline(node.node_id, until)
        recovered = self.store.recovered_instructions()
        pushes: dict[tuple[int, str], dict[int, str]] = defaultdict(dict)
        for ins in recovered:
            if ins.push is not None:
                pushes[(ins.run_id, ins.push[0])][ins.push[1]] = ins.message_id
        for (run_id, push_id), positions in pushes.items():  # a retried push gets its first answer
            ids = [positions.get(i, "") for i in range(max(positions) + 1)]
            why = "refused before the link restarted"
            self._remember_push(run_id, push_id, ids, ["" if mid else why for mid in ids])
        for ins in recovered:
            if self.store.get_run(ins.run_id) is None:  # ended before the restart
                if ins.status is not Status.ANSWERED:
                    self.store.set_reply(
                        ins.message_id, synthetic_error_reply(ins, ErrorCode.MESSAGE_EXPIRED, "run ended", now)
                    )
                self.store.pop_reply(ins.message_id)
                continue
            if ins.status is Status.ANSWERED:
                assert ins.reply is not None
                self.payloads.retain(ins.reply)
                self.lifetimes.reply_stored(ins.message_id, now)
                continue
            self._unanswered += 1
            self.payloads.retain(ins.message)
            heapq.heappush(self._ttl_deadlines, (ins.expires_at, ins.message_id))
            if self.store.get_node(ins.node_id) is None:
                self._answer(
                    ins,
                    synthetic_error_reply(
                        ins, ErrorCode.NODE_UNAVAILABLE, f"node {ins.node_id} was gone when the link restarted", now
                    ),
                )
        deadline = self.next_deadline()
        if deadline is not None:
            self.listener.deadline_added(deadline)
        return len(recovered)

    # ---------------------------------------------------------------------------- time
    def next_deadline(self) -> float | None:
        """Earliest Unix time at which a node may go offline or an instruction may expire (``None``: none)."""
        self._clean_heads()
        times = [h[0][0] for h in (self._node_deadlines, self._ttl_deadlines, self._disconnect_deadlines) if h]
        later = self.lifetimes.next_deadline()
        if later is not None:
            times.append(later)
        return min(times) if times else None

    def advance(self) -> None:
        """Apply every deadline that has passed by the clock: offline nodes (silent, or not back after a lost
        connection), expired instructions."""
        now = self.clock()
        nodes, ttls, lost = self._node_deadlines, self._ttl_deadlines, self._disconnect_deadlines
        while lost and lost[0][0] <= now:
            at, node_id = heapq.heappop(lost)
            if self._disconnected.get(node_id) != at:
                continue  # stale: the node came back, or was lost again later
            del self._disconnected[node_id]
            node = self.store.get_node(node_id)
            if node is None or self._active_pulls.get(node_id):
                continue  # gone already, or holding a pull on another connection: the heartbeat rule applies
            self._remove_node(
                node,
                f"node {node_id} is offline: its connection was lost and it did not come back within "
                f"{self.disconnect_grace:g} s (disconnect_grace)",
                now,
            )
        while nodes and nodes[0][0] <= now:
            until, node_id = heapq.heappop(nodes)
            node = self.store.get_node(node_id)
            if node is None or node.online_until != until or self._active_pulls.get(node_id):
                continue  # stale entry, or a held pull keeps the node alive (re-armed when it ends)
            self._remove_node(
                node,
                f"node {node_id} is offline: no heartbeat or pull for {node.heartbeat_interval * self.patience:.3g} s "
                f"(interval {node.heartbeat_interval:.3g} s x patience {self.patience:g})",
                now,
            )
        expired: list[str] = []
        while ttls and ttls[0][0] <= now:
            _, message_id = heapq.heappop(ttls)
            ins = self.store.get_instruction(message_id)
            if ins is None or ins.status is Status.ANSWERED:
                continue
            md = ins.message.metadata
            assert md is not None
            self._answer(
                ins,
                synthetic_error_reply(
                    ins,
                    ErrorCode.MESSAGE_EXPIRED,
                    f"instruction {message_id} expired: its ttl of {md.ttl:g} s ran out before node "
                    f"{ins.node_id} replied",
                    now,
                ),
                by_link=True,
            )
            expired.append(message_id)
        if expired:
            self.listener.replies_ready(expired)
        self._apply_lifetimes(now)

    def _apply_lifetimes(self, now: float) -> None:
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
                self._answer(ins, reply, by_link=True)
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

    def _clean_heads(self) -> None:
        nodes, ttls, lost = self._node_deadlines, self._ttl_deadlines, self._disconnect_deadlines
        while lost and self._disconnected.get(lost[0][1]) != lost[0][0]:
            heapq.heappop(lost)
        while nodes:
            until, node_id = nodes[0]
            node = self.store.get_node(node_id)
            if node is not None and node.online_until == until:
                break
            heapq.heappop(nodes)
        while ttls:
            ins = self.store.get_instruction(ttls[0][1])
            if ins is not None and ins.status is not Status.ANSWERED:
                break
            heapq.heappop(ttls)

    def _push_node_deadline(self, node_id: int, until: float) -> None:
        heap = self._node_deadlines
        heapq.heappush(heap, (until, node_id))
        if len(heap) > 64 and len(heap) > 4 * self.store.node_count():  # drop stale entries now and then
            live = {n.node_id: n.online_until for n in self.store.nodes()}
            self._node_deadlines = [e for e in heap if live.get(e[1]) == e[0]]
            heapq.heapify(self._node_deadlines)
        self.listener.deadline_added(until)

    # ---------------------------------------------------------------------------- runs (Driver API)
    def create_run(
        self,
        fab_id: str = "",
        fab_version: str = "",
        run_config: Sequence[pb.ValueEntry] = (),
        owner: str = "",
    ) -> int:
        """Create a run (as Flower 1.9's CreateRun, plus a run config) owned by ``owner`` and return its id.

        Raises:
            InvalidArgumentError: a run config entry is malformed (e.g. an empty value or a duplicate key).
        """
        entries = list(run_config)
        try:
            config = config_from_proto(entries)
        except (ValueError, TypeError) as exc:
            raise InvalidArgumentError(f"invalid run_config: {exc}") from None
        if len(config) != len(entries):
            raise InvalidArgumentError("invalid run_config: duplicate keys")
        run_id = self._new_id(self.store.get_run)
        self.store.add_run(RunRecord(run_id, fab_id, fab_version, entries, created_at=self.clock(), owner=owner))
        self.events.run_created(run_id)
        return run_id

    def get_run(self, run_id: int) -> pb.Run:
        """The run as a wire message.

        Raises:
            NotFoundError: no such run.
        """
        run = self._run(run_id)
        return pb.Run(run_id=run.run_id, fab_id=run.fab_id, fab_version=run.fab_version, run_config=run.run_config)

    def _new_id(self, existing: Callable[[int], object]) -> int:
        """A fresh id from :attr:`id_source`: in ``[1, 2**64 - 1]`` and not taken (``existing(id) is None``)."""
        while True:
            candidate = self.id_source()
            if not id_problem("id", candidate) and existing(candidate) is None:
                return candidate

    def _run(self, run_id: int) -> RunRecord:
        problem = id_problem("run_id", run_id)
        if problem:
            raise InvalidArgumentError(problem)
        run = self.store.get_run(run_id)
        if run is None:
            raise self.unknown_run(run_id)
        return run

    def unknown_run(self, run_id: int) -> NotFoundError:
        """The error for a call naming a run that does not exist: ``run N ended: why`` for a run that ended
        (remembered for the last few thousand), else ``unknown run N``."""
        why = self.lifetimes.ended(run_id)
        return NotFoundError(f"run {run_id} ended: {why}" if why else f"unknown run {run_id}")

    def driver_run(self, run_id: int) -> RunRecord:
        """The run a driver call names, if it may still act on it.

        Raises:
            NotFoundError: no such run.
            RunStoppedError: the run was stopped (``StopRun``).
        """
        run = self._run(run_id)
        if run.stopped:
            raise RunStoppedError(f"run {run_id} stopped: an operator stopped it (StopRun / fl-async stop)")
        return run

    def online_node_ids(self, run_id: int) -> list[int]:
        """Ids of the online nodes (nodes are not tied to runs, as Flower 1.9).

        Raises:
            NotFoundError: no such run.
        """
        self.advance()
        self.driver_run(run_id)
        return [n.node_id for n in self.store.nodes()]

    # ---------------------------------------------------------------------------- Driver API: messages
    def push_instructions(
        self, run_id: int, messages: Sequence[pb.Message], *, push_id: str = ""
    ) -> tuple[list[str], list[str]]:
        """Queue instructions; return ``(message_ids, reasons)``, parallel to ``messages``.

        With a ``push_id`` (the driver's ``fl-async-push-id`` header) already seen for this run (among the last
        :data:`REMEMBERED_PUSHES`, across restarts with a durable store), nothing is queued: the first call's
        answer is returned again (a driver retrying a push whose response it never got).

        A refused message gets ``""`` and a reason (also logged), and the others are still queued; see
        :func:`~fl_async.superlink.validation.instruction_problem` for the checks, plus: the run exists, the
        destination node is registered and online, and the link holds every external array payload the message
        names (:func:`~fl_async.superlink.hooks.payload_problem`: uploaded and complete on the blob data path).
        Accepted messages get ``metadata.message_id`` set.

        Raises:
            InvalidArgumentError: ``run_id`` is outside ``[1, 2**64 - 1]`` (nothing is queued).
        """
        problem = id_problem("run_id", run_id)
        if problem:
            raise InvalidArgumentError(problem)
        self.advance()
        if push_id and (run_id, push_id) in self._pushes:
            first_ids, first_reasons = self._pushes[(run_id, push_id)]
            log.info("PushMessages run %d: push %s repeated (a retry): answered as the first time", run_id, push_id)
            missing = max(0, len(messages) - len(first_ids))  # trailing refused positions (not kept on disk)
            why = "refused before the link restarted"
            return [*first_ids, *[""] * missing], [*first_reasons, *[why] * missing]
        now = self.clock()
        run = self.store.get_run(run_id)
        if run is not None and run.stopped:
            self.driver_run(run_id)  # raises RunStoppedError
        run_known = run is not None
        ids: list[str] = []
        reasons: list[str] = []
        woken: set[int] = set()
        earliest = float("inf")
        for position, msg in enumerate(messages):
            reason = instruction_problem(msg, run_id, now) if run_known else f"unknown run {run_id}"
            if not reason:
                dst = msg.metadata.dst_node_id  # type: ignore[union-attr]
                if self.store.get_node(dst) is None:
                    reason = f"destination node {dst} is unknown or offline"
                else:
                    reason = payload_problem(self.payloads, msg)
            if reason:
                log.warning("PushMessages run %d position %d refused: %s", run_id, position, reason)
                ids.append("")
                reasons.append(reason)
                continue
            md = msg.metadata
            assert md is not None
            md.message_id = str(uuid.uuid4())
            ins = InstructionRecord(
                msg,
                expires_at=md.created_at + md.ttl,
                pushed_at=now,
                push=(push_id, position) if push_id else None,
            )
            self.store.add_instruction(ins)
            self.payloads.retain(msg)
            heapq.heappush(self._ttl_deadlines, (ins.expires_at, md.message_id))
            self._unanswered += 1
            woken.add(md.dst_node_id)
            earliest = min(earliest, ins.expires_at)
            ids.append(md.message_id)
            reasons.append("")
        if len(self._ttl_deadlines) > 2 * self._unanswered + 1024:  # answered entries pile up: drop them
            live = []
            for entry in self._ttl_deadlines:
                held = self.store.get_instruction(entry[1])
                if held is not None and held.status is not Status.ANSWERED:
                    live.append(entry)
            heapq.heapify(live)
            self._ttl_deadlines = live
        if woken:
            self.events.pushed(len(ids) - ids.count(""))
            self.listener.deadline_added(earliest)
            for node_id in woken:
                self.listener.instructions_queued(node_id)
        if push_id:
            self._remember_push(run_id, push_id, list(ids), list(reasons))
        return ids, reasons

    def _remember_push(self, run_id: int, push_id: str, ids: list[str], reasons: list[str]) -> None:
        self._pushes[(run_id, push_id)] = (ids, reasons)
        while len(self._pushes) > REMEMBERED_PUSHES:
            self._pushes.popitem(last=False)

    def outstanding(self, run_id: int, message_ids: Iterable[str]) -> tuple[list[str], list[str]]:
        """Split requested ids into ``(ready, waiting)``: outstanding instructions of ``run_id`` with a reply
        ready, and those still waiting for one. Unknown, foreign-run, delivered and ``""`` ids are left out.

        Raises:
            NotFoundError: no such run.
        """
        self.advance()
        self._run(run_id)
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

    # ---------------------------------------------------------------------------- Fleet API: nodes
    def _clamp(self, interval: float) -> float:
        problem = interval_problem(interval)
        if problem:
            raise InvalidArgumentError(problem)
        return min(max(interval, self.min_interval), self.max_interval)

    def create_node(
        self,
        heartbeat_interval: float,
        address: str = "",
        *,
        node_id: int = 0,
        public_key: bytes = b"",
        registration_id: bytes = b"",
    ) -> tuple[int, bytes, float]:
        """Register a node; return ``(node_id, token, granted_interval)``.

        The node is online for ``granted_interval * patience`` seconds from now. ``address`` (the peer's
        ``"host:port"``, if known) is kept for listings and logged. A node that proved a key registers under the
        id bound to it (``node_id``, ``public_key``); otherwise the id is random.

        ``registration_id`` (optional, at most :data:`MAX_REGISTRATION_ID_BYTES` bytes) makes a retry idempotent:
        while the node it registered is online (and, for a keyed node, has the same id), the same registration id
        answers that node again (same id and token; a sign of life) instead of registering a second, phantom node.

        Raises:
            InvalidArgumentError: the interval is not a finite number > 0, or ``registration_id`` is too long.
            AlreadyExistsError: a node with this key is registered (online, or in its reconnect grace).
        """
        self.advance()
        granted = self._clamp(heartbeat_interval)
        if len(registration_id) > MAX_REGISTRATION_ID_BYTES:
            raise InvalidArgumentError(
                f"registration_id has {len(registration_id)} bytes; at most {MAX_REGISTRATION_ID_BYTES} are allowed"
            )
        if registration_id:
            known = self.store.get_node(self._registration_ids.get(registration_id, 0))
            if known is not None and (not node_id or known.node_id == node_id):
                log.info("CreateNode retried for node %d: answered with the same registration", known.node_id)
                self._sign_of_life(known, granted)
                return known.node_id, known.token, granted
        if node_id:
            if self.store.get_node(node_id) is not None:
                raise AlreadyExistsError(
                    f"a node with this key is already online as node {node_id}: a second session with the same "
                    "key is refused (it may register once the first one exits or goes offline)"
                )
        else:
            node_id = self._new_id(self.store.get_node)
        token = secrets.token_bytes(32)
        now = self.clock()
        until = now + granted * self.patience
        self.store.add_node(
            NodeRecord(node_id, token, granted, until, registered_at=now, address=address, public_key=public_key)
        )
        log.info(
            "node %d registered from %s (heartbeat every %.3g s)",
            node_id,
            address or "an unknown address",
            granted,
            extra={"event": "node_registered", "node_id": node_id},
        )
        if registration_id:
            self._registration_ids[registration_id] = node_id
            self._registered_as[node_id] = registration_id
        self.events.node_registered(node_id)
        self._push_node_deadline(node_id, until)
        self.listener.nodes_changed()
        return node_id, token, granted

    def authenticate(self, auth: pb.NodeAuth | None) -> NodeRecord:
        """The node named by ``auth`` if its token matches (after applying passed deadlines).

        Raises:
            UnauthenticatedError: no auth, unknown node (never registered, offline, deleted) or wrong token.
        """
        self.advance()
        if auth is None:
            raise UnauthenticatedError("request carries no NodeAuth: call CreateNode first")
        problem = id_problem("NodeAuth.node_id", auth.node_id)
        if problem:
            raise InvalidArgumentError(problem)
        node = self.store.get_node(auth.node_id)
        if node is None:
            raise UnauthenticatedError(f"unknown node {auth.node_id}: it is offline or deleted; register again")
        if not hmac.compare_digest(node.token, auth.token):
            raise UnauthenticatedError(f"wrong token for node {auth.node_id}")
        if self._disconnected and self._disconnected.pop(node.node_id, None) is not None:
            log.info(
                "node %d is back after losing its connection: it stays online",
                node.node_id,
                extra={"event": "node_reconnected", "node_id": node.node_id},
            )
        return node

    def connection_lost(self, node_ids: Iterable[int]) -> None:
        """The connection on which these nodes made their latest call is gone (the peer closed or reset it).

        Each registered node among them gets ``disconnect_grace`` seconds: if it makes any authenticated call
        by then (e.g. it reconnects after a network blip), it stays online with its normal deadline; if not,
        it goes offline and its queued and in-flight instructions become NODE_UNAVAILABLE error replies (unless
        it holds a pull open on another connection, which keeps it online as usual). Unknown ids are ignored.
        The I/O layer calls this; the link's own shutdown must not.
        """
        self.advance()
        at = self.clock() + self.disconnect_grace
        marked = 0
        for node_id in node_ids:
            if self.store.get_node(node_id) is None:
                continue
            self._disconnected[node_id] = at
            heapq.heappush(self._disconnect_deadlines, (at, node_id))
            marked += 1
        if len(self._disconnect_deadlines) > 64 and len(self._disconnect_deadlines) > 4 * len(self._disconnected):
            self._disconnect_deadlines = [(t, n) for n, t in self._disconnected.items()]
            heapq.heapify(self._disconnect_deadlines)
        if marked:
            log.info(
                "%d node(s) lost their connection: offline at +%g s unless they come back",
                marked,
                self.disconnect_grace,
            )
            self.listener.deadline_added(at)

    def disconnected(self) -> dict[int, float]:
        """Nodes in their reconnect grace: ``node_id -> Unix time it ends`` (a copy; for tests and stats)."""
        self.advance()
        return dict(self._disconnected)

    def _sign_of_life(self, node: NodeRecord, interval: float | None = None) -> None:
        interval = node.heartbeat_interval if interval is None else interval
        until = self.clock() + interval * self.patience
        self.store.set_liveness(node.node_id, interval, until)
        self._push_node_deadline(node.node_id, until)

    def heartbeat(self, auth: pb.NodeAuth | None, heartbeat_interval: float) -> float:
        """Record a heartbeat; return the granted interval (clamped to the link's bounds).

        Raises:
            UnauthenticatedError: see :meth:`authenticate`.
            InvalidArgumentError: the interval is not a finite number > 0.
        """
        node = self.authenticate(auth)
        granted = self._clamp(heartbeat_interval)
        self._sign_of_life(node, granted)
        return granted

    def delete_node(self, auth: pb.NodeAuth | None) -> None:
        """Unregister the node; its queued and in-flight instructions become NODE_UNAVAILABLE errors at once.

        Raises:
            UnauthenticatedError: see :meth:`authenticate`.
        """
        node = self.authenticate(auth)
        self._remove_node(node, f"node {node.node_id} was deleted (it unregistered)", self.clock())

    def remove_node(self, node_id: int, reason: str) -> bool:
        """Disconnect a node (e.g. its key left the allow-list): its queued and in-flight instructions become
        NODE_UNAVAILABLE error replies at once; its next call is UNAUTHENTICATED. Returns whether it was known."""
        node = self.store.get_node(node_id)
        if node is None:
            return False
        self._remove_node(node, reason, self.clock())
        return True

    def _remove_node(self, node: NodeRecord, reason: str, now: float) -> None:
        answered = []
        for ins in self.store.node_instructions(node.node_id):
            self._answer(ins, synthetic_error_reply(ins, ErrorCode.NODE_UNAVAILABLE, reason, now), by_link=True)
            answered.append(ins.message_id)
        self.store.remove_node(node.node_id)
        registration_id = self._registered_as.pop(node.node_id, None)
        if registration_id is not None:
            self._registration_ids.pop(registration_id, None)
        self._active_pulls.pop(node.node_id, None)
        self._disconnected.pop(node.node_id, None)
        self.events.node_left(node.node_id)
        log.info(
            "%s; %d instruction(s) answered NODE_UNAVAILABLE",
            reason,
            len(answered),
            extra={"event": "node_left", "node_id": node.node_id},
        )
        if answered:
            self.listener.replies_ready(answered)
        self.listener.instructions_queued(node.node_id)  # held pulls of that node end now
        self.listener.nodes_changed()

    # ---------------------------------------------------------------------------- Fleet API: messages
    def pull_instructions(self, auth: pb.NodeAuth | None, max_messages: int) -> list[pb.Message]:
        """Hand up to ``max_messages`` (0 means 1) queued live instructions to the node, oldest first,
        moving them to in-flight. Counts as a sign of life.

        Raises:
            UnauthenticatedError: see :meth:`authenticate`.
        """
        node = self.authenticate(auth)
        self._sign_of_life(node)
        taken = self.store.take_queued(node.node_id, max(1, max_messages))
        if taken:
            self.events.delivered(len(taken))
        return [ins.message for ins in taken]

    def has_queued(self, node_id: int) -> bool:
        """Whether the node has queued instructions (a cheap check before :meth:`pull_instructions`)."""
        return self.store.has_queued(node_id)

    def begin_pull(self, node_id: int) -> None:
        """A pull of this node is being held open: the node stays online meanwhile."""
        self._active_pulls[node_id] += 1

    def end_pull(self, node_id: int) -> None:
        """A held pull ended (answered or cancelled): the liveness countdown restarts from now."""
        left = self._active_pulls.get(node_id, 0) - 1
        if left > 0:
            self._active_pulls[node_id] = left
            return
        self._active_pulls.pop(node_id, None)
        node = self.store.get_node(node_id)
        if node is not None:
            self._sign_of_life(node)

    def requeue(self, node_id: int, messages: Sequence[pb.Message]) -> None:
        """Put instructions back at the front of the node's inbox: the response carrying them was not sent."""
        records = [self.store.get_instruction(m.metadata.message_id) for m in messages if m.metadata is not None]
        live = [r for r in records if r is not None and r.status is Status.IN_FLIGHT]
        if live:
            self.store.requeue_front(node_id, live)
            self.listener.instructions_queued(node_id)

    def push_replies(self, auth: pb.NodeAuth | None, messages: Sequence[pb.Message]) -> tuple[list[str], list[str]]:
        """Accept replies from a node; return ``(message_ids, reasons)`` parallel to ``messages``.

        A reply is accepted if it is well formed (see :func:`~fl_async.superlink.validation.reply_shape_problem`),
        answers a live, unanswered instruction of this node, has the instruction's run id, and every external array
        payload it names is held by the link (uploaded and complete); otherwise its position gets ``""`` and a reason.
        Accepted replies get a new ``message_id``.

        Raises:
            UnauthenticatedError: see :meth:`authenticate`.
            PermissionDeniedError: some reply claims another ``src_node_id`` or answers an instruction
                addressed to another node; nothing is changed.
        """
        node = self.authenticate(auth)
        node_id = node.node_id
        for position, msg in enumerate(messages):
            md = msg.metadata
            if md is None:
                continue
            if md.src_node_id != node_id:
                raise PermissionDeniedError(
                    f"reply {position}: src_node_id {md.src_node_id} is not the calling node {node_id}"
                )
            ins = self.store.get_instruction(md.reply_to_message) if md.reply_to_message else None
            if ins is not None and ins.node_id != node_id:
                raise PermissionDeniedError(
                    f"reply {position}: instruction {md.reply_to_message} is not addressed to node {node_id}"
                )
        self._sign_of_life(node)
        ids: list[str] = []
        reasons: list[str] = []
        ready: list[str] = []
        for position, msg in enumerate(messages):
            reason = shape_problem = reply_shape_problem(msg, node_id)
            ins = None
            if not reason:
                md = msg.metadata
                assert md is not None
                ins = self.store.get_instruction(md.reply_to_message)
                if ins is None:
                    reason = f"unknown instruction {md.reply_to_message} (never pushed, or already delivered)"
                elif ins.status is Status.ANSWERED:
                    reason = answered_reason(ins)
                elif md.run_id != ins.run_id:
                    reason = f"reply run_id {md.run_id} differs from the instruction's run_id {ins.run_id}"
                else:
                    reason = payload_problem(self.payloads, msg)
            if reason or ins is None:
                # A node re-sending a reply the link already has (its push broke off after sending) is routine:
                # INFO. Genuinely bad replies (expired, answered by the link, malformed) stay WARNING.
                link_answered = (
                    ins is not None
                    and ins.reply is not None
                    and ins.reply.error is not None
                    and (ins.reply.error.code in (ErrorCode.MESSAGE_EXPIRED, ErrorCode.NODE_UNAVAILABLE))
                )
                cancelled = ins is not None and ins.reply is not None and _code(ins.reply) == ErrorCode.CANCELLED
                resent = not shape_problem and (ins is None or (ins.status is Status.ANSWERED and not link_answered))
                log.log(
                    logging.INFO if resent or cancelled else logging.WARNING,
                    "PushReplies node %d position %d refused: %s",
                    node_id,
                    position,
                    reason,
                )
                ids.append("")
                reasons.append(reason)
                continue
            md = msg.metadata
            assert md is not None
            md.message_id = str(uuid.uuid4())
            self._answer(ins, msg)
            ready.append(ins.message_id)
            ids.append(md.message_id)
            reasons.append("")
        if ready:
            self.listener.replies_ready(ready)
        return ids, reasons

    # ---------------------------------------------------------------------------- helpers
    def _answer(self, ins: InstructionRecord, reply: pb.Message, *, by_link: bool = False) -> None:
        self.events.answered(ins, reply, by_link, self.clock())
        self.store.set_reply(ins.message_id, reply)
        self._unanswered -= 1
        self.payloads.release(ins.message)
        self.payloads.retain(reply)
        # answered: only the metadata is needed any more (its content, and any raw bytes kept for re-encoding,
        # are freed now rather than when the driver pulls the reply)
        ins.message = pb.Message(metadata=ins.message.metadata)
        deadline = self.lifetimes.reply_stored(ins.message_id, self.clock())
        if deadline is not None:
            self.listener.deadline_added(deadline)

    def stats(self) -> LinkStats:
        """Counts of runs, nodes, queued, in-flight and ready replies, and per node ``(queued, in_flight)``."""
        self.advance()
        queued, in_flight, replies, per_node = self.store.counts()
        return LinkStats(self.store.run_count(), self.store.node_count(), queued, in_flight, replies, per_node)

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

:class:`LinkState` keeps the run table, the instruction path (push, pull, push replies, TTLs) and the clock, and
composes one part per concern, sharing its store, clock and listener; its public methods for them delegate, so
callers need not know the parts:

* :mod:`.nodes` (``state.nodes``, :class:`~fl_async.superlink.nodes.NodeRegistry`): registration,
  authentication, heartbeats, liveness, held pulls, connection loss, node removal;
* :mod:`.run_end` (``state.run_ends``, :class:`~fl_async.superlink.run_end.RunEnds`): ending runs (EndRun, idle
  TTL, driver loss) and dropping unpulled replies, by the deadlines of :mod:`.lifetimes`;
* :mod:`.delivery` (``state.delivery``, :class:`~fl_async.superlink.delivery.ReplyDelivery`): the driver's
  exactly-once take of replies, and its undo;
* :mod:`.pushes` (``state.pushes``, :class:`~fl_async.superlink.pushes.PushMemory`): answers of retried pushes;
* :mod:`.restart` (:func:`~fl_async.superlink.restart.resume`): taking over a durable store's state at start.
"""

from __future__ import annotations

import heapq
import logging
import time
import uuid
from collections.abc import Callable, Iterable, Sequence

from fl_async.codec import config_from_proto
from fl_async.common.message import ErrorCode
from fl_async.proto.fl_async import v1 as pb
from fl_async.superlink.config import LinkConfig
from fl_async.superlink.delivery import ReplyDelivery
from fl_async.superlink.errors import (
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
from fl_async.superlink.nodes import MAX_REGISTRATION_ID_BYTES, NodeRegistry
from fl_async.superlink.pushes import PushMemory
from fl_async.superlink.replies import SYNTHETIC_REPLY_TTL, answered_reason, refused_reply_level, synthetic_error_reply
from fl_async.superlink.restart import RESUME_GRACE, resume
from fl_async.superlink.run_end import RunEnds
from fl_async.superlink.store import InstructionRecord, LinkStore, MemoryStore, NodeRecord, RunRecord, Status
from fl_async.superlink.validation import id_problem, instruction_problem, random_id, reply_shape_problem

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
        id_source: returns candidate run and node ids (default: :func:`~.validation.random_id`); candidates
            that are taken or outside ``[1, 2**64 - 1]`` are skipped. A test hook, e.g. to make the link assign
            ``2**64 - 1``.
        events: told about transitions, for metrics (default: nobody; see :mod:`fl_async.superlink.events`).

    Attributes:
        id_source: as the argument; may be replaced between calls (tests).
        nodes: the :class:`~fl_async.superlink.nodes.NodeRegistry` (registration, liveness, connection loss);
            the node methods here delegate to it.
        delivery: the :class:`~fl_async.superlink.delivery.ReplyDelivery` (the driver's exactly-once pull of
            replies); the reply methods here delegate to it.
        run_ends: the :class:`~fl_async.superlink.run_end.RunEnds` (EndRun, idle TTL, driver loss); the run-end
            methods here delegate to it.
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
        self.clock = clock
        self.store: LinkStore = store if store is not None else MemoryStore()
        self.listener: LinkListener = listener if listener is not None else NullListener()
        self.payloads: PayloadTracker = payloads if payloads is not None else DigestRefCounts()
        self.nodes = NodeRegistry(
            self,
            heartbeat_patience=heartbeat_patience,
            min_heartbeat_interval=min_heartbeat_interval,
            max_heartbeat_interval=max_heartbeat_interval,
            disconnect_grace=disconnect_grace,
        )
        self._ttl_deadlines: list[tuple[float, str]] = []  # (expires_at, message_id), lazily cleaned
        self._unanswered = 0  # instructions QUEUED or IN_FLIGHT (for compacting the TTL heap)
        self.lifetimes = Lifetimes(run_idle_ttl, reply_ttl, driver_grace)
        self.run_ends = RunEnds(self)
        self.pushes = PushMemory()
        self.delivery = ReplyDelivery(self)
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
        instructions it recovered. See :func:`fl_async.superlink.restart.resume` for the rules."""
        return resume(self, grace)

    # ---------------------------------------------------------------------------- time
    def next_deadline(self) -> float | None:
        """Earliest Unix time at which a node may go offline or an instruction may expire (``None``: none)."""
        heads = (self.nodes.next_deadline(), self._ttl_head(), self.lifetimes.next_deadline())
        times = [t for t in heads if t is not None]
        return min(times) if times else None

    def advance(self) -> None:
        """Apply every deadline that has passed by the clock: offline nodes (silent, or not back after a lost
        connection), expired instructions."""
        now = self.clock()
        self.nodes.expire(now)
        ttls = self._ttl_deadlines
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
        self.run_ends.apply(now)

    def take_ended_in_flight(self) -> dict[int, list[str]]:
        """In-flight ids of ended runs, per node: :meth:`.run_end.RunEnds.take_ended_in_flight`."""
        return self.run_ends.take_ended_in_flight()

    def adopt_stored_runs(self) -> None:
        """Arm the lifetimes of stored runs: :meth:`.run_end.RunEnds.adopt_stored_runs`."""
        self.run_ends.adopt_stored_runs()

    def driver_lost(self, run_ids: Iterable[int]) -> None:
        """These runs' driver connection is gone: :meth:`.run_end.RunEnds.driver_lost`."""
        self.run_ends.driver_lost(run_ids)

    def driver_back(self, run_id: int) -> None:
        """The run's driver made an authenticated call: :meth:`.run_end.RunEnds.driver_back`."""
        self.run_ends.driver_back(run_id)

    def touch_run(self, run_id: int) -> None:
        """The run's driver made a Driver API call: :meth:`.run_end.RunEnds.touch_run`."""
        self.run_ends.touch_run(run_id)

    def end_run(self, run_id: int, reason: str) -> tuple[list[pb.Message], list[str]]:
        """End a run: :meth:`.run_end.RunEnds.end_run` (returns ``(error_replies, unpulled)``)."""
        return self.run_ends.end_run(run_id, reason)

    @property
    def runs_ended(self) -> int:
        """How many runs :meth:`end_run` ended (the I/O layer trims the heap after one)."""
        return self.run_ends.runs_ended

    def _ttl_head(self) -> float | None:
        ttls = self._ttl_deadlines
        while ttls:
            ins = self.store.get_instruction(ttls[0][1])
            if ins is not None and ins.status is not Status.ANSWERED:
                return ttls[0][0]
            heapq.heappop(ttls)
        return None

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
        :data:`~fl_async.superlink.pushes.REMEMBERED_PUSHES`, across restarts with a durable store), nothing is
        queued: the first call's answer is returned again (a driver retrying a push whose response it never got).

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
        if push_id:
            first = self.pushes.repeat(run_id, push_id, len(messages))
            if first is not None:
                return first
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
            self.pushes.remember(run_id, push_id, list(ids), list(reasons))
        return ids, reasons

    def outstanding(self, run_id: int, message_ids: Iterable[str]) -> tuple[list[str], list[str]]:
        """Split requested ids into ``(ready, waiting)``: :meth:`.delivery.ReplyDelivery.outstanding`."""
        return self.delivery.outstanding(run_id, message_ids)

    def take_replies(self, run_id: int, message_ids: Iterable[str], limit: int = 0) -> list[InstructionRecord]:
        """Remove and return ready replies (their one delivery): :meth:`.delivery.ReplyDelivery.take_replies`."""
        return self.delivery.take_replies(run_id, message_ids, limit)

    def restore_replies(self, taken: Sequence[InstructionRecord]) -> None:
        """Undo :meth:`take_replies`: :meth:`.delivery.ReplyDelivery.restore_replies`."""
        self.delivery.restore_replies(taken)

    # ---------------------------------------------------------------------------- Fleet API: nodes (see .nodes)
    @property
    def patience(self) -> float:
        """Heartbeat patience (see :class:`~fl_async.superlink.nodes.NodeRegistry`)."""
        return self.nodes.patience

    @property
    def disconnect_grace(self) -> float:
        """Seconds a node whose connection was lost gets to come back (see :meth:`connection_lost`)."""
        return self.nodes.disconnect_grace

    def create_node(
        self,
        heartbeat_interval: float,
        address: str = "",
        *,
        node_id: int = 0,
        public_key: bytes = b"",
        registration_id: bytes = b"",
    ) -> tuple[int, bytes, float]:
        """Register a node: :meth:`NodeRegistry.create_node <fl_async.superlink.nodes.NodeRegistry.create_node>`."""
        return self.nodes.create_node(
            heartbeat_interval, address, node_id=node_id, public_key=public_key, registration_id=registration_id
        )

    def authenticate(self, auth: pb.NodeAuth | None) -> NodeRecord:
        """The node named by ``auth``: :meth:`NodeRegistry.authenticate <.nodes.NodeRegistry.authenticate>`."""
        return self.nodes.authenticate(auth)

    def connection_lost(self, node_ids: Iterable[int]) -> None:
        """These nodes' connection is gone: :meth:`.nodes.NodeRegistry.connection_lost`."""
        self.nodes.connection_lost(node_ids)

    def disconnected(self) -> dict[int, float]:
        """Nodes in their reconnect grace: :meth:`NodeRegistry.disconnected <.nodes.NodeRegistry.disconnected>`."""
        return self.nodes.disconnected()

    def heartbeat(self, auth: pb.NodeAuth | None, heartbeat_interval: float) -> float:
        """Record a heartbeat: :meth:`NodeRegistry.heartbeat <.nodes.NodeRegistry.heartbeat>`."""
        return self.nodes.heartbeat(auth, heartbeat_interval)

    def delete_node(self, auth: pb.NodeAuth | None) -> None:
        """Unregister the node: :meth:`NodeRegistry.delete_node <.nodes.NodeRegistry.delete_node>`."""
        self.nodes.delete_node(auth)

    def remove_node(self, node_id: int, reason: str) -> bool:
        """Disconnect a node: :meth:`NodeRegistry.remove_node <.nodes.NodeRegistry.remove_node>`."""
        return self.nodes.remove_node(node_id, reason)

    # ---------------------------------------------------------------------------- Fleet API: messages
    def pull_instructions(self, auth: pb.NodeAuth | None, max_messages: int) -> list[pb.Message]:
        """Hand up to ``max_messages`` (0 means 1) queued live instructions to the node, oldest first,
        moving them to in-flight. Counts as a sign of life.

        Raises:
            UnauthenticatedError: see :meth:`authenticate`.
        """
        nodes = self.nodes
        node = nodes.authenticate(auth)
        nodes.sign_of_life(node)
        taken = self.store.take_queued(node.node_id, max(1, max_messages))
        if taken:
            self.events.delivered(len(taken))
        return [ins.message for ins in taken]

    def has_queued(self, node_id: int) -> bool:
        """Whether the node has queued instructions (a cheap check before :meth:`pull_instructions`)."""
        return self.store.has_queued(node_id)

    def begin_pull(self, node_id: int) -> None:
        """A pull of this node is being held open: the node stays online meanwhile."""
        self.nodes.active_pulls[node_id] += 1

    def end_pull(self, node_id: int) -> None:
        """A held pull ended (answered or cancelled): the liveness countdown restarts from now."""
        self.nodes.end_pull(node_id)

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
        nodes = self.nodes
        node = nodes.authenticate(auth)
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
        nodes.sign_of_life(node)
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
                log.log(
                    refused_reply_level(ins, malformed=bool(shape_problem)),
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

"""Storage of runs, nodes, instructions and replies behind a small interface (in-memory implementation).

The rules (validation, authorization, TTL, liveness) live in :mod:`fl_async.superlink.state`; a store only
keeps records and answers lookups, so a durable backend can be added later by implementing
:class:`LinkStore` again. Every method is synchronous: the link's single event loop owns the state, and a
durable backend would write through (e.g. SQLite in WAL mode) inside these calls.

Instruction lifecycle, as kept here::

    add_instruction      take_queued             set_reply               pop_reply
    ---------------> QUEUED -----------> IN_FLIGHT ---------> ANSWERED ----------> (gone)
                       ^                    |   (reply, or an error the link synthesizes)
                       +-- requeue_front ---+   (the response carrying it could not be sent)
"""

from __future__ import annotations

import abc
import enum
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from fl_async.proto.fl_async import v1 as pb

__all__ = ["InstructionRecord", "LinkStore", "MemoryStore", "NodeRecord", "RunRecord", "Status"]


class Status(enum.Enum):
    """Where an instruction is in its lifecycle."""

    QUEUED = "queued"
    """In its node's inbox, not yet handed out."""
    IN_FLIGHT = "in_flight"
    """Handed to its node by a pull; no reply yet."""
    ANSWERED = "answered"
    """A reply (from the node, or an error synthesized by the link) waits for the driver."""


@dataclass
class RunRecord:
    """A run: id, app identity and its config as wire entries (validated when the run was created).

    Attributes:
        created_at: Unix time (link clock) the run was created.
        stopped: the run was stopped by an operator (``StopRun``): its driver's calls are refused.
        owner: the token owner name of the driver that created it (``""`` when the link has no driver tokens).
    """

    run_id: int
    fab_id: str
    fab_version: str
    run_config: list[pb.ValueEntry] = field(default_factory=list)
    created_at: float = 0.0
    stopped: bool = False
    owner: str = ""


@dataclass
class NodeRecord:
    """A registered node.

    Attributes:
        node_id: signed 64-bit id, nonzero.
        token: secret session token (32 bytes) the node sends with every call.
        heartbeat_interval: interval granted to the node, seconds.
        online_until: Unix time (link clock) after which the node is offline unless it shows a sign of life.
        registered_at: Unix time of its registration.
        address: peer address (``"host:port"``) of its registration call, ``""`` if unknown.
        public_key: SSH wire encoding of the key the node registered with (``b""``: none); the node id is bound
            to it (:func:`fl_async._keys.node_id_for`).
    """

    node_id: int
    token: bytes
    heartbeat_interval: float
    online_until: float
    registered_at: float = 0.0
    address: str = ""
    public_key: bytes = b""


@dataclass
class InstructionRecord:
    """An instruction pushed by a driver, with the link's bookkeeping.

    Attributes:
        message: the wire message as stored (``metadata.message_id`` assigned by the link).
        expires_at: ``created_at + ttl`` (Unix seconds).
        status: lifecycle position.
        reply: the reply waiting for the driver once ``status`` is ANSWERED.
        pushed_at: Unix time (link clock) the driver's push was accepted.
    """

    message: pb.Message
    expires_at: float
    status: Status = Status.QUEUED
    reply: pb.Message | None = None
    pushed_at: float = 0.0

    @property
    def message_id(self) -> str:
        """The id the link assigned at push."""
        return self.message.metadata.message_id  # type: ignore[union-attr]

    @property
    def node_id(self) -> int:
        """The destination node."""
        return self.message.metadata.dst_node_id  # type: ignore[union-attr]

    @property
    def run_id(self) -> int:
        """The run the instruction belongs to."""
        return self.message.metadata.run_id  # type: ignore[union-attr]


class LinkStore(abc.ABC):
    """What the link state needs from storage. Implementations need not be thread-safe (one loop owns them)."""

    # runs ------------------------------------------------------------------------------------
    @abc.abstractmethod
    def add_run(self, run: RunRecord) -> None:
        """Store a new run (its id is unique)."""

    @abc.abstractmethod
    def get_run(self, run_id: int) -> RunRecord | None:
        """The run with this id, or ``None``."""

    @abc.abstractmethod
    def run_count(self) -> int:
        """How many runs exist."""

    @abc.abstractmethod
    def remove_run(self, run_id: int) -> None:
        """Forget a run (its instructions must have been removed first; see :meth:`run_instructions`)."""

    @abc.abstractmethod
    def run_instructions(self, run_id: int) -> list[InstructionRecord]:
        """Every instruction of the run still held (queued, in flight, or answered and not yet pulled)."""

    # nodes -----------------------------------------------------------------------------------
    @abc.abstractmethod
    def add_node(self, node: NodeRecord) -> None:
        """Store a new node (its id is unique); its inbox starts empty."""

    @abc.abstractmethod
    def get_node(self, node_id: int) -> NodeRecord | None:
        """The node with this id, or ``None``."""

    @abc.abstractmethod
    def set_liveness(self, node_id: int, heartbeat_interval: float, online_until: float) -> None:
        """Record a node's granted interval and new ``online_until``."""

    @abc.abstractmethod
    def remove_node(self, node_id: int) -> None:
        """Forget a node. Its instructions must already have been answered (see ``node_instructions``)."""

    @abc.abstractmethod
    def nodes(self) -> Iterator[NodeRecord]:
        """All registered nodes."""

    @abc.abstractmethod
    def node_count(self) -> int:
        """How many nodes are registered."""

    # instructions ----------------------------------------------------------------------------
    @abc.abstractmethod
    def add_instruction(self, instruction: InstructionRecord) -> None:
        """Store a QUEUED instruction at the back of its node's inbox."""

    @abc.abstractmethod
    def get_instruction(self, message_id: str) -> InstructionRecord | None:
        """The instruction with this id (any status), or ``None``."""

    @abc.abstractmethod
    def take_queued(self, node_id: int, limit: int) -> list[InstructionRecord]:
        """Move up to ``limit`` instructions from the front of the node's inbox to IN_FLIGHT; return them."""

    @abc.abstractmethod
    def requeue_front(self, node_id: int, instructions: list[InstructionRecord]) -> None:
        """Put IN_FLIGHT instructions back at the front of the inbox, in order (a send failed)."""

    @abc.abstractmethod
    def has_queued(self, node_id: int) -> bool:
        """Whether the node's inbox is non-empty."""

    @abc.abstractmethod
    def node_instructions(self, node_id: int) -> list[InstructionRecord]:
        """The node's QUEUED and IN_FLIGHT instructions (for declaring them unavailable)."""

    @abc.abstractmethod
    def set_reply(self, message_id: str, reply: pb.Message) -> None:
        """Mark a QUEUED or IN_FLIGHT instruction ANSWERED with ``reply`` (leaves inbox / in-flight)."""

    @abc.abstractmethod
    def pop_reply(self, message_id: str) -> pb.Message:
        """Remove an ANSWERED instruction and return its reply (the delivery to the driver)."""

    @abc.abstractmethod
    def restore_reply(self, instruction: InstructionRecord) -> None:
        """Undo :meth:`pop_reply` (the response carrying the reply could not be sent)."""

    @abc.abstractmethod
    def counts(self) -> tuple[int, int, int, dict[int, tuple[int, int]]]:
        """``(queued, in_flight, replies, {node_id: (queued, in_flight)})`` over all nodes."""

    # introspection (admin calls; not on any hot path) -----------------------------------------
    def runs(self) -> Iterator[RunRecord]:
        """All runs (for listing). Stores that cannot list raise ``NotImplementedError``."""
        raise NotImplementedError(f"{type(self).__name__} cannot list runs")

    def instructions(self) -> Iterator[InstructionRecord]:
        """Every stored instruction, any status (for listing and per-run counts; O(stored instructions)).
        Stores that cannot list raise ``NotImplementedError``."""
        raise NotImplementedError(f"{type(self).__name__} cannot list instructions")


class MemoryStore(LinkStore):
    """In-memory :class:`LinkStore`: dicts and per-node deques. Everything is lost when the process ends.

    Methods behave as documented on :class:`LinkStore`. Instructions answered while queued (TTL expiry) stay in
    their node's deque until a pull skips them; per-node counters keep the queued counts exact.
    """

    def __init__(self) -> None:
        self._runs: dict[int, RunRecord] = {}
        self._nodes: dict[int, NodeRecord] = {}
        self._inbox: dict[int, deque[InstructionRecord]] = {}
        self._in_flight: dict[int, dict[str, InstructionRecord]] = {}
        self._queued: dict[int, int] = {}  # live QUEUED count per node (the deque may hold stale entries)
        self._instructions: dict[str, InstructionRecord] = {}
        self._replies = 0

    # runs
    def add_run(self, run: RunRecord) -> None:
        self._runs[run.run_id] = run

    def get_run(self, run_id: int) -> RunRecord | None:
        return self._runs.get(run_id)

    def run_count(self) -> int:
        return len(self._runs)

    def remove_run(self, run_id: int) -> None:
        self._runs.pop(run_id, None)

    def run_instructions(self, run_id: int) -> list[InstructionRecord]:
        return [ins for ins in self._instructions.values() if ins.run_id == run_id]

    # nodes
    def add_node(self, node: NodeRecord) -> None:
        self._nodes[node.node_id] = node
        self._inbox[node.node_id] = deque()
        self._in_flight[node.node_id] = {}
        self._queued[node.node_id] = 0

    def get_node(self, node_id: int) -> NodeRecord | None:
        return self._nodes.get(node_id)

    def set_liveness(self, node_id: int, heartbeat_interval: float, online_until: float) -> None:
        node = self._nodes[node_id]
        node.heartbeat_interval = heartbeat_interval
        node.online_until = online_until

    def remove_node(self, node_id: int) -> None:
        self._nodes.pop(node_id, None)
        self._inbox.pop(node_id, None)
        self._in_flight.pop(node_id, None)
        self._queued.pop(node_id, None)

    def nodes(self) -> Iterator[NodeRecord]:
        return iter(list(self._nodes.values()))

    def node_count(self) -> int:
        return len(self._nodes)

    # instructions
    def add_instruction(self, instruction: InstructionRecord) -> None:
        self._instructions[instruction.message_id] = instruction
        self._inbox[instruction.node_id].append(instruction)
        self._queued[instruction.node_id] += 1

    def get_instruction(self, message_id: str) -> InstructionRecord | None:
        return self._instructions.get(message_id)

    def take_queued(self, node_id: int, limit: int) -> list[InstructionRecord]:
        inbox = self._inbox.get(node_id)
        taken: list[InstructionRecord] = []
        if not inbox:
            return taken
        flight = self._in_flight[node_id]
        while inbox and len(taken) < limit:
            ins = inbox.popleft()
            if ins.status is not Status.QUEUED:  # answered while queued (expired): dropped lazily here
                continue
            self._queued[node_id] -= 1
            ins.status = Status.IN_FLIGHT
            flight[ins.message_id] = ins
            taken.append(ins)
        return taken

    def requeue_front(self, node_id: int, instructions: list[InstructionRecord]) -> None:
        inbox = self._inbox.get(node_id)
        flight = self._in_flight.get(node_id)
        if inbox is None or flight is None:
            return
        for ins in reversed(instructions):
            if ins.status is Status.IN_FLIGHT and flight.pop(ins.message_id, None) is not None:
                ins.status = Status.QUEUED
                inbox.appendleft(ins)
                self._queued[node_id] += 1

    def has_queued(self, node_id: int) -> bool:
        return self._queued.get(node_id, 0) > 0

    def node_instructions(self, node_id: int) -> list[InstructionRecord]:
        queued = [ins for ins in self._inbox.get(node_id, ()) if ins.status is Status.QUEUED]
        return [*queued, *self._in_flight.get(node_id, {}).values()]

    def set_reply(self, message_id: str, reply: pb.Message) -> None:
        ins = self._instructions[message_id]
        if ins.status is Status.QUEUED:  # stays in the deque; take_queued skips it
            if ins.node_id in self._queued:
                self._queued[ins.node_id] -= 1
        elif ins.status is Status.IN_FLIGHT:
            self._in_flight.get(ins.node_id, {}).pop(message_id, None)
        else:
            raise ValueError(f"instruction {message_id} is already answered")
        ins.status = Status.ANSWERED
        ins.reply = reply
        self._replies += 1

    def pop_reply(self, message_id: str) -> pb.Message:
        ins = self._instructions.pop(message_id)
        assert ins.status is Status.ANSWERED and ins.reply is not None
        self._replies -= 1
        return ins.reply

    def restore_reply(self, instruction: InstructionRecord) -> None:
        self._instructions[instruction.message_id] = instruction
        self._replies += 1

    def counts(self) -> tuple[int, int, int, dict[int, tuple[int, int]]]:
        per_node = {nid: (self._queued[nid], len(self._in_flight[nid])) for nid in self._nodes}
        queued = sum(q for q, _ in per_node.values())
        in_flight = sum(f for _, f in per_node.values())
        return queued, in_flight, self._replies, per_node

    def all_instructions(self) -> Iterable[InstructionRecord]:
        """Every stored instruction (tests, introspection)."""
        return list(self._instructions.values())

    def runs(self) -> Iterator[RunRecord]:
        return iter(list(self._runs.values()))

    def instructions(self) -> Iterator[InstructionRecord]:
        return iter(list(self._instructions.values()))

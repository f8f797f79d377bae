"""What the link state reports outward: wake-ups (:class:`LinkListener`), held payloads
(:class:`PayloadTracker`) and load (:class:`LinkStats`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple, Protocol

from fl_async.codec import external_arrays
from fl_async.proto.fl_async import v1 as pb

__all__ = ["DigestRefCounts", "LinkListener", "LinkStats", "NullListener", "PayloadTracker", "payload_problem"]


class LinkListener(Protocol):
    """What the state tells the I/O layer so it can wake long-polls and re-arm its timer."""

    def instructions_queued(self, node_id: int) -> None:
        """Instructions were queued for ``node_id`` (or the node was removed: wake its pulls)."""

    def replies_ready(self, message_ids: Sequence[str]) -> None:
        """Replies to these instruction ids are ready for the driver."""

    def nodes_changed(self) -> None:
        """The set of online nodes changed."""

    def deadline_added(self, at: float) -> None:
        """A deadline at Unix time ``at`` was added: :meth:`LinkState.next_deadline` may be earlier now."""


class NullListener:
    """A :class:`LinkListener` that ignores everything (a state used without I/O, e.g. in tests)."""

    def instructions_queued(self, node_id: int) -> None:
        """Ignored."""

    def replies_ready(self, message_ids: Sequence[str]) -> None:
        """Ignored."""

    def nodes_changed(self) -> None:
        """Ignored."""

    def deadline_added(self, at: float) -> None:
        """Ignored."""


class PayloadTracker(Protocol):
    """Hook for large arrays held by content hash: told when the link starts and stops holding
    a message. ``retain`` is called when an instruction is queued and when a reply is stored; ``release``
    when the instruction is answered (or expires / becomes unavailable) and when the reply is delivered."""

    def retain(self, message: pb.Message) -> None:
        """The link now holds ``message``."""

    def release(self, message: pb.Message) -> None:
        """The link no longer holds ``message``."""


def payload_problem(tracker: object, message: pb.Message) -> str:
    """Why the link cannot hold ``message`` because of its external array payloads (``""`` if it can).

    Asks the tracker's optional ``unavailable(message) -> str`` (:class:`~fl_async.superlink.payloads.LinkBlobs`
    answers whether every digest is uploaded and complete); trackers without it accept every message.
    """
    check = getattr(tracker, "unavailable", None)
    return check(message) if check is not None else ""


class DigestRefCounts:
    """A :class:`PayloadTracker` counting references to external array digests (``codec.external_arrays``).

    Attributes:
        refs: ``digest -> number of held messages referring to it``; digests at zero are removed.
        nbytes: ``digest -> payload size in bytes`` for the digests in ``refs``.
    """

    def __init__(self) -> None:
        self.refs: dict[bytes, int] = {}
        self.nbytes: dict[bytes, int] = {}

    def retain(self, message: pb.Message) -> None:
        """Count one more reference to each external digest of ``message``."""
        for digest, size in external_arrays(message):
            self.refs[digest] = self.refs.get(digest, 0) + 1
            self.nbytes[digest] = size

    def release(self, message: pb.Message) -> None:
        """Drop one reference to each external digest of ``message`` (forgotten at zero)."""
        for digest, _ in external_arrays(message):
            left = self.refs.get(digest, 0) - 1
            if left > 0:
                self.refs[digest] = left
            else:
                self.refs.pop(digest, None)
                self.nbytes.pop(digest, None)


# --------------------------------------------------------------------------------------------
# stats


class LinkStats(NamedTuple):
    """A snapshot of the link's load (for ``SuperLink.stats()`` and CLI commands)."""

    #: runs created since the link started
    runs: int
    #: registered (online) nodes
    nodes: int
    #: instructions waiting in inboxes
    queued: int
    #: instructions handed to nodes and not answered yet
    in_flight: int
    #: replies (including synthesized errors) waiting for a driver pull
    replies: int
    #: ``node_id -> (queued, in_flight)``
    per_node: dict[int, tuple[int, int]]

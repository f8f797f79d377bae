"""The SuperLink's node registry: registration, authentication, heartbeats, liveness and connection loss.

:class:`NodeRegistry` is the "Fleet API: nodes" part of :class:`~fl_async.superlink.state.LinkState`, which
composes it as ``state.nodes`` (sans-IO, same clock and store). It applies the **liveness** and **connection
loss** rules of :mod:`fl_async.superlink.state`: a node is online until ``last sign of life + interval *
patience`` (a held long-poll keeps it alive), a node whose connection was lost gets ``disconnect_grace`` seconds
to come back, and an offline, deleted or removed node is forgotten, each of its queued or in-flight instructions
becoming a ``NODE_UNAVAILABLE`` error reply at once (written through the state, which owns the instructions).
"""

from __future__ import annotations

import heapq
import hmac
import logging
import secrets
from collections import defaultdict
from collections.abc import Iterable
from typing import TYPE_CHECKING

from fl_async.common.message import ErrorCode
from fl_async.proto.fl_async import v1 as pb
from fl_async.superlink.errors import AlreadyExistsError, InvalidArgumentError, UnauthenticatedError
from fl_async.superlink.replies import synthetic_error_reply
from fl_async.superlink.store import NodeRecord
from fl_async.superlink.validation import id_problem, interval_problem

if TYPE_CHECKING:
    from fl_async.superlink.state import LinkState

__all__ = ["MAX_REGISTRATION_ID_BYTES", "NodeRegistry"]

log = logging.getLogger("fl_async.superlink")

MAX_REGISTRATION_ID_BYTES = 64
"""Longest ``CreateNodeRequest.registration_id`` the link accepts."""


class NodeRegistry:
    """The registered nodes of a :class:`~fl_async.superlink.state.LinkState` and their liveness.

    Args:
        state: the link state composing this registry (its store, clock, listener and events are shared; it
            answers a removed node's instructions and applies passed deadlines before each call).
        heartbeat_patience: offline after ``interval * patience`` seconds without a sign of life.
        min_heartbeat_interval: lower clamp of a node's requested interval (seconds).
        max_heartbeat_interval: upper clamp (seconds).
        disconnect_grace: seconds a node whose connection was lost gets to make an authenticated call
            before it goes offline (see :meth:`connection_lost`); > 0.

    Attributes:
        active_pulls: ``node_id -> pulls held open`` (a node holding one stays online).
        deadlines: heap of ``(online_until, node_id)``, lazily cleaned.
    """

    def __init__(
        self,
        state: LinkState,
        *,
        heartbeat_patience: float,
        min_heartbeat_interval: float,
        max_heartbeat_interval: float,
        disconnect_grace: float,
    ) -> None:
        self._state = state
        self._advance = state.advance
        self.store = state.store
        self.clock = state.clock
        self.listener = state.listener
        self.events = state.events
        self.patience = float(heartbeat_patience)
        self.min_interval = float(min_heartbeat_interval)
        self.max_interval = float(max_heartbeat_interval)
        self.disconnect_grace = float(disconnect_grace)
        self.deadlines: list[tuple[float, int]] = []  # (online_until, node_id), lazily cleaned
        self.active_pulls: dict[int, int] = defaultdict(int)
        self._disconnected: dict[int, float] = {}  # node_id -> end of its reconnect grace
        self._disconnect_deadlines: list[tuple[float, int]] = []  # (grace ends, node_id), lazily cleaned
        self._registration_ids: dict[bytes, int] = {}  # CreateNode registration_id -> node id (online nodes)
        self._registered_as: dict[int, bytes] = {}  # node id -> its registration_id (to forget it with the node)

    def clamp(self, interval: float) -> float:
        """``interval`` clamped to ``[min_interval, max_interval]``.

        Raises:
            InvalidArgumentError: the interval is not a finite number > 0.
        """
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
        self._advance()
        granted = self.clamp(heartbeat_interval)
        if len(registration_id) > MAX_REGISTRATION_ID_BYTES:
            raise InvalidArgumentError(
                f"registration_id has {len(registration_id)} bytes; at most {MAX_REGISTRATION_ID_BYTES} are allowed"
            )
        if registration_id:
            known = self.store.get_node(self._registration_ids.get(registration_id, 0))
            if known is not None and (not node_id or known.node_id == node_id):
                log.info("CreateNode retried for node %d: answered with the same registration", known.node_id)
                self.sign_of_life(known, granted)
                return known.node_id, known.token, granted
        if node_id:
            if self.store.get_node(node_id) is not None:
                raise AlreadyExistsError(
                    f"a node with this key is already online as node {node_id}: a second session with the same "
                    "key is refused (it may register once the first one exits or goes offline)"
                )
        else:
            node_id = self._state._new_id(self.store.get_node)
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
        self.push_deadline(node_id, until)
        self.listener.nodes_changed()
        return node_id, token, granted

    def authenticate(self, auth: pb.NodeAuth | None) -> NodeRecord:
        """The node named by ``auth`` if its token matches (after applying passed deadlines).

        Raises:
            UnauthenticatedError: no auth, unknown node (never registered, offline, deleted) or wrong token.
        """
        self._advance()
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
        self._advance()
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
        self._advance()
        return dict(self._disconnected)

    def sign_of_life(self, node: NodeRecord, interval: float | None = None) -> None:
        """The node is alive now: online for ``interval`` (default: its own) ``* patience`` seconds more."""
        interval = node.heartbeat_interval if interval is None else interval
        until = self.clock() + interval * self.patience
        self.store.set_liveness(node.node_id, interval, until)
        self.push_deadline(node.node_id, until)

    def heartbeat(self, auth: pb.NodeAuth | None, heartbeat_interval: float) -> float:
        """Record a heartbeat; return the granted interval (clamped to the link's bounds).

        Raises:
            UnauthenticatedError: see :meth:`authenticate`.
            InvalidArgumentError: the interval is not a finite number > 0.
        """
        node = self.authenticate(auth)
        granted = self.clamp(heartbeat_interval)
        self.sign_of_life(node, granted)
        return granted

    def delete_node(self, auth: pb.NodeAuth | None) -> None:
        """Unregister the node; its queued and in-flight instructions become NODE_UNAVAILABLE errors at once.

        Raises:
            UnauthenticatedError: see :meth:`authenticate`.
        """
        node = self.authenticate(auth)
        self.remove(node, f"node {node.node_id} was deleted (it unregistered)", self.clock())

    def remove_node(self, node_id: int, reason: str) -> bool:
        """Disconnect a node (e.g. its key left the allow-list): its queued and in-flight instructions become
        NODE_UNAVAILABLE error replies at once; its next call is UNAUTHENTICATED. Returns whether it was known."""
        node = self.store.get_node(node_id)
        if node is None:
            return False
        self.remove(node, reason, self.clock())
        return True

    def remove(self, node: NodeRecord, reason: str, now: float) -> None:
        """Forget ``node`` (logged with ``reason``): its queued and in-flight instructions are answered
        NODE_UNAVAILABLE, its held pulls end."""
        answered = []
        for ins in self.store.node_instructions(node.node_id):
            self._state._answer(ins, synthetic_error_reply(ins, ErrorCode.NODE_UNAVAILABLE, reason, now), by_link=True)
            answered.append(ins.message_id)
        self.store.remove_node(node.node_id)
        registration_id = self._registered_as.pop(node.node_id, None)
        if registration_id is not None:
            self._registration_ids.pop(registration_id, None)
        self.active_pulls.pop(node.node_id, None)
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

    # ---------------------------------------------------------------------------- held pulls
    def begin_pull(self, node_id: int) -> None:
        """A pull of this node is being held open: the node stays online meanwhile."""
        self.active_pulls[node_id] += 1

    def end_pull(self, node_id: int) -> None:
        """A held pull ended (answered or cancelled): the liveness countdown restarts from now."""
        left = self.active_pulls.get(node_id, 0) - 1
        if left > 0:
            self.active_pulls[node_id] = left
            return
        self.active_pulls.pop(node_id, None)
        node = self.store.get_node(node_id)
        if node is not None:
            self.sign_of_life(node)

    # ---------------------------------------------------------------------------- deadlines
    def push_deadline(self, node_id: int, until: float) -> None:
        """Arm the node's liveness deadline at ``until`` (and tell the listener)."""
        heap = self.deadlines
        heapq.heappush(heap, (until, node_id))
        if len(heap) > 64 and len(heap) > 4 * self.store.node_count():  # drop stale entries now and then
            live = {n.node_id: n.online_until for n in self.store.nodes()}
            self.deadlines = [e for e in heap if live.get(e[1]) == e[0]]
            heapq.heapify(self.deadlines)
        self.listener.deadline_added(until)

    def next_deadline(self) -> float | None:
        """Earliest time at which a node may go offline (silent, or not back after a lost connection)."""
        nodes, lost = self.deadlines, self._disconnect_deadlines
        while lost and self._disconnected.get(lost[0][1]) != lost[0][0]:
            heapq.heappop(lost)
        while nodes:
            until, node_id = nodes[0]
            node = self.store.get_node(node_id)
            if node is not None and node.online_until == until:
                break
            heapq.heappop(nodes)
        times = [h[0][0] for h in (nodes, lost) if h]
        return min(times) if times else None

    def expire(self, now: float) -> None:
        """Take offline every node whose deadline passed by ``now``: not back within its reconnect grace after a
        lost connection, or silent past ``interval * patience`` (unless it holds a pull)."""
        nodes, lost = self.deadlines, self._disconnect_deadlines
        while lost and lost[0][0] <= now:
            at, node_id = heapq.heappop(lost)
            if self._disconnected.get(node_id) != at:
                continue  # stale: the node came back, or was lost again later
            del self._disconnected[node_id]
            node = self.store.get_node(node_id)
            if node is None or self.active_pulls.get(node_id):
                continue  # gone already, or holding a pull on another connection: the heartbeat rule applies
            self.remove(
                node,
                f"node {node_id} is offline: its connection was lost and it did not come back within "
                f"{self.disconnect_grace:g} s (disconnect_grace)",
                now,
            )
        while nodes and nodes[0][0] <= now:
            until, node_id = heapq.heappop(nodes)
            node = self.store.get_node(node_id)
            if node is None or node.online_until != until or self.active_pulls.get(node_id):
                continue  # stale entry, or a held pull keeps the node alive (re-armed when it ends)
            self.remove(
                node,
                f"node {node_id} is offline: no heartbeat or pull for {node.heartbeat_interval * self.patience:.3g} s "
                f"(interval {node.heartbeat_interval:.3g} s x patience {self.patience:g})",
                now,
            )

    def resume(self, now: float, grace: float) -> None:
        """After a link restart: every stored node gets ``max(interval * patience, grace)`` seconds from ``now``
        to show a sign of life (see :meth:`~fl_async.superlink.state.LinkState.resume`)."""
        for node in self.store.nodes():
            until = now + max(node.heartbeat_interval * self.patience, grace)
            self.store.set_liveness(node.node_id, node.heartbeat_interval, until)
            self.push_deadline(node.node_id, until)

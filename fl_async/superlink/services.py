"""The Fleet API (nodes) and Driver API (server apps) over grpclib: thin async layers over :class:`LinkState`.

Long-polls follow one pattern: check the state; if nothing is ready, wait on a wake-up Event within
``min(requested timeout, max_poll_timeout)``; re-check after every wake-up; take items synchronously right
before returning; put them back if the response cannot be sent.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import anyio
import grpclib.const
import grpclib.server
from grpclib.const import Status
from grpclib.exceptions import GRPCError

from fl_async._credentials import LINK_PUBLIC_KEY_HEADER
from fl_async._grpc import Rpc, rpc_methods
from fl_async.proto.fl_async import v1 as pb
from fl_async.superlink.admission import CALLER
from fl_async.superlink.identity import NODE_KEY_REQUIRED, IdentityCallers, run_access_problem
from fl_async.superlink.payloads import blob_port_of, run_blob_token
from fl_async.superlink.rpc import (
    PUSH_ID,
    RESPONSE_METADATA,
    CallTracker,
    LimitedProtoCodec,
    Undo,
    peer_address,
    unary_handler,
)
from fl_async.superlink.state import (
    InvalidArgumentError,
    LinkState,
    PermissionDeniedError,
    UnauthenticatedError,
)
from fl_async.superlink.validation import run_request_problem, timeout_problem

if TYPE_CHECKING:
    from fl_async.superlink.admission import Admission
    from fl_async.superlink.connections import ConnectionTracker
    from fl_async.superlink.control import LinkControl
    from fl_async.superlink.wakeups import Wakeups

__all__ = ["MAX_MIN_NODES", "AdminService", "DriverService", "FleetService", "WrongApiService"]

MAX_MIN_NODES = 2**31 - 1
"""Largest ``WaitForNodesRequest.min_nodes`` the link accepts (the SDK checks the same bound)."""

log = logging.getLogger("fl_async.superlink")


class _Service:
    _service = ""
    _methods: tuple[Rpc, ...] = ()
    """The RPCs, read from the generated service base; each is handled by the method of the same name, which
    returns ``(response, undo)``."""

    def __init__(
        self,
        state: LinkState,
        wakeups: Wakeups,
        calls: CallTracker,
        max_poll_timeout: float,
        codec: LimitedProtoCodec | None = None,
        *,
        connections: ConnectionTracker | None = None,
        admission: Admission | None = None,
        run_token: Callable[[int], bytes] | None = None,
        run_limits: tuple[int, int] = (1024, 32 * 1024),
        control: LinkControl | None = None,
        identity: IdentityCallers | None = None,
    ) -> None:
        self.identity = identity
        self.state = state
        self.connections = connections
        self.admission = admission
        self.run_token = run_token
        self.run_limits = run_limits
        self.control = control
        self.codec = codec
        self.wakeups = wakeups
        self.calls = calls
        self.max_poll_timeout = max_poll_timeout

    def __mapping__(self) -> dict[str, grpclib.const.Handler]:
        """Method path -> grpclib handler (what ``grpclib.server.Server`` reads)."""
        return {
            rpc.path: unary_handler(
                f"{self._service}.{rpc.name}",
                getattr(self, rpc.method),
                rpc.request_type,
                rpc.response_type,
                self.calls,
                self.codec,
                self.admission,
            )
            for rpc in self._methods
        }

    def _wait_window(self, name: str, requested: float) -> float:
        problem = timeout_problem(name, requested)
        if problem:
            raise InvalidArgumentError(problem)
        return 0.0 if self.wakeups.closing else min(requested, self.max_poll_timeout)


class FleetService(_Service):
    """Fleet API handlers (see ``proto/fl_async/v1/fleet.proto`` and :class:`LinkState` for the rules).

    After every authenticated call, the node is bound to the call's connection (``connections``, when given),
    so that losing that connection starts the node's reconnect grace (:meth:`LinkState.connection_lost`).
    """

    _service = "Fleet"
    _methods = rpc_methods(pb.FleetBase)

    async def create_node(self, req: pb.CreateNodeRequest) -> tuple[pb.CreateNodeResponse, Undo]:
        """CreateNode: register a node (:meth:`LinkState.create_node`; a retry with the same ``registration_id``
        gets the same node); advertise the blob port.

        A node that proved a key in the headers (:mod:`fl_async.superlink.identity`) gets the id bound to its key;
        with an allow-list, a node without a key is refused UNAUTHENTICATED."""
        caller = CALLER.get()
        if caller.public_key:  # proved its key in the headers: the id bound to the key
            node_id, token, granted = self.state.create_node(
                req.heartbeat_interval,
                node_id=caller.node_id,
                public_key=caller.public_key,
                address=peer_address(),
                registration_id=req.registration_id,
            )
            if self.identity is not None:  # the link's public key, for the node's per-call key (ECDH)
                RESPONSE_METADATA.set(
                    ((LINK_PUBLIC_KEY_HEADER, self.identity.open_session(node_id, caller.public_key, token)),)
                )
        elif self.identity is not None and self.identity.keys_required:
            raise UnauthenticatedError(NODE_KEY_REQUIRED)
        else:
            node_id, token, granted = self.state.create_node(
                req.heartbeat_interval, address=peer_address(), registration_id=req.registration_id
            )
        self._bind(node_id)
        return pb.CreateNodeResponse(
            node_id=node_id, token=token, heartbeat_interval=granted, blob_port=blob_port_of(self.state)
        ), None

    async def delete_node(self, req: pb.DeleteNodeRequest) -> tuple[pb.DeleteNodeResponse, Undo]:
        """DeleteNode: unregister the caller; its instructions become NODE_UNAVAILABLE at once."""
        self.state.delete_node(req.auth)
        if self.connections is not None and req.auth is not None:
            self.connections.unbind(req.auth.node_id)
        return pb.DeleteNodeResponse(), None

    async def heartbeat(self, req: pb.HeartbeatRequest) -> tuple[pb.HeartbeatResponse, Undo]:
        """Heartbeat: extend the caller's liveness; answer the granted interval."""
        granted = self.state.heartbeat(req.auth, req.heartbeat_interval)
        node_id = req.auth.node_id if req.auth is not None else None
        self._bind(node_id)
        return pb.HeartbeatResponse(heartbeat_interval=granted, cancelled=self._notices(node_id)), None

    def _notices(self, node_id: int | None) -> list[str]:
        """Cancelled in-flight instructions the node has not been told about (each told once)."""
        control = self.control
        if control is None or node_id is None:
            return []
        return control.take_notices(node_id)

    async def _pull(self, auth: pb.NodeAuth | None, max_messages: int, window: float) -> list[pb.Message]:
        """Take queued instructions for the node, holding up to ``window`` s while there are none."""
        state = self.state
        messages = state.pull_instructions(auth, max_messages)
        assert auth is not None  # pull_instructions authenticated the caller
        node_id = auth.node_id
        self._bind(node_id)
        control = self.control
        if messages or window <= 0 or (control is not None and control.has_notices(node_id)):
            return messages
        log.debug("holding PullInstructions of node %d for up to %.3g s", node_id, window)
        state.begin_pull(node_id)
        try:
            with anyio.move_on_after(window):
                while not messages and not self.wakeups.closing:
                    event = self.wakeups.node_event(node_id)
                    if control is not None and control.has_notices(node_id):
                        break  # return now: the response carries the cancellations
                    if state.has_queued(node_id) or state.store.get_node(node_id) is None:
                        messages = state.pull_instructions(auth, max_messages)
                        continue
                    await event.wait()
        finally:
            state.end_pull(node_id)
        return messages

    def _bind(self, node_id: int | None) -> None:
        """The node just made an authenticated call on this call's connection."""
        if self.connections is not None and node_id is not None:
            self.connections.bind(node_id)

    def _requeue(self, auth: pb.NodeAuth | None, messages: list[pb.Message]) -> Undo:
        if not messages or auth is None:
            return None
        return lambda: self.state.requeue(auth.node_id, messages)

    async def pull_instructions(self, req: pb.PullInstructionsRequest) -> tuple[pb.PullInstructionsResponse, Undo]:
        """PullInstructions: long-poll for the caller's queued instructions (see :meth:`_pull`)."""
        messages = await self._pull(req.auth, req.max_messages, self._wait_window("timeout", req.timeout))
        cancelled = self._notices(req.auth.node_id if req.auth is not None else None)
        return pb.PullInstructionsResponse(messages=messages, cancelled=cancelled), self._requeue(req.auth, messages)

    async def push_replies(self, req: pb.PushRepliesRequest) -> tuple[pb.PushRepliesResponse, Undo]:
        """PushReplies: accept replies; with ``pull_max_messages > 0`` also long-poll for instructions."""
        window = self._wait_window("pull_timeout", req.pull_timeout)  # checked before anything changes
        ids, reasons = self.state.push_replies(req.auth, req.messages)
        self._bind(req.auth.node_id if req.auth is not None else None)
        instructions: list[pb.Message] = []
        if req.pull_max_messages > 0:
            try:
                instructions = await self._pull(req.auth, req.pull_max_messages, window)
            except UnauthenticatedError:  # removed while held: the replies were accepted; the next call says so
                instructions = []
        cancelled = self._notices(req.auth.node_id if req.auth is not None else None)
        response = pb.PushRepliesResponse(
            message_ids=ids, reasons=reasons, instructions=instructions, cancelled=cancelled
        )
        return response, self._requeue(req.auth, instructions)

    async def get_run(self, req: pb.FleetGetRunRequest) -> tuple[pb.FleetGetRunResponse, Undo]:
        """GetRun (Fleet): the run, or NOT_FOUND; the caller must be authenticated."""
        node = self.state.authenticate(req.auth)
        self._bind(node.node_id)
        return pb.FleetGetRunResponse(run=self.state.get_run(req.run_id)), None


class DriverService(_Service):
    """Driver API handlers (see ``proto/fl_async/v1/driver.proto`` and :class:`LinkState` for the rules)."""

    _service = "Driver"
    _methods = rpc_methods(pb.DriverBase)

    def _own(self, run_id: int) -> None:
        """Refuse (PERMISSION_DENIED) a caller that does not own run ``run_id`` (:func:`run_access_problem`)."""
        if self.admission is None:  # no header checks (a bare service in a test): nothing to compare with
            return
        problem = run_access_problem(self.state.store.get_run(run_id), CALLER.get(), run_id)
        if problem:
            raise PermissionDeniedError(problem)

    async def create_run(self, req: pb.CreateRunRequest) -> tuple[pb.CreateRunResponse, Undo]:
        """CreateRun: create a run; advertise the blob port and the run's driver token (also its blob token).

        ``fab_id``/``fab_version`` and ``run_config`` above the link's limits are INVALID_ARGUMENT."""
        problem = run_request_problem(req, *self.run_limits)
        if problem:
            raise InvalidArgumentError(problem)
        run_id = self.state.create_run(req.fab_id, req.fab_version, req.run_config, owner=CALLER.get().owner)
        self.state.touch_run(run_id)
        if self.connections is not None:  # losing this connection (if the driver stays on it) starts its grace
            self.connections.bind_run(run_id)
        log.info(
            "driver connected from %s: run %d created",
            peer_address() or "an unknown address",
            run_id,
            extra={"event": "run_created", "run_id": run_id},
        )
        blob_port = blob_port_of(self.state)
        blob_token = self.run_token(run_id) if self.run_token is not None else run_blob_token(self.state, run_id)
        return pb.CreateRunResponse(run_id=run_id, blob_port=blob_port, blob_token=blob_token), None

    async def get_run(self, req: pb.GetRunRequest) -> tuple[pb.GetRunResponse, Undo]:
        """GetRun: the run, or NOT_FOUND."""
        self._own(req.run_id)
        self.state.touch_run(req.run_id)
        return pb.GetRunResponse(run=self.state.get_run(req.run_id)), None

    async def get_nodes(self, req: pb.GetNodesRequest) -> tuple[pb.GetNodesResponse, Undo]:
        """GetNodes: ids of the online nodes, or NOT_FOUND for an unknown run."""
        self._own(req.run_id)
        self.state.touch_run(req.run_id)
        return pb.GetNodesResponse(node_ids=self.state.online_node_ids(req.run_id)), None

    async def wait_for_nodes(self, req: pb.WaitForNodesRequest) -> tuple[pb.WaitForNodesResponse, Undo]:
        """WaitForNodes: long-poll until ``min_nodes`` are online or the window ends; answer the online ids.

        ``min_nodes`` above :data:`MAX_MIN_NODES` is INVALID_ARGUMENT (a negative number a client wrote into the
        uint32 field arrives as 2**32 - n; protobuf itself keeps only the low 32 bits of larger values)."""
        self._own(req.run_id)
        window = self._wait_window("timeout", req.timeout)
        if req.min_nodes > MAX_MIN_NODES:
            raise InvalidArgumentError(
                f"min_nodes must be in 0..{MAX_MIN_NODES}, got {req.min_nodes} (a negative number sent as uint32?)"
            )
        ids = self.state.online_node_ids(req.run_id)
        if len(ids) < req.min_nodes and window > 0:
            with anyio.move_on_after(window):
                while len(ids) < req.min_nodes and not self.wakeups.closing:
                    waiter = self.wakeups.wait_nodes(req.min_nodes)  # woken only once the count reaches it
                    try:
                        await waiter.event.wait()
                    finally:
                        self.wakeups.drop_nodes(waiter)
                    ids = self.state.online_node_ids(req.run_id)
            ids = self.state.online_node_ids(req.run_id)
        self.state.touch_run(req.run_id)  # after the wait: a held call counts as activity
        return pb.WaitForNodesResponse(node_ids=ids), None

    async def push_messages(self, req: pb.PushMessagesRequest) -> tuple[pb.PushMessagesResponse, Undo]:
        """PushMessages: queue instructions; ``""`` and a reason at refused positions."""
        self._own(req.run_id)
        self.state.touch_run(req.run_id)
        ids, reasons = self.state.push_instructions(req.run_id, req.messages, push_id=PUSH_ID.get())
        return pb.PushMessagesResponse(message_ids=ids, reasons=reasons), None

    async def pull_messages(self, req: pb.PullMessagesRequest) -> tuple[pb.PullMessagesResponse, Undo]:
        """PullMessages: long-poll until each outstanding requested id has a reply (with ``max_messages > 0``:
        until one has); deliver the ready ones once (at most ``max_messages`` of them), and list the requested ids
        still outstanding (``outstanding``, including ready ones left for a later pull) so the driver knows whether
        to pull again."""
        self._own(req.run_id)
        state = self.state
        window = self._wait_window("timeout", req.timeout)
        state.touch_run(req.run_id)
        limit = req.max_messages
        ready, waiting = state.outstanding(req.run_id, req.message_ids)
        needed = len(waiting) if not limit else (0 if ready else 1)
        if needed > 0 and window > 0:
            log.debug("holding PullMessages of run %d for %d replies, up to %.3g s", req.run_id, needed, window)
            waiter = self.wakeups.wait_replies(waiting, needed)
            try:
                with anyio.move_on_after(window):
                    await waiter.event.wait()
            finally:
                self.wakeups.drop(waiter)
        state.touch_run(req.run_id)  # after the wait: a held call counts as activity
        taken = state.take_replies(req.run_id, req.message_ids, limit)
        if not taken:
            state.driver_run(req.run_id)  # a stopped run: nothing left to deliver, so the call fails
        replies: list[Any] = [ins.reply for ins in taken]
        ready, still = state.outstanding(req.run_id, req.message_ids)  # after the take: not the ones in `replies`
        if ready:  # ready but not delivered (max_messages): still outstanding for this driver
            keep = set(ready).union(still)
            still = [mid for mid in dict.fromkeys(req.message_ids) if mid in keep]

        def undo() -> None:
            state.restore_replies(taken)

        return pb.PullMessagesResponse(messages=replies, outstanding=still), (undo if taken else None)

    async def end_run(self, req: pb.EndRunRequest) -> tuple[pb.EndRunResponse, Undo]:
        """EndRun: end the run (:meth:`LinkState.end_run`); answer the CANCELLED error replies of its pending
        instructions and the ids of the replies it never pulled. NOT_FOUND for an unknown or ended run;
        PERMISSION_DENIED for a caller that does not own the run (:meth:`_own`; a run id alone is not enough)."""
        self.state.get_run(req.run_id)  # NOT_FOUND (naming why, for an ended run) before anything changes
        self._own(req.run_id)  # PERMISSION_DENIED for anyone but the run's driver: ending is destructive
        replies, unpulled = self.state.end_run(req.run_id, "its driver ended it (EndRun)")
        ended_in_flight = self.state.take_ended_in_flight()
        if self.control is not None:  # the nodes are told to stop handling them, as for a cancel
            for node_id, ids in ended_in_flight.items():
                self.control.notify_cancelled(node_id, ids)
        if self.connections is not None:
            self.connections.unbind_run(req.run_id)
        if self.admission is not None:
            self.admission.trim_soon()  # the run's payloads were freed: give the memory back to the OS
        return pb.EndRunResponse(messages=replies, unpulled=unpulled), None


class AdminService(_Service):
    """Admin API handlers (``proto/fl_async/v1/admin.proto``): listings, cancel and stop through
    :class:`~fl_async.superlink.control.LinkControl`. Served on the Driver API's port; none creates a run."""

    _service = "Admin"
    _methods = rpc_methods(pb.AdminBase)

    def _control(self) -> LinkControl:
        assert self.control is not None, "AdminService needs a LinkControl"
        return self.control

    async def list_nodes(self, req: pb.ListNodesRequest) -> tuple[pb.ListNodesResponse, Undo]:
        """ListNodes: the online nodes with address, registration time, last sign of life and load."""
        return pb.ListNodesResponse(nodes=self._control().list_nodes()), None

    async def list_runs(self, req: pb.ListRunsRequest) -> tuple[pb.ListRunsResponse, Undo]:
        """ListRuns: every run with its instruction counts."""
        return pb.ListRunsResponse(runs=self._control().list_runs()), None

    async def list_messages(self, req: pb.ListMessagesRequest) -> tuple[pb.ListMessagesResponse, Undo]:
        """ListMessages: the run's stored instructions with their state, or NOT_FOUND."""
        return pb.ListMessagesResponse(messages=self._control().list_messages(req.run_id)), None

    async def cancel_messages(self, req: pb.CancelMessagesRequest) -> tuple[pb.CancelMessagesResponse, Undo]:
        """CancelMessages: answer the run's queued / in-flight instructions CANCELLED (see LinkControl.cancel)."""
        from fl_async.superlink.control import MAX_CANCEL_IDS

        if len(req.message_ids) > MAX_CANCEL_IDS:
            raise InvalidArgumentError(f"at most {MAX_CANCEL_IDS} message ids per CancelMessages call")
        return pb.CancelMessagesResponse(cancelled=self._control().cancel(req.run_id, req.message_ids)), None

    async def stop_run(self, req: pb.StopRunRequest) -> tuple[pb.StopRunResponse, Undo]:
        """StopRun: cancel the run's instructions and refuse its driver's later calls, or NOT_FOUND."""
        cancelled, already = self._control().stop_run(req.run_id)
        return pb.StopRunResponse(cancelled=cancelled, already_stopped=already), None


class WrongApiService:
    """Answers the *other* API's methods on this port: UNIMPLEMENTED with a hint naming the right port.

    A server app pointed at the Fleet API port (or a node at the Driver API port) would otherwise get grpclib's
    answer to an unknown method, a trailers-only response without content-type that grpclib's client reports
    as ``UNKNOWN: Missing content-type header``.

    Args:
        served: the API this port serves (``"Fleet"`` or ``"Driver"``).
        other: the service class of the API it does not serve (its ``_methods`` are answered).
        other_port: returns the port the other API listens on (read when a call arrives, once both are bound).
    """

    def __init__(self, served: str, other: type[_Service], other_port: Callable[[], int | None]) -> None:
        self.served = served
        self.other = other
        self.other_port = other_port

    def message(self) -> str:
        """The status message: which API this port serves and where the other one is."""
        port = self.other_port()
        where = f"this SuperLink serves it on port {port}" if port else "it is on another port"
        return (
            f"this port serves the {self.served} API, not the {self.other._service} API "
            f"({where}; defaults: Driver API 9091, Fleet API 9092)"
        )

    def __mapping__(self) -> dict[str, grpclib.const.Handler]:
        """Every method path of the other API -> a handler refusing it (what ``grpclib.server.Server`` reads)."""

        async def refuse(stream: grpclib.server.Stream[Any, Any]) -> None:
            raise GRPCError(Status.UNIMPLEMENTED, self.message())

        other = self.other
        return {
            rpc.path: grpclib.const.Handler(
                refuse, grpclib.const.Cardinality.UNARY_UNARY, rpc.request_type, rpc.response_type
            )
            for rpc in other._methods
        }

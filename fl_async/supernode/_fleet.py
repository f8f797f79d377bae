"""Thin async client of the Fleet API: one grpclib Channel, one method per RPC, every call with a deadline.

Every transport failure is mapped to the fl-async exception tree with
:func:`fl_async._grpc.from_grpc`, here and nowhere else in the node runtime.

The two per-instruction calls (:meth:`FleetClient.pull` and :meth:`FleetClient.push`) send requests
pre-encoded by :mod:`fl_async._fastwire` straight through ``Channel.request`` (no stub, no
betterproto2 serialization of the envelope); their responses are decoded by :mod:`fl_async._fastparse` (the
instructions' content by betterproto2).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar

from grpclib.client import Channel
from grpclib.const import Cardinality

from fl_async._credentials import LINK_PUBLIC_KEY_HEADER, Metadata, node_metadata
from fl_async._fastparse import fast_response_type
from fl_async._fastwire import Encoded, pull_request
from fl_async._grpc import TRANSPORT_ERRORS, from_grpc, rpc_methods
from fl_async._keys import CallSigner, NodeKey, call_key, parse_public_key, registration_headers, ssh_wire
from fl_async.errors import NotAuthorizedError
from fl_async.proto.fl_async import v1 as pb

_PATHS = {rpc.name: rpc.path for rpc in rpc_methods(pb.FleetBase)}
_PULL_PATH = _PATHS["PullInstructions"]
_PUSH_PATH = _PATHS["PushReplies"]
_PULL_RESPONSE: Any = fast_response_type(pb.PullInstructionsResponse)
_PUSH_RESPONSE: Any = fast_response_type(pb.PushRepliesResponse)

__all__ = ["FleetClient"]

R = TypeVar("R")


class FleetClient:
    """Fleet API calls over one Channel (owned: :meth:`close` closes it). Construct inside the event loop that will
    use it (grpclib binds it).

    Args:
        channel: the channel to the link's Fleet API (:func:`fl_async._grpc.open_channel`, or in memory).
        address: ``HOST:PORT`` named in error messages.
        rpc_timeout: deadline in seconds of control calls (CreateNode, GetRun, ...).
        push_timeout: deadline in seconds of :meth:`push_replies` (replies may be large).
        poll_margin: seconds added to a long-poll's own timeout to get its deadline.
    """

    def __init__(
        self,
        channel: Channel,
        address: str,
        *,
        rpc_timeout: float,
        push_timeout: float,
        poll_margin: float,
    ) -> None:
        self.address = address
        self._channel = channel
        self._stub = pb.FleetStub(self._channel)
        self.on_cancelled: Callable[[list[str]], None] | None = None
        """Called with the ids of this node's in-flight instructions the link reports cancelled (any response)."""
        self.rpc_timeout = rpc_timeout
        self.push_timeout = push_timeout
        self.poll_margin = poll_margin
        self.credentials: Metadata | None = None
        """Header credentials of the pre-encoded calls (:meth:`pull`, :meth:`push`); set per registration."""
        self.signer: CallSigner | None = None
        """Per-call proof of a keyed session (:class:`fl_async._keys.CallSigner`); set per registration."""

    async def _call(self, what: str, fn: Callable[..., Awaitable[R]], request: Any, timeout: float) -> R:
        auth = getattr(request, "auth", None)  # credentials in the headers too: the link checks them first
        metadata = node_metadata(auth.node_id, auth.token) if isinstance(auth, pb.NodeAuth) else None
        if metadata is not None and self.signer is not None:
            metadata += self.signer.headers(what, bytes(request))
        try:
            return await fn(request, timeout=timeout, metadata=metadata)
        except TRANSPORT_ERRORS as exc:
            raise from_grpc(exc, what=f"{what} to {self.address}", api="Fleet", address=self.address) from exc

    async def create_node(
        self, heartbeat_interval: float, key: NodeKey | None = None, registration_id: bytes = b""
    ) -> tuple[pb.CreateNodeResponse, CallSigner | None]:
        """Register; returns node id, token and the granted heartbeat interval, and for a node with ``key`` the
        signer of its later calls. With ``key``, the request headers prove possession of the node's key
        (:func:`fl_async._keys.registration_headers`) and the link answers with its public key, from which both
        sides derive the session's call key (:func:`fl_async._keys.call_key`). A retry repeating
        ``registration_id`` (at most 64 bytes) gets the node the first attempt registered, if it did."""
        req = pb.CreateNodeRequest(heartbeat_interval=heartbeat_interval, registration_id=registration_id)
        metadata = registration_headers(key) if key is not None else None
        try:
            async with self._channel.request(
                _PATHS["CreateNode"],
                Cardinality.UNARY_UNARY,
                pb.CreateNodeRequest,
                pb.CreateNodeResponse,
                timeout=self.rpc_timeout,
                metadata=metadata,
            ) as stream:
                await stream.send_message(req, end=True)
                response = await stream.recv_message()
                initial: Mapping[str, Any] = stream.initial_metadata or {}
        except TRANSPORT_ERRORS as exc:
            raise from_grpc(exc, what=f"CreateNode to {self.address}", api="Fleet", address=self.address) from exc
        assert response is not None
        if key is None:
            return response, None
        link_key = initial.get(LINK_PUBLIC_KEY_HEADER)
        if not isinstance(link_key, str):
            raise NotAuthorizedError(
                f"CreateNode to {self.address}: the link did not answer with its public key: it does not support "
                "node authentication by key pair"
            )
        try:
            shared = call_key(key, parse_public_key(link_key), response.token, ssh_wire(key.public_key()))
        except ValueError as exc:
            raise NotAuthorizedError(f"CreateNode to {self.address}: unusable link public key: {exc}") from None
        return response, CallSigner(shared)

    async def delete_node(self, auth: pb.NodeAuth, *, timeout: float) -> None:
        """Unregister (the link reports this node's outstanding instructions as unavailable)."""
        await self._call("DeleteNode", self._stub.delete_node, pb.DeleteNodeRequest(auth=auth), timeout)

    async def heartbeat(self, auth: pb.NodeAuth, interval: float, *, timeout: float) -> float:
        """Tell the link this node is alive; returns the granted interval in seconds."""
        req = pb.HeartbeatRequest(auth=auth, heartbeat_interval=interval)
        resp = await self._call("Heartbeat", self._stub.heartbeat, req, timeout)
        self._cancelled(resp.cancelled)
        return resp.heartbeat_interval

    def _cancelled(self, ids: list[str]) -> None:
        if ids and self.on_cancelled is not None:
            self.on_cancelled(list(ids))

    async def _raw(self, what: str, path: str, request: bytes, response_type: type[R], timeout: float) -> R:
        try:
            metadata = self.credentials
            if metadata is not None and self.signer is not None:
                metadata += self.signer.headers(what, request)
            async with self._channel.request(
                path, Cardinality.UNARY_UNARY, Encoded, response_type, timeout=timeout, metadata=metadata
            ) as stream:
                await stream.send_message(Encoded(request), end=True)
                response = await stream.recv_message()
        except TRANSPORT_ERRORS as exc:
            raise from_grpc(exc, what=f"{what} to {self.address}", api="Fleet", address=self.address) from exc
        assert response is not None
        return response

    async def pull(self, auth: bytes, max_messages: int, timeout: float) -> list[pb.Message]:
        """As :meth:`pull_instructions`, with the credentials pre-encoded (:func:`fl_async._fastwire.auth_field`).

        Raises:
            FlAsyncError: a subclass, mapped from the transport failure (see :func:`from_grpc`).
        """
        resp: pb.PullInstructionsResponse = await self._raw(
            "PullInstructions",
            _PULL_PATH,
            pull_request(auth, max_messages, timeout),
            _PULL_RESPONSE,
            timeout + self.poll_margin,
        )
        self._cancelled(resp.cancelled)
        return resp.messages

    async def push(self, request: bytes, pull_timeout: float = 0.0) -> pb.PushRepliesResponse:
        """Send a pre-encoded ``PushRepliesRequest`` (:func:`fl_async._fastwire.push_request`).

        Args:
            request: the serialized request.
            pull_timeout: the ``pull_timeout`` the request carries (0 if it does not pull); it is added to
                the call's deadline (``push_timeout + pull_timeout``).

        Returns:
            One id (``""`` if refused) and one reason per reply, and the instructions pulled in the same call.

        Raises:
            FlAsyncError: a subclass, mapped from the transport failure (see :func:`from_grpc`).
        """
        resp: pb.PushRepliesResponse = await self._raw(
            "PushReplies", _PUSH_PATH, request, _PUSH_RESPONSE, self.push_timeout + pull_timeout
        )
        self._cancelled(resp.cancelled)
        return resp

    async def get_run(self, auth: pb.NodeAuth, run_id: int) -> pb.Run:
        """Fetch a run (its config)."""
        req = pb.FleetGetRunRequest(auth=auth, run_id=run_id)
        resp = await self._call("GetRun", self._stub.get_run, req, self.rpc_timeout)
        if resp.run is None:
            return pb.Run(run_id=run_id)
        return resp.run

    def close(self) -> None:
        """Close the channel (in-flight calls fail)."""
        self._channel.close()

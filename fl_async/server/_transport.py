"""The driver's only I/O: one grpclib channel to the link's Driver API, and the one place where
transport failures are mapped to fl-async's exception tree (:func:`fl_async._grpc.from_grpc`).
"""

from __future__ import annotations

from typing import Any

from grpclib.client import Channel

from fl_async._credentials import Metadata
from fl_async._grpc import TRANSPORT_ERRORS, from_grpc, open_channel, rpc_methods
from fl_async._net import client_ssl_context
from fl_async.errors import LinkConnectionError
from fl_async.proto.fl_async import v1 as pb
from fl_async.server._base import DEFAULT_CALL_TIMEOUT, ConnectArgs

__all__ = ["DriverTransport"]

_METHODS = {rpc.name: rpc.method for rpc in rpc_methods(pb.DriverBase)}
"""RPC name (for messages) -> stub method name, from the generated service."""
_ADMIN_METHODS = {rpc.name: rpc.method for rpc in rpc_methods(pb.AdminBase) if rpc.name == "CancelMessages"}
"""The Admin API methods (served on the Driver API's port) a driver uses."""


class DriverTransport:
    """Driver API calls over one grpclib channel (owned: :meth:`close` closes it).

    Must be created inside the event loop that will use it (grpclib binds a channel to the loop
    current at construction). :meth:`connect` opens a network channel; :mod:`fl_async.testing` passes an
    in-memory one.

    Args:
        channel: the channel to the link's Driver API.
        address: ``HOST:PORT`` named in error messages.
        call_timeout: seconds a call may take beyond the wait it asks the link to hold it open.
    """

    def __init__(self, channel: Channel, address: str, *, call_timeout: float = DEFAULT_CALL_TIMEOUT) -> None:
        self._address = address
        self._call_timeout = call_timeout
        self._channel = channel
        self._stub = pb.DriverStub(self._channel)
        self._admin = pb.AdminStub(self._channel)
        self._closed = False
        self.credentials: Metadata | None = None
        """Header credentials sent with every call once the run exists (:func:`fl_async._credentials.run_metadata`)."""

    @classmethod
    def connect(cls, args: ConnectArgs, *, call_timeout: float = DEFAULT_CALL_TIMEOUT) -> DriverTransport:
        """A transport over a new channel to ``args.address`` (TLS with ``args.root_certificates``).

        Raises:
            ValueError: the root certificates cannot be read or parsed.
        """
        ssl_ctx = client_ssl_context(args.root_certificates) if args.root_certificates is not None else None
        return cls(open_channel(args.host, args.port, ssl_ctx), args.address, call_timeout=call_timeout)

    async def call(self, rpc: str, request: Any, *, wait: float = 0.0) -> Any:
        """Make one unary call to the link.

        Args:
            rpc: the Driver API method, e.g. ``"PushMessages"``.
            request: its request message.
            wait: seconds the request asks the link to hold the call open (long-polls); the call's
                deadline is ``wait`` plus the call timeout.

        Returns:
            The response message.

        Raises:
            LinkConnectionError: the link cannot be reached, the connection broke, or the driver was closed.
            LinkTimeoutError: the call exceeded its deadline.
            RefusedByLinkError: the link answered with an error status (a subclass names which).
        """
        if self._closed:
            raise LinkConnectionError(f"{rpc} to {self._address}: the driver is closed")
        method = (
            getattr(self._admin, _ADMIN_METHODS[rpc]) if rpc in _ADMIN_METHODS else getattr(self._stub, _METHODS[rpc])
        )
        try:
            return await method(request, timeout=wait + self._call_timeout, metadata=self.credentials)
        except TRANSPORT_ERRORS as exc:  # only transport failures are mapped; a caller's error propagates unchanged
            if self._closed:
                raise LinkConnectionError(f"{rpc} to {self._address}: the driver was closed during the call") from exc
            raise from_grpc(exc, what=f"{rpc} to {self._address}", api="Driver", address=self._address) from exc

    def close(self) -> None:
        """Close the channel; calls in flight fail with :class:`LinkConnectionError`. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._channel.close()

"""The driver's only I/O: one grpclib channel to the link's Driver API, and the one place where
transport failures are mapped to fl-async's exception tree (:func:`fl_async.common.errors.from_grpc`).
"""

from __future__ import annotations

from typing import Any

from grpclib.client import Channel

from fl_async._credentials import Metadata
from fl_async._net import client_ssl_context
from fl_async.common.errors import LinkConnectionError, from_grpc, transport_errors
from fl_async.proto.fl_async import v1 as pb
from fl_async.server._base import DEFAULT_CALL_TIMEOUT, ConnectArgs

__all__ = ["DriverTransport"]

# RPC name (for messages) -> stub method name
_METHODS = {
    "CreateRun": "create_run",
    "GetRun": "get_run",
    "GetNodes": "get_nodes",
    "WaitForNodes": "wait_for_nodes",
    "PushMessages": "push_messages",
    "PullMessages": "pull_messages",
}
# Admin API methods (same port) the driver uses
_ADMIN_METHODS = {"CancelMessages": "cancel_messages"}


# only transport failures are mapped; anything else (a caller's error) propagates unchanged
_TRANSPORT_ERRORS = transport_errors()


class DriverTransport:
    """A grpclib channel to one link's Driver API.

    Must be created inside the event loop that will use it (grpclib binds a channel to the loop
    current at construction; ``../shared/reference/libraries.md`` §2.2).

    Args:
        args: the checked connection arguments (address, TLS roots).
        call_timeout: seconds a call may take beyond the wait it asks the link to hold it open.

    Raises:
        ValueError: the root certificates cannot be read or parsed.
    """

    def __init__(self, args: ConnectArgs, *, call_timeout: float = DEFAULT_CALL_TIMEOUT) -> None:
        ssl_ctx = client_ssl_context(args.root_certificates) if args.root_certificates is not None else None
        self._address = args.address
        self._call_timeout = call_timeout
        self._channel = Channel(args.host, args.port, ssl=ssl_ctx)
        self._stub = pb.DriverStub(self._channel)
        self._admin = pb.AdminStub(self._channel)
        self._closed = False
        self.credentials: Metadata | None = None
        """Header credentials sent with every call once the run exists (:func:`fl_async._credentials.run_metadata`)."""

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
        except _TRANSPORT_ERRORS as exc:  # grpclib, OS, TLS and deadline errors: mapped here and only here
            if self._closed:
                raise LinkConnectionError(f"{rpc} to {self._address}: the driver was closed during the call") from exc
            raise from_grpc(exc, what=f"{rpc} to {self._address}", api="Driver", address=self._address) from exc

    def close(self) -> None:
        """Close the channel; calls in flight fail with :class:`LinkConnectionError`. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._channel.close()

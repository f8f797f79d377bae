"""The driver's only I/O: one grpclib channel to the link's Driver API, and the one place where
transport failures are mapped to fl-async's exception tree (:func:`fl_async._grpc.from_grpc`).
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
import uuid
from typing import Any

from grpclib.client import Channel

from fl_async._credentials import PUSH_ID_HEADER, Metadata
from fl_async._grpc import TRANSPORT_ERRORS, from_grpc, open_channel, rpc_methods
from fl_async._net import client_ssl_context
from fl_async.errors import FlAsyncError, LinkConnectionError
from fl_async.proto.fl_async import v1 as pb
from fl_async.server._base import DEFAULT_CALL_TIMEOUT, ConnectArgs

__all__ = ["DriverTransport"]

_METHODS = {rpc.name: rpc.method for rpc in rpc_methods(pb.DriverBase)}
"""RPC name (for messages) -> stub method name, from the generated service."""
_ADMIN_METHODS = {rpc.name: rpc.method for rpc in rpc_methods(pb.AdminBase) if rpc.name == "CancelMessages"}
"""The Admin API methods (served on the Driver API's port) a driver uses."""

log = logging.getLogger("fl_async.server")

RETRY_WINDOW = 60.0
"""Seconds a call without its own deadline keeps retrying transport failures (e.g. a link restarting)."""

NOT_RETRIED = frozenset({"CreateRun"})
"""Calls not repeated once they may have reached the link (repeating them would act twice). ``PushMessages``
carries a push id (:data:`~fl_async._credentials.PUSH_ID_HEADER`): the link answers a repeat as the first call."""


def retry_pause(attempt: int) -> float:
    """Seconds to wait before retry ``attempt + 1``: ``min(2, 0.05 * 2**attempt)`` times a jitter in ``[0.5, 1]``."""
    return min(2.0, 0.05 * 2.0 ** min(attempt, 10)) * random.uniform(0.5, 1.0)


class _Retryable(Exception):
    """Carries a transport failure that may be retried."""

    def __init__(self, error: FlAsyncError) -> None:
        super().__init__(str(error))
        self.error = error


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
        self._reached = False
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

    async def call(self, rpc: str, request: Any, *, wait: float = 0.0, until: float | None = None) -> Any:
        """Make one unary call to the link, retrying transport failures (e.g. the link restarting) until ``until``.

        Only a transport that has reached the link once retries (a link that was never reached is reported at
        once: wrong address, or not started). A call that failed before reaching the link (connection refused) is
        always retried; one that may have
        reached it (the connection broke during the call) is retried unless it is in :data:`NOT_RETRIED`
        (``PushMessages`` is sent with a push id, so a repeat is answered as the first call: nothing is queued
        twice). Retries wait with capped, jittered
        exponential backoff (:func:`retry_pause`), never past ``until``. A long-poll (``wait > 0``) retried
        later asks the link to hold it only for what is left until ``until``.

        Args:
            rpc: the Driver API method, e.g. ``"PushMessages"``.
            request: its request message.
            wait: seconds the request asks the link to hold the call open (long-polls); the call's
                deadline is ``wait`` plus the call timeout.
            until: ``time.monotonic()`` after which a failure is raised instead of retried (``None``: up to
                :data:`RETRY_WINDOW` seconds after the first failure).

        Returns:
            The response message.

        Raises:
            LinkConnectionError: the link could not be reached until ``until``, the connection broke during a
                call that is not retried, or the driver was closed.
            LinkTimeoutError: the call exceeded its deadline.
            RefusedByLinkError: the link answered with an error status (a subclass names which).
        """
        attempt = 0
        first_failure = 0.0
        extra: Metadata = ((PUSH_ID_HEADER, uuid.uuid4().hex),) if rpc == "PushMessages" else ()
        while True:
            try:
                response = await self._call_once(rpc, request, wait, extra)
                self._reached = True
                return response
            except _Retryable as retryable:
                if not self._reached:  # never reached (wrong address, link not started): say so at once
                    raise retryable.error from retryable.error.__cause__
                now = time.monotonic()
                if attempt == 0:
                    first_failure = now
                give_up_at = first_failure + RETRY_WINDOW if until is None else until
                pause = retry_pause(attempt)
                if self._closed or now + pause >= give_up_at:
                    raise retryable.error from retryable.error.__cause__
                attempt += 1
                if attempt == 1:
                    log.warning("%s; retrying for up to %.3g s", retryable.error, give_up_at - now)
                await asyncio.sleep(pause)
                if wait > 0 and until is not None and hasattr(request, "timeout"):
                    wait = max(0.0, min(wait, until - time.monotonic()))
                    request.timeout = wait

    async def _call_once(self, rpc: str, request: Any, wait: float, extra: Metadata = ()) -> Any:
        if self._closed:
            raise LinkConnectionError(f"{rpc} to {self._address}: the driver is closed")
        method = (
            getattr(self._admin, _ADMIN_METHODS[rpc]) if rpc in _ADMIN_METHODS else getattr(self._stub, _METHODS[rpc])
        )
        metadata = (*(self.credentials or ()), *extra) if extra else self.credentials
        try:
            return await method(request, timeout=wait + self._call_timeout, metadata=metadata)
        except TRANSPORT_ERRORS as exc:  # only transport failures are mapped; a caller's error propagates unchanged
            if self._closed:
                raise LinkConnectionError(f"{rpc} to {self._address}: the driver was closed during the call") from exc
            error = from_grpc(exc, what=f"{rpc} to {self._address}", api="Driver", address=self._address)
            error.__cause__ = exc
            unsent = isinstance(exc, ConnectionRefusedError)
            if isinstance(error, LinkConnectionError) and (unsent or rpc not in NOT_RETRIED):
                raise _Retryable(error) from exc
            raise error from exc

    def close(self) -> None:
        """Close the channel; calls in flight fail with :class:`LinkConnectionError`. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._channel.close()

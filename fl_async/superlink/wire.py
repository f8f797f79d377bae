"""grpclib plumbing of the link: a size-limited codec and the unary handler wrapper both APIs use."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import grpclib.const
import grpclib.server
from grpclib.const import Status
from grpclib.encoding.proto import ProtoCodec
from grpclib.exceptions import GRPCError

from fl_async.superlink.state import LinkStateError

__all__ = ["LimitedProtoCodec", "unary_handler", "Undo", "CallTracker"]

log = logging.getLogger("fl_async.superlink")

Req = TypeVar("Req")
Resp = TypeVar("Resp")
Undo = Callable[[], None] | None
"""Called when a response could not be sent, to put back what the handler took (``None``: nothing to undo)."""


class LimitedProtoCodec(ProtoCodec):
    """grpclib's ``ProtoCodec`` (works with betterproto2 messages: ``FromString`` / ``SerializeToString``),
    refusing request messages larger than ``max_bytes`` and mapping undecodable ones to INVALID_ARGUMENT.

    grpclib has no message size limit of its own and buffers the whole message before decoding, so this
    check bounds what a handler can be made to process; the transport still buffered the bytes once.

    Args:
        max_bytes: largest accepted serialized request, in bytes.
    """

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes

    def decode(self, data: bytes, message_type: Any) -> Any:
        """Decode a request, or raise ``GRPCError`` RESOURCE_EXHAUSTED (too big) / INVALID_ARGUMENT (garbled)."""
        if len(data) > self.max_bytes:
            raise GRPCError(
                Status.RESOURCE_EXHAUSTED,
                f"{message_type.__name__} of {len(data)} bytes exceeds the link's limit of {self.max_bytes} bytes "
                "(max_request_bytes)",
            )
        try:
            return message_type.FromString(data)
        except Exception as exc:  # noqa: BLE001 - any decoding failure is the client's fault
            raise GRPCError(Status.INVALID_ARGUMENT, f"malformed {message_type.__name__}: {exc}") from None


class CallTracker:
    """Counts handler calls in progress so a graceful stop can wait for them to finish."""

    def __init__(self) -> None:
        self.active = 0
        self._idle: list[Callable[[], None]] = []

    def enter(self) -> None:
        self.active += 1

    def exit(self) -> None:
        self.active -= 1
        if self.active == 0:
            callbacks, self._idle = self._idle, []
            for cb in callbacks:
                cb()

    def when_idle(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` (once) when no call is in progress (at once if none is)."""
        if self.active == 0:
            callback()
        else:
            self._idle.append(callback)


def unary_handler(
    name: str,
    func: Callable[[Req], Awaitable[tuple[Resp, Undo]]],
    request_type: type[Req],
    response_type: type[Resp],
    calls: CallTracker,
) -> grpclib.const.Handler:
    """A grpclib unary-unary handler around ``func(request) -> (response, undo)``.

    * :class:`~fl_async.superlink.state.LinkStateError` becomes ``GRPCError`` with its status and message;
    * any other exception is logged with its traceback and answered INTERNAL naming the method (a bug; the
      link keeps running);
    * if sending the response fails or is cancelled, ``undo`` runs so nothing taken for it is lost.
    """

    async def handle(stream: grpclib.server.Stream[Any, Any]) -> None:
        calls.enter()
        try:
            request = await stream.recv_message()
            if request is None:
                raise GRPCError(Status.INVALID_ARGUMENT, f"{name}: the request has no message")
            try:
                response, undo = await func(request)
            except LinkStateError as exc:
                raise GRPCError(Status[exc.status], f"{name}: {exc}") from None
            except GRPCError:
                raise
            except Exception as exc:  # noqa: BLE001 - never crash on a request
                log.exception("%s failed", name)
                raise GRPCError(Status.INTERNAL, f"{name}: internal error ({type(exc).__name__})") from None
            try:
                await stream.send_message(response)
            except BaseException:
                if undo is not None:
                    undo()
                raise
        finally:
            calls.exit()

    return grpclib.const.Handler(handle, grpclib.const.Cardinality.UNARY_UNARY, request_type, response_type)

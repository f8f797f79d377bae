"""``ReplyStream``: replies to a driver's instructions, one at a time, as they become ready on the link.

Returned by :meth:`~fl_async.server.AsyncDriver.receive`. Its memory does not grow with the number of replies:
it pulls from the link only when asked for the next reply (``PullMessagesRequest.max_messages``, sized by the
replies seen so far) and downloads a reply's external (blob) arrays right before yielding it. The replies it
has not pulled wait on the link; those pulled but not yielded are small (external arrays not downloaded).
"""

from __future__ import annotations

import asyncio
import collections
import time
from typing import TYPE_CHECKING, Self

from fl_async.common.message import Message
from fl_async.proto.fl_async import v1 as pb
from fl_async.server._base import Deadline, poll_pause, still_waiting, wire_bytes

if TYPE_CHECKING:
    from fl_async.server.async_driver import AsyncDriver

__all__ = ["MAX_CONCURRENT_POLLS", "MAX_READ_AHEAD", "READ_AHEAD_BYTES", "ReplyStream"]

MAX_CONCURRENT_POLLS = 32
"""Kept for compatibility: :meth:`AsyncDriver.receive` now holds one long-poll at a time (the link answers it
as soon as any of the stream's replies is ready), so no reply ever waits for another."""

READ_AHEAD_BYTES = 4 << 20
"""Array bytes (inline + external) of the replies a :class:`ReplyStream` pulls ahead of the one it yields: a
stream pulls up to ``READ_AHEAD_BYTES // size of the last reply`` replies per poll (at least 1, at most
:data:`MAX_READ_AHEAD`); their external arrays are downloaded only when each is about to be yielded."""

MAX_READ_AHEAD = 64
"""Most replies a :class:`ReplyStream` pulls in one poll (small replies)."""


class ReplyStream:
    """Async iterator over replies as they arrive; returned by :meth:`AsyncDriver.receive`.

    Also an async context manager (closing it keeps replies pulled but not yielded for a later pull). It pulls
    from the link only inside ``__anext__``, and downloads a reply's external arrays right before yielding it,
    so its memory does not grow with the number of replies (see :meth:`AsyncDriver.receive`).
    """

    def __init__(self, driver: AsyncDriver, ids: list[str], timeout: float | None) -> None:
        self._driver = driver
        self._ids = ids
        self._timeout = timeout
        self._outstanding = dict.fromkeys(ids)  # not yielded yet
        self._wanted = dict.fromkeys(ids)  # not pulled yet, and still outstanding on the link
        self._inbox: collections.deque[pb.Message] = collections.deque()  # pulled, arrays not downloaded
        self._deadline = Deadline(None)
        self._read_ahead = 1
        self._pulled = False
        self._started = False
        self._closed = False

    @property
    def outstanding(self) -> list[str]:
        """Ids whose reply has not been yielded by this stream yet."""
        return list(self._outstanding)

    def _start(self) -> None:
        if self._started:
            return
        self._started = True
        self._driver._require_open()
        self._driver._streams.add(self)
        self._deadline = Deadline(self._timeout)
        for wire in self._driver._take_stashed(self._ids):
            self._wanted.pop(wire.metadata.reply_to_message, None)  # type: ignore[union-attr]
            self._inbox.append(wire)

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> Message:
        self._start()
        while not self._closed:
            try:
                if not self._inbox:
                    await self._fill()
                if not self._inbox:
                    break
                wire = self._inbox.popleft()
                try:
                    replies = await self._driver._materialize([wire])
                except BaseException:
                    self._inbox.appendleft(wire)  # kept (stashed on close), never lost
                    raise
            except Exception:
                await self.aclose()
                raise
            size = wire_bytes(wire)
            self._read_ahead = max(1, min(MAX_READ_AHEAD, READ_AHEAD_BYTES // max(1, size)))
            if replies:
                reply = replies[0]
                self._outstanding.pop(reply.metadata.reply_to_message, None)
                return reply
        await self.aclose()
        raise StopAsyncIteration

    async def _fill(self) -> None:
        """Pull the next replies (up to the read-ahead) into the inbox, long-polling until one is ready, the
        link lists none of the stream's ids as outstanding any more, or the deadline passes."""
        transport = self._driver._require_open()
        while not self._inbox and self._wanted and not (self._pulled and self._deadline.expired()):
            wait = self._deadline.wait_slice()
            started = time.monotonic()
            req = pb.PullMessagesRequest(
                run_id=self._driver.run_id,
                message_ids=list(self._wanted),
                timeout=wait,
                max_messages=self._read_ahead,
            )
            resp = await transport.call("PullMessages", req, wait=wait)
            self._pulled = True
            self._inbox.extend(resp.messages)
            self._wanted = dict.fromkeys(still_waiting(self._wanted, resp))
            if not resp.messages and self._wanted and not self._deadline.expired():
                pause = poll_pause(time.monotonic() - started, wait, self._deadline.remaining())
                if pause:  # the link did not hold the call (tiny max_poll_timeout, or shutting down)
                    await asyncio.sleep(pause)

    async def next_or_none(self) -> Message | None:
        """The next reply, or ``None`` when the stream has ended (used by the sync facade)."""
        try:
            return await self.__anext__()
        except StopAsyncIteration:
            return None

    async def aclose(self) -> None:
        """End the stream; replies pulled but not yielded are kept by the driver. Idempotent."""
        if self._closed:
            return
        self._closed = True
        if self._inbox:
            self._driver._stash(self._inbox)
            self._inbox.clear()
        self._driver._streams.discard(self)

    async def __aenter__(self) -> Self:
        self._start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

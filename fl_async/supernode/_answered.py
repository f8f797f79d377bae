"""At-most-once answering at the node: the message ids it is handling or has answered, in a bounded cache.

A link restarting on its database hands an instruction out again when it had not stored the reply yet (the
instruction was leased, not consumed). The node then must not run the ClientApp a second time:

* an instruction still being handled (the ClientApp runs, or its reply waits to be pushed) is dropped: the
  running handler delivers the one reply;
* an answered one gets the reply the node produced, sent again from the cache (the link accepts it if it has
  none, or refuses it as already answered);
* an answered one whose reply is no longer cached (too large to keep, or pushed out by newer ones) is reported
  lost: an error reply saying so, so that the driver gets exactly one answer.

The cache keeps the last :data:`MAX_ENTRIES` ids and at most :data:`MAX_BYTES` of reply bytes.
"""

from __future__ import annotations

from collections import OrderedDict

__all__ = ["MAX_BYTES", "MAX_ENTRIES", "RUNNING", "AnsweredCache"]

MAX_ENTRIES = 4096
"""Most message ids remembered."""
MAX_BYTES = 64 * 2**20
"""Most bytes of encoded replies kept for re-sending (a larger single reply is remembered without its bytes)."""

RUNNING = "running"
""":meth:`AnsweredCache.begin` result for an instruction still being handled."""


class AnsweredCache:
    """Which instructions this node is handling or has answered (see the module docstring)."""

    def __init__(self, max_entries: int = MAX_ENTRIES, max_bytes: int = MAX_BYTES) -> None:
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self._entries: OrderedDict[str, bytes | None] = OrderedDict()  # None: running; b"": answered, not kept
        self._bytes = 0

    def begin(self, message_id: str) -> str | bytes | None:
        """Mark ``message_id`` as being handled; if it was seen before, return :data:`RUNNING` or the reply bytes
        kept (``b""``: answered, bytes not kept) and change nothing. ``None``: new, handle it."""
        if not message_id:
            return None
        if message_id in self._entries:
            seen = self._entries[message_id]
            return RUNNING if seen is None else seen
        self._entries[message_id] = None
        self._trim()
        return None

    def answered(self, message_id: str, reply: bytes) -> None:
        """The reply to ``message_id`` (its encoded bytes) reached the link: keep it for re-sending."""
        if message_id not in self._entries:
            return
        keep = reply if len(reply) <= self.max_bytes // 4 else b""
        old = self._entries[message_id]
        self._bytes += len(keep) - (len(old) if old else 0)
        self._entries[message_id] = keep
        self._trim()

    def finished(self, message_id: str) -> None:
        """Handling ``message_id`` ended (a reply was sent, or none can be): never run it again."""
        if self._entries.get(message_id, b"") is None:
            self._entries[message_id] = b""

    def _trim(self) -> None:
        while len(self._entries) > self.max_entries or self._bytes > self.max_bytes:
            victim = next((mid for mid, data in self._entries.items() if data is not None), None)
            if victim is None:
                return  # only running ones: they are needed
            data = self._entries.pop(victim)
            self._bytes -= len(data or b"")

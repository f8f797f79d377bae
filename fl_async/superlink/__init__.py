"""The SuperLink: an asyncio broker serving the Driver API (server apps) and the Fleet API (SuperNodes).

Instead of Flower's 3-second polling on both sides, calls are held open (long-polls) and answered the moment
there is something to say. See ``docs/superlink.md``.

Public surface::

    from fl_async.superlink import SuperLink, LinkConfig, serve, LinkStats
"""

from fl_async.superlink.config import LinkConfig
from fl_async.superlink.link import SuperLink, serve
from fl_async.superlink.state import (
    SYNTHETIC_REPLY_TTL,
    DigestRefCounts,
    LinkListener,
    LinkState,
    LinkStats,
    PayloadTracker,
)
from fl_async.superlink.store import LinkStore, MemoryStore

__all__ = [
    "SYNTHETIC_REPLY_TTL",
    "DigestRefCounts",
    "LinkConfig",
    "LinkListener",
    "LinkState",
    "LinkStats",
    "LinkStore",
    "MemoryStore",
    "PayloadTracker",
    "SuperLink",
    "serve",
]

"""Shared fixtures: anyio pinned to asyncio (grpclib is asyncio-only), and real SuperLinks on 127.0.0.1.

* ``superlink``: a started :class:`~fl_async.superlink.SuperLink` on 127.0.0.1 with free ports (plaintext,
  ``max_poll_timeout=5`` s, ``min_heartbeat_interval=0.01`` s); read ``.driver_address`` / ``.fleet_address``.
* ``superlink_factory``: ``await superlink_factory(config=None, **overrides)`` starts another one; overrides are
  ``LinkConfig`` fields on top of the same test defaults (or of ``config`` if given). Every link it made is
  stopped at teardown (``stop`` is idempotent, so a test may stop one early, e.g. to restart a link on the same
  port: pass ``fleet_api_address=old.fleet_address``; sockets are bound with SO_REUSEADDR).
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from hypothesis import settings

from fl_async.superlink import LinkConfig, SuperLink

# hypothesis' per-example deadline (200 ms) measures the machine's load, not the code: the tests that use it check
# bytes and values, so the deadline is off (the shared CI machine runs several suites at once)
settings.register_profile("fl-async", deadline=None)
settings.load_profile("fl-async")

TEST_LINK_DEFAULTS: dict[str, Any] = {
    "driver_api_address": "127.0.0.1:0",
    "fleet_api_address": "127.0.0.1:0",
    "blob_api_address": "127.0.0.1:0",  # a free port even when a test fixes the Fleet API's port
    "max_poll_timeout": 5.0,
    "min_heartbeat_interval": 0.01,
}
"""LinkConfig fields the SuperLink fixtures use unless overridden."""

SuperLinkFactory = Callable[..., Awaitable[SuperLink]]


@pytest.fixture(scope="session")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def superlink_factory() -> AsyncIterator[SuperLinkFactory]:
    links: list[SuperLink] = []

    async def make(config: LinkConfig | None = None, **overrides: Any) -> SuperLink:
        if config is None:
            config = LinkConfig(**{**TEST_LINK_DEFAULTS, **overrides})
        elif overrides:
            config = dataclasses.replace(config, **overrides)
        link = SuperLink(config)
        await link.start()
        links.append(link)
        return link

    try:
        yield make
    finally:
        for link in reversed(links):
            await link.stop(grace=0.2)


@pytest.fixture
async def superlink(superlink_factory: SuperLinkFactory) -> SuperLink:
    return await superlink_factory()

"""Shared fixtures: anyio pinned to asyncio (grpclib is asyncio-only)."""

import pytest


@pytest.fixture(scope="session")
def anyio_backend() -> str:
    return "asyncio"

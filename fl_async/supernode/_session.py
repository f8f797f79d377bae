"""Session bookkeeping of the node runtime: one registration, why it ended, and the reconnect policy."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field

import anyio
from tenacity import RetryCallState

from fl_async._credentials import node_metadata
from fl_async._fastwire import auth_field
from fl_async._keys import CallSigner
from fl_async.errors import (
    FlAsyncError,
    InvalidRequestError,
    LinkConnectionError,
    LinkTimeoutError,
    NotAuthorizedError,
    RefusedByLinkError,
    ResourceExhaustedError,
)
from fl_async.proto.fl_async import v1 as pb
from fl_async.supernode._fleet import FleetClient

__all__ = ["_Backoff", "_HealthySessionLost", "_PayloadRefused", "_Session", "_SessionLost", "_positive", "_transient"]


class _Backoff:
    """Tenacity wait strategy: ``min(cap, initial * 2**(n-1))`` scaled by a uniform ``[0.5, 1.0]`` jitter.

    The 50 % floor keeps retries from spinning; the jitter spreads many nodes reconnecting at once.
    """

    def __init__(self, initial: float, cap: float) -> None:
        self.initial = min(initial, cap)
        self.cap = cap

    def __call__(self, retry_state: RetryCallState) -> float:
        n = max(1, retry_state.attempt_number)
        base = min(self.cap, self.initial * 2.0 ** min(n - 1, 60))
        return base * random.uniform(0.5, 1.0)


class _SessionLost(FlAsyncError):
    """A registered session ended (link unreachable, or it forgot this node); register again."""


class _PayloadRefused(FlAsyncError):
    """A reply's payload cannot be delivered (not a transport failure: retrying will not help)."""


class _HealthySessionLost(_SessionLost):
    """As :class:`_SessionLost`, after a session that lasted long enough to reset the backoff."""


def _transient(exc: BaseException) -> bool:
    if isinstance(exc, _HealthySessionLost):
        return False  # handled by _maintain: fresh backoff
    if isinstance(exc, (_SessionLost, LinkConnectionError, LinkTimeoutError, ResourceExhaustedError)):
        return True
    if isinstance(exc, RefusedByLinkError) and exc.status == "ALREADY_EXISTS":
        return True  # another live session holds this node's key: retry until it exits or goes offline
    if isinstance(exc, (NotAuthorizedError, InvalidRequestError)):
        return False  # the link refuses to register this node: retrying will not help
    if isinstance(exc, RefusedByLinkError) and exc.status == "UNIMPLEMENTED":
        return False  # not a Fleet API (e.g. the Driver API's port): retrying will not help
    return isinstance(exc, RefusedByLinkError)  # UNKNOWN/INTERNAL/...: possibly a restarting link


@dataclass
class _Session:
    """One registration: the connection used, the credentials and the scope to cancel when it is lost."""

    conn: FleetClient
    auth: pb.NodeAuth
    scope: anyio.CancelScope = field(default_factory=anyio.CancelScope)
    lost: FlAsyncError | None = None
    signer: CallSigner | None = None
    """Per-call proof of a session registered with a key pair (``None``: session credentials alone)."""
    wire_auth: bytes = field(init=False)
    """``auth`` encoded once, for the pre-encoded pull/push requests (:mod:`fl_async._fastwire`)."""

    def __post_init__(self) -> None:
        self.wire_auth = auth_field(self.auth)
        self.conn.credentials = node_metadata(self.auth.node_id, self.auth.token)
        self.conn.signer = self.signer

    @property
    def node_id(self) -> int:
        return self.auth.node_id

    def fail(self, exc: FlAsyncError) -> None:
        """Record why the session ended (first reason wins) and end it."""
        if self.lost is None:
            self.lost = exc
        self.scope.cancel()


def _positive(name: str, value: float, *, allow_zero: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number of seconds, got {type(value).__name__}")
    ok = value >= 0 if allow_zero else value > 0
    if not ok or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number {'>= 0' if allow_zero else '> 0'}, got {value!r}")
    return float(value)

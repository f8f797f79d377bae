"""``LinkConfig``: every knob of a SuperLink, validated once at construction."""

from __future__ import annotations

import math
from dataclasses import dataclass

from fl_async._net import (
    DEFAULT_DRIVER_API_ADDRESS,
    DEFAULT_FLEET_API_ADDRESS,
    ServerTLS,
    format_address,
    parse_address,
)

__all__ = ["DEFAULT_BLOB_API_PORT", "LinkConfig", "address_conflict", "default_blob_api_address"]

DEFAULT_BLOB_API_PORT = 9093
"""Default port of the blob data path (the slot of Flower's Fleet REST API port), on the Fleet API's host."""

_WILDCARD_HOSTS = {"", "0.0.0.0", "::"}


def default_blob_api_address(fleet_api_address: str) -> str:
    """The blob data path's default address: the Fleet API's host with port :data:`DEFAULT_BLOB_API_PORT`
    (port 0 when the Fleet API's port is 0, so that links on free ports stay on free ports)."""
    host, port = parse_address(fleet_api_address)
    return format_address(host, DEFAULT_BLOB_API_PORT if port else 0)


def address_conflict(addresses: dict[str, str]) -> str:
    """Why some of ``{name: "HOST:PORT"}`` cannot all be bound at once: two share a nonzero port on the same
    host (or one of them on a wildcard host); ``""`` when they can. Addresses must already parse."""
    seen: list[tuple[str, str, int]] = []
    for name, address in addresses.items():
        host, port = parse_address(address)
        for other, other_host, other_port in seen:
            if (
                port
                and port == other_port
                and (host == other_host or host in _WILDCARD_HOSTS or other_host in _WILDCARD_HOSTS)
            ):
                return f"{other} ({format_address(other_host, other_port)}) and {name} ({address}) use the same port"
        seen.append((name, host, port))
    return ""


@dataclass(frozen=True)
class LinkConfig:
    """Configuration of a :class:`~fl_async.superlink.SuperLink` (frozen; validated in ``__post_init__``).

    Attributes:
        driver_api_address: ``"HOST:PORT"`` where the Driver API listens (server apps); port 0 picks a free
            port (read it back from ``SuperLink.driver_address``). Default ``0.0.0.0:9091`` as Flower.
        fleet_api_address: ``"HOST:PORT"`` where the Fleet API listens (SuperNodes). Default ``0.0.0.0:9092``.
        tls: server certificate material for both APIs, or ``None`` for plaintext (insecure).
        heartbeat_patience: a node is declared offline when it has shown no sign of life (heartbeat, pull)
            for ``heartbeat_interval * heartbeat_patience`` seconds. Must be >= 1.
        min_heartbeat_interval: lower bound, in seconds, of the interval a node may ask for (requests
            below it are raised to it).
        max_heartbeat_interval: upper bound, in seconds, of the interval a node may ask for.
        max_poll_timeout: cap, in seconds, on how long a long-poll (node pull, driver pull, wait for
            nodes) is held open, whatever the caller asks for.
        max_request_bytes: largest accepted request message, in bytes; bigger requests are refused
            with ``RESOURCE_EXHAUSTED`` naming the size and this limit (grpclib itself has no limit).
        backlog: listen backlog of both server sockets. grpclib's default of 100 drops connections
            when thousands of nodes connect at once (measured: 278 of 5,000); 8,192 served all.
        blob_api_address: ``"HOST:PORT"`` of the blob data path, where arrays above the inline limit (1 MiB)
            travel outside gRPC (see ``docs/large-models.md``); port 0 picks a free port (read it back from
            ``SuperLink.blob_address``). ``None`` (default): the Fleet API's host with port 9093
            (:data:`DEFAULT_BLOB_API_PORT`), or port 0 when the Fleet API's port is 0. Nodes and drivers learn
            the port from the link, so a firewall must let it through as well as the two API ports.
            After construction it holds the resolved address.
        blob_header_timeout: seconds a blob-path connection may take to send a complete request header
            (and token) once it has started one; slower connections are dropped. Must be > 0.
        disconnect_grace: seconds a node gets to come back after the connection of its latest call was
            lost (closed or reset by the peer, e.g. the node process died). A node that makes any
            authenticated call within it (e.g. it reconnects after a network blip) stays online; otherwise
            it goes offline and its instructions become NODE_UNAVAILABLE. Must be > 0; a value above
            ``heartbeat_interval * heartbeat_patience`` leaves detection to the heartbeat rule alone.
        metrics_address: ``"HOST:PORT"`` where Prometheus metrics are served over HTTP at ``/metrics``
            (``None``, the default: no metrics; port 0: any free port, read back from ``SuperLink.metrics_address``).
            See ``docs/operations.md``.

    Raises:
        ValueError: a field is out of range or an address is malformed (the message names the field).
    """

    driver_api_address: str = DEFAULT_DRIVER_API_ADDRESS
    fleet_api_address: str = DEFAULT_FLEET_API_ADDRESS
    tls: ServerTLS | None = None
    heartbeat_patience: float = 2.0
    min_heartbeat_interval: float = 0.05
    max_heartbeat_interval: float = 300.0
    max_poll_timeout: float = 30.0
    max_request_bytes: int = 256 * 2**20
    backlog: int = 8192
    disconnect_grace: float = 3.0
    blob_api_address: str | None = None
    blob_header_timeout: float = 10.0
    metrics_address: str | None = None

    def __post_init__(self) -> None:
        for name in ("driver_api_address", "fleet_api_address"):
            try:
                parse_address(getattr(self, name))
            except ValueError as exc:
                raise ValueError(f"LinkConfig.{name}: {exc}") from None
        if self.metrics_address is not None:
            try:
                parse_address(self.metrics_address)
            except (TypeError, ValueError) as exc:
                raise ValueError(f"LinkConfig.metrics_address: {exc}") from None
        if self.blob_api_address is None:
            object.__setattr__(self, "blob_api_address", default_blob_api_address(self.fleet_api_address))
        else:
            try:
                parse_address(self.blob_api_address)
            except (TypeError, ValueError) as exc:
                raise ValueError(f"LinkConfig.blob_api_address: {exc}") from None
        conflict = address_conflict(
            {
                "driver_api_address": self.driver_api_address,
                "fleet_api_address": self.fleet_api_address,
                "blob_api_address": self.blob_api_address,
            }
        )
        if conflict:
            raise ValueError(f"LinkConfig: {conflict}")
        if self.tls is not None and not isinstance(self.tls, ServerTLS):
            raise ValueError(f"LinkConfig.tls must be a fl_async._net.ServerTLS or None, got {type(self.tls).__name__}")
        for name in (
            "heartbeat_patience",
            "min_heartbeat_interval",
            "max_heartbeat_interval",
            "max_poll_timeout",
            "disconnect_grace",
            "blob_header_timeout",
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ValueError(f"LinkConfig.{name} must be a finite number of seconds, got {value!r}")
        if self.heartbeat_patience < 1:
            raise ValueError(f"LinkConfig.heartbeat_patience must be >= 1, got {self.heartbeat_patience}")
        if self.min_heartbeat_interval <= 0:
            raise ValueError(f"LinkConfig.min_heartbeat_interval must be > 0 s, got {self.min_heartbeat_interval}")
        if self.max_heartbeat_interval < self.min_heartbeat_interval:
            raise ValueError(
                f"LinkConfig.max_heartbeat_interval ({self.max_heartbeat_interval} s) must be >= "
                f"min_heartbeat_interval ({self.min_heartbeat_interval} s)"
            )
        if self.blob_header_timeout <= 0:
            raise ValueError(f"LinkConfig.blob_header_timeout must be > 0 s, got {self.blob_header_timeout}")
        if self.disconnect_grace <= 0:
            raise ValueError(f"LinkConfig.disconnect_grace must be > 0 s, got {self.disconnect_grace}")
        if self.max_poll_timeout < 0:
            raise ValueError(f"LinkConfig.max_poll_timeout must be >= 0 s, got {self.max_poll_timeout}")
        for name in ("max_request_bytes", "backlog"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"LinkConfig.{name} must be a positive integer, got {value!r}")

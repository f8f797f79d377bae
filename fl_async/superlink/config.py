"""``LinkConfig``: every knob of a SuperLink, validated once at construction."""

from __future__ import annotations

import math
from dataclasses import dataclass

from fl_async._link_limits import DEFAULT_BLOB_STORE_BYTES, DEFAULT_MAX_BLOB_BYTES
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
            port (read it back from ``SuperLink.driver_address``). Default ``127.0.0.1:9091``: only this machine's
            server apps can reach it (Flower binds ``0.0.0.0``); bind another address with driver tokens.
        fleet_api_address: ``"HOST:PORT"`` where the Fleet API listens (SuperNodes). Default ``0.0.0.0:9092``.
        tls: server certificate material for both APIs, or ``None`` for plaintext (insecure).
        heartbeat_patience: a node is declared offline when it has shown no sign of life (heartbeat, pull)
            for ``heartbeat_interval * heartbeat_patience`` seconds. Must be >= 1.
        min_heartbeat_interval: lower bound, in seconds, of the interval a node may ask for (requests
            below it are raised to it).
        max_heartbeat_interval: upper bound, in seconds, of the interval a node may ask for.
        max_poll_timeout: cap, in seconds, on how long a long-poll (node pull, driver pull, wait for
            nodes) is held open, whatever the caller asks for.
        max_request_bytes: largest accepted request message of an authenticated caller (a node or driver
            whose credentials are in the request headers), in bytes; bigger requests are refused from the gRPC
            frame header with ``RESOURCE_EXHAUSTED`` naming the size and this limit (grpclib itself has no
            limit). Default 64 MiB: the SDK puts at most 32 MiB of arrays inline in one request; the rest
            travels on the blob data path.
        max_anonymous_request_bytes: largest request of a caller without credentials in its headers
            (CreateNode, CreateRun, and any client that does not send them), in bytes. Default 64 KiB.
        max_request_elements: most sub-messages and repeated strings/bytes in one request, counted from the
            wire before decoding (packed varint list values count too); more is ``RESOURCE_EXHAUSTED``. Default
            250,000.
        max_messages_per_request: most messages in one PushMessages or PushReplies request (counted from the
            wire before decoding; more is ``RESOURCE_EXHAUSTED`` naming the field). Default 50,000.
        max_message_ids_per_request: most message ids in one PullMessages request. Default 100,000.
        max_record_entries: most entries in one record or record set (``ConfigsRecord``/``MetricsRecord``
            entries, ``run_config``, a ``ParametersRecord``'s arrays and keys, a ``RecordSet``'s records).
            Default 100,000.
        max_list_values: most values in one list value of a record (and dimensions of an array's shape).
            Default 1,000,000.
        max_pending_request_bytes: most bytes of request bodies being received at once (by declared size);
            callers without credentials share 1/16 of it. A request above the budget is refused
            ``RESOURCE_EXHAUSTED`` (retry later). Default 512 MiB.
        request_read_timeout: seconds within which a request's frame header, and then each MiB of its body
            (or the rest), must arrive; a stalled request is refused ``DEADLINE_EXCEEDED`` and its partial body
            freed. Default 10 s.
        max_fab_id_bytes: longest ``fab_id`` and ``fab_version`` of CreateRun (UTF-8 bytes each); longer is
            ``INVALID_ARGUMENT``. Default 1,024.
        max_run_config_bytes: largest serialized ``run_config`` of CreateRun; larger is ``INVALID_ARGUMENT``.
            Default 32 KiB.
        max_blob_bytes: largest array payload accepted on the blob data path (a PUT announcing more is
            refused ``TOO_LARGE`` before anything is allocated). Default: a quarter of the machine's memory.
        blob_store_bytes: capacity of the link's blob store: uploads that would exceed it are refused
            ``STORE_FULL``. Default: half of the machine's memory. An upload reserves its announced size; its
            buffer is allocated when its first bytes arrive and filled as they arrive.
        blob_quota_bytes: bytes each node, or each run's driver, may have uploaded that no pushed message
            names yet (in progress or complete); beyond it an upload is refused ``STORE_FULL`` naming this
            limit. Default: as ``max_blob_bytes``.
        blob_min_rate: bytes per second an upload body must keep up, measured over each
            ``blob_rate_window`` seconds; a slower upload is dropped and the bytes it sent freed at once
            (``0``: no floor). Default 64 KiB/s.
        blob_rate_window: seconds over which ``blob_min_rate`` is measured. Default 10 s.
        run_idle_ttl: seconds without a Driver API call (for the run) after which a run ends: its queued and
            in-flight instructions, unpulled replies and their payloads are dropped, and calls for it get
            ``NOT_FOUND``. A held long-poll counts as a call. Default 3600 s.
        driver_disconnect_grace: seconds a run's driver gets to come back (make any call) after the connection
            of its latest call was lost (closed or reset by the peer); then the run ends as by EndRun (its
            instructions, replies and payloads are freed). Runs restored from a durable store get it from link
            start. Connections the link closes itself (idle timeout, eviction, shutdown) do not count.
            Default 120 s: a driver that reconnects within it keeps its run.
        reply_ttl: seconds a reply is kept for its driver to pull; then it is dropped with a WARNING log line
            (a later pull does not list it). Default 3600 s.
        max_connections: most connections open at once on the three ports; ``0`` (default): the soft file
            descriptor limit (raised to the hard limit at start) minus ``fd_reserve``. A new connection over the
            cap evicts the idle connection least worth keeping (one that never started a request first), or is
            closed at once when all are busy.
        max_connections_per_address: most connections from one source address (same eviction). Default 4,096.
        connection_setup_timeout: seconds a new connection gets to start its first request (raw TCP that never
            speaks HTTP/2 or the blob protocol) and a TLS client to finish its handshake. Default 10 s.
        connection_idle_timeout: seconds a connection without a request in progress and without a byte
            received stays open. Default 300 s.
        fd_reserve: file descriptors kept for the link itself when ``max_connections`` is 0. Default 256.
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
        driver_auth_token_file: file of driver tokens, one per line (``--driver-auth-token-file``); every Driver
            API call must carry one of them or is refused ``UNAUTHENTICATED``. ``None`` (default): no tokens
            (then bind the Driver API to loopback, the default). See ``docs/security.md``.
        auth_list_public_keys: CSV file of the OpenSSH ECDSA public keys of the nodes allowed to register
            (``--auth-list-public-keys``, as Flower 1.9); re-read on SIGHUP and when it changes. Requires ``tls``.
            ``None`` (default): any node may register (a WARNING says so at start).
        auth_superlink_private_key: the link's ECDSA private key file (``--auth-superlink-private-key``, as Flower
            1.9), used for the per-call proofs of nodes whose key is on the same curve; with a durable store, keyed
            sessions keep their proofs across a link restart. ``None`` (default): a key generated at start.

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
    max_request_bytes: int = 64 * 2**20
    max_anonymous_request_bytes: int = 64 * 2**10
    max_request_elements: int = 250_000
    max_messages_per_request: int = 50_000
    max_message_ids_per_request: int = 100_000
    max_record_entries: int = 100_000
    max_list_values: int = 1_000_000
    max_pending_request_bytes: int = 512 * 2**20
    request_read_timeout: float = 10.0
    max_fab_id_bytes: int = 1024
    max_run_config_bytes: int = 32 * 2**10
    max_blob_bytes: int = DEFAULT_MAX_BLOB_BYTES
    blob_store_bytes: int = DEFAULT_BLOB_STORE_BYTES
    blob_quota_bytes: int = DEFAULT_MAX_BLOB_BYTES
    blob_min_rate: int = 64 * 2**10
    blob_rate_window: float = 10.0
    run_idle_ttl: float = 3600.0
    reply_ttl: float = 3600.0
    driver_disconnect_grace: float = 120.0
    max_connections: int = 0
    max_connections_per_address: int = 4096
    connection_setup_timeout: float = 10.0
    connection_idle_timeout: float = 300.0
    fd_reserve: int = 256
    backlog: int = 8192
    disconnect_grace: float = 3.0
    blob_api_address: str | None = None
    blob_header_timeout: float = 10.0
    metrics_address: str | None = None
    driver_auth_token_file: str | None = None
    auth_list_public_keys: str | None = None
    auth_superlink_private_key: str | None = None

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
        blob_api_address = self.blob_api_address
        assert blob_api_address is not None  # resolved above
        conflict = address_conflict(
            {
                "driver_api_address": self.driver_api_address,
                "fleet_api_address": self.fleet_api_address,
                "blob_api_address": blob_api_address,
            }
        )
        if conflict:
            raise ValueError(f"LinkConfig: {conflict}")
        if self.auth_list_public_keys is not None and self.tls is None:
            raise ValueError(
                "LinkConfig.auth_list_public_keys: node authentication requires TLS (set tls; with the CLI, "
                "--ssl-ca-certfile, --ssl-certfile and --ssl-keyfile instead of --insecure)"
            )
        if self.tls is not None and not isinstance(self.tls, ServerTLS):
            raise ValueError(f"LinkConfig.tls must be a fl_async._net.ServerTLS or None, got {type(self.tls).__name__}")
        for name in (
            "heartbeat_patience",
            "min_heartbeat_interval",
            "max_heartbeat_interval",
            "max_poll_timeout",
            "disconnect_grace",
            "blob_header_timeout",
            "request_read_timeout",
            "blob_rate_window",
            "run_idle_ttl",
            "reply_ttl",
            "driver_disconnect_grace",
            "connection_setup_timeout",
            "connection_idle_timeout",
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
        for name in ("run_idle_ttl", "reply_ttl"):
            if getattr(self, name) <= self.max_poll_timeout:
                raise ValueError(
                    f"LinkConfig.{name} must be > max_poll_timeout ({self.max_poll_timeout:g} s), "
                    f"got {getattr(self, name)}"
                )
        for name in ("connection_setup_timeout", "connection_idle_timeout", "driver_disconnect_grace"):
            if getattr(self, name) <= 0:
                raise ValueError(f"LinkConfig.{name} must be > 0 s, got {getattr(self, name)}")
        for name in ("max_connections", "fd_reserve"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"LinkConfig.{name} must be an integer >= 0, got {value!r}")
        if self.blob_rate_window <= 0:
            raise ValueError(f"LinkConfig.blob_rate_window must be > 0 s, got {self.blob_rate_window}")
        if isinstance(self.blob_min_rate, bool) or not isinstance(self.blob_min_rate, int) or self.blob_min_rate < 0:
            raise ValueError(f"LinkConfig.blob_min_rate must be an integer >= 0, got {self.blob_min_rate!r}")
        if self.request_read_timeout <= 0:
            raise ValueError(f"LinkConfig.request_read_timeout must be > 0 s, got {self.request_read_timeout}")
        if self.disconnect_grace <= 0:
            raise ValueError(f"LinkConfig.disconnect_grace must be > 0 s, got {self.disconnect_grace}")
        if self.max_poll_timeout < 0:
            raise ValueError(f"LinkConfig.max_poll_timeout must be >= 0 s, got {self.max_poll_timeout}")
        for name in (
            "max_request_bytes",
            "backlog",
            "max_anonymous_request_bytes",
            "max_request_elements",
            "max_messages_per_request",
            "max_message_ids_per_request",
            "max_record_entries",
            "max_list_values",
            "max_pending_request_bytes",
            "max_fab_id_bytes",
            "max_run_config_bytes",
            "max_blob_bytes",
            "blob_store_bytes",
            "blob_quota_bytes",
            "max_connections_per_address",
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"LinkConfig.{name} must be a positive integer, got {value!r}")

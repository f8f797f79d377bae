"""Addresses, TLS contexts and gRPC channels: the network plumbing shared by every runtime."""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path

DEFAULT_DRIVER_API_ADDRESS = "127.0.0.1:9091"
"""Where the SuperLink serves the Driver API by default: loopback only (Flower binds ``0.0.0.0``)."""
DEFAULT_FLEET_API_ADDRESS = "0.0.0.0:9092"
"""Where the SuperLink serves the Fleet API by default (as Flower)."""
DEFAULT_DRIVER_TARGET = "127.0.0.1:9091"
"""Where server apps look for the Driver API by default."""
DEFAULT_FLEET_TARGET = "127.0.0.1:9092"
"""Where SuperNodes look for the Fleet API by default."""

__all__ = [
    "ServerTLS",
    "check_client_target",
    "client_ssl_context",
    "format_address",
    "parse_address",
    "read_pem",
    "server_ssl_context",
]


def parse_address(address: str, *, default_port: int | None = None) -> tuple[str, int]:
    """Split ``"HOST:PORT"`` (IPv6 as ``"[::1]:PORT"``) into ``(host, port)``.

    Raises:
        ValueError: the address is malformed or the port is not in 0..65535 (message names the address).
    """
    if not isinstance(address, str) or not address.strip():
        raise ValueError(f"invalid address {address!r}: expected HOST:PORT")
    text = address.strip()
    if "://" in text:
        raise ValueError(f"invalid address {address!r}: no scheme, use HOST:PORT (e.g. 127.0.0.1:9091)")
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            raise ValueError(f"invalid address {address!r}: expected [IPv6]:PORT")
        port_text = rest[1:]
    else:
        host, sep, port_text = text.rpartition(":")
        if not sep:
            host, port_text = text, ""
        if ":" in host:
            raise ValueError(f"invalid address {address!r}: write IPv6 hosts in brackets, e.g. [::1]:9091")
    if not host:
        raise ValueError(f"invalid address {address!r}: missing host")
    if not port_text:
        if default_port is None:
            raise ValueError(f"invalid address {address!r}: missing port")
        return host, default_port
    if not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ValueError(f"invalid address {address!r}: port must be a number in 0..65535")
    return host, int(port_text)


def check_client_target(
    superlink: str, *, insecure: bool, root_certificates: bytes | str | Path | None
) -> tuple[str, int]:
    """Check where a driver or a node connects and how (no I/O): the one place these arguments are checked.

    Args:
        superlink: ``"HOST:PORT"`` of the link's API (not port 0).
        insecure: ``True`` for plaintext. Exactly one of ``insecure=True`` and ``root_certificates``.
        root_certificates: PEM bytes, or the path of a PEM file, of the CA(s) to trust for TLS.

    Returns:
        ``(host, port)``.

    Raises:
        TypeError: an argument has the wrong type.
        ValueError: a malformed address or port 0; both or neither of ``insecure`` and ``root_certificates``.
    """
    if not isinstance(superlink, str):
        raise TypeError(f"superlink must be a 'HOST:PORT' string, got {type(superlink).__name__}")
    host, port = parse_address(superlink)
    if port == 0:
        raise ValueError(f"invalid SuperLink address {superlink!r}: port 0 cannot be connected to")
    if not isinstance(insecure, bool):
        raise TypeError(f"insecure must be a bool, got {type(insecure).__name__}")
    if root_certificates is not None and not isinstance(root_certificates, (bytes, str, Path)):
        raise TypeError(f"root_certificates must be PEM bytes or a path, got {type(root_certificates).__name__}")
    if insecure and root_certificates is not None:
        raise ValueError("give either insecure=True or root_certificates=..., not both")
    if not insecure and root_certificates is None:
        raise ValueError(
            "no TLS root certificates given (no transport security chosen): pass root_certificates=<PEM bytes or "
            "path> for TLS, or insecure=True for plaintext (prototyping only)"
        )
    return host, port


def format_address(host: str, port: int) -> str:
    """Inverse of :func:`parse_address`."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def read_pem(value: bytes | str | Path, *, what: str) -> bytes:
    """Return PEM bytes given the bytes themselves or a path to a file holding them.

    Raises:
        ValueError: the file does not exist or is not readable, or does not look like PEM.
    """
    if isinstance(value, bytes):
        data = value
    else:
        path = Path(value)
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise ValueError(f"cannot read {what} {str(path)!r}: {exc.strerror or exc}") from None
    if b"-----BEGIN" not in data:
        raise ValueError(f"{what} is not PEM data (no '-----BEGIN' line)")
    return data


def client_ssl_context(root_certificates: bytes | str | Path) -> ssl.SSLContext:
    """A TLS client context trusting ``root_certificates`` (PEM bytes or a path), ALPN h2.

    Raises:
        ValueError: the certificates cannot be read or parsed.
    """
    pem = read_pem(root_certificates, what="root certificates")
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    try:
        ctx.load_verify_locations(cadata=pem.decode("ascii", errors="replace"))
    except ssl.SSLError as exc:
        raise ValueError(f"cannot load root certificates: {exc}") from None
    ctx.set_alpn_protocols(["h2"])
    return ctx


@dataclass(frozen=True)
class ServerTLS:
    """Server certificate material (PEM bytes or paths): CA, certificate chain and private key."""

    ca_certfile: bytes | str | Path
    certfile: bytes | str | Path
    keyfile: bytes | str | Path


def server_ssl_context(tls: ServerTLS) -> ssl.SSLContext:
    """A TLS server context for both link APIs, ALPN h2 (as Flower: no client certificates required).

    Raises:
        ValueError: a file cannot be read, or the key does not match the certificate.
    """
    import os
    import tempfile

    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert = read_pem(tls.certfile, what="certificate")
    key = read_pem(tls.keyfile, what="private key")
    read_pem(tls.ca_certfile, what="CA certificate")
    # load_cert_chain takes paths only: use private temp files for in-memory PEM.
    with tempfile.TemporaryDirectory() as tmp:
        cpath, kpath = os.path.join(tmp, "cert.pem"), os.path.join(tmp, "key.pem")
        with open(cpath, "wb") as f:
            f.write(cert)
        fd = os.open(kpath, os.O_WRONLY | os.O_CREAT, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(key)
        try:
            ctx.load_cert_chain(cpath, kpath)
        except ssl.SSLError as exc:
            raise ValueError(f"cannot load certificate/key: {exc}") from None
    ctx.set_alpn_protocols(["h2"])
    return ctx

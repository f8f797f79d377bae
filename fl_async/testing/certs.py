"""Throwaway TLS material for tests: a CA and a server certificate for 127.0.0.1 / localhost.

Made with the ``cryptography`` package, in memory, once per process (EC P-256 keys, valid from one
hour ago for one day). Use the PEM bytes directly or write them to files::

    from fl_async.testing.certs import make_certs, write_certs

    certs = make_certs()                       # CertBundle of PEM bytes
    files = write_certs(tmp_path)              # CertFiles of paths: ca.crt, server.pem, server.key
    ServerTLS(files.ca_cert, files.server_cert, files.server_key)   # link side
    client_ssl_context(files.ca_cert)          # node / driver side

``make_certs(common_name=...)`` with another name gives an independent CA, handy for "wrong CA" tests.
"""

from __future__ import annotations

import datetime as _dt
import ipaddress
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = ["CertBundle", "CertFiles", "make_certs", "write_certs", "write_node_keys"]


@dataclass(frozen=True)
class CertBundle:
    """PEM bytes: the CA certificate (give it to clients), the server certificate and its key."""

    ca_cert: bytes
    server_cert: bytes
    server_key: bytes


@dataclass(frozen=True)
class CertFiles:
    """Paths of the files written by :func:`write_certs`."""

    ca_cert: Path
    server_cert: Path
    server_key: Path


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


@lru_cache(maxsize=8)
def make_certs(common_name: str = "fl-async test CA") -> CertBundle:
    """Create (once per process and name) a CA and a server certificate signed by it.

    The server certificate's subject alternative names are ``127.0.0.1``, ``::1`` and ``localhost``.

    Args:
        common_name: the CA's common name; a different name gives a different, unrelated CA.
    """
    now = _dt.datetime.now(_dt.UTC)
    start, end = now - _dt.timedelta(hours=1), now + _dt.timedelta(days=1)

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(_name(common_name))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )

    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name("localhost"))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(
            x509.SubjectAlternativeName(
                [
                    x509.DNSName("localhost"),
                    x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                    x509.IPAddress(ipaddress.ip_address("::1")),
                ]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    return CertBundle(
        ca_cert=ca_cert.public_bytes(serialization.Encoding.PEM),
        server_cert=cert.public_bytes(serialization.Encoding.PEM),
        server_key=key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
    )


def write_certs(directory: str | Path, bundle: CertBundle | None = None) -> CertFiles:
    """Write ``ca.crt``, ``server.pem`` and ``server.key`` (mode 0600) into ``directory``.

    Args:
        directory: an existing directory (e.g. pytest's ``tmp_path``).
        bundle: what to write; :func:`make_certs` by default.
    """
    bundle = bundle or make_certs()
    d = Path(directory)
    files = CertFiles(d / "ca.crt", d / "server.pem", d / "server.key")
    files.ca_cert.write_bytes(bundle.ca_cert)
    files.server_cert.write_bytes(bundle.server_cert)
    files.server_key.touch(mode=0o600)
    files.server_key.write_bytes(bundle.server_key)
    return files


def write_node_keys(directory: Path | str, name: str = "node") -> tuple[Path, Path]:
    """Write a fresh ECDSA P-384 node key pair in OpenSSH format, as ``ssh-keygen -t ecdsa -b 384 -N ''`` would:
    ``<name>`` (private) and ``<name>.pub`` in ``directory``. Returns ``(private_path, public_path)``."""
    key = ec.generate_private_key(ec.SECP384R1())
    private = Path(directory) / name
    public = Path(directory) / f"{name}.pub"
    private.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption())
    )
    private.chmod(0o600)
    public.write_bytes(
        key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
        + f" {name}\n".encode()
    )
    return private, public

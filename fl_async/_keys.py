"""Node key pairs: loading OpenSSH ECDSA keys, the node id bound to a public key, and the registration proof.

A SuperNode started with ``--auth-supernode-private-key`` / ``--auth-supernode-public-key`` (as Flower 1.9)
proves possession of its key when it registers: ``CreateNode`` carries, in its request headers, the public key
(OpenSSH text), a timestamp, and an ECDSA signature (SHA-256) over both (:func:`registration_headers`). The link
checks the signature from the headers before the body is read, refuses a timestamp outside its window or a
signature it has seen already (replay), and binds the node id to the key (:func:`node_id_for`): the same key
always gets the same node id, across node and link restarts, without any stored state. Every later call of that
registration carries the session credentials the link returned in ``CreateNodeResponse`` (over TLS, which node
authentication requires). Cryptography is the ``cryptography`` package's; nothing here is hand-rolled.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import itertools
import time
from pathlib import Path

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from fl_async._credentials import (
    NODE_PROOF_HEADER,
    NODE_PUBLIC_KEY_HEADER,
    NODE_SIGNATURE_HEADER,
    NODE_TIMESTAMP_HEADER,
    Metadata,
)

__all__ = [
    "CallSigner",
    "NodeKey",
    "call_key",
    "call_mac",
    "load_private_key",
    "load_public_key",
    "node_id_for",
    "node_key",
    "parse_public_key",
    "public_key_text",
    "registration_headers",
    "registration_message",
    "ssh_wire",
    "verify_registration",
]

NodeKey = ec.EllipticCurvePrivateKey
"""A node's private key (an ECDSA key, e.g. ``ssh-keygen -t ecdsa -b 384``)."""


def parse_public_key(text: bytes | str) -> ec.EllipticCurvePublicKey:
    """An OpenSSH ECDSA public key (``"ecdsa-sha2-nistp384 AAAA... comment"``).

    Raises:
        ValueError: not an OpenSSH public key, or not an ECDSA one.
    """
    raw = text.encode() if isinstance(text, str) else bytes(text)
    try:
        key = serialization.load_ssh_public_key(raw.strip())
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise ValueError(f"not an OpenSSH public key ({exc})") from None
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise ValueError(f"node keys must be ECDSA (ssh-keygen -t ecdsa -b 384), got {type(key).__name__}")
    return key


def load_public_key(path: str | Path) -> ec.EllipticCurvePublicKey:
    """Read an OpenSSH ECDSA public key file (``id_ecdsa.pub``).

    Raises:
        ValueError: unreadable file or not an ECDSA OpenSSH public key (the message names the file).
    """
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise ValueError(f"cannot read public key {path}: {exc.strerror or exc}") from None
    try:
        return parse_public_key(data)
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from None


def load_private_key(path: str | Path) -> NodeKey:
    """Read an ECDSA private key file: OpenSSH format (``ssh-keygen``) or PEM (PKCS#8 / SEC1), unencrypted.

    Raises:
        ValueError: unreadable file, encrypted, or not an ECDSA private key (the message names the file).
    """
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise ValueError(f"cannot read private key {path}: {exc.strerror or exc}") from None
    try:
        key: object = (
            serialization.load_ssh_private_key(data, password=None)
            if b"OPENSSH PRIVATE KEY" in data
            else serialization.load_pem_private_key(data, password=None)
        )
    except (TypeError, ValueError, UnsupportedAlgorithm) as exc:
        raise ValueError(f"{path}: not an unencrypted private key ({exc})") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ValueError(f"{path}: node keys must be ECDSA (ssh-keygen -t ecdsa -b 384), got {type(key).__name__}")
    return key


def public_key_text(key: ec.EllipticCurvePublicKey) -> str:
    """The OpenSSH text form of a public key (``"ecdsa-sha2-nistp384 AAAA..."``, no comment)."""
    return key.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()


def ssh_wire(key: ec.EllipticCurvePublicKey) -> bytes:
    """The key's SSH wire encoding (the base64 part of its OpenSSH text, decoded)."""
    return base64.b64decode(public_key_text(key).split()[1])


def node_id_for(key: ec.EllipticCurvePublicKey) -> int:
    """The node id bound to a public key: the first 8 bytes of SHA-256 of its SSH wire encoding, as an unsigned
    big-endian 64-bit integer (0 becomes 1, since 0 means the server app). Same key, same id, everywhere."""
    return int.from_bytes(hashlib.sha256(ssh_wire(key)).digest()[:8], "big") or 1


def registration_message(timestamp: str, key: ec.EllipticCurvePublicKey) -> bytes:
    """The bytes a node signs to register: a fixed label, the timestamp (decimal text) and its key's wire form."""
    return b"fl-async CreateNode\x00" + timestamp.encode() + b"\x00" + ssh_wire(key)


def registration_headers(key: NodeKey, now: float | None = None) -> Metadata:
    """The CreateNode request headers proving possession of ``key`` at ``now`` (default: the current time)."""
    timestamp = f"{time.time() if now is None else now:.6f}"
    public = key.public_key()
    signature = key.sign(registration_message(timestamp, public), ec.ECDSA(hashes.SHA256()))
    return (
        (NODE_PUBLIC_KEY_HEADER, public_key_text(public)),
        (NODE_TIMESTAMP_HEADER, timestamp),
        (NODE_SIGNATURE_HEADER, signature),
    )


def verify_registration(key: ec.EllipticCurvePublicKey, timestamp: str, signature: bytes) -> bool:
    """Whether ``signature`` is the key's ECDSA (SHA-256) signature of :func:`registration_message`."""
    try:
        key.verify(signature, registration_message(timestamp, key), ec.ECDSA(hashes.SHA256()))
    except (InvalidSignature, ValueError):
        return False
    return True


def node_key(private_key: str | Path | None, public_key: str | Path | None, *, insecure: bool) -> NodeKey | None:
    """The key pair a node authenticates with, from its two files (``None`` when neither is given).

    Raises:
        ValueError: only one file given, ``insecure`` (node authentication requires TLS), a file that cannot be
            read or parsed, or a public key that is not the private key's.
    """
    if private_key is None and public_key is None:
        return None
    if private_key is None or public_key is None:
        raise ValueError(
            "node authentication needs both --auth-supernode-private-key and --auth-supernode-public-key "
            "(auth_private_key and auth_public_key)"
        )
    if insecure:
        raise ValueError(
            "node authentication requires TLS: --auth-supernode-private-key/--auth-supernode-public-key cannot be "
            "combined with --insecure; pass --root-certificates FILE"
        )
    key = load_private_key(private_key)
    if ssh_wire(load_public_key(public_key)) != ssh_wire(key.public_key()):
        raise ValueError(f"{public_key} is not the public key of {private_key}")
    return key


# ------------------------------------------------------------------------------------------------ per-call proof
def call_key(
    own: ec.EllipticCurvePrivateKey, peer: ec.EllipticCurvePublicKey, session_token: bytes, node_wire: bytes
) -> bytes:
    """The key a keyed session's calls are authenticated with: HKDF-SHA256 over the ECDH secret of the node's key
    and the link's (same curve), salted with the session token of CreateNodeResponse and bound to the node's key
    (``node_wire``, :func:`ssh_wire`). Both sides compute it; it never travels.

    Raises:
        ValueError: the two keys are on different curves.
    """
    if own.curve.name != peer.curve.name:
        raise ValueError(f"ECDH needs one curve: {own.curve.name} and {peer.curve.name}")
    shared = own.exchange(ec.ECDH(), peer)
    return HKDF(hashes.SHA256(), 32, salt=session_token, info=b"fl-async call key\x00" + node_wire).derive(shared)


def call_mac(key: bytes, path: str, counter: int, body: bytes) -> bytes:
    """HMAC-SHA256 of one call: its method path, its counter and the SHA-256 of its serialized request body."""
    data = path.encode() + b"\x00" + counter.to_bytes(8, "big") + hashlib.sha256(body).digest()
    return hmac.new(key, data, hashlib.sha256).digest()


class CallSigner:
    """Makes the per-call proof header of a keyed session (``fl-async-node-proof-bin``: an 8-byte counter, strictly
    increasing per session, and :func:`call_mac`).

    Args:
        key: the session's :func:`call_key`.
    """

    def __init__(self, key: bytes) -> None:
        self._key = key
        self._counter = itertools.count(1)

    def headers(self, path: str, body: bytes) -> Metadata:
        """The proof header of a call of ``path`` with the serialized request ``body``."""
        counter = next(self._counter)
        return ((NODE_PROOF_HEADER, counter.to_bytes(8, "big") + call_mac(self._key, path, counter, body)),)

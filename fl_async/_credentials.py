"""Request-header credentials shared by the SDK (which sends them) and the link (which checks them first).

A node sends its session credentials (``CreateNodeResponse.node_id`` / ``.token``) and a driver its run's
(``CreateRunResponse.run_id`` / ``.blob_token``) as gRPC metadata with every call, so that the link
authenticates the caller from the headers before it reads and decodes the request body.
"""

from __future__ import annotations

__all__ = [
    "AUTH_TOKEN_ENV",
    "AUTH_TOKEN_HEADER",
    "LINK_PUBLIC_KEY_HEADER",
    "NODE_ID_HEADER",
    "NODE_PROOF_HEADER",
    "NODE_PUBLIC_KEY_HEADER",
    "NODE_SIGNATURE_HEADER",
    "NODE_TIMESTAMP_HEADER",
    "NODE_TOKEN_HEADER",
    "RUN_ID_HEADER",
    "RUN_TOKEN_HEADER",
    "node_metadata",
    "run_metadata",
    "token_metadata",
]

NODE_ID_HEADER = "fl-async-node-id"
NODE_TOKEN_HEADER = "fl-async-node-token-bin"
RUN_ID_HEADER = "fl-async-run-id"
RUN_TOKEN_HEADER = "fl-async-run-token-bin"
AUTH_TOKEN_HEADER = "fl-async-auth-token-bin"
"""A driver's token (``--driver-auth-token-file`` on the link), sent with every Driver API call."""
AUTH_TOKEN_ENV = "FL_ASYNC_AUTH_TOKEN"
"""Environment variable a driver reads its token from when none is given."""
NODE_PUBLIC_KEY_HEADER = "fl-async-node-public-key"
"""CreateNode of a node with a key pair: its OpenSSH public key (see :mod:`fl_async._keys`)."""
NODE_TIMESTAMP_HEADER = "fl-async-node-timestamp"
"""CreateNode of a node with a key pair: the signed Unix time (decimal text)."""
NODE_SIGNATURE_HEADER = "fl-async-node-signature-bin"
"""CreateNode of a node with a key pair: the ECDSA signature (DER)."""
NODE_PROOF_HEADER = "fl-async-node-proof-bin"
"""Every later call of a keyed session: call counter and HMAC (see :class:`fl_async._keys.CallSigner`)."""
LINK_PUBLIC_KEY_HEADER = "fl-async-link-public-key"
"""CreateNodeResponse's initial metadata for a keyed node: the link's public key (OpenSSH text) for ECDH."""

Metadata = tuple[tuple[str, str | bytes], ...]


def node_metadata(node_id: int, token: bytes) -> Metadata:
    """Request metadata carrying a node's session credentials (``CreateNodeResponse.node_id`` / ``.token``)."""
    return ((NODE_ID_HEADER, str(int(node_id))), (NODE_TOKEN_HEADER, bytes(token)))


def run_metadata(run_id: int, token: bytes) -> Metadata:
    """Request metadata carrying a driver's run credentials (``CreateRunResponse.run_id`` / ``.blob_token``)."""
    return ((RUN_ID_HEADER, str(int(run_id))), (RUN_TOKEN_HEADER, bytes(token)))


def token_metadata(token: str | None) -> Metadata:
    """Request metadata carrying a driver's token (none when ``token`` is ``None`` or empty)."""
    return ((AUTH_TOKEN_HEADER, token.encode()),) if token else ()

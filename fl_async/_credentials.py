"""Request-header credentials shared by the SDK (which sends them) and the link (which checks them first).

A node sends its session credentials (``CreateNodeResponse.node_id`` / ``.token``) and a driver its run's
(``CreateRunResponse.run_id`` / ``.blob_token``) as gRPC metadata with every call, so that the link
authenticates the caller from the headers before it reads and decodes the request body.
"""

from __future__ import annotations

__all__ = ["NODE_ID_HEADER", "NODE_TOKEN_HEADER", "RUN_ID_HEADER", "RUN_TOKEN_HEADER", "node_metadata", "run_metadata"]

NODE_ID_HEADER = "fl-async-node-id"
NODE_TOKEN_HEADER = "fl-async-node-token-bin"
RUN_ID_HEADER = "fl-async-run-id"
RUN_TOKEN_HEADER = "fl-async-run-token-bin"

Metadata = tuple[tuple[str, str | bytes], ...]


def node_metadata(node_id: int, token: bytes) -> Metadata:
    """Request metadata carrying a node's session credentials (``CreateNodeResponse.node_id`` / ``.token``)."""
    return ((NODE_ID_HEADER, str(int(node_id))), (NODE_TOKEN_HEADER, bytes(token)))


def run_metadata(run_id: int, token: bytes) -> Metadata:
    """Request metadata carrying a driver's run credentials (``CreateRunResponse.run_id`` / ``.blob_token``)."""
    return ((RUN_ID_HEADER, str(int(run_id))), (RUN_TOKEN_HEADER, bytes(token)))

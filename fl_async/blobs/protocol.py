"""Sans-IO framing of the blob data path (a plain byte stream, optionally TLS).

One connection carries a sequence of requests, each answered before the next is sent.

Request header (:data:`REQUEST_HEADER_SIZE` bytes, big-endian), followed by the token::

    magic b"FLBS" | version u8 | op u8 | token_len u16 | count u32 | offset u64 | total u64 | digest 32s | token

Reply header (:data:`REPLY_HEADER_SIZE` bytes), followed by a UTF-8 message::

    magic b"FLBR" | status u8 | reserved u8 | message_len u16 | offset u64 | total u64 | message

Bodies are chunks: ``length u32 | bytes``; a body is complete when its chunks add up to the
announced length (no terminator). Operations:

* ``HAS``: reply ``OK`` with ``offset`` = bytes the server holds (``total`` when complete, the
  resume offset of an upload in progress, 0 when unknown) and ``total`` = the blob's length.
* ``PUT`` (``total`` = blob length): reply ``EXISTS`` (complete already, send nothing) or
  ``CONTINUE`` with ``offset`` = where the body must start; the client sends chunks for
  ``[offset, total)``; final reply ``OK`` (verified and stored) or ``INTEGRITY`` (discarded).
* ``GET`` (``total`` = expected length, ``offset`` = first byte wanted): reply ``OK``, then chunks for
  ``[offset, total)``. A server failing mid-body closes the connection; the client resumes. ``count``
  is how many pulled messages this download serves (the link keeps a pulled reply's blobs until its
  puller has downloaded them once per reply; see :meth:`BlobStore.downloaded`); 1 otherwise.

Every length is checked against limits before anything is allocated.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass

from fl_async.blobs.store import DIGEST_SIZE
from fl_async.errors import FlAsyncError

__all__ = [
    "CHUNK_HEADER_SIZE",
    "DEFAULT_CHUNK_SIZE",
    "MAX_CHUNK_SIZE",
    "MAX_MESSAGE_SIZE",
    "MAX_TOKEN_SIZE",
    "REPLY_HEADER_SIZE",
    "REQUEST_HEADER_SIZE",
    "TOKEN_ID",
    "TOKEN_NODE",
    "TOKEN_RUN",
    "VERSION",
    "FrameError",
    "Op",
    "Reply",
    "Request",
    "Status",
    "decode_chunk_header",
    "decode_reply_header",
    "decode_request_header",
    "encode_chunk_header",
    "encode_reply",
    "encode_request",
    "node_blob_token",
]

VERSION = 2
"""Blob protocol version: 2 names blobs by BLAKE3 digests (1 used SHA-256); a peer speaking another
version gets ``BAD_REQUEST`` naming both."""
REQUEST_MAGIC = b"FLBS"
REPLY_MAGIC = b"FLBR"
_REQ = struct.Struct(">4sBBHIQQ32s")
_REP = struct.Struct(">4sBBHQQ")
_CHUNK = struct.Struct(">I")
REQUEST_HEADER_SIZE = _REQ.size
"""Bytes of the fixed request header (the token follows)."""
REPLY_HEADER_SIZE = _REP.size
"""Bytes of the fixed reply header (the message follows)."""
CHUNK_HEADER_SIZE = _CHUNK.size
"""Bytes of a chunk's length prefix."""
MAX_TOKEN_SIZE = 1024
"""Largest token accepted, in bytes."""
MAX_MESSAGE_SIZE = 4096
"""Largest reply message accepted, in bytes (longer messages are truncated when encoding)."""
DEFAULT_CHUNK_SIZE = 4 << 20
"""Default chunk size in bytes (4 MiB)."""
MAX_CHUNK_SIZE = 64 << 20
"""Largest chunk accepted, in bytes."""
MAX_TOTAL = (1 << 63) - 1


class Op(enum.IntEnum):
    """Request operations."""

    PUT = 1
    GET = 2
    HAS = 3


class Status(enum.IntEnum):
    """Reply statuses; ``>= BAD_REQUEST`` are errors (the message says what was wrong)."""

    OK = 0
    CONTINUE = 1
    """PUT: send the body from ``offset``."""
    EXISTS = 2
    """PUT: the blob is stored already; send nothing."""
    BAD_REQUEST = 10
    """Malformed header, unknown version/op, or a length over the limits."""
    UNAUTHORIZED = 11
    """The token was refused."""
    NOT_FOUND = 12
    """GET/PUT of a digest the server does not know or no longer holds."""
    TOO_LARGE = 13
    """The blob is longer than the server accepts."""
    INTEGRITY = 14
    """PUT: the bytes do not hash to the digest; nothing was stored."""
    SIZE_MISMATCH = 15
    """The announced length differs from the blob's known length."""
    NOT_READY = 16
    """GET: the blob's upload did not complete within the server's wait."""
    STORE_FULL = 17
    """The server's store has no room for the blob."""
    BUSY = 18
    """PUT: another writer holds the upload and did not finish within the server's wait."""
    INTERNAL = 19
    """Unexpected server failure."""


TOKEN_NODE = b"N"
"""First byte of a node's blob-path token (:func:`node_blob_token`)."""
TOKEN_RUN = b"D"
"""First byte of a driver's blob-path token (one per run, given out in ``CreateRunResponse.blob_token``)."""
TOKEN_ID = struct.Struct(">Q")
"""The node id / run id that follows the first byte of a token (big-endian uint64)."""


def node_blob_token(node_id: int, token: bytes) -> bytes:
    """The blob-path token of a node: its node id and its session token (from CreateNodeResponse)."""
    return TOKEN_NODE + TOKEN_ID.pack(node_id) + bytes(token)


class FrameError(FlAsyncError, ValueError):
    """Bytes that do not form a valid frame (wrong magic/version/op, or a length over the limits).

    Attributes:
        status: the reply status that describes the problem.
    """

    def __init__(self, message: str, status: Status = Status.BAD_REQUEST) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Request:
    """A decoded request header. ``token`` is read separately (``token_len`` bytes)."""

    op: Op
    digest: bytes
    offset: int
    total: int
    token_len: int
    count: int = 1


@dataclass(frozen=True)
class Reply:
    """A decoded reply header. ``message`` is read separately (``message_len`` bytes)."""

    status: Status
    offset: int
    total: int
    message_len: int


def encode_request(
    op: Op, digest: bytes, *, offset: int = 0, total: int = 0, token: bytes = b"", count: int = 1
) -> bytes:
    """Encode a request header and its token.

    Raises:
        ValueError: digest not 32 bytes, token longer than :data:`MAX_TOKEN_SIZE`, negative lengths.
    """
    if len(digest) != DIGEST_SIZE:
        raise ValueError(f"digest must be {DIGEST_SIZE} bytes, got {len(digest)}")
    if len(token) > MAX_TOKEN_SIZE:
        raise ValueError(f"token of {len(token)} bytes exceeds {MAX_TOKEN_SIZE} bytes")
    if not (0 <= offset <= MAX_TOTAL and 0 <= total <= MAX_TOTAL):
        raise ValueError("offset and total must be in 0..2**63-1")
    if not 0 <= count < 1 << 32:
        raise ValueError("count must be in 0..2**32-1")
    return _REQ.pack(REQUEST_MAGIC, VERSION, int(op), len(token), count, offset, total, bytes(digest)) + bytes(token)


def decode_request_header(data: bytes | bytearray | memoryview, *, max_total: int = MAX_TOTAL) -> Request:
    """Decode the fixed request header (:data:`REQUEST_HEADER_SIZE` bytes).

    Raises:
        FrameError: wrong magic or version (``BAD_REQUEST``), unknown op, token too long, offset past
            total (``BAD_REQUEST``), or ``total > max_total`` (``TOO_LARGE``) — before any allocation.
    """
    if len(data) != REQUEST_HEADER_SIZE:
        raise FrameError(f"request header is {REQUEST_HEADER_SIZE} bytes, got {len(data)}")
    magic, version, op, token_len, count, offset, total, digest = _REQ.unpack(data)
    if magic != REQUEST_MAGIC:
        raise FrameError(f"not a blob request (magic {bytes(magic)!r})")
    if version != VERSION:
        raise FrameError(f"unsupported blob protocol version {version} (this side speaks {VERSION})")
    try:
        op = Op(op)
    except ValueError:
        raise FrameError(f"unknown blob operation {op}") from None
    if token_len > MAX_TOKEN_SIZE:
        raise FrameError(f"token of {token_len} bytes exceeds {MAX_TOKEN_SIZE} bytes")
    if total > max_total:
        raise FrameError(f"blob of {total} bytes exceeds the limit of {max_total} bytes", Status.TOO_LARGE)
    if offset > total:
        raise FrameError(f"offset {offset} is past the blob's length {total}")
    return Request(op, bytes(digest), offset, total, token_len, count)


def encode_reply(status: Status, *, offset: int = 0, total: int = 0, message: str = "") -> bytes:
    """Encode a reply header and message (truncated to :data:`MAX_MESSAGE_SIZE` bytes)."""
    msg = message.encode("utf-8")[:MAX_MESSAGE_SIZE]
    return _REP.pack(REPLY_MAGIC, int(status), 0, len(msg), offset, total) + msg


def decode_reply_header(data: bytes | bytearray | memoryview) -> Reply:
    """Decode the fixed reply header (:data:`REPLY_HEADER_SIZE` bytes).

    Raises:
        FrameError: wrong magic, unknown status or message too long.
    """
    if len(data) != REPLY_HEADER_SIZE:
        raise FrameError(f"reply header is {REPLY_HEADER_SIZE} bytes, got {len(data)}")
    magic, status, _reserved, msg_len, offset, total = _REP.unpack(data)
    if magic != REPLY_MAGIC:
        raise FrameError(f"not a blob reply (magic {bytes(magic)!r})")
    try:
        status = Status(status)
    except ValueError:
        raise FrameError(f"unknown blob reply status {status}") from None
    if msg_len > MAX_MESSAGE_SIZE:
        raise FrameError(f"reply message of {msg_len} bytes exceeds {MAX_MESSAGE_SIZE} bytes")
    if offset > total:
        raise FrameError(f"reply offset {offset} is past its total {total}")
    return Reply(status, offset, total, msg_len)


def encode_chunk_header(length: int) -> bytes:
    """Encode a chunk's 4-byte length prefix."""
    return _CHUNK.pack(length)


def decode_chunk_header(data: bytes | bytearray | memoryview, *, remaining: int, max_chunk: int) -> int:
    """Decode a chunk's length prefix and check it against what is still expected.

    Args:
        remaining: bytes of the body not received yet.
        max_chunk: largest chunk accepted.

    Raises:
        FrameError: an empty chunk, a chunk over ``max_chunk`` or past the end of the body.
    """
    length: int = _CHUNK.unpack(data)[0]
    if length == 0:
        raise FrameError("empty chunk")
    if length > max_chunk:
        raise FrameError(f"chunk of {length} bytes exceeds the limit of {max_chunk} bytes")
    if length > remaining:
        raise FrameError(f"chunk of {length} bytes runs past the end of the body ({remaining} bytes left)")
    return length

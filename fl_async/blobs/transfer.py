"""Driver- and node-side helpers: upload the blobs of messages before pushing them, fetch before decoding.

The driver and the node runtime encode with ``codec.message_to_proto(msg, blobs=...)`` (arrays
over the inline limit become external references) and call :func:`upload_blobs` before the push;
after a pull they call :func:`fetch_blobs` and decode with ``codec.message_from_proto(wire,
blobs=...)``. A payload that cannot be fetched is left out, so decoding that message raises
:class:`~fl_async.errors.IntegrityError` and the caller turns it into a
``PAYLOAD_UNAVAILABLE`` error reply instead of losing the message.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, TypeVar

from fl_async.blobs.client import BlobClient
from fl_async.codec import Buffer, external_arrays
from fl_async.errors import FlAsyncError, LinkConnectionError
from fl_async.proto.fl_async import v1 as pb

__all__ = [
    "OFF_LOOP_BYTES",
    "client_for",
    "encode_beside_loop",
    "fetch_blobs",
    "needs_blobs",
    "payload_bytes",
    "upload_blobs",
]

log = logging.getLogger("fl_async.blobs")


def needs_blobs(wires: Iterable[pb.Message]) -> dict[bytes, tuple[int, int]]:
    """``digest -> (nbytes, messages)``: every external array the wire messages refer to, its length,
    and how many of the messages refer to it (each digest is downloaded once for all of them)."""
    out: dict[bytes, tuple[int, int]] = {}
    for wire in wires:
        for digest, nbytes in dict(external_arrays(wire)).items():
            out[digest] = (nbytes, out.get(digest, (nbytes, 0))[1] + 1)
    return out


async def upload_blobs(client: BlobClient | None, blobs: Mapping[bytes, Buffer], *, concurrency: int = 4) -> int:
    """Upload every ``digest -> buffer`` the link does not hold yet; returns bytes sent.

    Raises:
        LinkConnectionError: there are blobs but the link advertised no blob data path (``client`` is
            ``None``), or I/O failed.
        FlAsyncError: a subclass, as :meth:`BlobClient.put` (e.g. ResourceExhaustedError).
    """
    if not blobs:
        return 0
    if client is None:
        raise LinkConnectionError("the message has arrays above the inline limit, but the link has no blob data path")
    return await client.put_many(blobs, concurrency=concurrency)


async def fetch_blobs(
    client: BlobClient | None, wires: Iterable[pb.Message], *, concurrency: int = 4
) -> tuple[dict[bytes, Buffer], dict[bytes, FlAsyncError]]:
    """Download every payload the wire messages refer to (each digest once, verified).

    Returns:
        ``(blobs, failures)``: ``digest -> buffer`` of what arrived, and ``digest -> error`` of what did
        not (messages needing those fail to decode with IntegrityError, which callers turn into
        ``PAYLOAD_UNAVAILABLE`` replies).

    A payload that could not be fetched after the client's retries (link unreachable, blob gone,
    corrupted) is reported in ``failures``, never raised: the caller answers those messages with an
    error reply rather than losing them.
    """
    wanted = needs_blobs(wires)
    blobs: dict[bytes, Buffer] = {}
    failures: dict[bytes, FlAsyncError] = {}
    if not wanted:
        return blobs, failures
    if client is None:
        err = LinkConnectionError("the message refers to external payloads, but the link has no blob data path")
        return blobs, dict.fromkeys(wanted, err)
    import asyncio

    sem = asyncio.Semaphore(max(1, concurrency))

    async def one(digest: bytes, nbytes: int, count: int) -> None:
        async with sem:
            try:
                blobs[digest] = await client.get(digest, nbytes, count=count)
            except FlAsyncError as exc:
                log.warning("payload %s… (%d bytes) unavailable: %s", digest.hex()[:16], nbytes, exc)
                failures[digest] = exc

    await asyncio.gather(*(one(d, n, k) for d, (n, k) in wanted.items()))
    return blobs, failures


def client_for(host: str, port: int, *, ssl: Any = None, token: bytes = b"") -> BlobClient | None:
    """A :class:`BlobClient` for the blob port a link advertised, or ``None`` when it advertised none (0)."""
    if not port:
        return None
    return BlobClient(host, port, ssl=ssl, token=token)


OFF_LOOP_BYTES = 8 << 20
"""Encodes whose distinct array payloads add up to at least this many bytes run on a worker thread, so
that hashing them (~2.3 ms per 10 MiB; BLAKE3 releases the GIL) does not hold the event loop."""


def payload_bytes(messages: Iterable[Any]) -> int:
    """Bytes of the distinct array buffers that :class:`~fl_async.common.Message` objects carry (a
    buffer shared by several messages, as in a broadcast, counts once)."""
    seen: dict[int, int] = {}
    for msg in messages:
        if msg.has_content():
            for rec in msg.content.parameters_records.values():
                for a in rec.values():
                    seen[id(a.data)] = a.nbytes
    return sum(seen.values())


T = TypeVar("T")


async def encode_beside_loop(
    encode: Callable[..., T], messages: Sequence[Any], blobs: dict[bytes, Any] | None, *args: Any
) -> T:
    """``encode(*args)``, on a worker thread when ``blobs`` is given and ``messages`` carry at least
    :data:`OFF_LOOP_BYTES` of distinct array payload (hashing large arrays -- BLAKE3 releases the GIL -- then runs
    beside the event loop, not on it), else directly. The one place the driver's pushes and the node's replies
    decide this."""
    if blobs is not None and payload_bytes(messages) >= OFF_LOOP_BYTES:
        return await asyncio.to_thread(encode, *args)
    return encode(*args)

"""Content addresses of array payloads: 32-byte BLAKE3 digests.

An array that travels outside the wire message (an *external* array, see :mod:`fl_async.codec`) is
named by the BLAKE3 hash of its raw bytes; the blob store keys blobs by it and every receiver verifies
it. BLAKE3 rather than SHA-256 because the receiving side of the blob path hashes every byte while it
arrives and that pass is the largest CPU cost of a transfer: on this project's 2-core machine BLAKE3
(the ``blake3`` package, Rust, SIMD) hashes 4.4 GiB/s from memory and ~6 GiB/s from cache on one core,
SHA-256 with SHA-NI 1.7 GiB/s, BLAKE2b 0.8 GiB/s (``benchmarks/RESULTS.md``, "Content address"). Like
SHA-256 it is a cryptographic hash, so a digest cannot be forged to alias another payload.
"""

from __future__ import annotations

from typing import Protocol

import blake3 as _blake3

__all__ = ["ALGORITHM", "DIGEST_SIZE", "Hasher", "digest_of", "new_hasher"]

DIGEST_SIZE = 32
"""Length in bytes of a content address (BLAKE3's default output)."""

ALGORITHM = "blake3"
"""Name of the hash that content addresses are computed with."""


class Hasher(Protocol):
    """Incremental hash: ``update`` releases the GIL for large inputs, so it may run on a worker thread."""

    def update(self, data: bytes | bytearray | memoryview, /) -> object: ...

    def digest(self) -> bytes: ...

    def hexdigest(self) -> str: ...


def _bytes_view(data: bytes | bytearray | memoryview) -> memoryview:
    mv = memoryview(data)
    return mv if mv.format == "B" and mv.ndim == 1 else mv.cast("B")


class _Blake3:
    """BLAKE3 hasher that accepts any C-contiguous buffer (the binding wants unsigned bytes)."""

    __slots__ = ("_h",)

    def __init__(self) -> None:
        self._h = _blake3.blake3()

    def update(self, data: bytes | bytearray | memoryview, /) -> None:
        self._h.update(_bytes_view(data))

    def digest(self) -> bytes:
        return self._h.digest()

    def hexdigest(self) -> str:
        return self._h.hexdigest()


def new_hasher() -> Hasher:
    """A fresh incremental hasher whose :meth:`~Hasher.digest` is the content address of what it was fed."""
    return _Blake3()


def digest_of(data: bytes | bytearray | memoryview) -> bytes:
    """The content address (32-byte BLAKE3 digest) of a C-contiguous buffer's bytes.

    Raises:
        TypeError: ``data`` does not support the buffer protocol, or is not C-contiguous.
    """
    return _blake3.blake3(_bytes_view(data)).digest()

"""Allocation of large payload buffers.

``bytearray(n)`` zero-fills with ``memset`` and then every page is faulted in on the first write:
two passes. An anonymous ``mmap`` skips the fill (the kernel hands out zero pages as they are
touched, i.e. while the payload is received into them): one pass. Huge pages are not requested on
purpose: with the kernel's THP ``defrag=madvise`` setting a ``MADV_HUGEPAGE`` region compacts memory
synchronously on fault, which measured here cost up to ~0.8 s per 400 MiB when another process (the
link, storing the same payload) had just taken the free huge pages.
"""

from __future__ import annotations

import mmap

__all__ = ["allocate", "MMAP_MIN"]

MMAP_MIN = 1 << 20
"""Buffers of at least this many bytes are anonymous memory maps; smaller ones are ``bytearray``."""


def allocate(nbytes: int) -> memoryview:
    """A writable, C-contiguous byte buffer of ``nbytes`` bytes (format ``"B"``), zero-initialised.

    The memory is returned to the system when the last view of it is released.
    """
    if nbytes < MMAP_MIN:
        return memoryview(bytearray(nbytes))
    return memoryview(mmap.mmap(-1, nbytes, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS))

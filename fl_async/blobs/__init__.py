"""The blob data path: large array payloads travel as chunks over a dedicated byte stream.

* :mod:`fl_async.blobs.store` — sans-IO content-addressed, reference-counted store (the link's).
* :mod:`fl_async.blobs.protocol` — sans-IO framing (headers, chunks, statuses).
* :mod:`fl_async.blobs.server` — :class:`BlobServer`, asyncio server over a store (TLS optional).
* :mod:`fl_async.blobs.client` — :class:`BlobClient`, resumable, verified uploads and downloads.
* :mod:`fl_async.blobs.buffers` — payload buffers and the :class:`BufferPool` that reuses freed ones.

See docs/large-models.md for the design and measurements.
"""

from fl_async.blobs.buffers import BufferPool, BufferPoolStatistics, default_pool, set_default_pool
from fl_async.blobs.client import BlobClient
from fl_async.blobs.server import BlobServer
from fl_async.blobs.store import BlobState, BlobStore, BlobStoreStatistics

__all__ = [
    "BlobClient",
    "BlobServer",
    "BlobState",
    "BlobStore",
    "BlobStoreStatistics",
    "BufferPool",
    "BufferPoolStatistics",
    "default_pool",
    "set_default_pool",
]

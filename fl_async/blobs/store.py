"""Sans-IO content-addressed blob store: one copy per digest, reference counts, resumable uploads.

The SuperLink holds array payloads that travel outside the wire messages (external arrays, see
:mod:`fl_async.codec`) in one :class:`BlobStore`. A blob is identified by the BLAKE3 digest of its bytes
(32-byte digest), so pushing the same array to N nodes stores it once.

Life of a blob:

* **declared**: :meth:`BlobStore.acquire` may reference a digest before its bytes have arrived (the
  link acquires references when a message that names the digest is pushed);
* **uploading**: :meth:`BlobStore.begin_upload` preallocates the whole buffer; bytes are written in
  order (``received`` offset), hashed incrementally, and an interrupted upload resumes from
  ``received``; :meth:`BlobStore.finish_upload` verifies the digest and either completes the blob or
  discards the bytes and raises :class:`~fl_async.errors.IntegrityError`;
* **complete**: readable; freed as soon as no owner references it and no download lease or reader
  pins it. A complete blob that was never referenced (uploaded, message not pushed yet) and idle
  blobs whose upload stalled are freed by :meth:`BlobStore.sweep` after ``linger`` seconds.

References are counted per *owner key* (e.g. a message id): the link acquires ``(owner, digest)``
when a message naming the digest is queued and releases the owner when the message is consumed.
:meth:`BlobStore.hand_over` turns an owner's references into download leases held by a *holder*
(the token of the party that pulled the message) until that holder has downloaded the blob
(:meth:`BlobStore.downloaded`) or the lease expires.

Nothing here does I/O or waits; times are passed in (``now``, seconds on any monotonic clock) and
changes are announced to listeners (:meth:`BlobStore.add_listener`) so that async code can wake up
waiters.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import NamedTuple

from fl_async._digest import DIGEST_SIZE, Hasher, new_hasher
from fl_async.blobs.buffers import PREFAULT_AHEAD, PREFAULT_MIN, BufferPool, Prefaulter, default_pool
from fl_async.errors import FlAsyncError, IntegrityError

__all__ = [
    "DIGEST_SIZE",
    "BlobBusyError",
    "BlobQuotaError",
    "BlobState",
    "BlobStore",
    "BlobStoreFullError",
    "BlobStoreStatistics",
    "UnknownBlobError",
    "Upload",
]


class BlobState(enum.Enum):
    """Where a blob is in its life."""

    DECLARED = "declared"
    """Referenced, no byte received yet (no buffer allocated)."""
    UPLOADING = "uploading"
    """Buffer allocated, ``received < nbytes`` or not yet verified."""
    COMPLETE = "complete"
    """All bytes received and verified; readable."""


class BlobBusyError(FlAsyncError):
    """Another writer is uploading this blob right now (wait for it, or retry later)."""


class BlobStoreFullError(FlAsyncError):
    """Accepting the blob would exceed the store's byte capacity (``max_bytes``)."""


class BlobQuotaError(BlobStoreFullError):
    """Accepting the blob would exceed its uploader's quota of bytes no message references yet."""


class UnknownBlobError(FlAsyncError, KeyError):
    """The store holds no blob with this digest."""


class BlobStoreStatistics(NamedTuple):
    """Counts for introspection (see :meth:`BlobStore.statistics`)."""

    #: blobs known to the store, in any state
    blobs: int
    #: blobs complete and readable
    complete: int
    #: blobs with an upload in progress (buffer allocated, not verified yet)
    uploading: int
    #: blobs referenced but with no byte received yet
    declared: int
    #: bytes of buffers held (complete blobs plus preallocated upload buffers)
    bytes_held: int
    #: (owner, digest) references held
    references: int
    #: (holder, digest) download leases held
    leases: int


@dataclass(eq=False)
class _Blob:
    digest: bytes
    nbytes: int
    state: BlobState = BlobState.DECLARED
    buffer: memoryview | None = None
    received: int = 0
    hashed: int = 0
    hasher: Hasher | None = None
    writer: object | None = None
    owners: dict[object, int] = field(default_factory=dict)
    leases: dict[bytes, list[float]] = field(default_factory=dict)  # holder -> [count, expires_at]
    readers: int = 0
    idle_since: float = 0.0
    referenced: bool = False
    reserved: bool = False  # nbytes counted in bytes_held (from begin_upload; the buffer may come later)
    uploader: object | None = None  # quota key of who uploaded it, while nothing references it
    prefault: Prefaulter | None = None

    @property
    def pinned(self) -> bool:
        return bool(self.owners or self.leases or self.readers or self.writer is not None)


class Upload:
    """Handle on one writer's upload of one blob (from :meth:`BlobStore.begin_upload`).

    The writer receives bytes straight into :meth:`next_view` (a view of the preallocated buffer),
    calls :meth:`advance` with how many bytes arrived, and feeds :meth:`take_unhashed` to
    :attr:`hasher` (it may do so on a worker thread: the hash releases the GIL), then calls
    :meth:`BlobStore.finish_upload` or :meth:`BlobStore.abort_upload`.
    """

    def __init__(self, blob: _Blob, writer: object, pool: BufferPool) -> None:
        self._blob = blob
        self.writer = writer
        self._pool = pool

    @property
    def digest(self) -> bytes:
        """The blob's digest (32 bytes)."""
        return self._blob.digest

    @property
    def nbytes(self) -> int:
        """Total length of the blob in bytes."""
        return self._blob.nbytes

    @property
    def received(self) -> int:
        """Bytes received so far (the offset the next byte goes to)."""
        return self._blob.received

    @property
    def hasher(self) -> Hasher:
        """Incremental BLAKE3 hash over ``[0, hashed)``."""
        assert self._blob.hasher is not None
        return self._blob.hasher

    def next_view(self, n: int) -> memoryview:
        """A writable view of the next ``min(n, remaining)`` bytes of the buffer, at ``received``.

        The buffer is allocated on the first call, i.e. when the first bytes arrive (a header announcing a
        large blob allocates nothing); new pages are prefaulted at most :data:`PREFAULT_AHEAD` bytes ahead
        of the bytes received."""
        b = self._blob
        if b.writer is not self.writer or not b.reserved:
            raise RuntimeError("upload is no longer active")
        if b.buffer is None:
            b.buffer = self._pool.allocate(b.nbytes, prefault=False)
        if b.prefault is None and b.nbytes >= PREFAULT_MIN and b.received < b.nbytes:
            b.prefault = Prefaulter(b.buffer, ahead=PREFAULT_AHEAD)
        end = min(b.nbytes, b.received + n)
        if b.prefault is not None:
            b.prefault.advance(b.received)  # ahead of what arrived, not of what the sender announced
        return memoryview(b.buffer)[b.received : end]

    def advance(self, n: int) -> None:
        """Record that ``n`` more bytes were written at ``received``.

        Raises:
            ValueError: ``n`` is negative or goes past the blob's length.
        """
        b = self._blob
        if n < 0 or b.received + n > b.nbytes:
            raise ValueError(f"cannot advance by {n} bytes: {b.received} of {b.nbytes} received")
        b.received += n

    def take_unhashed(self) -> memoryview:
        """Return the received-but-unhashed bytes ``[hashed, received)`` and mark them hashed.

        The caller must feed the returned view to :attr:`hasher` before the next call.
        """
        b = self._blob
        if b.buffer is None:
            return memoryview(b"")
        view = memoryview(b.buffer)[b.hashed : b.received]
        b.hashed = b.received
        return view


class BlobStore:
    """Content-addressed, reference-counted in-memory store of blobs (sans-IO).

    Args:
        max_bytes: capacity in bytes for all buffers held (``None``: unbounded). Uploads that would
            exceed it are refused with :class:`BlobStoreFullError` before anything is allocated.
        max_blob_bytes: largest single blob accepted, in bytes.
        linger: seconds an unreferenced complete blob, or a stalled unreferenced upload, is kept
            before :meth:`sweep` frees it.
        quota: most bytes of uploads one uploader (the ``uploader`` key of :meth:`begin_upload`, e.g. a node's
            or a run's token) may have in the store that no message references yet (in progress or complete);
            ``None``: no quota. Beyond it :meth:`begin_upload` raises :class:`BlobQuotaError`.
        pool: where upload buffers come from (default: the process-wide
            :func:`~fl_async.blobs.buffers.default_pool`); a freed blob's buffer is reused by a later
            upload of the same size once nothing references it (the pool trims itself).
    """

    def __init__(
        self,
        *,
        max_bytes: int | None = None,
        max_blob_bytes: int = 1 << 40,
        linger: float = 60.0,
        pool: BufferPool | None = None,
        quota: int | None = None,
    ) -> None:
        if max_blob_bytes <= 0 or (max_bytes is not None and max_bytes <= 0):
            raise ValueError("max_bytes and max_blob_bytes must be positive")
        self.max_bytes = max_bytes
        self.max_blob_bytes = max_blob_bytes
        self.linger = float(linger)
        self.pool = pool if pool is not None else default_pool()
        self._blobs: dict[bytes, _Blob] = {}
        self._owned: dict[object, dict[bytes, int]] = {}
        self._bytes_held = 0
        self.quota = quota
        self._unclaimed: dict[object, int] = {}
        self._listeners: list[Callable[[bytes, BlobState | None], None]] = []

    # ---------------------------------------------------------------------------------- queries

    def statistics(self) -> BlobStoreStatistics:
        """Counts of blobs by state, bytes held, references and leases."""
        by_state = dict.fromkeys(BlobState, 0)
        refs = leases = 0
        for b in self._blobs.values():
            by_state[b.state] += 1
            refs += len(b.owners)
            leases += len(b.leases)
        return BlobStoreStatistics(
            blobs=len(self._blobs),
            complete=by_state[BlobState.COMPLETE],
            uploading=by_state[BlobState.UPLOADING],
            declared=by_state[BlobState.DECLARED],
            bytes_held=self._bytes_held,
            references=refs,
            leases=leases,
        )

    @property
    def bytes_held(self) -> int:
        """Bytes of buffers currently held (complete blobs and preallocated uploads)."""
        return self._bytes_held

    def __contains__(self, digest: object) -> bool:
        return digest in self._blobs

    def __len__(self) -> int:
        return len(self._blobs)

    def state(self, digest: bytes) -> BlobState | None:
        """The blob's state, or ``None`` when the store does not know the digest."""
        b = self._blobs.get(digest)
        return None if b is None else b.state

    def nbytes(self, digest: bytes) -> int | None:
        """The blob's announced length in bytes, or ``None`` when unknown."""
        b = self._blobs.get(digest)
        return None if b is None else b.nbytes

    def received(self, digest: bytes) -> int:
        """Bytes held for the digest: ``nbytes`` when complete, the upload offset otherwise, 0 if unknown."""
        b = self._blobs.get(digest)
        return 0 if b is None else b.received

    def references(self, digest: bytes) -> int:
        """Number of owners referencing the digest (0 when unknown)."""
        b = self._blobs.get(digest)
        return 0 if b is None else len(b.owners)

    def leased_to(self, digest: bytes, holder: bytes) -> bool:
        """Whether ``holder`` holds a download lease on the digest (see :meth:`hand_over`)."""
        b = self._blobs.get(digest)
        return b is not None and holder in b.leases

    def holds(self, owner: object) -> bool:
        """Whether ``owner`` references any blob."""
        return bool(self._owned.get(owner))

    def add_listener(self, callback: Callable[[bytes, BlobState | None], None]) -> None:
        """Call ``callback(digest, new_state)`` when a blob completes, is discarded or freed (``None``)."""
        self._listeners.append(callback)

    def _notify(self, digest: bytes, state: BlobState | None) -> None:
        for cb in list(self._listeners):
            cb(digest, state)

    # ------------------------------------------------------------------------------ references

    @staticmethod
    def _check_digest(digest: bytes) -> None:
        if not isinstance(digest, (bytes, bytearray)) or len(digest) != DIGEST_SIZE:
            raise ValueError(f"a blob digest is {DIGEST_SIZE} bytes (BLAKE3)")

    def _entry(self, digest: bytes, nbytes: int, now: float) -> _Blob:
        self._check_digest(digest)
        if isinstance(nbytes, bool) or not isinstance(nbytes, int) or nbytes < 0:
            raise ValueError(f"blob length must be a non-negative int, got {nbytes!r}")
        b = self._blobs.get(digest)
        if b is None:
            if nbytes > self.max_blob_bytes:
                raise ValueError(f"blob of {nbytes} bytes exceeds the limit of {self.max_blob_bytes} bytes")
            b = self._blobs[digest] = _Blob(bytes(digest), nbytes, idle_since=now)
        elif b.nbytes != nbytes:
            raise IntegrityError(
                f"blob {digest.hex()[:16]}… announced with {nbytes} bytes, known with {b.nbytes} bytes"
            )
        return b

    def acquire(self, owner: object, digest: bytes, nbytes: int, *, now: float = 0.0) -> None:
        """Reference ``digest`` (``nbytes`` long) on behalf of ``owner`` (e.g. a message id).

        The blob need not exist yet: an unknown digest is declared (no memory is allocated) and can be
        uploaded later. Acquiring the same ``(owner, digest)`` twice counts twice.

        Raises:
            ValueError: the digest is not 32 bytes, or the length is negative or over ``max_blob_bytes``.
            IntegrityError: the digest is known with a different length.
        """
        b = self._entry(digest, nbytes, now)
        b.owners[owner] = b.owners.get(owner, 0) + 1
        b.referenced = True
        self._claim(b)
        per = self._owned.setdefault(owner, {})
        per[b.digest] = per.get(b.digest, 0) + 1

    def acquire_many(self, owner: object, refs: Iterable[tuple[bytes, int]], *, now: float = 0.0) -> None:
        """:meth:`acquire` every ``(digest, nbytes)`` of ``refs``, all or nothing."""
        refs = list(refs)
        for digest, nbytes in refs:  # validate first: all or nothing
            self._check_digest(digest)
            b = self._blobs.get(digest)
            if b is not None and b.nbytes != nbytes:
                raise IntegrityError(f"blob {digest.hex()[:16]}… announced with {nbytes} bytes, known with {b.nbytes}")
            if b is None and (nbytes < 0 or nbytes > self.max_blob_bytes):
                raise ValueError(f"blob of {nbytes} bytes exceeds the limit of {self.max_blob_bytes} bytes")
        for digest, nbytes in refs:
            self.acquire(owner, digest, nbytes, now=now)

    def release(self, owner: object, *, now: float = 0.0) -> int:
        """Drop every reference ``owner`` holds; free blobs nobody pins any more.

        Returns:
            How many blobs were freed. Releasing an unknown owner does nothing (returns 0).
        """
        per = self._owned.pop(owner, None)
        if not per:
            return 0
        freed = 0
        for digest in per:
            b = self._blobs.get(digest)
            if b is None:
                continue
            b.owners.pop(owner, None)
            freed += self._maybe_free(b, now)
        return freed

    def hand_over(self, owner: object, holder: bytes, *, expires_at: float, now: float = 0.0) -> None:
        """Turn ``owner``'s references into download leases held by ``holder`` until ``expires_at``.

        Used when a message is consumed (pulled) but its blobs still have to be downloaded by the
        puller: each blob stays until :meth:`downloaded` has been told of one download per handed-over
        owner (``count``), or the lease expires. Leases of one holder on one blob add up.
        """
        digests = list(self._owned.get(owner, {}))
        for digest in digests:
            b = self._blobs.get(digest)
            if b is not None:
                lease = b.leases.setdefault(holder, [0, expires_at])
                lease[0] += 1
                lease[1] = max(lease[1], expires_at)
        self.release(owner, now=now)

    def downloaded(self, holder: bytes, digest: bytes, *, count: int = 1, now: float = 0.0) -> bool:
        """``holder`` has fetched ``digest`` for ``count`` handed-over owners (pulled messages).

        Returns:
            Whether the blob was freed (no lease, reference or reader left).
        """
        b = self._blobs.get(digest)
        lease = None if b is None else b.leases.get(holder)
        if b is None or lease is None:
            return False
        lease[0] -= max(1, count)
        if lease[0] > 0:
            return False
        del b.leases[holder]
        return bool(self._maybe_free(b, now))

    def _maybe_free(self, b: _Blob, now: float) -> int:
        """Free ``b`` when nothing pins it and it was referenced before (or holds no bytes)."""
        b.idle_since = now
        if b.pinned:
            return 0
        if b.state is BlobState.DECLARED or (b.state is BlobState.COMPLETE and b.referenced):
            self._free(b)
            return 1
        return 0  # never-referenced complete blobs and stalled uploads wait for sweep()

    def _claim(self, b: _Blob) -> None:
        """``b`` no longer counts against its uploader's quota (referenced, discarded or freed)."""
        if b.uploader is not None:
            left = self._unclaimed.get(b.uploader, 0) - b.nbytes
            if left > 0:
                self._unclaimed[b.uploader] = left
            else:
                self._unclaimed.pop(b.uploader, None)
            b.uploader = None

    def _unreserve(self, b: _Blob) -> None:
        self._claim(b)
        if b.reserved:
            self._bytes_held -= b.nbytes
            b.reserved = False
        if b.prefault is not None:
            b.prefault.stop()
            b.prefault = None
        b.buffer = None

    def unclaimed(self, uploader: object) -> int:
        """Bytes of uploads by ``uploader`` that no message references yet (see ``quota``)."""
        return self._unclaimed.get(uploader, 0)

    def _free(self, b: _Blob) -> None:
        if self._blobs.get(b.digest) is not b:
            return
        del self._blobs[b.digest]
        self._unreserve(b)
        self._notify(b.digest, None)

    def sweep(self, now: float) -> int:
        """Free what nobody will ask for: expired leases, and unpinned blobs idle for ``linger`` seconds.

        Call it periodically (the link does). Returns how many blobs were freed.
        """
        freed = 0
        for b in list(self._blobs.values()):
            if b.leases:
                for holder, (_count, exp) in list(b.leases.items()):
                    if exp <= now:
                        del b.leases[holder]
                if not b.pinned:
                    self._free(b)
                    freed += 1
                    continue
            if not b.pinned and now - b.idle_since >= self.linger:
                self._free(b)
                freed += 1
        return freed

    # -------------------------------------------------------------------------------- uploads

    def begin_upload(
        self, digest: bytes, nbytes: int, writer: object, *, now: float = 0.0, uploader: object | None = None
    ) -> Upload | None:
        """Start or resume writing ``digest``; returns ``None`` when the blob is already complete.

        Reserves ``nbytes`` of the capacity (and of ``uploader``'s quota unless a message references the digest
        already); the buffer itself is allocated when the first bytes arrive (:meth:`Upload.next_view`). The
        returned :class:`Upload` continues at ``received`` (0 for a new blob, where the previous writer stopped
        otherwise).

        Raises:
            ValueError: malformed digest or length, or over ``max_blob_bytes`` (nothing allocated).
            IntegrityError: the digest is known with a different length.
            BlobBusyError: another writer holds the upload.
            BlobStoreFullError: the buffer would exceed ``max_bytes`` (nothing allocated).
            BlobQuotaError: the upload would exceed ``uploader``'s ``quota`` (nothing allocated).
        """
        self._check_digest(digest)
        if not isinstance(nbytes, int) or nbytes < 0 or nbytes > self.max_blob_bytes:
            raise ValueError(f"blob of {nbytes} bytes exceeds the limit of {self.max_blob_bytes} bytes")
        existing = self._blobs.get(digest)
        if existing is not None and existing.state is BlobState.COMPLETE:
            if existing.nbytes != nbytes:
                raise IntegrityError(f"blob {digest.hex()[:16]}… is {existing.nbytes} bytes, not {nbytes}")
            existing.idle_since = now
            return None
        if existing is not None and existing.writer is not None:
            raise BlobBusyError(f"blob {digest.hex()[:16]}… is being uploaded by another writer")
        fresh = existing is None or not existing.reserved
        if fresh and self.max_bytes is not None and self._bytes_held + nbytes > self.max_bytes:
            raise BlobStoreFullError(
                f"blob of {nbytes} bytes does not fit: {self._bytes_held} of {self.max_bytes} bytes held"
            )
        charged = fresh and uploader is not None and not (existing is not None and existing.referenced)
        if charged and self.quota is not None and self.unclaimed(uploader) + nbytes > self.quota:
            raise BlobQuotaError(
                f"blob of {nbytes} bytes exceeds the uploader's quota: {self.unclaimed(uploader)} of {self.quota} "
                "bytes uploaded and not yet named by a pushed message"
            )
        b = self._entry(digest, nbytes, now)
        if not b.reserved:
            b.reserved = True
            self._bytes_held += nbytes
            if nbytes < PREFAULT_MIN:  # small: allocate now (also gives an empty blob its buffer)
                b.buffer = self.pool.allocate(nbytes)
            b.hasher = new_hasher()
            b.received = b.hashed = 0
            b.state = BlobState.UPLOADING
            if charged:
                b.uploader = uploader
                self._unclaimed[uploader] = self.unclaimed(uploader) + nbytes
        b.writer = writer
        b.idle_since = now
        return Upload(b, writer, self.pool)

    def discard_upload(self, upload: Upload, *, now: float = 0.0) -> None:
        """The writer is dropped (e.g. too slow): free the bytes received so far at once (no resume)."""
        b = upload._blob
        if b.writer is not upload.writer:
            return
        b.writer = None
        b.idle_since = now
        self._discard(b)

    def abort_upload(self, upload: Upload, *, now: float = 0.0) -> None:
        """The writer stops (e.g. its connection broke): keep the bytes received so far for a resume.

        Bytes received but not hashed yet are dropped (the next writer resends them).
        """
        b = upload._blob
        if b.writer is not upload.writer:
            return
        b.writer = None
        b.received = b.hashed
        b.idle_since = now  # kept for a resume; sweep() frees it after `linger` if nobody comes back
        if b.prefault is not None:  # frees its helper slot; a resume starts a new one
            b.prefault.stop()
            b.prefault = None
        self._notify(b.digest, b.state)

    def finish_upload(self, upload: Upload, *, now: float = 0.0) -> None:
        """Verify a fully received upload: complete the blob, or discard its bytes.

        Raises:
            ValueError: not all bytes were received and hashed.
            IntegrityError: the BLAKE3 digest of the bytes is not the digest; the bytes are discarded (the
                blob goes back to declared if referenced, else it is forgotten) and nothing is stored.
        """
        b = upload._blob
        if b.writer is not upload.writer:
            raise RuntimeError("upload is no longer active")
        if b.received != b.nbytes or b.hashed != b.nbytes:
            raise ValueError(f"upload incomplete: {b.received} received, {b.hashed} hashed of {b.nbytes} bytes")
        assert b.hasher is not None
        actual = b.hasher.digest()
        b.writer = None
        b.idle_since = now
        if actual != b.digest:
            self._discard(b)
            raise IntegrityError(
                f"upload of blob {b.digest.hex()[:16]}… ({b.nbytes} bytes) does not match its digest "
                f"(got {actual.hex()[:16]}…): discarded"
            )
        b.state = BlobState.COMPLETE
        b.hasher = None
        if b.prefault is not None:
            b.prefault.stop()
            b.prefault = None
        self._notify(b.digest, BlobState.COMPLETE)

    def _discard(self, b: _Blob) -> None:
        self._unreserve(b)
        b.hasher = None
        b.received = b.hashed = 0
        b.state = BlobState.DECLARED
        if b.owners or b.leases:
            self._notify(b.digest, BlobState.DECLARED)
        else:
            self._free(b)

    def put(self, digest: bytes, data: bytes | bytearray | memoryview, *, now: float = 0.0) -> None:
        """Store a whole payload at once (copied into the store); a no-op if already complete.

        Raises:
            IntegrityError: the BLAKE3 digest of ``data`` is not ``digest`` (nothing stored).
            BlobBusyError, BlobStoreFullError, ValueError: as :meth:`begin_upload`.
        """
        mv = memoryview(data).cast("B")
        up = self.begin_upload(digest, mv.nbytes, object(), now=now)
        if up is None:
            return
        view = up.next_view(mv.nbytes - up.received)
        view[:] = mv[up.received :]
        up.advance(view.nbytes)
        up.hasher.update(up.take_unhashed())
        self.finish_upload(up, now=now)

    # -------------------------------------------------------------------------------- reading

    def open_read(self, digest: bytes) -> memoryview:
        """Pin a complete blob for reading and return a read-only view of it; pair with :meth:`close_read`.

        Raises:
            UnknownBlobError: no such blob, or it is not complete.
        """
        b = self._blobs.get(digest)
        if b is None or b.state is not BlobState.COMPLETE or b.buffer is None:
            raise UnknownBlobError(digest)
        b.readers += 1
        return memoryview(b.buffer).toreadonly()

    def close_read(self, digest: bytes, *, now: float = 0.0) -> None:
        """Unpin a blob opened with :meth:`open_read`."""
        b = self._blobs.get(digest)
        if b is None or b.readers == 0:
            return
        b.readers -= 1
        self._maybe_free(b, now)

    def get(self, digest: bytes) -> memoryview:
        """A read-only view of a complete blob (no pin; for in-process use by the link).

        Raises:
            UnknownBlobError: no such blob, or it is not complete.
        """
        b = self._blobs.get(digest)
        if b is None or b.state is not BlobState.COMPLETE or b.buffer is None:
            raise UnknownBlobError(digest)
        return memoryview(b.buffer).toreadonly()

"""Allocation of large payload buffers, and reuse of those nobody references any more.

``bytearray(n)`` zero-fills with ``memset`` and then every page is faulted in on the first write:
two passes. An anonymous ``mmap`` skips the fill (the kernel hands out zero pages as they are
touched, i.e. while the payload is received into them): one pass. Huge pages are not requested on
purpose: with the kernel's THP ``defrag=madvise`` setting a ``MADV_HUGEPAGE`` region compacts memory
synchronously on fault, which measured here cost up to ~0.8 s per 400 MiB when another process (the
link, storing the same payload) had just taken the free huge pages.

Even that one pass is expensive: on this project's machine (a 2-core VM) fresh pages arrive at about
2 GiB/s (``bytearray(n)``, an ``mmap`` written once and ``MAP_POPULATE`` all measure 1.9-2.5 GiB/s),
which is half of what loopback TCP moves and so bounds every stream that stores what it receives in
new memory. Two measures, measured in ``benchmarks/RESULTS.md`` ("issue 7, buffers"):

* **Prefault in the background.** A new mapping of at least :data:`PREFAULT_MIN` bytes is populated by
  a helper thread with ``madvise(MADV_POPULATE_WRITE)`` (Linux >= 5.14; 2.6-3.0 GiB/s, the call
  releases the GIL) while the payload is being received into it from the front: the receiver mostly
  finds its pages ready. Populating never changes a page's contents, so it cannot race with the
  received bytes. Where the call is not available nothing is prefaulted.
* **Reuse.** Federated rounds move arrays of the same sizes round after round, so a
  :class:`BufferPool` keeps the mappings of freed payloads (up to a byte budget, for a bounded time)
  and hands them out again: a download or upload into a reused mapping writes warm pages (~15 GiB/s).

A mapping is reused only when nothing but the pool references it. Every ``memoryview`` of a mapping,
every slice of one and every numpy array or :class:`~fl_async.common.records.Array` built on one keeps
the ``mmap`` object alive through CPython's managed buffer, which holds one reference to it; so the
mapping is free exactly when its reference count is the pool's own (:func:`sys.getrefcount`). Data a
caller still holds is never overwritten.
"""

from __future__ import annotations

import ctypes
import errno
import mmap
import os
import sys
import threading
import time
import weakref
from collections.abc import Callable
from typing import NamedTuple

__all__ = [
    "DEFAULT_POOL_BYTES",
    "MMAP_MIN",
    "POOL_ENV",
    "PREFAULT_AHEAD",
    "PREFAULT_MIN",
    "BufferPool",
    "BufferPoolStatistics",
    "Prefaulter",
    "allocate",
    "default_pool",
    "set_default_pool",
]

MMAP_MIN = 1 << 20
"""Buffers of at least this many bytes are anonymous memory maps; smaller ones are ``bytearray``."""

DEFAULT_POOL_BYTES = 512 << 20
"""Default budget (bytes) of freed buffers a process keeps for reuse (see :class:`BufferPool`)."""

POOL_ENV = "FL_ASYNC_BUFFER_POOL"
"""Environment variable overriding :data:`DEFAULT_POOL_BYTES` for the process-wide pool (bytes; ``0`` disables)."""

PREFAULT_MIN = 16 << 20
"""New mappings of at least this many bytes are populated by a background thread (see module doc)."""

PREFAULT_AHEAD = 32 << 20
"""A :class:`Prefaulter` populates at most this many bytes beyond the bytes received."""

_MAX_TRACKED = 256  # mappings watched at once; allocations beyond are plain (keeps trim() cheap)
_MADV_POPULATE_WRITE = getattr(mmap, "MADV_POPULATE_WRITE", 23)  # Linux >= 5.14
_PREFAULT_STEP = 8 << 20  # bytes per madvise call (the thread notices an error early)
_PREFAULT_THREADS = threading.BoundedSemaphore(2)  # beyond that, new mappings fault on first write


def _load_madvise() -> Callable[[int, int, int], int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        fn = libc.madvise
    except (OSError, AttributeError):  # pragma: no cover - no libc symbol
        return None
    fn.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    fn.restype = ctypes.c_int
    return fn  # type: ignore[no-any-return]


_madvise = _load_madvise()


def _populate(m: mmap.mmap) -> None:
    """Fault in every page of ``m`` for writing, front to back (runs on a helper thread)."""
    global _madvise
    try:
        anchor = ctypes.c_char.from_buffer(m)  # pins the mapping while we work on it
        try:
            base, n = ctypes.addressof(anchor), len(m)
            for pos in range(0, n, _PREFAULT_STEP):
                if _madvise is None:
                    return
                if _madvise(base + pos, min(_PREFAULT_STEP, n - pos), _MADV_POPULATE_WRITE) != 0:
                    if ctypes.get_errno() in (errno.EINVAL, errno.ENOSYS, errno.EPERM):
                        _madvise = None  # this kernel has no MADV_POPULATE_WRITE: stop trying
                    return
        finally:
            del anchor
    finally:
        _PREFAULT_THREADS.release()


def _new_mapping(nbytes: int, prefault: bool = True) -> mmap.mmap:
    m = mmap.mmap(-1, nbytes, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    if prefault and nbytes >= PREFAULT_MIN and _madvise is not None and _PREFAULT_THREADS.acquire(blocking=False):
        try:
            threading.Thread(target=_populate, args=(m,), name="fl-async-prefault", daemon=True).start()
        except RuntimeError:  # pragma: no cover - interpreter shutting down / no threads left
            _PREFAULT_THREADS.release()
    return m


def allocate(nbytes: int, prefault: bool = True) -> memoryview:
    """A new writable, C-contiguous byte buffer of ``nbytes`` bytes (format ``"B"``), zero-initialised.

    Buffers of :data:`PREFAULT_MIN` bytes or more are prefaulted by a background thread unless ``prefault`` is
    false (then pages are faulted in as they are written, or by a :class:`Prefaulter`). The memory is
    returned to the system when the last view of it is released.
    """
    if nbytes < MMAP_MIN:
        return memoryview(bytearray(nbytes))
    return memoryview(_new_mapping(nbytes, prefault))


class Prefaulter:
    """Populates a buffer front to back on a helper thread, never more than ``ahead`` bytes beyond the end the
    receiver announced (:meth:`advance`), so that a sender announcing a large payload and sending little makes
    the process hold little memory. Without ``MADV_POPULATE_WRITE`` or a free helper slot it does nothing.

    Args:
        buffer: a writable buffer from :func:`allocate` (an anonymous mapping).
        ahead: bytes to populate beyond the announced end.
    """

    def __init__(self, buffer: memoryview, *, ahead: int = PREFAULT_AHEAD) -> None:
        self._cond = threading.Condition()
        self._limit = ahead
        self._ahead = ahead
        self._stopped = False
        if _madvise is None or not _PREFAULT_THREADS.acquire(blocking=False):
            self._stopped = True
            return
        try:
            threading.Thread(target=self._run, args=(buffer,), name="fl-async-prefault", daemon=True).start()
        except RuntimeError:  # pragma: no cover - interpreter shutting down / no threads left
            _PREFAULT_THREADS.release()
            self._stopped = True

    def advance(self, end: int) -> None:
        """Bytes up to ``end`` have arrived: populate up to ``end + ahead``."""
        if self._stopped or end + self._ahead <= self._limit:
            return
        with self._cond:
            self._limit = end + self._ahead
            self._cond.notify()

    def stop(self) -> None:
        """Stop populating (the thread ends and releases the buffer). Idempotent."""
        if self._stopped:
            return
        with self._cond:
            self._stopped = True
            self._cond.notify()

    def _run(self, buffer: memoryview) -> None:
        global _madvise
        try:
            anchor = ctypes.c_char.from_buffer(buffer)  # pins the mapping while we work on it
            try:
                base, n, pos = ctypes.addressof(anchor), buffer.nbytes, 0
                del buffer
                while pos < n:
                    with self._cond:
                        while not self._stopped and pos >= self._limit:
                            self._cond.wait()
                        if self._stopped:
                            return
                        end = min(n, self._limit, pos + _PREFAULT_STEP)
                    if _madvise is None:
                        return
                    if _madvise(base + pos, end - pos, _MADV_POPULATE_WRITE) != 0:
                        if ctypes.get_errno() in (errno.EINVAL, errno.ENOSYS, errno.EPERM):
                            _madvise = None
                        return
                    pos = end
            finally:
                del anchor
        finally:
            self._stopped = True
            _PREFAULT_THREADS.release()


class BufferPoolStatistics(NamedTuple):
    """Counts for introspection (see :meth:`BufferPool.statistics`)."""

    #: mappings the pool watches (in use by someone, or idle)
    tracked: int
    #: bytes of all watched mappings
    tracked_bytes: int
    #: watched mappings nobody references (reusable)
    idle: int
    #: bytes of the idle mappings (held by the process only for reuse)
    idle_bytes: int
    #: allocations served by a reused mapping since the pool was made
    reused: int
    #: allocations that made a new mapping since the pool was made
    fresh: int


class _Entry:
    __slots__ = ("idle_since", "map")

    def __init__(self, m: mmap.mmap) -> None:
        self.map = m
        self.idle_since: float | None = None  # when a trim first saw nothing referencing it


def _refs(entry: _Entry) -> int:
    return sys.getrefcount(entry.map)


def _calibrate() -> int | None:
    """The reference count :func:`_refs` reports for a mapping only the pool holds, or ``None`` (no
    reuse) when this interpreter does not show a live view in that count."""
    trace, profile = sys.gettrace(), sys.getprofile()
    sys.settrace(None)
    sys.setprofile(None)
    try:
        entry = _Entry(mmap.mmap(-1, mmap.PAGESIZE, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS))
        base = _refs(entry)
        view = memoryview(entry.map)[1:]
        with_view = _refs(entry)
        del view
        after = _refs(entry)
    finally:
        sys.settrace(trace)
        sys.setprofile(profile)
    # only the entry's slot and getrefcount's argument: anything else (a retained frame) would make a
    # buffer with a live view look idle later
    return base if base == 2 and with_view == base + 1 and after == base else None


_IDLE_REFS = _calibrate()


class BufferPool:
    """Large payload buffers that are handed out again once nothing references them.

    :meth:`allocate` returns a view of a mapping of exactly ``nbytes`` bytes: a watched mapping of that
    size that nobody references any more when there is one (its old bytes are still in it: callers
    overwrite the whole buffer before reading it), a new zero-filled one otherwise. Idle mappings are
    dropped (memory returned to the system) by :meth:`trim`: those idle for ``max_idle_seconds``, then
    the oldest ones until at most ``max_idle_bytes`` are idle. Every :meth:`allocate` trims, and so does a
    daemon thread every ``min(max_idle_seconds / 2, 5)`` seconds while the pool watches any mapping (a
    driver or node may not allocate again for a long time); it ends when nothing is watched.

    Never call ``release()`` on a view of a buffer you still use through another object that holds the
    view without exporting it (``torch.frombuffer`` does so): the released view no longer counts, and
    the memory may be handed out again.

    Args:
        max_idle_bytes: most bytes of idle mappings kept (``0`` disables reuse: :meth:`allocate` is
            :func:`allocate`). Buffers larger than this are never watched.
        max_idle_seconds: seconds an idle mapping is kept before :meth:`trim` drops it.
        clock: monotonic clock in seconds (injectable for tests).

    Thread-safe: one pool may serve the event loops of several threads (e.g. an in-process link and
    nodes, or a blocking Driver's portal thread).
    """

    def __init__(
        self,
        *,
        max_idle_bytes: int = DEFAULT_POOL_BYTES,
        max_idle_seconds: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if isinstance(max_idle_bytes, bool) or not isinstance(max_idle_bytes, int) or max_idle_bytes < 0:
            raise ValueError(f"max_idle_bytes must be a non-negative int, got {max_idle_bytes!r}")
        if not max_idle_seconds >= 0:
            raise ValueError(f"max_idle_seconds must be >= 0, got {max_idle_seconds!r}")
        self.max_idle_bytes = max_idle_bytes
        self.max_idle_seconds = float(max_idle_seconds)
        self._clock = clock
        self._lock = threading.Lock()
        self._entries: dict[int, list[_Entry]] = {}
        self._count = 0
        self._reused = 0
        self._fresh = 0
        self._janitor: threading.Thread | None = None
        _POOLS.add(self)

    @staticmethod
    def _idle(entry: _Entry) -> bool:
        return _IDLE_REFS is not None and _refs(entry) == _IDLE_REFS

    def allocate(self, nbytes: int, prefault: bool = True) -> memoryview:
        """A writable byte buffer (format ``"B"``) of ``nbytes`` bytes; contents unspecified (``prefault``: as
        :func:`allocate`'s, for a new mapping).

        Reuses an idle watched mapping of exactly ``nbytes`` bytes when there is one, else makes a new
        zero-filled one (watched when ``MMAP_MIN <= nbytes <= max_idle_bytes``).

        Raises:
            ValueError: ``nbytes`` is negative.
            OSError: the system refused the memory.
        """
        if nbytes < 0:
            raise ValueError(f"nbytes must be >= 0, got {nbytes}")
        if nbytes < MMAP_MIN or nbytes > self.max_idle_bytes:
            return allocate(nbytes, prefault)
        now = self._clock()
        with self._lock:
            self._trim(now)
            for entry in self._entries.get(nbytes, ()):
                if self._idle(entry):
                    entry.idle_since = None
                    self._reused += 1
                    return memoryview(entry.map)
            m = _new_mapping(nbytes, prefault)
            self._fresh += 1
            if self._count < _MAX_TRACKED:
                self._entries.setdefault(nbytes, []).append(_Entry(m))
                self._count += 1
                self._start_janitor()
            return memoryview(m)

    def _start_janitor(self) -> None:
        """A daemon thread trims the pool while it watches mappings (no allocation may come for a long time)."""
        if self._janitor is not None and self._janitor.is_alive():
            return
        ref = weakref.ref(self)
        period = min(max(self.max_idle_seconds / 2, 0.05), 5.0)

        def run() -> None:
            while True:
                time.sleep(period)
                pool = ref()
                if pool is None:
                    return
                pool.trim()
                with pool._lock:
                    if not pool._entries:
                        pool._janitor = None
                        return
                del pool

        self._janitor = threading.Thread(target=run, name="fl-async-pool-trim", daemon=True)
        self._janitor.start()

    def trim(self, now: float | None = None) -> int:
        """Drop idle mappings kept too long or beyond the byte budget; returns bytes released.

        ``now`` defaults to the pool's clock. Every :meth:`allocate` and the pool's janitor thread
        call it; call it yourself to release idle memory at once.
        """
        with self._lock:
            return self._trim(self._clock() if now is None else now)

    def _trim(self, now: float) -> int:
        idle: list[tuple[float, int, _Entry]] = []
        released = 0
        for size, entries in list(self._entries.items()):
            keep = []
            for entry in entries:
                if not self._idle(entry):
                    entry.idle_since = None  # in use: its idle time starts when a trim sees it let go
                    keep.append(entry)
                    continue
                if entry.idle_since is None:
                    entry.idle_since = now
                if now - entry.idle_since >= self.max_idle_seconds:
                    released += size
                else:
                    keep.append(entry)
                    idle.append((entry.idle_since, size, entry))
            if keep:
                self._entries[size] = keep
            else:
                del self._entries[size]
        idle_bytes = sum(size for _, size, _ in idle)
        if idle_bytes > self.max_idle_bytes:
            idle.sort(key=lambda t: t[0])
            for _, size, entry in idle:
                if idle_bytes <= self.max_idle_bytes:
                    break
                entries = self._entries[size]
                entries.remove(entry)
                if not entries:
                    del self._entries[size]
                idle_bytes -= size
                released += size
        self._count = sum(len(v) for v in self._entries.values())
        return released

    def clear(self) -> int:
        """Drop every idle mapping now (in-use ones stay watched); returns bytes released."""
        with self._lock:
            released = 0
            for size, entries in list(self._entries.items()):
                keep = [e for e in entries if not self._idle(e)]
                released += size * (len(entries) - len(keep))
                if keep:
                    self._entries[size] = keep
                else:
                    del self._entries[size]
            self._count = sum(len(v) for v in self._entries.values())
            return released

    def statistics(self) -> BufferPoolStatistics:
        """Mappings watched and idle, their bytes, and how many allocations were reused or fresh."""
        with self._lock:
            tracked = tracked_bytes = idle = idle_bytes = 0
            for size, entries in self._entries.items():
                for entry in entries:
                    tracked += 1
                    tracked_bytes += size
                    if self._idle(entry):
                        idle += 1
                        idle_bytes += size
            return BufferPoolStatistics(tracked, tracked_bytes, idle, idle_bytes, self._reused, self._fresh)


_default: BufferPool | None = None
_default_lock = threading.Lock()
_POOLS: weakref.WeakSet[BufferPool] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    """A forked child has none of the parent's threads: free the prefault slots and every lock they or
    another thread may have held at the fork, and let the pools start their own janitor."""
    global _PREFAULT_THREADS, _default_lock
    _PREFAULT_THREADS = threading.BoundedSemaphore(2)
    _default_lock = threading.Lock()
    for pool in list(_POOLS):
        pool._lock = threading.Lock()
        pool._janitor = None


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def _pool_bytes_from_env() -> int:
    raw = os.environ.get(POOL_ENV, "").strip()
    if not raw:
        return DEFAULT_POOL_BYTES
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"{POOL_ENV}={raw!r}: expected a number of bytes (0 disables buffer reuse)") from None
    if value < 0:
        raise ValueError(f"{POOL_ENV}={raw!r}: expected a number of bytes >= 0")
    return value


def default_pool() -> BufferPool:
    """The process-wide pool used by blob stores and blob clients that were not given one.

    Its budget is :data:`DEFAULT_POOL_BYTES` (512 MiB), or the number of bytes in the
    ``FL_ASYNC_BUFFER_POOL`` environment variable (``0`` disables reuse), read when first needed.

    Raises:
        ValueError: the environment variable is not a non-negative integer.
    """
    global _default
    with _default_lock:
        if _default is None:
            _default = BufferPool(max_idle_bytes=_pool_bytes_from_env())
        return _default


def set_default_pool(pool: BufferPool | None) -> None:
    """Replace the process-wide pool (``None``: make a new one from the environment when next needed)."""
    global _default
    with _default_lock:
        _default = pool

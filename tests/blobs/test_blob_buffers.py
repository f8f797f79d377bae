"""BufferPool: freed payload buffers are reused, buffers someone still references never are."""

from __future__ import annotations

import numpy as np
import pytest

from fl_async._digest import digest_of
from fl_async.blobs import BlobClient, BlobServer, BlobStore, BufferPool, buffers
from fl_async.common import Array

MiB = 1 << 20
TOKEN = b"t"


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def mark(view: memoryview, value: int) -> None:
    np.frombuffer(view, dtype=np.uint8)[:] = value


def test_interpreter_supports_reuse() -> None:
    assert buffers._IDLE_REFS is not None  # CPython: a live view shows in the mapping's reference count


def test_freed_buffer_is_reused_with_its_old_bytes() -> None:
    pool = BufferPool(max_idle_bytes=8 * MiB)
    v = pool.allocate(2 * MiB)
    assert v.nbytes == 2 * MiB and v.format == "B" and not v.readonly
    mark(v, 7)
    del v
    st = pool.statistics()
    assert (st.tracked, st.idle, st.idle_bytes, st.fresh, st.reused) == (1, 1, 2 * MiB, 1, 0)
    w = pool.allocate(2 * MiB)
    assert w[0] == 7 and w[-1] == 7  # the same mapping (contents are unspecified: callers overwrite)
    assert pool.statistics().reused == 1
    other = pool.allocate(3 * MiB)  # another size: a new mapping
    assert other[0] == 0 and pool.statistics().fresh == 2


@pytest.mark.parametrize(
    "hold",
    [
        lambda v: v,
        lambda v: v[10:20],
        lambda v: v.toreadonly(),
        lambda v: memoryview(v),
        lambda v: np.frombuffer(v, dtype=np.float32),
        lambda v: Array.from_numpy(np.frombuffer(v, dtype=np.uint8)),
        lambda v: Array.from_numpy(np.frombuffer(v, dtype=np.uint8)).numpy(),
    ],
    ids=["view", "slice", "readonly", "memoryview-of-view", "numpy", "Array", "Array.numpy"],
)
def test_buffer_still_referenced_is_never_handed_out(hold) -> None:  # type: ignore[no-untyped-def]
    pool = BufferPool(max_idle_bytes=8 * MiB)
    v = pool.allocate(2 * MiB)
    mark(v, 9)
    kept = hold(v)
    del v
    assert pool.statistics().idle == 0
    w = pool.allocate(2 * MiB)
    assert w[0] == 0  # a fresh mapping: what `kept` sees is untouched
    mark(w, 1)
    seen = kept.numpy() if isinstance(kept, Array) else np.frombuffer(kept, dtype=np.uint8)
    assert (seen.view(np.uint8) == 9).all()
    del seen
    del kept, w
    assert pool.statistics().idle == 2


def test_released_view_frees_the_mapping() -> None:
    pool = BufferPool(max_idle_bytes=8 * MiB)
    v = pool.allocate(2 * MiB)
    keep_object = v
    v.release()
    assert pool.statistics().idle == 1
    del keep_object


def test_small_and_oversized_buffers_are_not_watched() -> None:
    pool = BufferPool(max_idle_bytes=4 * MiB)
    small = pool.allocate(100)
    big = pool.allocate(5 * MiB)
    assert small.nbytes == 100 and big.nbytes == 5 * MiB
    assert pool.statistics().tracked == 0
    off = BufferPool(max_idle_bytes=0)
    off.allocate(2 * MiB)
    assert off.statistics().tracked == 0
    with pytest.raises(ValueError):
        pool.allocate(-1)
    with pytest.raises(ValueError):
        BufferPool(max_idle_bytes=-1)


def test_trim_drops_old_then_oldest_beyond_budget() -> None:
    clock = Clock()
    pool = BufferPool(max_idle_bytes=4 * MiB, max_idle_seconds=10.0, clock=clock)
    a = pool.allocate(2 * MiB)
    clock.now = 1.0
    b = pool.allocate(2 * MiB)
    clock.now = 2.0
    c = pool.allocate(2 * MiB)
    assert pool.statistics().tracked == 3
    del a, b, c  # 6 MiB idle, budget 4 MiB: the oldest (a) goes
    assert pool.trim() == 2 * MiB
    assert pool.statistics().idle_bytes == 4 * MiB
    clock.now = 11.5  # b and c were last seen in use at t=2 (the trim above): idle 9.5 s, kept
    assert pool.trim() == 0
    clock.now = 12.0
    assert pool.trim() == 4 * MiB
    assert pool.statistics().tracked == 0


def test_in_use_time_does_not_count_as_idle() -> None:
    clock = Clock()
    pool = BufferPool(max_idle_bytes=4 * MiB, max_idle_seconds=10.0, clock=clock)
    v = pool.allocate(2 * MiB)
    clock.now = 100.0
    assert pool.trim() == 0  # in use: its idle time starts now
    del v
    clock.now = 105.0
    assert pool.trim() == 0 and pool.statistics().idle == 1
    assert pool.clear() == 2 * MiB


def test_default_pool_budget_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    saved = buffers._default
    try:
        monkeypatch.setenv(buffers.POOL_ENV, "0")
        buffers.set_default_pool(None)
        assert buffers.default_pool().max_idle_bytes == 0
        monkeypatch.setenv(buffers.POOL_ENV, "lots")
        buffers.set_default_pool(None)
        with pytest.raises(ValueError, match="FL_ASYNC_BUFFER_POOL='lots': expected a number of bytes"):
            buffers.default_pool()
        monkeypatch.delenv(buffers.POOL_ENV)
        buffers.set_default_pool(None)
        assert buffers.default_pool().max_idle_bytes == buffers.DEFAULT_POOL_BYTES
    finally:
        buffers.set_default_pool(saved)


def test_store_reuses_a_freed_blob_buffer_and_still_verifies() -> None:
    pool = BufferPool(max_idle_bytes=16 * MiB)
    store = BlobStore(pool=pool)
    a = np.random.default_rng(0).integers(0, 256, 2 * MiB, dtype=np.uint8).tobytes()
    b = np.random.default_rng(1).integers(0, 256, 2 * MiB, dtype=np.uint8).tobytes()
    store.acquire("m1", digest_of(a), len(a))
    store.put(digest_of(a), a)
    store.release("m1")
    assert len(store) == 0 and pool.statistics().idle == 1
    # a corrupted upload into the reused (dirty) buffer is still refused
    up = store.begin_upload(digest_of(b), len(b), "w")
    assert up is not None and pool.statistics().reused == 1
    view = up.next_view(len(b))
    view[:] = a  # wrong bytes (the old blob's)
    up.advance(len(b))
    up.hasher.update(up.take_unhashed())
    del view
    from fl_async.errors import IntegrityError

    with pytest.raises(IntegrityError):
        store.finish_upload(up)
    store.put(digest_of(b), b)
    assert bytes(store.get(digest_of(b))) == b


async def test_downloads_reuse_buffers_the_application_dropped_only() -> None:
    pool = BufferPool(max_idle_bytes=16 * MiB)
    srv = BlobServer(BlobStore(pool=BufferPool(max_idle_bytes=0)), authorize=lambda t: t == TOKEN)
    await srv.start("127.0.0.1", 0)
    try:
        async with BlobClient("127.0.0.1", srv.port, token=TOKEN, pool=pool) as c:
            blobs = [bytes([k]) * (2 * MiB) for k in (1, 2, 3)]
            for data in blobs:
                await c.put(digest_of(data), data)
            first = await c.get(digest_of(blobs[0]), 2 * MiB)
            kept = np.frombuffer(first, dtype=np.uint8)  # the application keeps the array
            del first
            second = await c.get(digest_of(blobs[1]), 2 * MiB)
            assert kept[0] == 1 and kept[-1] == 1 and bytes(second) == blobs[1]
            assert pool.statistics().reused == 0
            del second  # dropped: its buffer is reused by the next download of that size
            third = await c.get(digest_of(blobs[2]), 2 * MiB)
            assert bytes(third) == blobs[2] and pool.statistics().reused == 1
            assert kept[0] == 1 and kept[-1] == 1
    finally:
        await srv.stop()


def test_prefault_in_background_keeps_what_was_written_meanwhile() -> None:
    import threading

    assert buffers._madvise is not None  # Linux >= 5.14 here: MADV_POPULATE_WRITE available
    n = buffers.PREFAULT_MIN * 2
    v = buffers.allocate(n)
    arr = np.frombuffer(v, dtype=np.uint8)
    arr[:] = 0xA5  # written while the helper thread populates the same pages
    for t in threading.enumerate():
        if t.name == "fl-async-prefault":
            t.join(timeout=30)
            assert not t.is_alive()
    assert (arr == 0xA5).all()
    # the semaphore slot came back: more prefaults can start
    assert buffers._PREFAULT_THREADS.acquire(blocking=False)
    buffers._PREFAULT_THREADS.release()

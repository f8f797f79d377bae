"""BufferPool trim bookkeeping: the idle clock and the idle budget."""

from __future__ import annotations

from fl_async.blobs import BufferPool

MiB = 1 << 20


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_time_in_use_without_a_trim_does_not_count_as_idle() -> None:
    """A buffer held for longer than max_idle_seconds and then let go must be kept for reuse (its idle time
    starts when it is let go, as the docstring of _trim says), even if no trim ran while it was in use
    (a driver's pool is never trimmed between rounds: only allocations trim it)."""
    clock = Clock()
    pool = BufferPool(max_idle_bytes=8 * MiB, max_idle_seconds=30.0, clock=clock)
    v = pool.allocate(2 * MiB)  # round 1's reply, t=0
    clock.now = 60.0  # the server app works with it for 60 s (a long round), no allocation meanwhile
    del v  # let go at t=60
    clock.now = 61.0  # round 2's download of the same size, 1 s later
    w = pool.allocate(2 * MiB)
    st = pool.statistics()
    assert st.reused == 1, f"a buffer idle for 1 s was dropped instead of reused: {st}"
    del w


async def test_idle_budget_is_kept_without_allocations() -> None:
    """Idle bytes above max_idle_bytes (and mappings idle past max_idle_seconds) are returned within bounded
    time even if the process allocates nothing more (a driver that has finished its rounds): the pool's
    janitor thread trims it."""
    import anyio

    pool = BufferPool(max_idle_bytes=4 * MiB, max_idle_seconds=0.2)
    held = [pool.allocate(2 * MiB) for _ in range(8)]  # 8 replies of a round, 16 MiB
    held.clear()  # the server app aggregated and dropped them
    with anyio.move_on_after(3.0):  # bounded polling: 15x max_idle_seconds
        while pool.statistics().idle_bytes > 0:
            await anyio.sleep(0.05)
    st = pool.statistics()
    assert st.idle_bytes == 0, (
        f"{st.idle_bytes} idle bytes still held 3 s later (budget {pool.max_idle_bytes}, max idle 0.2 s)"
    )

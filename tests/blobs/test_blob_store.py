"""Sans-IO tests of the blob store and the blob protocol framing."""

from __future__ import annotations

import pytest

from fl_async._digest import digest_of
from fl_async.blobs import protocol as p
from fl_async.blobs.store import BlobBusyError, BlobState, BlobStore, BlobStoreFullError, UnknownBlobError
from fl_async.errors import IntegrityError


def blob(n: int, seed: int = 0) -> tuple[bytes, bytes]:
    data = bytes((i * 7 + seed) % 251 for i in range(n))
    return digest_of(data), data


def upload(store: BlobStore, digest: bytes, data: bytes, *, upto: int | None = None, writer: object = "w") -> object:
    up = store.begin_upload(digest, len(data), writer)
    assert up is not None
    end = len(data) if upto is None else upto
    while up.received < end:
        view = up.next_view(min(7, end - up.received))
        view[:] = data[up.received : up.received + len(view)]
        up.advance(len(view))
        up.hasher.update(up.take_unhashed())
    if upto is None:
        store.finish_upload(up)
    return up


def test_put_stores_once_and_reads_back() -> None:
    store = BlobStore()
    d, data = blob(100)
    store.put(d, data)
    store.put(d, data)  # second put is a no-op
    assert bytes(store.get(d)) == data
    st = store.statistics()
    assert (st.blobs, st.complete, st.bytes_held) == (1, 1, 100)


def test_references_free_when_last_owner_releases() -> None:
    store = BlobStore()
    d, data = blob(50)
    store.put(d, data)
    for owner in ("m1", "m2", "m3"):
        store.acquire(owner, d, 50)
    assert store.references(d) == 3
    assert store.release("m1") == 0 and store.release("m2") == 0
    assert store.release("m3") == 1
    assert store.statistics() == (0, 0, 0, 0, 0, 0, 0)
    assert store.release("unknown") == 0


def test_declared_before_upload_then_completed() -> None:
    store = BlobStore()
    d, data = blob(40)
    store.acquire("m1", d, 40)
    assert store.state(d) is BlobState.DECLARED and store.bytes_held == 0
    seen: list[tuple[bytes, BlobState | None]] = []
    store.add_listener(lambda dg, s: seen.append((dg, s)))
    upload(store, d, data)
    assert store.state(d) is BlobState.COMPLETE and seen == [(d, BlobState.COMPLETE)]
    store.release("m1")
    assert len(store) == 0 and store.bytes_held == 0


def test_corrupted_upload_is_discarded() -> None:
    store = BlobStore()
    d, data = blob(30)
    bad = bytes([data[0] ^ 1]) + data[1:]
    with pytest.raises(IntegrityError, match="does not match its digest"):
        upload(store, d, bad)
    assert len(store) == 0 and store.bytes_held == 0
    # declared blob: the discard keeps the declaration, so a good upload still completes it
    store.acquire("m", d, 30)
    with pytest.raises(IntegrityError):
        upload(store, d, bad)
    assert store.state(d) is BlobState.DECLARED and store.bytes_held == 0
    upload(store, d, data)
    assert bytes(store.get(d)) == data


def test_upload_resumes_from_hashed_offset_and_refuses_second_writer() -> None:
    store = BlobStore()
    d, data = blob(100)
    up = upload(store, d, data, upto=60, writer="a")
    with pytest.raises(BlobBusyError):
        store.begin_upload(d, 100, "b")
    store.abort_upload(up)  # type: ignore[arg-type]
    up2 = store.begin_upload(d, 100, "b")
    assert up2 is not None and up2.received == 60
    view = up2.next_view(1000)
    assert len(view) == 40
    view[:] = data[60:]
    up2.advance(40)
    up2.hasher.update(up2.take_unhashed())
    store.finish_upload(up2)
    assert bytes(store.get(d)) == data


def test_limits_refuse_before_allocation() -> None:
    store = BlobStore(max_bytes=100, max_blob_bytes=80)
    d, _ = blob(10)
    with pytest.raises(ValueError, match="exceeds the limit"):
        store.begin_upload(d, 81, "w")
    with pytest.raises(ValueError, match="exceeds the limit"):
        store.acquire("m", d, 1 << 40)
    d1, data1 = blob(70, 1)
    store.put(d1, data1)
    d2, _ = blob(40, 2)
    with pytest.raises(BlobStoreFullError, match="does not fit"):
        store.begin_upload(d2, 40, "w")
    assert store.bytes_held == 70
    with pytest.raises(ValueError, match="32 bytes"):
        store.acquire("m", b"short", 1)
    with pytest.raises(IntegrityError, match="announced with"):
        store.acquire("m", d1, 71)


def test_hand_over_keeps_blob_until_downloaded_or_expired() -> None:
    store = BlobStore()
    d, data = blob(20)
    store.put(d, data)
    store.acquire("reply-1", d, 20)
    store.hand_over("reply-1", b"driver", expires_at=10.0, now=1.0)
    assert store.state(d) is BlobState.COMPLETE and store.statistics().leases == 1
    assert store.downloaded(b"other", d) is False
    assert store.downloaded(b"driver", d) is True
    assert len(store) == 0
    store.put(d, data)
    store.acquire("reply-2", d, 20)
    store.hand_over("reply-2", b"driver", expires_at=10.0, now=1.0)
    assert store.sweep(5.0) == 0
    assert store.sweep(10.0) == 1 and store.bytes_held == 0


def test_sweep_frees_unreferenced_and_stalled_after_linger() -> None:
    store = BlobStore(linger=30.0)
    d1, data1 = blob(10, 1)
    d2, data2 = blob(10, 2)
    store.put(d1, data1, now=0.0)  # uploaded, never referenced (message not pushed yet)
    up = upload(store, d2, data2, upto=5)
    store.abort_upload(up, now=0.0)  # type: ignore[arg-type]
    assert store.sweep(29.0) == 0
    assert store.sweep(30.0) == 2 and store.statistics().bytes_held == 0


def test_reader_pin_defers_free() -> None:
    store = BlobStore()
    d, data = blob(10)
    store.put(d, data)
    store.acquire("m", d, 10)
    view = store.open_read(d)
    store.release("m")
    assert store.state(d) is BlobState.COMPLETE
    assert bytes(view) == data
    store.close_read(d)
    assert len(store) == 0
    with pytest.raises(UnknownBlobError):
        store.open_read(d)


# ------------------------------------------------------------------------------ protocol


def test_request_round_trip_and_limits() -> None:
    d, _ = blob(1)
    raw = p.encode_request(p.Op.GET, d, offset=5, total=10, token=b"tok")
    req = p.decode_request_header(raw[: p.REQUEST_HEADER_SIZE])
    assert (req.op, req.digest, req.offset, req.total, req.token_len) == (p.Op.GET, d, 5, 10, 3)
    assert raw[p.REQUEST_HEADER_SIZE :] == b"tok"
    with pytest.raises(p.FrameError) as info:
        p.decode_request_header(p.encode_request(p.Op.PUT, d, total=1 << 40), max_total=1 << 30)
    assert info.value.status is p.Status.TOO_LARGE
    with pytest.raises(p.FrameError, match="magic"):
        p.decode_request_header(b"XXXX" + raw[4 : p.REQUEST_HEADER_SIZE])
    with pytest.raises(p.FrameError, match="version"):
        p.decode_request_header(raw[:4] + b"\x09" + raw[5 : p.REQUEST_HEADER_SIZE])
    with pytest.raises(p.FrameError, match="unknown blob operation"):
        p.decode_request_header(raw[:5] + b"\x63" + raw[6 : p.REQUEST_HEADER_SIZE])
    with pytest.raises(p.FrameError, match="token"):
        p.decode_request_header(raw[:6] + (5000).to_bytes(2, "big") + raw[8 : p.REQUEST_HEADER_SIZE])
    with pytest.raises(p.FrameError, match="past"):
        p.decode_request_header(p.encode_request(p.Op.GET, d, offset=11, total=10))
    with pytest.raises(ValueError):
        p.encode_request(p.Op.GET, b"x")


def test_reply_and_chunk_framing() -> None:
    raw = p.encode_reply(p.Status.CONTINUE, offset=3, total=9, message="go")
    rep = p.decode_reply_header(raw[: p.REPLY_HEADER_SIZE])
    assert (rep.status, rep.offset, rep.total, rep.message_len) == (p.Status.CONTINUE, 3, 9, 2)
    assert p.decode_chunk_header(p.encode_chunk_header(5), remaining=9, max_chunk=8) == 5
    for n, match in [(0, "empty"), (9, "exceeds"), (8, "past the end")]:
        with pytest.raises(p.FrameError, match=match):
            p.decode_chunk_header(p.encode_chunk_header(n), remaining=7, max_chunk=8)
    with pytest.raises(p.FrameError, match="unknown blob reply status"):
        p.decode_reply_header(raw[:4] + b"\x63" + raw[5 : p.REPLY_HEADER_SIZE])


def test_leases_count_one_download_per_pulled_message() -> None:
    """Two pulled replies share one blob: it stays until the puller has settled both (one GET, count 2)."""
    store = BlobStore()
    d, data = blob(20)
    store.put(d, data)
    store.acquire("reply-a", d, 20)
    store.acquire("reply-b", d, 20)
    store.hand_over("reply-a", b"driver", expires_at=100.0)  # pulled by one poll ...
    store.hand_over("reply-b", b"driver", expires_at=100.0)  # ... and by a concurrent one
    assert store.downloaded(b"driver", d) is False  # the first poll's download
    assert store.state(d) is BlobState.COMPLETE
    assert store.downloaded(b"driver", d) is True  # the second poll's download frees it
    store.put(d, data)
    store.acquire("reply-c", d, 20)
    store.acquire("reply-d", d, 20)
    store.hand_over("reply-c", b"driver", expires_at=100.0)
    store.hand_over("reply-d", b"driver", expires_at=100.0)
    assert store.downloaded(b"driver", d, count=2) is True  # one pull of both: one download settles both


def test_inline_limit_keeps_a_request_within_budget() -> None:
    """Small arrays repeated in a broadcast go external when together they would exceed the budget."""
    import numpy as np

    from fl_async.codec import DEFAULT_INLINE_LIMIT, inline_limit_for
    from fl_async.common import Message, Metadata, RecordSet
    from fl_async.common.records import Array, ParametersRecord

    def msg(sizes: list[int]) -> Message:
        md = Metadata(
            run_id=1,
            message_id="",
            src_node_id=0,
            dst_node_id=2,
            reply_to_message="",
            group_id="g",
            ttl=60.0,
            message_type="train",
        )
        rec = ParametersRecord({f"a{i}": Array.from_numpy(np.zeros(n, np.uint8)) for i, n in enumerate(sizes)})
        return Message(md, content=RecordSet(parameters_records={"p": rec}))

    small = msg([10, 20, 30])
    assert inline_limit_for([small], budget=100) == DEFAULT_INLINE_LIMIT
    assert inline_limit_for([small] * 10, budget=100) == 10  # 10 x (10 + 20 + 30) > 100: keep only the 10s
    assert inline_limit_for([small] * 10, budget=5) == -1  # nothing fits: everything external
    big = msg([DEFAULT_INLINE_LIMIT + 1, 5])  # the big one is external anyway and does not count
    assert inline_limit_for([big] * 3, budget=15) == DEFAULT_INLINE_LIMIT

"""Codec benchmark: one 100 MiB float32 array, external vs inline, and many small messages.

Run: ``python -m benchmarks.codec`` (``--mib N`` for another size, ``--small N`` for the number of small
messages, ``--repeat R`` best-of). Prints seconds, MiB/s, how many times the payload is copied and the
tracemalloc peak per phase; results are recorded in ``benchmarks/RESULTS.md``.

"Encode" is what a sender does: ``codec.message_to_proto`` + serializing the wire message to bytes
(what grpclib does with it). "Decode" is the receiver: parsing the bytes + ``codec.message_from_proto``
+ ``Array.numpy()``. On the external path the payload itself is not in the protobuf bytes: the encoder
puts the array's own buffer in ``blobs`` under its BLAKE3 digest, and the decoder looks it up there
(the blob transport that moves those bytes between processes is measured elsewhere).
"""

from __future__ import annotations

import argparse
import gc
import platform
import sys
import time
import tracemalloc
from collections.abc import Callable
from datetime import date
from typing import Any

import numpy as np

from fl_async import codec
from fl_async.common import (
    Array,
    ConfigsRecord,
    Message,
    Metadata,
    MetricsRecord,
    ParametersRecord,
    RecordSet,
)
from fl_async.proto.fl_async import v1 as pb

MiB = 1 << 20


def _metadata() -> Metadata:
    return Metadata(
        run_id=12,
        message_id="5f0c8c2e-9f1e-4d6b-9a51-0f7d2c1e3b4a",
        src_node_id=0,
        dst_node_id=1234567,
        reply_to_message="",
        group_id="round-17",
        ttl=3600.0,
        message_type="train",
    )


def _best(fn: Callable[[], Any], repeat: int) -> tuple[float, Any]:
    best, out = float("inf"), None
    for _ in range(repeat):
        gc.collect()
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def _peak(fn: Callable[[], Any]) -> int:
    """Peak bytes newly allocated while ``fn`` runs (tracemalloc, Python + raw domains)."""
    gc.collect()
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def _memcpy_seconds(nbytes: int, repeat: int) -> float:
    src = np.ones(nbytes, dtype=np.uint8)
    return _best(lambda: bytes(memoryview(src)), repeat)[0]


def large(mib: int, repeat: int) -> list[str]:
    nbytes = mib * MiB
    a = np.random.default_rng(0).random(nbytes // 4, dtype=np.float32)
    msg = Message(_metadata(), content=RecordSet({"model": ParametersRecord({"w": Array.from_numpy(a)})}))
    rows: list[str] = []
    copy_s = _memcpy_seconds(nbytes, repeat)
    rows.append(f"reference: one {mib} MiB memcpy (bytes(memoryview)) = {copy_s:.3f} s ({mib / copy_s:,.0f} MiB/s)")

    # (a) external path: digest + the array's own buffer in `blobs`
    def enc_ext() -> tuple[bytes, dict[bytes, Any]]:
        blobs: dict[bytes, Any] = {}
        raw = bytes(codec.message_to_proto(msg, blobs=blobs))
        return raw, blobs

    t_enc, (raw, blobs) = _best(enc_ext, repeat)
    ((digest, blob),) = blobs.items()
    enc_copies = 0 if np.shares_memory(np.frombuffer(blob, dtype=np.uint8), a) else 1
    peak_enc = _peak(enc_ext)

    def dec_ext(verify: bool = True) -> np.ndarray:
        out = codec.message_from_proto(pb.Message.parse(raw), blobs=blobs, verify=verify)
        return out.content.parameters_records["model"]["w"].numpy()

    t_dec, nd = _best(dec_ext, repeat)
    t_dec_nv, _ = _best(lambda: dec_ext(False), repeat)
    dec_copies = 0 if np.shares_memory(nd, np.frombuffer(blob, dtype=np.uint8)) else 1
    assert nd.tobytes() == a.tobytes()
    peak_dec = _peak(dec_ext)
    rows.append(
        f"external  encode {t_enc:.3f} s = {mib / t_enc:,.0f} MiB/s | decode {t_dec:.3f} s = {mib / t_dec:,.0f} MiB/s "
        f"(verify=False: {t_dec_nv * 1e3:.2f} ms) | wire message {len(raw)} B | payload copies: encode "
        f"{enc_copies}, decode {dec_copies} (np.shares_memory) | tracemalloc peak encode "
        f"{peak_enc / MiB:.2f} MiB, decode {peak_dec / MiB:.2f} MiB"
    )

    # (b) everything inline in the protobuf bytes
    def enc_inline() -> bytes:
        return bytes(codec.message_to_proto(msg))

    t_to, wire = _best(lambda: codec.message_to_proto(msg), repeat)
    t_ser, _ = _best(lambda: bytes(wire), repeat)
    t_enc_i, raw_i = _best(enc_inline, repeat)
    peak_enc_i = _peak(enc_inline)

    def dec_inline() -> np.ndarray:
        out = codec.message_from_proto(pb.Message.parse(raw_i))
        return out.content.parameters_records["model"]["w"].numpy()

    t_parse, parsed = _best(lambda: pb.Message.parse(raw_i), repeat)
    t_from, _ = _best(lambda: codec.message_from_proto(parsed), repeat)
    t_dec_i, nd_i = _best(dec_inline, repeat)
    assert nd_i.tobytes() == a.tobytes() and nd_i.flags.writeable
    peak_dec_i = _peak(dec_inline)
    rows.append(
        f"inline    encode {t_enc_i:.3f} s = {mib / t_enc_i:,.0f} MiB/s (message_to_proto {t_to:.3f} s, "
        f"betterproto2 bytes() {t_ser:.3f} s) | decode {t_dec_i:.3f} s = {mib / t_dec_i:,.0f} MiB/s "
        f"(betterproto2 parse {t_parse:.3f} s, message_from_proto {t_from:.3f} s) | wire message "
        f"{len(raw_i) / MiB:.1f} MiB"
    )
    rows.append(
        f"inline    payload copies (from the code, see RESULTS.md): encode 17 = 1 (codec bytes()) + 4 per nesting "
        f"level x 4 levels (betterproto2), decode 9 = 2 per level x 4 + 1 (codec bytearray) | time in memcpy "
        f"units: encode {t_enc_i / copy_s:.1f}, decode {t_dec_i / copy_s:.1f} | tracemalloc peak encode "
        f"{peak_enc_i / MiB:.0f} MiB ({peak_enc_i / nbytes:.1f}x payload), decode {peak_dec_i / MiB:.0f} MiB "
        f"({peak_dec_i / nbytes:.1f}x payload)"
    )
    return rows


def crossover(repeat: int) -> list[str]:
    """Encode+decode seconds per array size, inline vs external (to choose ``DEFAULT_INLINE_LIMIT``)."""
    rows = ["size      inline enc+dec   external enc+dec (digest + verify)"]
    for size in (4 << 10, 64 << 10, 256 << 10, 1 << 20, 4 << 20):
        a = np.ones(size // 4, dtype=np.float32)
        msg = Message(_metadata(), content=RecordSet({"m": ParametersRecord({"w": Array.from_numpy(a)})}))

        def inline() -> None:
            codec.message_from_proto(pb.Message.parse(bytes(codec.message_to_proto(msg))))

        def external() -> None:
            blobs: dict[bytes, Any] = {}
            raw = bytes(codec.message_to_proto(msg, blobs=blobs, inline_limit=0))
            codec.message_from_proto(pb.Message.parse(raw), blobs=blobs)

        n = max(1, (8 << 20) // size)
        t_i = _best(lambda: [inline() for _ in range(n)], repeat)[0] / n
        t_e = _best(lambda: [external() for _ in range(n)], repeat)[0] / n
        rows.append(f"{size >> 10:>5} KiB  {t_i * 1e3:8.3f} ms      {t_e * 1e3:8.3f} ms")
    return rows


def small_message() -> Message:
    """About 500 B on the wire: a few metrics, a few configs and a 16-float array."""
    rs = RecordSet(
        parameters_records={"p": ParametersRecord({"bias": Array.from_numpy(np.arange(16, dtype=np.float32))})},
        metrics_records={"m": MetricsRecord({"loss": 0.25, "num_examples": 512, "acc": [0.5, 0.75]})},
        configs_records={"c": ConfigsRecord({"lr": 0.01, "epochs": 2, "optimizer": "sgd", "tag": b"\x00" * 64})},
    )
    return Message(_metadata(), content=rs)


def small(count: int, repeat: int) -> list[str]:
    msgs = [small_message() for _ in range(count)]
    t_to, wires = _best(lambda: [codec.message_to_proto(m) for m in msgs], repeat)
    t_ser, raws = _best(lambda: [bytes(w) for w in wires], repeat)
    t_parse, parsed = _best(lambda: [pb.Message.parse(r) for r in raws], repeat)
    t_from, outs = _best(lambda: [codec.message_from_proto(p) for p in parsed], repeat)
    assert outs[0].content == msgs[0].content
    total = t_to + t_ser + t_parse + t_from
    us = 1e6 / count
    return [
        f"{count:,} small messages ({len(raws[0])} B each): encode {(t_to + t_ser) * us:.0f} us/msg "
        f"(message_to_proto {t_to * us:.0f} + betterproto2 bytes() {t_ser * us:.0f}), decode "
        f"{(t_parse + t_from) * us:.0f} us/msg (betterproto2 parse {t_parse * us:.0f} + message_from_proto "
        f"{t_from * us:.0f}); total {total:.2f} s = {total * us:.0f} us/msg = {count / total:,.0f} msg/s"
    ]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=100, help="size of the large array in MiB (default 100)")
    parser.add_argument("--small", type=int, default=10_000, help="number of small messages (default 10,000)")
    parser.add_argument("--repeat", type=int, default=3, help="best of N (default 3)")
    args = parser.parse_args(argv)
    print(
        f"# benchmarks.codec  {date.today()}  Python {platform.python_version()}  numpy {np.__version__}  "
        f"{platform.machine()}  argv={sys.argv[1:]}"
    )
    for row in large(args.mib, args.repeat):
        print(row)
    for row in crossover(args.repeat):
        print(row)
    for row in small(args.small, args.repeat):
        print(row)


if __name__ == "__main__":
    main()

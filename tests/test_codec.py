"""Codec: exact round trips (hypothesis) inline and external, and hostile wire input."""

from __future__ import annotations

import math
import pickle
import struct
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fl_async import codec
from fl_async.common import (
    Array,
    ConfigsRecord,
    Error,
    ErrorCode,
    IntegrityError,
    Message,
    Metadata,
    MetricsRecord,
    ParametersRecord,
    RecordSet,
    SType,
)
from fl_async.proto.fl_async import v1 as pb

FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

INT64 = st.integers(-(2**63), 2**64 - 1)  # record integers: signed or unsigned 64-bit
INT_LISTS = st.lists(st.integers(-(2**63), 2**63 - 1), max_size=5) | st.lists(st.integers(0, 2**64 - 1), max_size=5)
FLOATS = st.floats(allow_nan=True, allow_infinity=True)
KEYS = st.text(max_size=8)


def _norm(value: Any) -> Any:
    """Comparable form of a record value: exact type, floats by bit pattern (NaN, -0.0)."""
    if isinstance(value, list):
        return ("list", [_norm(v) for v in value])
    if isinstance(value, float):
        return ("float", struct.pack("<d", value))
    return (type(value).__name__, value)


def _norm_record(rec: Any) -> list[Any]:
    return [(k, _norm(v)) for k, v in rec.items()]


def _wire_round_trip(msg: Message, *, external: bool, inline_limit: int = 0) -> Message:
    """Encode, serialize to bytes, parse and decode, as two processes would."""
    blobs: dict[bytes, Any] | None = {} if external else None
    wire = codec.message_to_proto(msg, blobs=blobs, inline_limit=inline_limit)
    raw = bytes(wire)
    received = None if blobs is None else {d: bytearray(b) for d, b in blobs.items()}  # as a transport delivers
    return codec.message_from_proto(pb.Message.parse(raw), blobs=received)


def _message(content: RecordSet) -> Message:
    md = Metadata(
        run_id=1,
        message_id="id",
        src_node_id=0,
        dst_node_id=5,
        reply_to_message="",
        group_id="g",
        ttl=60.0,
        message_type="train",
    )
    return Message(md, content=content)


# --------------------------------------------------------------------------------------------
# record values

METRIC_VALUES = st.one_of(INT64, FLOATS, INT_LISTS, st.lists(FLOATS, max_size=5))
CONFIG_VALUES = st.one_of(
    st.booleans(),
    INT64,
    FLOATS,
    st.text(max_size=12),
    st.binary(max_size=12),
    st.lists(st.booleans(), max_size=5),
    INT_LISTS,
    st.lists(FLOATS, max_size=5),
    st.lists(st.text(max_size=5), max_size=5),
    st.lists(st.binary(max_size=5), max_size=5),
)


@FAST
@given(
    metrics=st.dictionaries(KEYS, st.dictionaries(KEYS, METRIC_VALUES, max_size=4), max_size=3),
    configs=st.dictionaries(KEYS, st.dictionaries(KEYS, CONFIG_VALUES, max_size=4), max_size=3),
)
def test_record_values_round_trip_exactly(metrics: dict, configs: dict) -> None:  # type: ignore[type-arg]
    configs = {f"c{k}": v for k, v in configs.items()}  # one namespace per RecordSet: keep the names apart
    metrics = {f"m{k}": v for k, v in metrics.items()}
    rs = RecordSet(
        metrics_records={k: MetricsRecord(v) for k, v in metrics.items()},
        configs_records={k: ConfigsRecord(v) for k, v in configs.items()},
    )
    out = _wire_round_trip(_message(rs), external=False).content
    assert list(out.metrics_records) == list(metrics)
    assert list(out.configs_records) == list(configs)
    for name, rec in rs.metrics_records.items():
        assert _norm_record(out.metrics_records[name]) == _norm_record(rec)
    for name, rec in rs.configs_records.items():
        assert _norm_record(out.configs_records[name]) == _norm_record(rec)


@FAST
@given(config=st.dictionaries(KEYS, CONFIG_VALUES, max_size=6))
def test_config_entries_round_trip_in_order(config: dict) -> None:  # type: ignore[type-arg]
    entries = codec.config_to_proto(config)
    parsed = [pb.ValueEntry.parse(bytes(e)) for e in entries]
    out = codec.config_from_proto(parsed)
    assert list(out) == list(config)
    assert _norm_record(out) == _norm_record(ConfigsRecord(config))


# --------------------------------------------------------------------------------------------
# arrays

DTYPES = [
    "bool",
    "int8",
    "int16",
    "int32",
    "int64",
    "uint8",
    "uint16",
    "uint32",
    "uint64",
    "float16",
    "float32",
    "float64",
    "longdouble",
    "complex64",
    "complex128",
]


@st.composite
def numpy_arrays(draw: st.DrawFn) -> np.ndarray:
    dt = np.dtype(draw(st.sampled_from(DTYPES)))
    if dt.itemsize > 1:
        dt = dt.newbyteorder(draw(st.sampled_from("<>")))
    shape = tuple(draw(st.lists(st.integers(0, 4), max_size=3)))
    n = math.prod(shape)
    raw = draw(st.binary(min_size=n * dt.itemsize, max_size=n * dt.itemsize))
    if dt.kind == "b":
        raw = bytes(b & 1 for b in raw)
    a = np.frombuffer(raw, dtype=dt).reshape(shape).copy()
    layout = draw(st.sampled_from(["C", "F", "strided", "reversed"]))
    if layout == "F":
        a = np.asfortranarray(a)
    elif layout == "strided" and a.ndim:
        big = np.repeat(a, 2, axis=0)
        a = big[::2]
    elif layout == "reversed" and a.ndim:
        a = a[::-1]
    return a


def _assert_exact(out: np.ndarray, a: np.ndarray) -> None:
    assert out.dtype == a.dtype  # byte order included
    assert out.shape == a.shape
    assert out.tobytes() == a.tobytes()  # every bit: NaN payloads, -0.0


@FAST
@given(
    arrays=st.lists(numpy_arrays(), min_size=1, max_size=4),
    external=st.booleans(),
    inline_limit=st.sampled_from([0, 8, 1 << 20]),
)
def test_arrays_round_trip_exactly(arrays: list[np.ndarray], external: bool, inline_limit: int) -> None:
    keys = [f"layer{i}.weight" for i in range(len(arrays))]
    rec = ParametersRecord({k: Array.from_numpy(a) for k, a in zip(keys, arrays)})
    out = _wire_round_trip(_message(RecordSet({"model": rec})), external=external, inline_limit=inline_limit)
    got = out.content.parameters_records["model"]
    assert list(got) == keys
    for k, a in zip(keys, arrays):
        nd = got[k].numpy()
        _assert_exact(nd, a)
        if nd.size:
            assert nd.flags.writeable


def test_large_array_goes_external_without_copy() -> None:
    a = np.arange(1 << 18, dtype=np.float32)  # 1 MiB
    small = np.arange(3, dtype=np.int8)
    rs = RecordSet({"p": ParametersRecord({"big": Array.from_numpy(a), "small": Array.from_numpy(small)})})
    blobs: dict[bytes, Any] = {}
    wire = codec.recordset_to_proto(rs, blobs=blobs, inline_limit=1024)
    big, little = wire.parameters[0].arrays
    assert big.data == b"" and len(big.digest) == codec.DIGEST_SIZE and big.nbytes == a.nbytes
    assert little.data == small.tobytes() and little.digest == b""
    assert list(blobs) == [big.digest] and big.digest == codec.digest_of(a.tobytes())
    # the blob is the array's own memory, not a copy
    assert np.shares_memory(np.frombuffer(blobs[big.digest], dtype=np.uint8), a)
    msg = Message(_message(RecordSet()).metadata, content=rs)
    assert list(codec.external_arrays(codec.message_to_proto(msg, blobs={}, inline_limit=1024))) == [
        (big.digest, a.nbytes)
    ]
    # decode: the array views the received buffer, no copy
    received = {big.digest: bytearray(blobs[big.digest])}
    out = codec.recordset_from_proto(pb.RecordSet.parse(bytes(wire)), blobs=received)
    nd = out.parameters_records["p"]["big"].numpy()
    assert np.shares_memory(nd, np.frombuffer(received[big.digest], dtype=np.uint8))
    assert nd.flags.writeable and np.array_equal(nd, a)


def test_same_content_twice_decodes_to_separate_buffers() -> None:
    zeros = np.zeros(256, dtype=np.float32)
    rs = RecordSet({"p": ParametersRecord({"a": Array.from_numpy(zeros), "b": Array.from_numpy(zeros.copy())})})
    blobs: dict[bytes, Any] = {}
    wire = codec.recordset_to_proto(rs, blobs=blobs, inline_limit=0)
    assert len(blobs) == 1  # stored once
    out = codec.recordset_from_proto(wire, blobs={d: bytearray(b) for d, b in blobs.items()})
    a, b = out.parameters_records["p"]["a"].numpy(), out.parameters_records["p"]["b"].numpy()
    a[0] = 1.0
    assert b[0] == 0.0 and not np.shares_memory(a, b)


def test_broadcast_hashes_a_shared_buffer_once(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    real = codec.digest_of

    def counting(data: Any) -> bytes:
        calls.append(len(memoryview(data).cast("B")))
        return real(data)

    monkeypatch.setattr(codec, "digest_of", counting)
    shared = Array.from_numpy(np.arange(1 << 19, dtype=np.float32))  # 2 MiB: external
    copy = Array.from_numpy(np.arange(1 << 19, dtype=np.float32))  # same bytes, another buffer
    rs = RecordSet(parameters_records={"p": ParametersRecord({"w": shared})})
    msgs = [_message(rs) for _ in range(5)] + [
        _message(RecordSet(parameters_records={"p": ParametersRecord({"w": copy})}))
    ]
    blobs: dict[bytes, Any] = {}
    digests: codec.DigestMemo = {}
    wires = [codec.message_to_proto(m, blobs=blobs, digests=digests) for m in msgs]
    assert len(calls) == 2  # the shared buffer once, the equal copy once
    assert len(blobs) == 1 and len({w.content.parameters[0].arrays[0].digest for w in wires}) == 1
    calls.clear()
    [codec.message_to_proto(m, blobs={}) for m in msgs]  # without a memo: every message hashes
    assert len(calls) == 6


def test_bfloat16_travels_without_numpy() -> None:
    arr = Array("bfloat16", [2, 2], SType.NUMPY, bytes(range(8)))
    for external in (False, True):
        out = _wire_round_trip(_message(RecordSet({"p": ParametersRecord({"w": arr})})), external=external)
        assert out.content.parameters_records["p"]["w"] == arr


# --------------------------------------------------------------------------------------------
# messages and metadata


def test_message_round_trip_keeps_every_metadata_field() -> None:
    md = Metadata(
        run_id=2**64 - 1,
        message_id="abc",
        src_node_id=2**63,
        dst_node_id=0,
        reply_to_message="xyz",
        group_id="round 3",
        ttl=12.5,
        message_type="query",
        partition_id=4,
    )
    msg = Message(md, content=RecordSet())
    out = _wire_round_trip(msg, external=False)
    for name in (
        "run_id",
        "message_id",
        "src_node_id",
        "dst_node_id",
        "reply_to_message",
        "group_id",
        "ttl",
        "message_type",
        "created_at",
    ):
        assert getattr(out.metadata, name) == getattr(md, name), name
    assert out.metadata.partition_id is None  # never on the wire, as in Flower 1.9
    assert out.content == RecordSet()


@pytest.mark.parametrize("reason", ["it broke", None])
def test_error_message_round_trip(reason: str | None) -> None:
    md = Metadata(1, "", 3, 0, "instr", "", 10.0, "train")
    out = _wire_round_trip(Message(md, error=Error(ErrorCode.NODE_UNAVAILABLE, reason)), external=False)
    assert out.has_error() and out.error == Error(3, reason)
    with pytest.raises(ValueError, match="no content"):
        out.content  # noqa: B018


@pytest.mark.parametrize("field", ["run_id", "src_node_id", "dst_node_id"])
def test_metadata_ids_outside_uint64_refused(field: str) -> None:
    md = Metadata(1, "", 0, 0, "", "", 10.0, "train")
    for bad in (2**64, -1):
        setattr(md, "_" + field, bad)
        with pytest.raises(ValueError, match=rf"{field} is outside \[0, 2\*\*64 - 1\]"):
            codec.message_to_proto(Message(md, content=RecordSet()))
    setattr(md, "_" + field, np.int64(5))
    assert getattr(codec.message_to_proto(Message(md, content=RecordSet())).metadata, field) == 5


def test_encode_refuses_inconsistent_arrays_naming_the_key() -> None:
    bad = RecordSet({"p": ParametersRecord({"w": Array("float32", [3], SType.NUMPY, b"\x00" * 4)})})
    with pytest.raises(ValueError, match="'p/w'.*4 bytes.*need 12"):
        codec.recordset_to_proto(bad)
    odd = RecordSet({"p": ParametersRecord({"w": Array("object", [1], SType.NUMPY, b"\x00" * 8)})})
    with pytest.raises(TypeError, match="'p/w'.*'object'"):
        codec.recordset_to_proto(odd)


def test_encode_checks_values_again_naming_record_and_key() -> None:
    """Records check values when set, but a stored list can be mutated afterwards: encoding checks again."""
    rec = MetricsRecord({"a": [1, 2]})
    rec["a"].append("x")
    with pytest.raises(TypeError, match="metrics record 'm': value of 'a' has type str"):
        codec.recordset_to_proto(RecordSet(metrics_records={"m": rec}))
    rec["a"][-1] = 2**70
    with pytest.raises(ValueError, match="metrics record 'm': value of 'a' is outside the 64-bit integer range"):
        codec.recordset_to_proto(RecordSet(metrics_records={"m": rec}))
    cfg = ConfigsRecord({"b": ["s"]})
    cfg["b"].append(b"x")
    with pytest.raises(TypeError, match="configs record 'c': list value of 'b' mixes types str and bytes"):
        codec.recordset_to_proto(RecordSet(configs_records={"c": cfg}))
    cfg["b"][-1] = [1]
    with pytest.raises(TypeError, match="configs record 'c': value of 'b' is a nested list"):
        codec.recordset_to_proto(RecordSet(configs_records={"c": cfg}))


# --------------------------------------------------------------------------------------------
# hostile wire input

UNPICKLED: list[str] = []


def _mark() -> str:
    UNPICKLED.append("yes")
    return "boom"


class _Bomb:
    def __reduce__(self) -> tuple[Any, ...]:
        return (_mark, ())


def _wire_with(arr: pb.Array, keys: list[str] | None = None) -> pb.RecordSet:
    return pb.RecordSet(parameters=[pb.ParametersRecord(name="p", keys=keys or ["w"], arrays=[arr])])


def _decode(rs: pb.RecordSet, blobs: dict[bytes, Any] | None = None) -> RecordSet:
    return codec.recordset_from_proto(pb.RecordSet.parse(bytes(rs)), blobs=blobs)


PAYLOAD = np.arange(4, dtype=np.float32).tobytes()


@pytest.mark.parametrize(
    ("arr", "exc", "fragment"),
    [
        (
            pb.Array(dtype="float32", shape=[4], stype=SType.NUMPY, data=PAYLOAD, nbytes=15),
            IntegrityError,
            "16 bytes, announced 15",
        ),
        (pb.Array(dtype="float32", shape=[5], stype=SType.NUMPY, data=PAYLOAD, nbytes=16), ValueError, "need 20"),
        (pb.Array(dtype="O", shape=[2], stype=SType.NUMPY, data=PAYLOAD, nbytes=16), TypeError, "'O'"),
        (pb.Array(dtype="V8", shape=[2], stype=SType.NUMPY, data=PAYLOAD, nbytes=16), TypeError, "'V8'"),
        (pb.Array(dtype="|O", shape=[2], stype=SType.NUMPY, data=PAYLOAD, nbytes=16), TypeError, "'|O'"),
        (pb.Array(dtype="float", shape=[2], stype=SType.NUMPY, data=PAYLOAD, nbytes=16), TypeError, "'float'"),
        (pb.Array(dtype="float32", shape=[-4], stype=SType.NUMPY, data=PAYLOAD, nbytes=16), ValueError, "non-negative"),
        (
            pb.Array(dtype="float32", shape=[2**62, 2**62], stype=SType.NUMPY, data=PAYLOAD, nbytes=16),
            ValueError,
            "need",
        ),
        # empty (a zero dimension) but its other dimensions overflow numpy's index type (found by hypothesis)
        (pb.Array(dtype="float32", shape=[0, 2**31, 2**31], stype=SType.NUMPY, data=b"", nbytes=0), ValueError, "need"),
        (
            pb.Array(dtype="float32", shape=[4], stype=SType.NUMPY, digest=b"\x01" * 32, nbytes=16),
            IntegrityError,
            "not received",
        ),
        (
            pb.Array(dtype="float32", shape=[4], stype=SType.NUMPY, digest=b"\x01" * 5, nbytes=16),
            IntegrityError,
            "digest has 5 bytes",
        ),
        (
            pb.Array(dtype="float32", shape=[4], stype=SType.NUMPY, data=PAYLOAD, digest=b"\x01" * 32, nbytes=16),
            IntegrityError,
            "both",
        ),
    ],
)
def test_hostile_arrays_refused_naming_the_key(arr: pb.Array, exc: type[Exception], fragment: str) -> None:
    with pytest.raises(exc, match=fragment) as info:
        _decode(_wire_with(arr))
    assert "'p/w'" in str(info.value)


def test_external_payload_wrong_size_or_corrupted() -> None:
    digest = codec.digest_of(PAYLOAD)
    arr = pb.Array(dtype="float32", shape=[4], stype=SType.NUMPY, digest=digest, nbytes=16)
    with pytest.raises(IntegrityError, match="'p/w'.*12 bytes, announced 16"):
        _decode(_wire_with(arr), blobs={digest: bytearray(PAYLOAD[:12])})
    corrupted = bytearray(PAYLOAD)
    corrupted[0] ^= 1
    with pytest.raises(IntegrityError, match="'p/w'.*BLAKE3"):
        _decode(_wire_with(arr), blobs={digest: corrupted})
    # verify=False trusts the transport (which checked the digest itself)
    out = codec.recordset_from_proto(_wire_with(arr), blobs={digest: corrupted}, verify=False)
    assert out.parameters_records["p"]["w"].nbytes == 16


def test_pickles_are_never_loaded() -> None:
    bomb = pickle.dumps(np.array([_Bomb()], dtype=object))
    np_file = pickle.dumps(_Bomb())
    for dtype, stype, data in [("O", SType.NUMPY, bomb), ("object", SType.NUMPY, bomb), ("float32", "pickle", np_file)]:
        arr = pb.Array(dtype=dtype, shape=[1], stype=stype, data=data, nbytes=len(data))
        try:
            out = _decode(_wire_with(arr))
        except TypeError:
            continue
        with pytest.raises(TypeError):
            out.parameters_records["p"]["w"].numpy()
    assert UNPICKLED == []


def test_structural_hostility() -> None:
    arr = pb.Array(dtype="float32", shape=[4], stype=SType.NUMPY, data=PAYLOAD, nbytes=16)
    with pytest.raises(ValueError, match="2 keys for 1 arrays"):
        _decode(_wire_with(arr, keys=["a", "b"]))
    twice = pb.RecordSet(parameters=[pb.ParametersRecord(name="p", keys=["w", "w"], arrays=[arr, arr])])
    with pytest.raises(ValueError, match="'w' appears twice"):
        _decode(twice)
    with pytest.raises(ValueError, match="'p' appears twice"):
        _decode(pb.RecordSet(parameters=[pb.ParametersRecord(name="p"), pb.ParametersRecord(name="p")]))
    dup = pb.RecordSet(
        metrics=[
            pb.MetricsRecord(
                name="m",
                entries=[
                    pb.ValueEntry(key="k", value=pb.Value(sint64=1)),
                    pb.ValueEntry(key="k", value=pb.Value(sint64=2)),
                ],
            )
        ]
    )
    with pytest.raises(ValueError, match="'k' appears twice"):
        _decode(dup)


@pytest.mark.parametrize(
    ("value", "exc", "fragment"),
    [
        (None, ValueError, "no value"),
        (pb.Value(), ValueError, "exactly one value, has 0"),
        (pb.Value(double=1.0, sint64=3), ValueError, "exactly one value, has 2"),
        (pb.Value(bool=True), TypeError, "bool"),
        (pb.Value(string="x"), TypeError, "str"),
        (pb.Value(bool_list=pb.BoolList(vals=[True])), TypeError, "bool"),
    ],
)
def test_hostile_metric_values_refused_naming_the_key(
    value: pb.Value | None, exc: type[Exception], fragment: str
) -> None:
    rs = pb.RecordSet(metrics=[pb.MetricsRecord(name="m", entries=[pb.ValueEntry(key="acc", value=value)])])
    with pytest.raises(exc, match=fragment) as info:
        _decode(rs)
    assert "'acc'" in str(info.value)


def test_message_structure_refused() -> None:
    with pytest.raises(ValueError, match="metadata"):
        codec.message_from_proto(pb.Message(content=pb.RecordSet()))
    with pytest.raises(ValueError, match="exactly one of content and error"):
        codec.message_from_proto(pb.Message(metadata=pb.Metadata(ttl=1.0)))
    with pytest.raises(ValueError, match="exactly one of content and error"):
        codec.message_from_proto(pb.Message(metadata=pb.Metadata(ttl=1.0), content=pb.RecordSet(), error=pb.Error()))


HOSTILE_DTYPES = st.one_of(
    st.sampled_from(
        [
            "float32",
            ">f4",
            "bfloat16",
            "O",
            "V8",
            "|V4",
            "S4",
            "U1",
            "i4,i4",
            "(2,)i4",
            "M8",
            "",
            "\x00",
            "float",
            "int",
            "a",
            "object",
            "float128",
            "complex32",
        ]
    ),
    st.text(max_size=6),
)


@settings(max_examples=400, deadline=None)
@given(
    dtype=HOSTILE_DTYPES,
    shape=st.lists(st.integers(-3, 2**63 - 1) | st.integers(0, 5), max_size=3),
    stype=st.sampled_from([SType.NUMPY, "pickle", ""]),
    data=st.binary(max_size=40),
    nbytes=st.integers(0, 50),
    external=st.booleans(),
    corrupt=st.booleans(),
)
def test_fuzzed_wire_arrays_raise_only_documented_errors(
    dtype: str, shape: list[int], stype: str, data: bytes, nbytes: int, external: bool, corrupt: bool
) -> None:
    blobs: dict[bytes, Any] | None = None
    if external:
        digest = codec.digest_of(data)
        arr = pb.Array(dtype=dtype, shape=shape, stype=stype, digest=digest, nbytes=nbytes)
        blobs = {digest: bytearray(data[1:] if corrupt and data else data)}
    else:
        arr = pb.Array(dtype=dtype, shape=shape, stype=stype, data=data, nbytes=nbytes)
    try:
        out = _decode(_wire_with(arr), blobs=blobs)
    except (IntegrityError, TypeError, ValueError) as exc:
        assert "'p/w'" in str(exc)
        return
    got = out.parameters_records["p"]["w"]
    got.check()  # whatever decodes is consistent
    if stype == SType.NUMPY:
        try:
            nd = got.numpy()
        except TypeError:
            assert dtype in ("bfloat16", "complex32")
        else:
            assert nd.nbytes == got.nbytes
    assert UNPICKLED == []

"""Records: Array <-> numpy, value rules, refusals (each naming the key), no mutation of inputs."""

from __future__ import annotations

import numpy as np
import pytest

from fl_async.common import (
    Array,
    ConfigsRecord,
    MetricsRecord,
    ParametersRecord,
    RecordSet,
    SType,
    array_from_numpy,
)
from fl_async.common.records import EXTENSION_DTYPES, dtype_itemsize, numpy_dtype

# --------------------------------------------------------------------------------------------
# Array <-> numpy

INT_FLOAT_DTYPES = [
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
    "clongdouble",
]


def _same(a: np.ndarray, b: np.ndarray) -> bool:
    """Exact equality: dtype (byte order included), shape and every bit of the payload."""
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


def _sample(dtype: str, shape: tuple[int, ...]) -> np.ndarray:
    rng = np.random.default_rng(0)
    dt = np.dtype(dtype)
    n = int(np.prod(shape))
    raw = rng.integers(0, 256, size=n * dt.itemsize, dtype=np.uint8)
    if dt.kind == "b":
        raw = (raw % 2).astype(np.uint8)
    return raw.view(dt).reshape(shape)


@pytest.mark.parametrize("dtype", INT_FLOAT_DTYPES)
@pytest.mark.parametrize("byteorder", ["<", ">"])
def test_every_width_and_byte_order_round_trips(dtype: str, byteorder: str) -> None:
    a = _sample(dtype, (3, 2)).astype(np.dtype(dtype).newbyteorder(byteorder))
    arr = Array.from_numpy(a)
    assert arr.stype == SType.NUMPY == "numpy.ndarray"
    assert _same(arr.numpy(), a)


@pytest.mark.parametrize(
    "make",
    [
        lambda: np.array(3.5),  # 0-d
        lambda: np.array(7, dtype=">i4"),  # 0-d big-endian
        lambda: np.zeros((0, 3), dtype=np.float32),  # zero-size
        lambda: np.zeros((4, 0, 2), dtype=">f8"),
        lambda: np.asfortranarray(np.arange(12, dtype=np.int16).reshape(3, 4)),  # Fortran order
        lambda: np.arange(40, dtype=np.float64).reshape(5, 8)[::2, 1::3],  # strided
        lambda: np.arange(10)[::-1],  # negative stride
        lambda: np.array([True, False, True]),
        lambda: np.array([1 + 2j, -3.5j], dtype=">c16"),
        lambda: np.array([np.nan, -0.0, np.inf], dtype=np.float16),
    ],
)
def test_special_layouts_round_trip(make) -> None:  # type: ignore[no-untyped-def]
    a = make()
    out = Array.from_numpy(a).numpy()
    assert _same(out, a)
    assert out.flags.c_contiguous


def test_numpy_scalar_is_a_0d_array() -> None:
    arr = Array.from_numpy(np.float32(1.5))  # type: ignore[arg-type]
    assert arr.shape == [] and arr.dtype == "float32"
    assert arr.numpy() == np.float32(1.5)


def test_wire_dtype_names() -> None:
    assert Array.from_numpy(np.zeros(1, "<f4")).dtype == "float32"
    assert Array.from_numpy(np.zeros(1, ">f4")).dtype == ">f4"
    assert Array.from_numpy(np.zeros(1, ">i1")).dtype == "int8"
    assert Array.from_numpy(np.zeros(1, bool)).dtype == "bool"
    assert numpy_dtype("float32") == np.dtype("<f4")
    assert numpy_dtype("<f4") == numpy_dtype("float32")
    assert dtype_itemsize("bfloat16") == 2 and dtype_itemsize(">c16") == 16


def test_from_numpy_does_not_copy_contiguous_arrays() -> None:
    a = np.arange(10, dtype=np.float32)
    arr = Array.from_numpy(a)
    assert np.shares_memory(np.frombuffer(arr.data, dtype=np.uint8), a)
    a[0] = 42  # documented: the Array views the array
    assert arr.numpy()[0] == 42


def test_numpy_is_a_view_writable_for_writable_payloads() -> None:
    buf = bytearray(np.arange(6, dtype=np.int32).tobytes())
    arr = Array("int32", [2, 3], SType.NUMPY, buf)
    view = arr.numpy()
    assert view.flags.writeable
    view[0, 0] = 99
    assert np.frombuffer(buf, dtype=np.int32)[0] == 99  # same memory: no copy
    ro = Array("int32", [2, 3], SType.NUMPY, bytes(buf)).numpy()
    assert not ro.flags.writeable  # documented: bytes payloads give read-only views


def test_array_data_accepts_any_contiguous_buffer() -> None:
    mv = memoryview(np.arange(4, dtype=np.float64))  # format "d", not bytes
    arr = Array("float64", [4], SType.NUMPY, mv)
    assert arr.nbytes == 32
    assert arr.numpy().tolist() == [0, 1, 2, 3]
    with pytest.raises(TypeError, match="contiguous"):
        Array("uint8", [2], SType.NUMPY, memoryview(b"abcd")[::2])
    with pytest.raises(TypeError, match="bytes-like"):
        Array("uint8", [1], SType.NUMPY, "a")  # type: ignore[arg-type]


def test_array_equality_compares_bytes() -> None:
    a = Array.from_numpy(np.arange(3, dtype=np.int8))
    assert a == Array("int8", [3], SType.NUMPY, b"\x00\x01\x02")
    assert a != Array("int8", [3], SType.NUMPY, b"\x00\x01\x03")
    assert a != Array("uint8", [3], SType.NUMPY, b"\x00\x01\x02")


@pytest.mark.parametrize(
    "bad",
    [
        np.array([object()]),
        np.zeros(2, dtype="V8"),
        np.array(["text"]),
        np.array([b"bytes"]),
        np.zeros(2, dtype=[("a", "<i4"), ("b", "<f8")]),
        np.array(["2020-01-01"], dtype="datetime64[D]"),
        np.array([1], dtype="timedelta64[s]"),
    ],
)
def test_unsupported_numpy_dtypes_refused_naming_the_dtype(bad: np.ndarray) -> None:
    with pytest.raises(TypeError, match="dtype") as info:
        Array.from_numpy(bad)
    assert str(bad.dtype) in str(info.value)


@pytest.mark.parametrize(
    "name", ["O", "object", "V8", "|V8", "S1", "U3", "i4,i4", "(2,)i4", "float", "int", "f4", "", "\x00"]
)
def test_unsupported_dtype_names_refused(name: str) -> None:
    arr = Array(name, [1], SType.NUMPY, b"\x00" * 8)
    with pytest.raises(TypeError) as info:
        arr.numpy()
    assert repr(name) in str(info.value)
    with pytest.raises(TypeError):
        arr.check()


def test_numpy_of_extension_dtype_raises_clear_type_error() -> None:
    for name in EXTENSION_DTYPES:
        arr = Array(name, [2], SType.NUMPY, b"\x00" * (2 * EXTENSION_DTYPES[name]))
        arr.check()  # valid for travel
        with pytest.raises(TypeError, match=f"'{name}' has no numpy equivalent.*to_torch_state_dict"):
            arr.numpy()


def test_numpy_checks_stype_and_length() -> None:
    with pytest.raises(TypeError, match="Unsupported serialization type"):
        Array("float32", [1], "torch.Tensor", b"\x00" * 4).numpy()
    with pytest.raises(ValueError, match="3 bytes.*need 4"):
        Array("float32", [1], SType.NUMPY, b"\x00" * 3).numpy()
    Array("float32", [1], "custom", b"\x00" * 3).check()  # other stypes are informational


def test_array_shape_validation() -> None:
    assert Array("int8", (2,), SType.NUMPY, b"ab").shape == [2]  # type: ignore[arg-type]
    assert Array("int8", [np.int64(2)], SType.NUMPY, b"ab").shape == [2]
    with pytest.raises(ValueError, match="non-negative"):
        Array("int8", [-1], SType.NUMPY, b"")
    with pytest.raises(TypeError, match="non-negative ints"):
        Array("int8", [2.0], SType.NUMPY, b"ab")  # type: ignore[list-item]
    with pytest.raises(TypeError, match="non-negative ints"):
        Array("int8", [True], SType.NUMPY, b"a")
    with pytest.raises(TypeError):
        Array("int8", 2, SType.NUMPY, b"ab")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        Array(1, [2], SType.NUMPY, b"ab")  # type: ignore[arg-type]


def test_array_from_numpy_alias() -> None:
    a = np.arange(3)
    assert array_from_numpy(a) == Array.from_numpy(a)
    with pytest.raises(TypeError, match="numpy.ndarray"):
        Array.from_numpy([1, 2])  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------------
# value rules


def test_numpy_scalars_are_stored_as_python_types() -> None:
    m = MetricsRecord({"i": np.int32(3), "f": np.float32(0.5), "l": [np.int64(1), 2], "fl": [np.float16(1.0)]})
    assert type(m["i"]) is int and m["i"] == 3
    assert type(m["f"]) is float and m["f"] == 0.5
    assert [type(v) for v in m["l"]] == [int, int]  # type: ignore[union-attr]
    assert type(m["fl"][0]) is float  # type: ignore[index]
    c = ConfigsRecord({"b": np.bool_(True), "s": np.str_("x"), "y": np.bytes_(b"z"), "bl": [np.bool_(False)]})
    assert type(c["b"]) is bool and c["b"] is True
    assert type(c["s"]) is str and type(c["y"]) is bytes
    assert c["bl"] == [False] and type(c["bl"][0]) is bool  # type: ignore[index]


def test_valid_values() -> None:
    m = MetricsRecord({"a": 1, "b": 2.5, "c": [1, 2], "d": [0.5], "e": [], "big": 2**63 - 1, "small": -(2**63)})
    assert dict(m) == {"a": 1, "b": 2.5, "c": [1, 2], "d": [0.5], "e": [], "big": 2**63 - 1, "small": -(2**63)}
    c = ConfigsRecord({"a": True, "b": "s", "c": b"\x00", "d": [True, False], "e": ["x"], "f": [b"y"], "g": 1.0})
    assert c["a"] is True and c["f"] == [b"y"]


@pytest.mark.parametrize(
    ("value", "exc", "fragment"),
    [
        (True, TypeError, "bool"),
        (np.bool_(False), TypeError, "bool"),
        ([1, True], TypeError, "bool"),
        ([True], TypeError, "bool"),
        ([1, 2.0], TypeError, "mixes"),
        ([1.0, 2], TypeError, "mixes"),
        ([[1], [2]], TypeError, "nested"),
        ([1, [2]], TypeError, "nested"),
        (None, TypeError, "NoneType"),
        ({"a": 1}, TypeError, "dict"),
        ((1, 2), TypeError, "tuple"),
        ({1, 2}, TypeError, "set"),
        ("text", TypeError, "str"),
        (b"raw", TypeError, "bytes"),
        (1 + 2j, TypeError, "complex"),
        (np.array([1.0]), TypeError, "ndarray"),
        ([None], TypeError, "NoneType"),
        (2**64, ValueError, "64-bit"),
        (-(2**63) - 1, ValueError, "64-bit"),
        ([1, 2**64], ValueError, "64-bit"),
        ([-1, 2**63], ValueError, "signed 64 bits"),
    ],
)
def test_metrics_refusals_name_the_key(value: object, exc: type[Exception], fragment: str) -> None:
    with pytest.raises(exc, match=fragment) as info:
        MetricsRecord({"the_key": value})
    assert "'the_key'" in str(info.value)
    rec = MetricsRecord()
    with pytest.raises(exc) as info:
        rec["other_key"] = value
    assert "'other_key'" in str(info.value)
    assert "other_key" not in rec


@pytest.mark.parametrize(
    ("value", "exc", "fragment"),
    [
        ([1, True], TypeError, "mixes"),
        ([True, 1], TypeError, "mixes"),
        ([1, 2.0], TypeError, "mixes"),
        (["a", b"b"], TypeError, "mixes"),
        ([["a"]], TypeError, "nested"),
        (None, TypeError, "NoneType"),
        ({"a": 1}, TypeError, "dict"),
        (("a",), TypeError, "tuple"),
        (bytearray(b"x"), TypeError, "bytearray"),
        (1 + 2j, TypeError, "complex"),
        (object(), TypeError, "object"),
        ([None], TypeError, "NoneType"),
        (2**64, ValueError, "64-bit"),
        ([-(2**63) - 1], ValueError, "64-bit"),
        ([2**64 - 1, -(2**63)], ValueError, "signed 64 bits"),
    ],
)
def test_configs_refusals_name_the_key(value: object, exc: type[Exception], fragment: str) -> None:
    with pytest.raises(exc, match=fragment) as info:
        ConfigsRecord({"cfg_key": value})
    assert "'cfg_key'" in str(info.value)


@pytest.mark.parametrize("record", [MetricsRecord, ConfigsRecord])
def test_integers_cover_signed_and_unsigned_64_bits(record: type) -> None:
    values = {
        "big": 2**64 - 1,
        "neg": -(2**63),
        "edge": 2**63,
        "np": np.uint64(2**64 - 1),
        "unsigned_list": [0, 2**63, 2**64 - 1],
        "signed_list": [-(2**63), 2**63 - 1],
    }
    rec = record(values)
    assert rec["np"] == 2**64 - 1 and type(rec["np"]) is int
    assert dict(rec) == {**values, "np": 2**64 - 1}
    for bad in (2**64, -(2**63) - 1):
        with pytest.raises(ValueError, match=r"\[-2\*\*63, 2\*\*64 - 1\]"):
            rec["x"] = bad
        assert "x" not in rec


@pytest.mark.parametrize("value", [np.zeros(2), [1, 2], None, b"raw", "x"])
def test_parameters_refusals_name_the_key(value: object) -> None:
    with pytest.raises(TypeError, match="'w'.*must be an Array") as info:
        ParametersRecord({"w": value})  # type: ignore[dict-item]
    if isinstance(value, np.ndarray):
        assert "Array.from_numpy" in str(info.value)


@pytest.mark.parametrize("record", [ParametersRecord, MetricsRecord, ConfigsRecord])
def test_non_string_keys_refused_naming_the_key(record: type) -> None:
    with pytest.raises(TypeError, match="Key must be of type str.*1234"):
        record({1234: 1})


def test_recordset_refuses_wrong_record_types_naming_the_key() -> None:
    with pytest.raises(TypeError, match="'p'.*ParametersRecord.*MetricsRecord"):
        RecordSet(parameters_records={"p": MetricsRecord()})  # type: ignore[dict-item]
    with pytest.raises(TypeError, match="'m'.*MetricsRecord.*dict"):
        RecordSet(metrics_records={"m": {"a": 1}})  # type: ignore[dict-item]
    rs = RecordSet()
    with pytest.raises(TypeError, match="'c'.*ConfigsRecord"):
        rs.configs_records["c"] = MetricsRecord()  # type: ignore[assignment]
    with pytest.raises(TypeError, match="Key must be of type str"):
        rs.metrics_records[3] = MetricsRecord()  # type: ignore[index]


# --------------------------------------------------------------------------------------------
# containers


def test_constructors_never_mutate_the_callers_dict() -> None:
    arrays = {"w": Array.from_numpy(np.zeros(2)), "b": Array.from_numpy(np.ones(1))}
    metrics = {"acc": 0.5, "l": [1, 2]}
    configs = {"lr": 0.1, "tags": ["a"]}
    before = (dict(arrays), dict(metrics), dict(configs))
    p = ParametersRecord(arrays)
    ParametersRecord(arrays, keep_input=False)  # Flower would empty the dict here
    m = MetricsRecord(metrics, keep_input=False)
    c = ConfigsRecord(configs)
    records = {"p": p}
    RecordSet(parameters_records=records)
    assert (arrays, metrics, configs) == before and records == {"p": p}
    metrics["l"].append(3)  # type: ignore[attr-defined]
    assert m["l"] == [1, 2]  # the record holds its own list
    assert c == configs


def test_parameters_record_keeps_order_and_counts_bytes() -> None:
    keys = ["z", "a", "m", "b"]
    rec = ParametersRecord({k: Array.from_numpy(np.zeros(i + 1, dtype=np.float32)) for i, k in enumerate(keys)})
    assert list(rec) == keys and list(rec.keys()) == keys
    assert rec.count_bytes() == sum(4 * (i + 1) + 1 for i in range(4))
    d = rec.to_numpy_dict()
    assert list(d) == keys
    assert ParametersRecord.from_numpy_dict(d) == rec


def test_count_bytes_like_flower() -> None:
    assert MetricsRecord({"ab": 1, "c": [1.0, 2.0]}).count_bytes() == 2 + 8 + 1 + 16
    assert (
        ConfigsRecord({"a": True, "b": "xyz", "c": [b"12", b"3"], "d": 1.0}).count_bytes()
        == 1 + 1 + 1 + 3 + 1 + 3 + 1 + 8
    )


def test_typed_dict_behaviour() -> None:
    m = MetricsRecord({"a": 1})
    assert m == {"a": 1} and m == MetricsRecord({"a": 1}) and m != MetricsRecord({"a": 2})
    assert m.get("missing") is None and m.get("missing", 5) == 5
    m.update({"b": 2.0})
    with pytest.raises(TypeError, match="'c'"):
        m.update({"c": True})
    assert dict(m) == {"a": 1, "b": 2.0}
    assert m.pop("a") == 1 and len(m) == 1 and "b" in m
    del m["b"]
    assert not m and repr(m) == "{}"


def test_recordset_equality_and_repr() -> None:
    def make() -> RecordSet:
        return RecordSet(
            parameters_records={"p": ParametersRecord({"w": Array.from_numpy(np.arange(3))})},
            metrics_records={"m": MetricsRecord({"x": 1})},
            configs_records={"c": ConfigsRecord({"s": "v"})},
        )

    assert make() == make()
    other = make()
    other.metrics_records["m"]["x"] = 2
    assert make() != other
    assert "RecordSet(parameters_records=" in repr(make())

"""PyTorch state_dict <-> ParametersRecord: exact, pickle-free, through the codec too."""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from fl_async import codec  # noqa: E402 - after importorskip("torch"): skip cleanly without torch
from fl_async.common import Array, ParametersRecord, RecordSet, SType  # noqa: E402 - after importorskip("torch"): skip cleanly without torch
from fl_async.proto.fl_async import v1 as pb  # noqa: E402 - after importorskip("torch"): skip cleanly without torch


def _state_dict() -> dict[str, Any]:
    g = torch.Generator().manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # complex32 is "experimental"
        c32 = torch.randn(3, dtype=torch.complex64, generator=g).to(torch.complex32)
    return {
        "bf16": torch.randn(3, 4, generator=g).to(torch.bfloat16),
        "f16": torch.randn(5, generator=g).half(),
        "f32": torch.randn(2, 3, generator=g),
        "f64": torch.randn(2, generator=g, dtype=torch.float64),
        "bool": torch.tensor([True, False, True]),
        "i8": torch.tensor([-128, 0, 127], dtype=torch.int8),
        "u8": torch.tensor([0, 255], dtype=torch.uint8),
        "i16": torch.tensor([-(2**15)], dtype=torch.int16),
        "i32": torch.tensor([2**31 - 1], dtype=torch.int32),
        "i64": torch.tensor([-(2**63), 2**63 - 1]),
        "u16": torch.tensor([65535], dtype=torch.uint16),
        "c64": torch.randn(3, dtype=torch.complex64, generator=g),
        "c128": torch.randn(2, dtype=torch.complex128, generator=g),
        "c32": c32,
        "f8": torch.randn(4, generator=g).to(torch.float8_e4m3fn),
        "f8e5": torch.randn(4, generator=g).to(torch.float8_e5m2),
        "zero_d": torch.tensor(3.25),
        "zero_size": torch.zeros(0, 4),
        "transposed": torch.arange(12.0).reshape(3, 4).t(),
        "strided": torch.arange(20, dtype=torch.int32)[::3],
        "slice": torch.arange(10.0)[2:5],
        "expanded": torch.ones(1, 3).expand(4, 3),
        "grad": torch.randn(2, generator=g, requires_grad=True),
        "conj": torch.tensor([1 + 2j], dtype=torch.complex64).conj(),
        "nan": torch.tensor([float("nan"), -0.0, float("inf")]),
    }


def _bits(t: Any) -> bytes:
    t = t.detach().resolve_conj().resolve_neg().contiguous()
    return t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b""


def _assert_same(out: dict[str, Any], sd: dict[str, Any]) -> None:
    assert list(out) == list(sd)  # state_dict order
    for k, t in sd.items():
        o = out[k]
        assert o.dtype == t.dtype, k
        assert o.shape == t.shape, k
        assert _bits(o) == _bits(t), k
        assert not o.requires_grad


def test_state_dict_round_trip_exact_locally() -> None:
    sd = _state_dict()
    rec = ParametersRecord.from_torch_state_dict(sd)
    assert rec["bf16"].dtype == "bfloat16" and rec["f16"].dtype == "float16" and rec["c32"].dtype == "complex32"
    assert rec["zero_d"].shape == [] and rec["transposed"].shape == [4, 3]
    _assert_same(rec.to_torch_state_dict(), sd)


@pytest.mark.parametrize("external", [False, True])
def test_state_dict_round_trip_exact_through_the_wire(external: bool) -> None:
    sd = _state_dict()
    rs = RecordSet({"model": ParametersRecord.from_torch_state_dict(sd)})
    blobs: dict[bytes, Any] | None = {} if external else None
    raw = bytes(codec.recordset_to_proto(rs, blobs=blobs, inline_limit=0))
    received = None if blobs is None else {d: bytearray(b) for d, b in blobs.items()}
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "non-writable buffer" warning from torch
        out = codec.recordset_from_proto(pb.RecordSet.parse(raw), blobs=received)
        tensors = out.parameters_records["model"].to_torch_state_dict()
    _assert_same(tensors, sd)
    tensors["f32"].add_(1.0)  # writable, in place


def test_contiguous_cpu_tensors_are_not_copied() -> None:
    t = torch.arange(6.0)
    arr = ParametersRecord.from_torch_state_dict({"t": t})["t"]
    assert np.shares_memory(np.frombuffer(arr.data, dtype=np.uint8), t.numpy())
    back = ParametersRecord({"t": arr}).to_torch_state_dict()["t"]
    assert back.data_ptr() == t.data_ptr()  # writable payload: shared, not copied


def test_read_only_payload_is_copied_once_without_warning() -> None:
    arr = Array("float32", [2], SType.NUMPY, np.array([1.0, 2.0], dtype=np.float32).tobytes())
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        t = ParametersRecord({"w": arr}).to_torch_state_dict()["w"]
    t.mul_(2)
    assert t.tolist() == [2.0, 4.0]


def test_numpy_arrays_to_torch_including_big_endian() -> None:
    arrays = {"be": np.arange(4, dtype=">f4"), "le": np.arange(3, dtype=np.int16), "b": np.array([True])}
    out = ParametersRecord.from_numpy_dict(arrays).to_torch_state_dict()
    assert out["be"].dtype == torch.float32 and out["be"].tolist() == [0, 1, 2, 3]
    assert out["le"].dtype == torch.int16 and out["b"].dtype == torch.bool


def test_bfloat16_numpy_raises_clear_type_error() -> None:
    rec = ParametersRecord.from_torch_state_dict({"w": torch.ones(2, dtype=torch.bfloat16)})
    with pytest.raises(TypeError, match="'bfloat16' has no numpy equivalent.*to_torch_state_dict"):
        rec["w"].numpy()


def test_refusals_name_the_key() -> None:
    with pytest.raises(TypeError, match="'w'.*torch.Tensor.*ndarray"):
        ParametersRecord.from_torch_state_dict({"w": np.zeros(2)})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # quantized tensors are deprecated
        q = torch.quantize_per_tensor(torch.ones(2), 0.1, 0, torch.quint8)
    with pytest.raises(TypeError, match="'q'.*quint8"):
        ParametersRecord.from_torch_state_dict({"q": q})
    with pytest.raises(TypeError, match="'s'.*layout"):
        ParametersRecord.from_torch_state_dict({"s": torch.eye(2).to_sparse()})
    with pytest.raises(TypeError, match="'m'.*meta"):
        ParametersRecord.from_torch_state_dict({"m": torch.empty(2, device="meta")})
    with pytest.raises(TypeError, match="'u4'.*uint4"):
        ParametersRecord.from_torch_state_dict({"u4": torch.zeros(2, dtype=torch.uint4)})
    with pytest.raises(TypeError, match="'ld'.*'float128'.*no torch equivalent"):
        ParametersRecord.from_numpy_dict({"ld": np.zeros(2, dtype=np.longdouble)}).to_torch_state_dict()
    with pytest.raises(TypeError, match="'x'.*stype"):
        ParametersRecord({"x": Array("float32", [1], "custom", b"\x00" * 4)}).to_torch_state_dict()
    with pytest.raises(TypeError, match="'y'.*'O'"):
        ParametersRecord({"y": Array("O", [1], SType.NUMPY, b"\x00" * 8)}).to_torch_state_dict()
    with pytest.raises(ValueError, match="'z'.*3 bytes"):
        ParametersRecord({"z": Array("float32", [1], SType.NUMPY, b"\x00" * 3)}).to_torch_state_dict()


def test_module_state_dict_round_trip() -> None:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.BatchNorm1d(3), torch.nn.Linear(3, 2)).to(
        torch.bfloat16
    )
    sd = model.state_dict()
    rec = ParametersRecord.from_torch_state_dict(sd)
    blobs: dict[bytes, Any] = {}
    raw = bytes(codec.recordset_to_proto(RecordSet({"m": rec}), blobs=blobs, inline_limit=0))
    out = codec.recordset_from_proto(pb.RecordSet.parse(raw), blobs={d: bytearray(b) for d, b in blobs.items()})
    other = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.BatchNorm1d(3), torch.nn.Linear(3, 2)).to(
        torch.bfloat16
    )
    other.load_state_dict(out.parameters_records["m"].to_torch_state_dict(), strict=True)
    for (k, a), (_, b) in zip(sd.items(), other.state_dict().items()):
        assert torch.equal(a, b), k

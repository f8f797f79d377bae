"""PyTorch <-> Array conversion (imported lazily; needs the ``fl-async[torch]`` extra).

A tensor travels as its raw little-endian buffer with ``dtype`` named after the torch dtype
(``"float32"``, ``"bfloat16"``, ``"float8_e4m3fn"``, ...): the numpy name where numpy has the type,
otherwise a name from :data:`fl_async.common.arrays.EXTENSION_DTYPES`. Nothing is pickled.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from fl_async.common.arrays import EXTENSION_DTYPES, Array, SType, dtype_itemsize, numpy_dtype

__all__ = ["array_to_tensor", "tensor_to_array"]


def _torch() -> Any:
    try:
        import torch
    except ImportError:
        raise ImportError("PyTorch is not installed; install the extra: pip install 'fl-async[torch]'") from None
    return torch


def _wire_name(torch: Any, dtype: Any) -> str | None:
    """Wire dtype name of a torch dtype, or ``None`` when it cannot travel (quantized, sub-byte, bits)."""
    name = str(dtype).removeprefix("torch.")
    if name in EXTENSION_DTYPES:
        return name
    try:
        numpy_dtype(name)
    except TypeError:
        return None
    return name


def tensor_to_array(key: str, tensor: Any) -> Array:
    """View a tensor's bytes as an :class:`Array` (no copy for contiguous CPU tensors).

    The tensor is detached and, when needed, moved to CPU, made contiguous and has its lazy
    conjugate/negative bits resolved (each of those is one copy).

    Raises:
        TypeError: ``tensor`` is not a ``torch.Tensor``, is sparse/quantized/on the meta device, or
            has a dtype that cannot travel (e.g. ``torch.qint8``, ``torch.uint4``, ``torch.bits8``);
            the message names ``key`` and the dtype.
    """
    torch = _torch()
    if not isinstance(tensor, torch.Tensor):
        raise TypeError(f"value of {key!r} must be a torch.Tensor, got {type(tensor).__name__}")
    t = tensor.detach()
    name = _wire_name(torch, t.dtype)
    if name is None or t.is_quantized:
        raise TypeError(f"tensor {key!r} has dtype {t.dtype}, which cannot be carried by an Array")
    if t.layout != torch.strided:
        raise TypeError(f"tensor {key!r} has layout {t.layout}; only dense (strided) tensors are supported")
    if t.device.type == "meta":
        raise TypeError(f"tensor {key!r} is on the meta device and has no data")
    if t.device.type != "cpu":
        t = t.cpu()
    t = t.resolve_conj().resolve_neg().contiguous()
    data: Any = b""
    if t.numel():
        data = memoryview(t.reshape(-1).view(torch.uint8).numpy())
    return Array(dtype=name, shape=list(t.shape), stype=SType.NUMPY, data=data)


def array_to_tensor(key: str, array: Array) -> Any:
    """Rebuild a tensor from an :class:`Array`, sharing memory with a writable payload.

    Read-only payloads (``bytes``) are copied once, so that the tensor is writable and
    ``torch.frombuffer``/``from_numpy`` never warn; big-endian payloads are byte-swapped (one copy).

    Raises:
        TypeError: the Array's stype is not ``"numpy.ndarray"`` or its dtype has no torch equivalent
            (e.g. ``"float128"``); the message names ``key``.
        ValueError: the payload length does not match dtype and shape.
    """
    torch = _torch()
    if array.stype != SType.NUMPY:
        raise TypeError(f"Array {key!r} has stype {array.stype!r}; expected {SType.NUMPY!r}")
    try:
        itemsize = dtype_itemsize(array.dtype)
    except TypeError as exc:
        raise TypeError(f"Array {key!r}: {exc}") from None
    byteswap = False
    name = array.dtype
    if name not in EXTENSION_DTYPES:
        dt = numpy_dtype(name)
        byteswap = not dt.isnative
        name = dt.newbyteorder("=").name
    dtype = getattr(torch, name, None)
    if not isinstance(dtype, torch.dtype):
        raise TypeError(f"Array {key!r} has dtype {array.dtype!r}, which has no torch equivalent")
    count = math.prod(array.shape)
    if array.nbytes != count * itemsize:
        raise ValueError(
            f"Array {key!r} payload has {array.nbytes} bytes but dtype {array.dtype!r} and shape "
            f"{array.shape} need {count * itemsize}"
        )
    if count == 0:
        return torch.empty(array.shape, dtype=dtype)
    if byteswap:
        native = array.numpy().astype(numpy_dtype(array.dtype).newbyteorder("="))
        return torch.from_numpy(native)
    raw = np.frombuffer(array.data, dtype=np.uint8)
    if not raw.flags.writeable:
        raw = raw.copy()
    return torch.from_numpy(raw).view(dtype).reshape(array.shape)

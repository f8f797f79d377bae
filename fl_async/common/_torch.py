"""PyTorch <-> Array conversion (imported lazily; needs the ``fl-async[torch]`` extra)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from fl_async.common.records import Array, SType


def _torch() -> Any:
    try:
        import torch
    except ImportError:
        raise ImportError("PyTorch is not installed; install the extra: pip install 'fl-async[torch]'") from None
    return torch


def tensor_to_array(key: str, tensor: Any) -> Array:
    """View a tensor's bytes as an :class:`Array` (no copy for contiguous CPU tensors)."""
    torch = _torch()
    if not isinstance(tensor, torch.Tensor):
        raise TypeError(f"value of {key!r} must be a torch.Tensor, got {type(tensor).__name__}")
    t = tensor.detach()
    if t.device.type != "cpu":
        t = t.cpu()
    if t.is_quantized or t.is_sparse or not hasattr(torch, str(t.dtype).removeprefix("torch.")):
        raise TypeError(f"tensor {key!r} has unsupported layout or dtype {t.dtype}")
    t = t.contiguous()
    name = str(t.dtype).removeprefix("torch.")
    data: Any = b""
    if t.numel():
        data = memoryview(t.reshape(-1).view(torch.uint8).numpy())
    return Array(dtype=name, shape=list(t.shape), stype=SType.NUMPY, data=data)


def array_to_tensor(key: str, array: Array) -> Any:
    """Rebuild a tensor from an :class:`Array`, sharing memory with a writable payload."""
    torch = _torch()
    if array.stype != SType.NUMPY:
        raise TypeError(f"Array {key!r} has stype {array.stype!r}; expected {SType.NUMPY!r}")
    name = array.dtype
    byteswap = False
    if name[:1] in "<>=|" and len(name) > 1:
        dt = np.dtype(name)
        byteswap = not dt.isnative
        name = dt.newbyteorder("=").name
    dtype = getattr(torch, name, None)
    if not isinstance(dtype, torch.dtype):
        raise TypeError(f"Array {key!r} has dtype {array.dtype!r}, which has no torch equivalent")
    itemsize = torch.empty((), dtype=dtype).element_size()
    count = math.prod(array.shape)
    if array.nbytes != count * itemsize:
        raise ValueError(
            f"Array {key!r} payload has {array.nbytes} bytes but dtype {array.dtype!r} and shape "
            f"{array.shape} need {count * itemsize}"
        )
    if count == 0:
        return torch.empty(array.shape, dtype=dtype)
    if byteswap:
        native = array.numpy().astype(np.dtype(array.dtype).newbyteorder("="))
        return torch.from_numpy(native)
    raw = np.frombuffer(array.data, dtype=np.uint8)
    if not raw.flags.writeable:
        raw = raw.copy()
    return torch.from_numpy(raw).view(dtype).reshape(array.shape)

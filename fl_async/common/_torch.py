"""PyTorch <-> Array conversion (imported lazily; needs the ``fl-async[torch]`` extra).

``tensor_to_array`` lives in :mod:`fl_async.common.arrays` (``Array(tensor)`` needs it there) and is re-exported.

A tensor travels as its raw little-endian buffer with ``dtype`` named after the torch dtype
(``"float32"``, ``"bfloat16"``, ``"float8_e4m3fn"``, ...): the numpy name where numpy has the type,
otherwise a name from :data:`fl_async.common.arrays.EXTENSION_DTYPES`. Nothing is pickled.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from fl_async.common.arrays import (
    EXTENSION_DTYPES,
    Array,
    SType,
    dtype_itemsize,
    numpy_dtype,
    tensor_to_array,
)
from fl_async.common.arrays import _torch as _torch
from fl_async.common.arrays import _wire_name as _wire_name

__all__ = ["array_to_tensor", "tensor_to_array"]


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

"""Arrays: :class:`Array` (one tensor's raw buffer, dtype and shape), the dtypes that can travel, numpy conversion.

Names and semantics follow Flower 1.9 (``flwr.common.record.Array``) with this deliberate difference: ``Array.data``
holds the raw array buffer (row-major), not a ``.npy`` file, so that ``Array.from_numpy`` and ``Array.numpy`` do
not copy the payload. ``stype`` ``"numpy.ndarray"`` names that encoding. Nothing is ever pickled or unpickled.
PyTorch -> Array conversion (``tensor_to_array``, torch imported lazily) is here; Array -> PyTorch lives in
:mod:`fl_async.common._torch` (which imports this module only).
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass
from typing import Any, Self

import numpy as np

__all__ = [
    "EXTENSION_DTYPES",
    "INT64_MAX",
    "INT64_MIN",
    "UINT64_MAX",
    "Array",
    "SType",
    "array_from_numpy",
    "dtype_itemsize",
    "numpy_dtype",
    "tensor_to_array",
]

INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1
UINT64_MAX = 2**64 - 1
"""Largest record integer (and node / run id): values above ``INT64_MAX`` travel as ``uint64``."""
_MAX_ARRAY_BYTES = INT64_MAX
"""Largest array numpy can represent, in bytes (its index type is signed 64-bit)."""

# dtype kinds that can be sent: bool, signed/unsigned integers, floats, complex.
_ALLOWED_KINDS = frozenset("biufc")


class SType:
    """Names of ``Array.data`` encodings (a namespace; cannot be instantiated)."""

    NUMPY = "numpy.ndarray"
    """Raw row-major (C-order) buffer described by ``dtype`` and ``shape`` (as Flower 1.9's name; Flower
    puts a ``.npy`` file there, fl-async the bare buffer)."""

    def __new__(cls, *args: object, **kwargs: object) -> Self:
        raise TypeError(f"{cls.__name__} cannot be instantiated.")


EXTENSION_DTYPES: dict[str, int] = {
    "bfloat16": 2,
    "complex32": 4,
    "float8_e4m3fn": 1,
    "float8_e4m3fnuz": 1,
    "float8_e5m2": 1,
    "float8_e5m2fnuz": 1,
    "float8_e8m0fnu": 1,
    "float4_e2m1fn_x2": 1,
}
"""Element types numpy cannot represent (PyTorch's), by wire name -> bytes per element.

Arrays of these dtypes travel like any other (raw little-endian buffer) but :meth:`Array.numpy`
refuses them; :meth:`ParametersRecord.to_torch_state_dict` rebuilds them exactly.
"""


def _numpy_dtypes() -> dict[str, np.dtype]:
    """Every accepted numpy dtype name -> dtype.

    A name without a byte-order prefix (``"float32"``) means little-endian; ``">f4"`` is big-endian and
    ``"<f4"`` an explicit little-endian alias. Only these names are accepted, so ``np.dtype`` is never
    called on a string from the wire (no aliases such as ``"float"`` that numpy and torch read
    differently, no deprecated names, no structured or object dtypes).
    """
    names: dict[str, np.dtype] = {}
    for char in "?bBhHiIlLqQefdgFDG":
        le = np.dtype(char).newbyteorder("<")
        names[le.name] = le
        if le.itemsize > 1:
            names[le.str] = le
            be = le.newbyteorder(">")
            names[be.str] = be
    return names


_NUMPY_DTYPES = _numpy_dtypes()


def _dtype_name(dt: np.dtype) -> str:
    """Wire name of a numpy dtype: its name when little-endian or single-byte, ``">f4"`` style when big-endian."""
    if dt.itemsize == 1 or dt == dt.newbyteorder("<"):
        return dt.name
    return dt.newbyteorder(">").str


def _refuse_dtype(dt: np.dtype | str) -> TypeError:
    return TypeError(
        f"dtype {str(dt)!r} cannot be carried by an Array: only bool, integer, float and complex "
        "dtypes are supported (object, void, structured, string and datetime dtypes are refused; "
        "nothing is pickled)"
    )


def _check_dtype(dt: np.dtype) -> None:
    if dt.kind not in _ALLOWED_KINDS or dt.fields is not None or dt.subdtype is not None:
        raise _refuse_dtype(dt)


def dtype_itemsize(name: str) -> int:
    """Bytes per element of an Array dtype name (numpy names and :data:`EXTENSION_DTYPES`).

    Raises:
        TypeError: ``name`` is not a supported dtype name (e.g. ``"O"``, ``"V8"``, ``"float"``).
    """
    size = EXTENSION_DTYPES.get(name)
    if size is not None:
        return size
    dt = _NUMPY_DTYPES.get(name) if isinstance(name, str) else None
    if dt is None:
        raise _unknown_dtype(name)
    return dt.itemsize


def _unknown_dtype(name: object) -> TypeError:
    return TypeError(
        f"dtype {name!r} is not a supported Array dtype: use a numpy name such as 'float32', 'int8', "
        "'bool', 'complex64' ('>f4' for big-endian), or a PyTorch-only name such as 'bfloat16' "
        "(object, void, structured and string dtypes are refused; nothing is pickled)"
    )


def numpy_dtype(name: str) -> np.dtype:
    """The numpy dtype of an Array dtype name.

    Raises:
        TypeError: the name is a PyTorch-only dtype (e.g. ``"bfloat16"``) or not a supported name.
    """
    dt = _NUMPY_DTYPES.get(name) if isinstance(name, str) else None
    if dt is not None:
        return dt
    if name in EXTENSION_DTYPES:
        raise TypeError(
            f"Array dtype {name!r} has no numpy equivalent; convert it with "
            "ParametersRecord.to_torch_state_dict() (PyTorch) instead of Array.numpy()"
        )
    raise _unknown_dtype(name)


def _as_byte_view(buf: Any) -> bytes | bytearray | memoryview:
    """Return ``buf`` as a flat unsigned-byte buffer without copying."""
    if isinstance(buf, (bytes, bytearray)):
        return buf
    if isinstance(buf, memoryview):
        mv = buf
    else:
        try:
            mv = memoryview(buf)
        except TypeError:
            raise TypeError(f"Array.data must be a bytes-like object, got {type(buf).__name__}") from None
    if not mv.c_contiguous:
        raise TypeError("Array.data must be a contiguous buffer")
    if mv.format == "B" and mv.ndim == 1:
        return mv
    if mv.nbytes == 0:
        return b""
    return mv.cast("B")


@dataclass(eq=False, init=False)
class Array:
    """One tensor: dtype, shape, encoding (``stype``) and the payload bytes.

    Built from its four fields (as Flower 1.9), or, as newest Flower's ``Array``, from one numpy array
    (``Array(ndarray)``, ``Array(ndarray=...)``: :meth:`from_numpy`, no copy when C-contiguous) or one
    PyTorch tensor (``Array(tensor)``, ``Array(torch_tensor=...)``: :meth:`from_torch_tensor`).

    Args:
        dtype: element type name, e.g. ``"float32"``, ``">f4"`` (big-endian) or ``"bfloat16"``.
        shape: dimensions, a list (or tuple) of non-negative ints (``[]`` for a 0-d array); kept as a list.
        stype: encoding of ``data``; ``"numpy.ndarray"`` (:attr:`SType.NUMPY`) means the raw row-major
            buffer of ``dtype`` and ``shape``.
        data: the payload, any bytes-like object (``bytes``, ``bytearray``, ``memoryview``). It is kept
            as given, not copied.

    Raises:
        TypeError: neither the four fields nor exactly one array/tensor were given, or a field has the
            wrong type (the message says which).

    Equality compares dtype, shape, stype and payload bytes (as Flower's dataclass equality).
    """

    dtype: str
    shape: list[int]
    stype: str
    data: bytes | bytearray | memoryview

    def __init__(
        self,
        *args: Any,
        dtype: str | None = None,
        shape: list[int] | tuple[int, ...] | None = None,
        stype: str | None = None,
        data: bytes | bytearray | memoryview | None = None,
        ndarray: np.ndarray | np.generic | None = None,
        torch_tensor: Any = None,
    ) -> None:
        fields = [dtype, shape, stype, data]
        if len(args) == 1 and ndarray is None and torch_tensor is None and all(f is None for f in fields):
            ndarray, args = (args[0], ()) if isinstance(args[0], (np.ndarray, np.generic)) else (None, args)
            if args and _is_tensor(args[0]):
                torch_tensor, args = args[0], ()
        if ndarray is not None or torch_tensor is not None:
            if args or any(f is not None for f in fields) or (ndarray is not None and torch_tensor is not None):
                raise TypeError("Array takes either dtype, shape, stype and data, or one ndarray, or one torch_tensor")
            src = (
                Array.from_numpy(np.asarray(ndarray)) if ndarray is not None else Array.from_torch_tensor(torch_tensor)
            )
            self.dtype, self.shape, self.stype, self.data = src.dtype, src.shape, src.stype, src.data
            return
        if len(args) > 4:
            raise TypeError(f"Array takes at most 4 positional arguments, got {len(args)}")
        for i, value in enumerate(args):
            if fields[i] is not None:
                raise TypeError(f"Array got multiple values for {('dtype', 'shape', 'stype', 'data')[i]!r}")
            fields[i] = value
        missing = [n for n, f in zip(("dtype", "shape", "stype", "data"), fields, strict=True) if f is None]
        if missing:
            raise TypeError(
                f"Array is missing {', '.join(missing)}: give dtype, shape, stype and data, or one numpy "
                "ndarray, or one torch tensor"
            )
        self.dtype, self.shape, self.stype, self.data = fields  # type: ignore[assignment]
        self.__post_init__()

    def __post_init__(self) -> None:
        if not isinstance(self.dtype, str):
            raise TypeError(f"Array.dtype must be str, got {type(self.dtype).__name__}")
        if not isinstance(self.stype, str):
            raise TypeError(f"Array.stype must be str, got {type(self.stype).__name__}")
        if isinstance(self.shape, (str, bytes)) or not hasattr(self.shape, "__iter__"):
            raise TypeError(f"Array.shape must be a list of non-negative ints, got {self.shape!r}")
        shape = list(self.shape)
        for dim in shape:
            if isinstance(dim, bool) or not isinstance(dim, (int, np.integer)):
                raise TypeError(f"Array.shape must be a list of non-negative ints, got {self.shape!r}")
            if dim < 0:
                raise ValueError(f"Array.shape must be a list of non-negative ints, got {self.shape!r}")
        self.shape = [int(d) for d in shape]
        self.data = _as_byte_view(self.data)

    def check(self) -> None:
        """Check that a ``"numpy.ndarray"`` payload matches its dtype and shape.

        Arrays of other stypes are not checked (their dtype and shape are informational, as in
        Flower 1.9). The codec runs this check on every array it encodes or decodes.

        Raises:
            TypeError: ``dtype`` is not a supported name (see :func:`dtype_itemsize`).
            ValueError: the payload length differs from ``itemsize * prod(shape)``, or the shape's
                non-zero dimensions exceed what numpy can index (2**63 - 1 bytes).
        """
        if self.stype != SType.NUMPY:
            return
        itemsize = dtype_itemsize(self.dtype)
        # numpy refuses shapes whose non-zero dimensions overflow its index type, even when a zero
        # dimension makes the array empty: refuse them here with the same ValueError family.
        span = math.prod(d for d in self.shape if d) * itemsize
        if span > _MAX_ARRAY_BYTES:
            raise ValueError(
                f"Array shape {self.shape} of dtype {self.dtype!r} is too large: its dimensions need "
                f"{span} bytes, more than numpy can index (2**63 - 1)"
            )
        expected = math.prod(self.shape) * itemsize
        if self.nbytes != expected:
            raise ValueError(
                f"Array payload has {self.nbytes} bytes but dtype {self.dtype!r} and shape {self.shape} need {expected}"
            )

    @property
    def nbytes(self) -> int:
        """Length of the payload in bytes."""
        return len(self.data) if not isinstance(self.data, memoryview) else self.data.nbytes

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Array):
            return NotImplemented
        return (
            self.dtype == other.dtype
            and self.shape == other.shape
            and self.stype == other.stype
            and self.nbytes == other.nbytes
            and memoryview(self.data) == memoryview(other.data)
        )

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"Array(dtype={self.dtype!r}, shape={self.shape!r}, stype={self.stype!r}, nbytes={self.nbytes})"

    @classmethod
    def from_numpy(cls, ndarray: np.ndarray) -> Array:
        """Wrap a numpy array without copying when it is C-contiguous.

        The Array then *views* the array's memory: changing the array afterwards changes the Array.
        Non-contiguous arrays (Fortran-order, strided) are copied once into row-major order. Byte order
        is kept: a big-endian array travels big-endian (dtype ``">f4"``) and comes back big-endian.

        Args:
            ndarray: a ``numpy.ndarray`` (or numpy scalar) of bool, integer, float or complex dtype,
                any byte order, any shape (0-d and zero-size included).

        Raises:
            TypeError: ``ndarray`` is not a numpy array, or its dtype is object, void, structured,
                string or datetime (the message names the dtype).
        """
        if isinstance(ndarray, np.generic):
            ndarray = np.asarray(ndarray)
        if not isinstance(ndarray, np.ndarray):
            raise TypeError(f"Array.from_numpy expects a numpy.ndarray, got {type(ndarray).__name__}")
        _check_dtype(ndarray.dtype)
        flat = np.ascontiguousarray(ndarray).reshape(-1)  # no copy when already C-contiguous
        data: bytes | memoryview = flat.view(np.uint8).data if flat.size else b""  # a memoryview, no copy
        return cls(
            dtype=_dtype_name(ndarray.dtype),
            shape=list(ndarray.shape),
            stype=SType.NUMPY,
            data=data,
        )

    @classmethod
    def from_numpy_ndarray(cls, ndarray: np.ndarray) -> Array:
        """Same as :meth:`from_numpy` (newest Flower's name): no copy for C-contiguous arrays."""
        return cls.from_numpy(ndarray)

    @classmethod
    def from_torch_tensor(cls, tensor: Any) -> Array:
        """Wrap a PyTorch tensor (as newest Flower's ``Array.from_torch_tensor``; needs ``fl-async[torch]``).

        The tensor is detached and moved to CPU; the Array views its bytes (no copy for contiguous CPU
        tensors) and keeps torch-only dtypes such as ``bfloat16`` exactly (Flower goes through numpy,
        which has no bfloat16).

        Raises:
            TypeError: not a tensor, or a dtype/layout that cannot travel (see
                ``ParametersRecord.from_torch_state_dict``).
        """
        return tensor_to_array("tensor", tensor)

    def numpy(self) -> np.ndarray:
        """Return the payload as a numpy array, without copying it.

        The result is a view of :attr:`data`: writable when ``data`` is writable (``bytearray`` or a
        writable ``memoryview``, which is what fl-async's decoder produces), read-only when ``data`` is
        ``bytes`` or a read-only buffer (copy it with ``.copy()`` before updating it in place). Zero-size
        arrays have no payload to view and come back as a new empty array.

        Raises:
            TypeError: ``stype`` is not ``"numpy.ndarray"``; or the dtype has no numpy equivalent
                (e.g. ``"bfloat16"``; use :meth:`ParametersRecord.to_torch_state_dict`), or is not a
                bool, integer, float or complex dtype.
            ValueError: the payload length does not match ``dtype`` and ``shape``.
        """
        if self.stype != SType.NUMPY:
            raise TypeError(f"Unsupported serialization type for numpy conversion: {self.stype!r}")
        dt = numpy_dtype(self.dtype)
        self.check()
        count = math.prod(self.shape)
        if count == 0:
            return np.empty(self.shape, dtype=dt)
        return np.frombuffer(self.data, dtype=dt, count=count).reshape(self.shape)


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


def _is_tensor(value: Any) -> bool:
    """Whether ``value`` is a ``torch.Tensor`` (without importing torch when the caller has not)."""
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(value, torch.Tensor)


def array_from_numpy(ndarray: np.ndarray) -> Array:
    """Create an :class:`Array` from a numpy array (as Flower 1.9's ``array_from_numpy``).

    Same as :meth:`Array.from_numpy`: no copy for C-contiguous arrays.
    """
    return Array.from_numpy(ndarray)

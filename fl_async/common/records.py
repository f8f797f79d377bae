"""Records: ``Array``, ``ParametersRecord``, ``MetricsRecord``, ``ConfigsRecord`` and ``RecordSet``.

Names and semantics follow Flower 1.9 (``flwr.common.record``) with these deliberate differences:

* ``Array.data`` holds the raw array buffer (row-major), not a ``.npy`` file, so that
  ``Array.from_numpy`` and ``Array.numpy`` do not copy the payload. ``stype`` ``"numpy.ndarray"`` names
  that encoding. Nothing is ever pickled or unpickled.
* Constructors never empty or mutate the caller's dict (Flower's ``ParametersRecord`` empties it by
  default); ``keep_input`` is accepted for compatibility and ignored.
* Value rules are made consistent: numpy scalars are accepted and stored as Python ``int``/``float``/
  ``bool``; ``bool`` is not a metric; lists must hold one type only (``[1, True]`` and ``[1, 2.0]`` are
  refused); integers must lie in ``[-2**63, 2**64 - 1]`` (signed or unsigned 64-bit, as Flower's uint64 config
  values), and a list of integers must fit one of the two (``[-1, 2**64 - 1]`` is refused).
* ``get(key)`` has an optional default, like ``dict.get``.

Newest Flower's names are the same classes: ``ArrayRecord`` is ``ParametersRecord``, ``MetricRecord`` is
``MetricsRecord``, ``ConfigRecord`` is ``ConfigsRecord`` and ``RecordDict`` is ``RecordSet``, with newest
Flower's constructors (``ArrayRecord([ndarray, ...])``, ``ArrayRecord(state_dict)``, ``Array(ndarray)``,
``RecordDict({"arrays": ..., "config": ...})``) and one namespace per RecordSet.
"""

from __future__ import annotations

import math
import sys
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping, MutableMapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import numpy as np

__all__ = [
    "EXTENSION_DTYPES",
    "Array",
    "ArrayRecord",
    "ConfigRecord",
    "ConfigsRecord",
    "ConfigsRecordValues",
    "MetricRecord",
    "MetricsRecord",
    "MetricsRecordValues",
    "ParametersRecord",
    "Record",
    "RecordDict",
    "RecordSet",
    "RecordView",
    "SType",
    "array_from_numpy",
    "dtype_itemsize",
    "numpy_dtype",
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

    def __new__(cls, *args: object, **kwargs: object) -> SType:
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
        data: bytes | memoryview = memoryview(flat.view(np.uint8)) if flat.size else b""
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
        from fl_async.common._torch import tensor_to_array

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


def _is_tensor(value: Any) -> bool:
    """Whether ``value`` is a ``torch.Tensor`` (without importing torch when the caller has not)."""
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(value, torch.Tensor)


def array_from_numpy(ndarray: np.ndarray) -> Array:
    """Create an :class:`Array` from a numpy array (as Flower 1.9's ``array_from_numpy``).

    Same as :meth:`Array.from_numpy`: no copy for C-contiguous arrays.
    """
    return Array.from_numpy(ndarray)


K = TypeVar("K")
V = TypeVar("V")


class TypedDict(MutableMapping[str, V], Generic[V]):
    """A dict with checked string keys and checked (possibly converted) values.

    Base of every record container (as Flower 1.9's ``TypedDict``). ``__setitem__`` raises
    ``TypeError`` naming the key for a bad key or value; values may be normalised by the check
    (e.g. numpy scalars become Python numbers).
    """

    __slots__ = ("_check_value", "_data")

    def __init__(self, check_value: Callable[[str, Any], V], data: Mapping[str, Any] | None = None) -> None:
        self._data: dict[str, V] = {}
        self._check_value = check_value
        if data is not None:
            if not isinstance(data, Mapping) and not hasattr(data, "items"):
                raise TypeError(f"expected a mapping, got {type(data).__name__}")
            for key, value in data.items():
                self[key] = value

    def __setitem__(self, key: str, value: Any) -> None:
        if not isinstance(key, str):
            raise TypeError(f"Key must be of type str, got {type(key).__name__} ({key!r})")
        self._data[key] = self._check_value(key, value)

    def __getitem__(self, key: str) -> V:
        return self._data[key]

    def __delitem__(self, key: str) -> None:
        del self._data[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __contains__(self, key: object) -> bool:
        return key in self._data

    def __repr__(self) -> str:
        return repr(self._data)

    def checked_items(self) -> Iterator[tuple[str, V]]:
        """Yield ``(key, value)`` with every value checked again, as on insertion.

        Values are checked when set, but a stored list stays the caller's object and may be mutated
        afterwards (e.g. ``rec["a"].append("x")``); the codec encodes from this view so that such a
        value is refused with the insertion-time error instead of failing deep in the wire encoder.

        Raises:
            TypeError, ValueError: a stored value no longer satisfies the record's rules (names the key).
        """
        check = self._check_value
        for key, value in self._data.items():
            yield key, check(key, value)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, TypedDict):
            return self._data == other._data
        if isinstance(other, dict):
            return self._data == other
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]


# --------------------------------------------------------------------------------------------
# value checks


def _int64(key: str, value: int) -> int:
    if not INT64_MIN <= value <= UINT64_MAX:
        raise ValueError(f"value of {key!r} is outside the 64-bit integer range [-2**63, 2**64 - 1]: {value}")
    return value


def _int_list(key: str, values: list[int]) -> None:
    """A list of integers travels as one packed list: all of them signed 64-bit, or all unsigned."""
    if values and min(values) < 0 and max(values) > INT64_MAX:
        raise ValueError(
            f"list value of {key!r} mixes negative integers with integers above 2**63 - 1; a list must fit "
            "either signed 64 bits [-2**63, 2**63 - 1] or unsigned 64 bits [0, 2**64 - 1]"
        )


def _scalar(key: str, value: Any, allowed: tuple[type, ...]) -> Any:
    """Normalise one scalar to a Python int/float/bool/str/bytes or raise TypeError."""
    if isinstance(value, np.generic):
        if isinstance(value, np.bool_):
            value = bool(value)
        elif isinstance(value, np.integer):
            value = int(value)
        elif isinstance(value, np.floating):
            value = float(value)
        elif isinstance(value, np.str_):
            value = str(value)
        elif isinstance(value, np.bytes_):
            value = bytes(value)
    if isinstance(value, bool):
        if bool not in allowed:
            raise TypeError(f"value of {key!r} has type bool, which is not allowed here (bool is not a metric)")
        return value
    for typ in allowed:
        if typ is not bool and isinstance(value, typ):
            if typ is int:
                return _int64(key, int(value))
            return typ(value) if type(value) is not typ else value
    names = ", ".join(t.__name__ for t in allowed)
    raise TypeError(f"value of {key!r} has type {type(value).__name__}; allowed: {names} or a list of one of them")


def _value(key: str, value: Any, allowed: tuple[type, ...]) -> Any:
    if isinstance(value, list):
        out = [_scalar(key, v, allowed) if not isinstance(v, list) else _nested(key) for v in value]
        if out:
            first = type(out[0])
            for item in out:
                if type(item) is not first:
                    raise TypeError(
                        f"list value of {key!r} mixes types {first.__name__} and {type(item).__name__}; "
                        "all values in a list must be of the same type"
                    )
            if first is int:
                _int_list(key, out)
        return out
    if isinstance(value, (tuple, set, dict, np.ndarray)) or value is None:
        raise TypeError(
            f"value of {key!r} has type {type(value).__name__}; use a scalar or a list"
            + (" (ndarray: use .tolist() or a ParametersRecord)" if isinstance(value, np.ndarray) else "")
        )
    return _scalar(key, value, allowed)


def _nested(key: str) -> Any:
    raise TypeError(f"value of {key!r} is a nested list; lists must hold scalars")


MetricsRecordValues = int | float | list[int] | list[float]
ConfigsRecordValues = int | float | str | bytes | bool | list[int] | list[float] | list[str] | list[bytes] | list[bool]

_METRIC_TYPES = (int, float)
_CONFIG_TYPES = (bool, int, float, str, bytes)


def _check_metric(key: str, value: Any) -> MetricsRecordValues:
    return _value(key, value, _METRIC_TYPES)


def _check_config(key: str, value: Any) -> ConfigsRecordValues:
    return _value(key, value, _CONFIG_TYPES)


def _check_array(key: str, value: Any) -> Array:
    if not isinstance(value, Array):
        hint = " (wrap numpy arrays with Array.from_numpy)" if isinstance(value, np.ndarray) else ""
        raise TypeError(f"value of {key!r} must be an Array, got {type(value).__name__}{hint}")
    return value


def _scalar_bytes(value: Any) -> int:
    if isinstance(value, bool):
        return 1
    if isinstance(value, (int, float)):
        return 8
    return len(value)


class ParametersRecord(TypedDict[Array]):
    """Ordered ``str -> Array`` mapping, ordered like a PyTorch ``state_dict`` (Flower 1.9 semantics).

    Newest Flower calls it ``ArrayRecord`` (the same class here) and builds it from any of::

        ParametersRecord({"w": Array(...)})        # a mapping of Arrays (array_dict=...)
        ParametersRecord([np_w, np_b])             # a list of numpy arrays, keys "0", "1", ... (numpy_ndarrays=...)
        ParametersRecord(model.state_dict())       # a PyTorch state_dict (torch_state_dict=...)

    Numpy arrays and CPU tensors are wrapped without copying when contiguous; torch-only dtypes such as
    ``bfloat16`` are kept exactly.

    Args:
        array_dict: initial entries; copied in order, never mutated.
        keep_input: accepted for compatibility; ignored (the input is always kept, and no payload is copied).

    Raises:
        TypeError: a key is not ``str`` or a value is not an :class:`Array` (the message names the key);
            more than one source, or a source of another kind, was given.
    """

    def __init__(
        self,
        *args: Any,
        array_dict: Mapping[str, Array] | None = None,
        numpy_ndarrays: Sequence[np.ndarray] | None = None,
        torch_state_dict: Mapping[str, Any] | None = None,
        keep_input: bool = True,
    ) -> None:
        if len(args) == 2 and isinstance(args[1], bool):  # Flower 1.9: ParametersRecord(array_dict, keep_input)
            args = args[:1]
        sources = [a for a in (*args, array_dict, numpy_ndarrays, torch_state_dict) if a is not None]
        if len(args) > 1 or len(sources) > 1:
            raise TypeError(
                "ParametersRecord takes one source: a mapping of Arrays, a list of numpy arrays or a PyTorch "
                "state_dict (keep_input is keyword-only)"
            )
        super().__init__(_check_array)
        if not sources:
            return
        src = sources[0]
        if numpy_ndarrays is not None or (isinstance(src, (list, tuple)) and not isinstance(src, str)):
            self._data.update(self.from_numpy_ndarrays(src)._data)
        elif torch_state_dict is not None or (
            isinstance(src, Mapping) and src and all(_is_tensor(v) for v in src.values())
        ):
            self._data.update(self.from_torch_state_dict(src)._data)
        elif isinstance(src, Mapping) or hasattr(src, "items"):
            for key, value in src.items():
                self[key] = value
        else:
            raise TypeError(
                f"ParametersRecord expects a mapping of Arrays, a list of numpy arrays or a PyTorch state_dict, "
                f"got {type(src).__name__}"
            )

    def count_bytes(self) -> int:
        """Payload bytes plus key lengths (as Flower 1.9)."""
        return sum(a.nbytes + len(k) for k, a in self._data.items())

    @classmethod
    def from_array_dict(cls, array_dict: Mapping[str, Array], *, keep_input: bool = True) -> ParametersRecord:
        """Build a record from ``name -> Array`` (as newest Flower's ``ArrayRecord.from_array_dict``; no copy)."""
        return cls(array_dict=array_dict)

    @classmethod
    def from_numpy_dict(cls, arrays: Mapping[str, np.ndarray]) -> ParametersRecord:
        """Build a record from ``name -> numpy array`` without copying contiguous arrays."""
        return cls({k: Array.from_numpy(v) for k, v in arrays.items()})

    def to_numpy_dict(self) -> dict[str, np.ndarray]:
        """Return ``name -> numpy array`` views (see :meth:`Array.numpy`)."""
        return {k: a.numpy() for k, a in self._data.items()}

    @classmethod
    def from_numpy_ndarrays(cls, ndarrays: Sequence[np.ndarray], *, keep_input: bool = True) -> ParametersRecord:
        """Build a record from a list of numpy arrays, keyed ``"0"``, ``"1"``, ... (as newest Flower).

        Contiguous arrays are wrapped without copying (see :meth:`Array.from_numpy`). ``keep_input`` is
        accepted and ignored: the list is never emptied.

        Raises:
            TypeError: an item is not a numpy array or has an unsupported dtype (names its index).
        """
        rec = cls()
        for i, arr in enumerate(ndarrays):
            if not isinstance(arr, (np.ndarray, np.generic)):
                raise TypeError(f"item {i} of the list must be a numpy.ndarray, got {type(arr).__name__}")
            rec._data[str(i)] = Array.from_numpy(arr)
        return rec

    def to_numpy_ndarrays(self, *, keep_input: bool = True) -> list[np.ndarray]:
        """The arrays as a list of numpy arrays, in record order (as newest Flower; views, no copy).

        ``keep_input`` is accepted and ignored: the record is not emptied (nothing is copied either).

        Raises:
            TypeError: an Array has a dtype numpy cannot hold (e.g. ``bfloat16``: use :meth:`to_torch_state_dict`).
        """
        return [a.numpy() for a in self._data.values()]

    @classmethod
    def from_torch_state_dict(cls, state_dict: Mapping[str, Any], *, keep_input: bool = True) -> ParametersRecord:
        """Build a record from a PyTorch ``state_dict`` (needs the ``fl-async[torch]`` extra).

        Every tensor is detached, moved to CPU and made contiguous (no copy when it already is); the
        Array views its bytes, with ``dtype`` named after the torch dtype (``"float32"``,
        ``"bfloat16"``, ...). No pickling. ``keep_input`` is accepted and ignored.

        Raises:
            TypeError: a value is not a ``torch.Tensor``, or has an unsupported dtype.
        """
        from fl_async.common._torch import tensor_to_array

        rec = cls()
        for k, t in state_dict.items():
            rec[k] = tensor_to_array(k, t)
        return rec

    def to_torch_state_dict(self, *, keep_input: bool = True) -> OrderedDict[str, Any]:
        """Return an ordered ``name -> torch.Tensor`` dict; the exact inverse of :meth:`from_torch_state_dict`.

        Tensors share memory with writable payloads; read-only payloads are copied once. ``bfloat16`` and
        other torch-only dtypes come back exactly. ``keep_input`` is accepted and ignored.

        Raises:
            TypeError: an Array's dtype has no torch equivalent or its stype is not ``"numpy.ndarray"``.
            ValueError: a payload's length does not match its dtype and shape.
        """
        from fl_async.common._torch import array_to_tensor

        return OrderedDict((k, array_to_tensor(k, a)) for k, a in self._data.items())


class MetricsRecord(TypedDict[MetricsRecordValues]):
    """``str -> int | float | list[int] | list[float]`` (Flower 1.9 semantics, made consistent).

    Newest Flower's ``MetricRecord`` is this class; its first argument is ``metric_dict`` (Flower 1.9's
    ``metrics_dict=`` keyword is accepted too).

    ``bool`` is refused; numpy scalars are stored as Python numbers; lists must hold one type.

    Raises:
        TypeError: bad key or value type (the message names the key).
        ValueError: an integer outside ``[-2**63, 2**64 - 1]``, or a list of integers fitting neither signed
            nor unsigned 64 bits.
    """

    def __init__(
        self,
        metric_dict: Mapping[str, Any] | None = None,
        keep_input: bool = True,
        *,
        metrics_dict: Mapping[str, Any] | None = None,
    ) -> None:
        if metric_dict is not None and metrics_dict is not None:
            raise TypeError("give metric_dict (newest Flower's name) or metrics_dict (Flower 1.9's), not both")
        super().__init__(_check_metric, metric_dict if metric_dict is not None else metrics_dict)

    def count_bytes(self) -> int:
        """8 bytes per number plus key lengths (as Flower 1.9)."""
        return sum(len(k) + (8 * len(v) if isinstance(v, list) else 8) for k, v in self._data.items())


class ConfigsRecord(TypedDict[ConfigsRecordValues]):
    """``str -> int | float | str | bytes | bool`` or a list of one of them (Flower 1.9, made consistent).

    Newest Flower's ``ConfigRecord`` is this class; its first argument is ``config_dict`` (Flower 1.9's
    ``configs_dict=`` keyword is accepted too).

    Raises:
        TypeError: bad key or value type, e.g. ``None``, dict, tuple, nested or mixed lists.
        ValueError: an integer outside ``[-2**63, 2**64 - 1]``, or a list of integers fitting neither signed
            nor unsigned 64 bits.
    """

    def __init__(
        self,
        config_dict: Mapping[str, Any] | None = None,
        keep_input: bool = True,
        *,
        configs_dict: Mapping[str, Any] | None = None,
    ) -> None:
        if config_dict is not None and configs_dict is not None:
            raise TypeError("give config_dict (newest Flower's name) or configs_dict (Flower 1.9's), not both")
        super().__init__(_check_config, config_dict if config_dict is not None else configs_dict)

    def count_bytes(self) -> int:
        """Value bytes (bool 1, numbers 8, str/bytes their length) plus key lengths (as Flower 1.9)."""
        total = 0
        for k, v in self._data.items():
            total += len(k) + (sum(_scalar_bytes(x) for x in v) if isinstance(v, list) else _scalar_bytes(v))
        return total


_RECORD_TYPES: tuple[type, ...] = (ParametersRecord, MetricsRecord, ConfigsRecord)
Record = ParametersRecord | MetricsRecord | ConfigsRecord
"""Any record a :class:`RecordSet` holds (newest Flower's ``RecordType``)."""


def _check_record(key: str, value: Any) -> Record:
    if type(value) not in _RECORD_TYPES:
        raise TypeError(
            f"value of {key!r} must be a ParametersRecord, MetricsRecord or ConfigsRecord "
            f"(ArrayRecord, MetricRecord or ConfigRecord), got {type(value).__name__}"
        )
    return value  # type: ignore[no-any-return]


R = TypeVar("R", ParametersRecord, MetricsRecord, ConfigsRecord)


class RecordView(MutableMapping[str, R], Generic[R]):
    """The records of one kind in a :class:`RecordSet`: a live, writable view (as newest Flower's typed views).

    ``rs.parameters_records["w"] = rec`` stores ``rec`` in ``rs`` under ``"w"`` (replacing any record of
    another kind there: a RecordSet has one namespace); reading, iterating and deleting see only records
    of this view's kind.

    Raises:
        TypeError: a key is not ``str`` or a value is not exactly this view's record class (names the key).
    """

    __slots__ = ("_cls", "_owner")

    def __init__(self, owner: RecordSet, cls: type[R]) -> None:
        self._owner: RecordSet = owner
        self._cls: type[R] = cls

    def __getitem__(self, key: str) -> R:
        value = self._owner._data[key]
        if type(value) is not self._cls:
            raise KeyError(key)
        return value

    def __setitem__(self, key: str, value: R) -> None:
        if not isinstance(key, str):
            raise TypeError(f"Key must be of type str, got {type(key).__name__} ({key!r})")
        if type(value) is not self._cls:
            raise TypeError(f"value of {key!r} must be a {self._cls.__name__}, got {type(value).__name__}")
        self._owner._data[key] = value

    def __delitem__(self, key: str) -> None:
        if key not in self:
            raise KeyError(key)
        del self._owner._data[key]

    def __iter__(self) -> Iterator[str]:
        cls = self._cls
        return iter([k for k, v in self._owner._data.items() if type(v) is cls])

    def __len__(self) -> int:
        cls = self._cls
        return sum(1 for v in self._owner._data.values() if type(v) is cls)

    def __contains__(self, key: object) -> bool:
        return type(self._owner._data.get(key)) is self._cls  # type: ignore[call-overload]

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Mapping):
            return dict(self.items()) == dict(other.items())
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return repr(dict(self.items()))


class RecordSet(TypedDict[Record]):
    """The content of a message: named records, as newest Flower's ``RecordDict`` (the same class here).

    One namespace ``name -> ParametersRecord | MetricsRecord | ConfigsRecord`` (newest Flower's
    ``ArrayRecord | MetricRecord | ConfigRecord``), in insertion order, with typed live views:
    :attr:`parameters_records` / :attr:`array_records`, :attr:`metrics_records` /
    :attr:`metric_records`, :attr:`configs_records` / :attr:`config_records`. Flower 1.9 kept three
    separate namespaces; here, as in newest Flower, one name holds one record.

    Args:
        records: ``name -> record`` of any of the three kinds; copied, never mutated.
        parameters_records: ``name -> ParametersRecord`` (Flower 1.9's keyword).
        metrics_records: ``name -> MetricsRecord`` (Flower 1.9's keyword).
        configs_records: ``name -> ConfigsRecord`` (Flower 1.9's keyword).

    Raises:
        TypeError: a key is not ``str`` or a value is not exactly one of the record classes (or, for the
            Flower 1.9 keywords, not that keyword's class).
    """

    __slots__ = ()

    def __init__(
        self,
        records: Mapping[str, Record] | None = None,
        *,
        parameters_records: Mapping[str, ParametersRecord] | None = None,
        metrics_records: Mapping[str, MetricsRecord] | None = None,
        configs_records: Mapping[str, ConfigsRecord] | None = None,
    ) -> None:
        super().__init__(_check_record, records)
        _fill(self.parameters_records, parameters_records)
        _fill(self.metrics_records, metrics_records)
        _fill(self.configs_records, configs_records)

    @property
    def parameters_records(self) -> RecordView[ParametersRecord]:
        """``name -> ParametersRecord`` (a live view; newest Flower: :attr:`array_records`)."""
        return RecordView(self, ParametersRecord)

    @property
    def metrics_records(self) -> RecordView[MetricsRecord]:
        """``name -> MetricsRecord`` (a live view; newest Flower: :attr:`metric_records`)."""
        return RecordView(self, MetricsRecord)

    @property
    def configs_records(self) -> RecordView[ConfigsRecord]:
        """``name -> ConfigsRecord`` (a live view; newest Flower: :attr:`config_records`)."""
        return RecordView(self, ConfigsRecord)

    array_records = parameters_records
    metric_records = metrics_records
    config_records = configs_records

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, RecordSet):
            return NotImplemented
        return self._data == other._data

    __hash__ = None

    def __repr__(self) -> str:
        return (
            f"RecordSet(parameters_records={self.parameters_records!r}, metrics_records={self.metrics_records!r}, "
            f"configs_records={self.configs_records!r})"
        )


def _fill(view: RecordView[R], given: Mapping[str, R] | None) -> None:
    if given is None:
        return
    if not isinstance(given, Mapping) and not hasattr(given, "items"):
        raise TypeError(f"expected a mapping, got {type(given).__name__}")
    for key, value in given.items():
        view[key] = value


RecordDict = RecordSet
"""Newest Flower's name of :class:`RecordSet` (the same class)."""
ArrayRecord = ParametersRecord
"""Newest Flower's name of :class:`ParametersRecord` (the same class)."""
MetricRecord = MetricsRecord
"""Newest Flower's name of :class:`MetricsRecord` (the same class)."""
ConfigRecord = ConfigsRecord
"""Newest Flower's name of :class:`ConfigsRecord` (the same class)."""

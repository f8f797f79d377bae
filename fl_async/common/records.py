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
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping, MutableMapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import numpy as np

__all__ = [
    "EXTENSION_DTYPES",
    "Array",
    "ConfigsRecord",
    "ConfigsRecordValues",
    "MetricsRecord",
    "MetricsRecordValues",
    "ParametersRecord",
    "RecordSet",
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


@dataclass(eq=False)
class Array:
    """One tensor: dtype, shape, encoding (``stype``) and the payload bytes.

    Args:
        dtype: element type name, e.g. ``"float32"``, ``">f4"`` (big-endian) or ``"bfloat16"``.
        shape: dimensions, a list of non-negative ints (``[]`` for a 0-d array).
        stype: encoding of ``data``; ``"numpy.ndarray"`` (:attr:`SType.NUMPY`) means the raw row-major
            buffer of ``dtype`` and ``shape``.
        data: the payload, any bytes-like object (``bytes``, ``bytearray``, ``memoryview``). It is kept
            as given, not copied.

    Equality compares dtype, shape, stype and payload bytes (as Flower's dataclass equality).
    """

    dtype: str
    shape: list[int]
    stype: str
    data: bytes | bytearray | memoryview

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

    Args:
        array_dict: initial entries; copied in order, never mutated.
        keep_input: accepted for Flower compatibility; ignored (the input is always kept).

    Raises:
        TypeError: a key is not ``str`` or a value is not an :class:`Array` (the message names the key).
    """

    def __init__(self, array_dict: Mapping[str, Array] | None = None, keep_input: bool = True) -> None:
        super().__init__(_check_array, array_dict)

    def count_bytes(self) -> int:
        """Payload bytes plus key lengths (as Flower 1.9)."""
        return sum(a.nbytes + len(k) for k, a in self._data.items())

    @classmethod
    def from_numpy_dict(cls, arrays: Mapping[str, np.ndarray]) -> ParametersRecord:
        """Build a record from ``name -> numpy array`` without copying contiguous arrays."""
        return cls({k: Array.from_numpy(v) for k, v in arrays.items()})

    def to_numpy_dict(self) -> dict[str, np.ndarray]:
        """Return ``name -> numpy array`` views (see :meth:`Array.numpy`)."""
        return {k: a.numpy() for k, a in self._data.items()}

    @classmethod
    def from_torch_state_dict(cls, state_dict: Mapping[str, Any]) -> ParametersRecord:
        """Build a record from a PyTorch ``state_dict`` (needs the ``fl-async[torch]`` extra).

        Every tensor is detached, moved to CPU and made contiguous (no copy when it already is); the
        Array views its bytes, with ``dtype`` named after the torch dtype (``"float32"``,
        ``"bfloat16"``, ...). No pickling.

        Raises:
            TypeError: a value is not a ``torch.Tensor``, or has an unsupported dtype.
        """
        from fl_async.common._torch import tensor_to_array

        return cls({k: tensor_to_array(k, t) for k, t in state_dict.items()})

    def to_torch_state_dict(self) -> dict[str, Any]:
        """Return an ordered ``name -> torch.Tensor`` dict; the exact inverse of :meth:`from_torch_state_dict`.

        Tensors share memory with writable payloads; read-only payloads are copied once.

        Raises:
            TypeError: an Array's dtype has no torch equivalent or its stype is not ``"numpy.ndarray"``.
            ValueError: a payload's length does not match its dtype and shape.
        """
        from fl_async.common._torch import array_to_tensor

        return {k: array_to_tensor(k, a) for k, a in self._data.items()}


class MetricsRecord(TypedDict[MetricsRecordValues]):
    """``str -> int | float | list[int] | list[float]`` (Flower 1.9 semantics, made consistent).

    ``bool`` is refused; numpy scalars are stored as Python numbers; lists must hold one type.

    Raises:
        TypeError: bad key or value type (the message names the key).
        ValueError: an integer outside ``[-2**63, 2**64 - 1]``, or a list of integers fitting neither signed
            nor unsigned 64 bits.
    """

    def __init__(self, metrics_dict: Mapping[str, Any] | None = None, keep_input: bool = True) -> None:
        super().__init__(_check_metric, metrics_dict)

    def count_bytes(self) -> int:
        """8 bytes per number plus key lengths (as Flower 1.9)."""
        return sum(len(k) + (8 * len(v) if isinstance(v, list) else 8) for k, v in self._data.items())


class ConfigsRecord(TypedDict[ConfigsRecordValues]):
    """``str -> int | float | str | bytes | bool`` or a list of one of them (Flower 1.9, made consistent).

    Raises:
        TypeError: bad key or value type, e.g. ``None``, dict, tuple, nested or mixed lists.
        ValueError: an integer outside ``[-2**63, 2**64 - 1]``, or a list of integers fitting neither signed
            nor unsigned 64 bits.
    """

    def __init__(self, configs_dict: Mapping[str, Any] | None = None, keep_input: bool = True) -> None:
        super().__init__(_check_config, configs_dict)

    def count_bytes(self) -> int:
        """Value bytes (bool 1, numbers 8, str/bytes their length) plus key lengths (as Flower 1.9)."""
        total = 0
        for k, v in self._data.items():
            total += len(k) + (sum(_scalar_bytes(x) for x in v) if isinstance(v, list) else _scalar_bytes(v))
        return total


def _record_check(cls: type) -> Callable[[str, Any], Any]:
    def check(key: str, value: Any) -> Any:
        if type(value) is not cls:
            raise TypeError(f"value of {key!r} must be a {cls.__name__}, got {type(value).__name__}")
        return value

    return check


# Built once: every RecordSet's three TypedDicts share these value checks.
_check_parameters_record = _record_check(ParametersRecord)
_check_metrics_record = _record_check(MetricsRecord)
_check_configs_record = _record_check(ConfigsRecord)


class RecordSet:
    """The content of a message: named parameters, metrics and configs records.

    Args:
        parameters_records: ``name -> ParametersRecord``; copied, never mutated.
        metrics_records: ``name -> MetricsRecord``.
        configs_records: ``name -> ConfigsRecord``.

    Raises:
        TypeError: a key is not ``str`` or a value is not exactly the matching record class.
    """

    __slots__ = ("_configs", "_metrics", "_parameters")

    def __init__(
        self,
        parameters_records: Mapping[str, ParametersRecord] | None = None,
        metrics_records: Mapping[str, MetricsRecord] | None = None,
        configs_records: Mapping[str, ConfigsRecord] | None = None,
    ) -> None:
        self._parameters: TypedDict[ParametersRecord] = TypedDict(_check_parameters_record, parameters_records)
        self._metrics: TypedDict[MetricsRecord] = TypedDict(_check_metrics_record, metrics_records)
        self._configs: TypedDict[ConfigsRecord] = TypedDict(_check_configs_record, configs_records)

    @property
    def parameters_records(self) -> TypedDict[ParametersRecord]:
        """``name -> ParametersRecord``."""
        return self._parameters

    @property
    def metrics_records(self) -> TypedDict[MetricsRecord]:
        """``name -> MetricsRecord``."""
        return self._metrics

    @property
    def configs_records(self) -> TypedDict[ConfigsRecord]:
        """``name -> ConfigsRecord``."""
        return self._configs

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, RecordSet):
            return NotImplemented
        return (
            self._parameters == other._parameters
            and self._metrics == other._metrics
            and self._configs == other._configs
        )

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return (
            f"RecordSet(parameters_records={self._parameters!r}, metrics_records={self._metrics!r}, "
            f"configs_records={self._configs!r})"
        )

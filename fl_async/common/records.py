"""Records: ``ParametersRecord``, ``MetricsRecord``, ``ConfigsRecord`` and ``RecordSet``.

Names and semantics follow Flower 1.9 (``flwr.common.record``) with these deliberate differences:

* ``Array.data`` holds the raw array buffer (row-major), not a ``.npy`` file, so that
  ``Array.from_numpy`` and ``Array.numpy`` do not copy the payload. ``stype`` ``"numpy.ndarray"`` names
  that encoding. Nothing is ever pickled or unpickled.
* Constructors never empty or mutate the caller's dict (Flower's ``ParametersRecord`` empties it by
  default); ``keep_input`` is accepted for compatibility and ignored.
* Value rules are made consistent: numpy scalars are accepted and stored as Python ``int``/``float``/
  ``bool``; ``bool`` is not a metric; lists must hold one type only (``[1, True]`` and ``[1, 2.0]`` are
  refused); integers must fit in signed 64 bits.
* ``get(key)`` has an optional default, like ``dict.get``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, MutableMapping
from typing import Any, Generic, TypeVar, cast

import numpy as np

from fl_async.common.arrays import (
    EXTENSION_DTYPES,
    INT64_MAX,
    INT64_MIN,
    Array,
    SType,
    array_from_numpy,
    dtype_itemsize,
    numpy_dtype,
)

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
    if not INT64_MIN <= value <= INT64_MAX:
        raise ValueError(f"value of {key!r} is out of signed 64-bit range: {value}")
    return value


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
                return _int64(key, int(cast(int, value)))
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
    return cast(MetricsRecordValues, _value(key, value, _METRIC_TYPES))  # _value checked the types


def _check_config(key: str, value: Any) -> ConfigsRecordValues:
    return cast(ConfigsRecordValues, _value(key, value, _CONFIG_TYPES))  # _value checked the types


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
        ValueError: an integer outside signed 64 bits.
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
        ValueError: an integer outside signed 64 bits.
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

"""Streaming weighted means of ArrayRecords and MetricRecords: sans-IO, one reply at a time, in place.

Newest Flower's strategies collect every reply, then average (``sum(w_i / W * x_i)``), holding all N
models at once. Here each reply is folded into a running weighted mean as it arrives and can be dropped
at once, so aggregation holds one accumulator (one model) whatever N is. The update is West's weighted
form of Welford's running mean (D. H. D. West, "Updating mean and variance estimates", CACM 1979)::

    W += w;  mean += (w / W) * (x - mean)

which never forms the large sum ``sum(w_i * x_i)`` (no growth of rounding error with N or with the
magnitude of the weights). The accumulator has the model's dtype where that is at least 32-bit float
(``float16`` and ``bfloat16`` models accumulate in ``float32``); integer and bool arrays average in
``float64`` (newest Flower's results have that dtype too). Work happens in chunks of
:data:`CHUNK_ELEMENTS`, so temporaries stay small.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from fl_async.common.records import Array, MetricsRecord, ParametersRecord, SType, numpy_dtype
from fl_async.serverapp.exception import AggregationError, InconsistentMessageReplies

__all__ = ["CHUNK_ELEMENTS", "MetricMean", "WeightedArrayMean", "bfloat16_to_float32", "float32_to_bfloat16"]

CHUNK_ELEMENTS = 1 << 18
"""Elements processed per step of an update: one reused temporary of this size (1-2 MiB, so the three
passes of a step run in cache) per accumulator dtype."""


def bfloat16_to_float32(raw: np.ndarray) -> np.ndarray:
    """Exact widening of bfloat16 values (given as their ``uint16`` bit patterns) to float32."""
    return (raw.astype(np.uint32) << 16).view(np.float32)


def float32_to_bfloat16(values: np.ndarray) -> np.ndarray:
    """Round float32 values to bfloat16 (nearest, ties to even; NaN stays NaN), as ``uint16`` bit patterns."""
    bits = np.ascontiguousarray(values, dtype=np.float32).view(np.uint32)
    rounded = ((bits + (((bits >> 16) & 1) + 0x7FFF)) >> 16).astype(np.uint16)
    rounded[np.isnan(values)] = 0x7FC0
    return rounded


@dataclass
class _Slot:
    """Running mean of one array: flat accumulator, the array's shape and wire dtype."""

    acc: np.ndarray
    shape: list[int]
    dtype: str


def _flat_source(key: str, array: Array) -> tuple[np.ndarray, bool]:
    """``(flat values, is_bfloat16)``: a view of the payload (``uint16`` bit patterns for bfloat16)."""
    if array.stype != SType.NUMPY:
        raise AggregationError(f"array {key!r} has stype {array.stype!r}; only 'numpy.ndarray' can be averaged")
    if array.dtype == "bfloat16":
        array.check()
        count = math.prod(array.shape)
        raw = np.frombuffer(array.data, dtype="<u2", count=count) if count else np.empty(0, np.uint16)
        return raw, True
    try:
        dt = numpy_dtype(array.dtype)
    except TypeError as exc:
        raise AggregationError(f"array {key!r} cannot be averaged: {exc}") from None
    if dt.kind not in "biufc":
        raise AggregationError(f"array {key!r} has dtype {array.dtype!r}, which cannot be averaged")
    return array.numpy().reshape(-1), False


def _acc_dtype(wire_dtype: str) -> np.dtype:
    if wire_dtype == "bfloat16":
        return np.dtype(np.float32)
    dt = numpy_dtype(wire_dtype)
    if dt.kind == "f":
        return np.dtype(np.float32) if dt.itemsize < 4 else dt.newbyteorder("=")
    if dt.kind == "c":
        return dt.newbyteorder("=")
    return np.dtype(np.float64)  # integers and bool average to float64, as numpy (and newest Flower) do


class WeightedArrayMean:
    """Weighted mean of ArrayRecords folded in one at a time (see the module doc for the arithmetic).

    Usage::

        mean = WeightedArrayMean()
        for record, weight in replies:   # any number, one in memory at a time
            mean.add(record, weight)
        result = mean.result()           # an ArrayRecord with the first record's keys, order and shapes

    Raises (from :meth:`add`):
        InconsistentMessageReplies: a record's keys differ from the first record's, or a weight is negative
            or not finite.
        AggregationError: an array's shape differs from the first record's, or it cannot be averaged.
    """

    def __init__(self) -> None:
        self._slots: dict[str, _Slot] = {}
        self._tmp: dict[np.dtype, np.ndarray] = {}  # one chunk-sized scratch array per accumulator dtype
        self._weight = 0.0
        self._count = 0

    @property
    def count(self) -> int:
        """How many records were added."""
        return self._count

    @property
    def total_weight(self) -> float:
        """Sum of the weights added."""
        return self._weight

    def add(self, record: Mapping[str, Array], weight: float) -> None:
        """Fold ``record`` with weight ``weight`` (>= 0) into the mean; the record is not kept or changed."""
        w = float(weight)
        if not math.isfinite(w) or w < 0:
            raise InconsistentMessageReplies(f"weight {weight!r} must be a finite number >= 0")
        if self._count == 0:
            self._first(record)
            self._weight, self._count = w, 1
            return
        if list(record.keys()) != list(self._slots) and set(record.keys()) != set(self._slots):
            raise InconsistentMessageReplies(
                "All ArrayRecords must have the same keys for aggregation. This condition wasn't met."
            )
        self._count += 1
        if w == 0:
            for key, slot in self._slots.items():
                self._check_shape(key, record[key], slot)
            return
        self._weight += w
        ratio = w / self._weight
        for key, slot in self._slots.items():
            array = record[key]
            self._check_shape(key, array, slot)
            src, is_bf16 = _flat_source(key, array)
            acc = slot.acc
            tmp = self._tmp.get(acc.dtype)
            if tmp is None:
                tmp = self._tmp[acc.dtype] = np.empty(CHUNK_ELEMENTS, dtype=acc.dtype)
            for start in range(0, acc.size, CHUNK_ELEMENTS):
                stop = start + CHUNK_ELEMENTS
                m = acc[start:stop]
                x = bfloat16_to_float32(src[start:stop]) if is_bf16 else src[start:stop]
                d = tmp[: m.size]
                np.subtract(x, m, out=d, casting="same_kind")
                d *= ratio
                m += d

    def _first(self, record: Mapping[str, Array]) -> None:
        for key, array in record.items():
            src, is_bf16 = _flat_source(key, array)
            acc = bfloat16_to_float32(src) if is_bf16 else src.astype(_acc_dtype(array.dtype), copy=True)
            self._slots[key] = _Slot(acc=acc, shape=list(array.shape), dtype=array.dtype)

    @staticmethod
    def _check_shape(key: str, array: Array, slot: _Slot) -> None:
        if list(array.shape) != slot.shape or array.dtype != slot.dtype:
            raise AggregationError(
                f"array {key!r} has shape {array.shape} and dtype {array.dtype!r}, but the first reply's has "
                f"{slot.shape} and {slot.dtype!r}"
            )

    def result(self) -> ParametersRecord:
        """The weighted mean as an ArrayRecord (float dtypes kept; the accumulator itself when it has the
        model's dtype, so no copy). The accumulator is handed over: call once.

        Raises:
            AggregationError: nothing was added, or the weights add up to 0.
        """
        if self._count == 0:
            raise AggregationError("no records to aggregate")
        if self._weight <= 0:
            raise AggregationError("the weights of all replies add up to 0: cannot compute a weighted mean")
        out = ParametersRecord()
        for key, slot in self._slots.items():
            acc = slot.acc.reshape(slot.shape)
            if slot.dtype == "bfloat16":
                bits = float32_to_bfloat16(acc)
                out[key] = Array("bfloat16", list(slot.shape), SType.NUMPY, bits.data.cast("B"))
                continue
            target = numpy_dtype(slot.dtype)
            if target.kind in "fc" and acc.dtype != target:
                acc = acc.astype(target)
            out[key] = Array.from_numpy(acc)
        self._slots = {}
        self._tmp = {}
        return out


class MetricMean:
    """Weighted mean of MetricRecords folded in one at a time (as newest Flower's ``aggregate_metricrecords``).

    Every key but ``weighted_by_key`` is averaged with the reply's ``weighted_by_key`` value as weight;
    list values element-wise. The result has no ``weighted_by_key``.
    """

    def __init__(self, weighted_by_key: str) -> None:
        self._key = weighted_by_key
        self._sums: dict[str, float | list[float]] = {}
        self._weight = 0.0

    def add(self, record: Mapping[str, object], weight: float) -> None:
        """Fold one MetricRecord in with weight ``weight``; a reply of weight 0 (e.g. a node with no data) adds
        nothing, so a ``nan`` it may report does not spoil the mean."""
        w = float(weight)
        if w == 0:
            return
        self._weight += w
        for key, value in record.items():
            if key == self._key:
                continue
            if isinstance(value, list):
                prev = self._sums.get(key)
                vals = [float(v) * w for v in value]
                if isinstance(prev, list):
                    if len(prev) != len(vals):
                        raise InconsistentMessageReplies(f"metric {key!r} has lists of different lengths")
                    self._sums[key] = [a + b for a, b in zip(prev, vals, strict=True)]
                else:
                    self._sums[key] = vals
            else:
                prev_scalar = self._sums.get(key, 0.0)
                self._sums[key] = float(prev_scalar) + float(value) * w  # type: ignore[arg-type]

    def result(self) -> MetricsRecord:
        """The weighted means (empty when the total weight is 0)."""
        if self._weight <= 0:
            return MetricsRecord()
        total = self._weight
        return MetricsRecord(
            {k: ([x / total for x in v] if isinstance(v, list) else v / total) for k, v in self._sums.items()}
        )

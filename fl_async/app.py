"""Newest Flower's ``flwr.app`` names, for apps written against Flower 1.4x: replace ``flwr`` by ``fl_async``.

Every name is the same object as fl-async's own (Flower 1.9-era) name where they correspond, not a copy:
``RecordDict`` is :class:`~fl_async.common.RecordSet`, ``ArrayRecord`` is
:class:`~fl_async.common.ParametersRecord`, ``MetricRecord`` is :class:`~fl_async.common.MetricsRecord`,
``ConfigRecord`` is :class:`~fl_async.common.ConfigsRecord`; ``Array``, ``Message``, ``Metadata``,
``Error``, ``MessageType``, ``Context`` and ``DEFAULT_TTL`` are fl-async's. ``docs/flower-compat.md``
lists every deliberate difference from newest Flower's signatures.
"""

from __future__ import annotations

from fl_async.common.context import Context, UserConfig
from fl_async.common.message import DEFAULT_TTL, Error, Message, MessageType, Metadata
from fl_async.common.records import (
    Array,
    ArrayRecord,
    ConfigRecord,
    ConfigsRecordValues,
    MetricRecord,
    MetricsRecordValues,
    RecordDict,
)

__all__ = [
    "DEFAULT_TTL",
    "Array",
    "ArrayRecord",
    "ConfigRecord",
    "ConfigRecordValues",
    "ConfigScalar",
    "ConfigScalarList",
    "Context",
    "Error",
    "Message",
    "MessageType",
    "Metadata",
    "MetricRecord",
    "MetricRecordValues",
    "MetricScalar",
    "MetricScalarList",
    "RecordDict",
    "UserConfig",
    "UserConfigValue",
]

MetricScalar = int | float
"""A metric value that is not a list (as newest Flower)."""
MetricScalarList = list[int] | list[float]
"""A metric value that is a list of one type (as newest Flower)."""
MetricRecordValues = MetricsRecordValues
"""What a :class:`MetricRecord` holds (as newest Flower)."""
ConfigScalar = int | float | str | bytes | bool
"""A config value that is not a list (as newest Flower)."""
ConfigScalarList = list[int] | list[float] | list[str] | list[bytes] | list[bool]
"""A config value that is a list of one type (as newest Flower)."""
ConfigRecordValues = ConfigsRecordValues
"""What a :class:`ConfigRecord` holds (as newest Flower)."""
UserConfigValue = bool | float | int | str
"""A value of ``Context.run_config`` / ``node_config`` (as newest Flower)."""

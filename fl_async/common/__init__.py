"""Sans-IO data model shared by every part of fl-async: records, messages, context, errors.

Names and semantics follow Flower 1.9's ``flwr.common`` (see each class for the differences).
"""

from fl_async.common.context import Context, UserConfig
from fl_async.common.errors import (
    AppLoadError,
    FlAsyncError,
    IntegrityError,
    InvalidRequestError,
    LinkConnectionError,
    LinkTimeoutError,
    NoMainFunctionError,
    NotAuthorizedError,
    RefusedByLinkError,
    ResourceExhaustedError,
    TTLExpiredError,
    UnsupportedFeatureError,
)
from fl_async.common.logger import log
from fl_async.common.message import DEFAULT_TTL, Error, ErrorCode, Message, MessageType, Metadata
from fl_async.common.records import (
    Array,
    ArrayRecord,
    ConfigRecord,
    ConfigsRecord,
    ConfigsRecordValues,
    MetricRecord,
    MetricsRecord,
    MetricsRecordValues,
    ParametersRecord,
    RecordDict,
    RecordSet,
    SType,
    array_from_numpy,
)
from fl_async.common.run import Run

__all__ = [
    "DEFAULT_TTL",
    "AppLoadError",
    "Array",
    "ArrayRecord",
    "ConfigRecord",
    "ConfigsRecord",
    "ConfigsRecordValues",
    "Context",
    "Error",
    "ErrorCode",
    "FlAsyncError",
    "IntegrityError",
    "InvalidRequestError",
    "LinkConnectionError",
    "LinkTimeoutError",
    "Message",
    "MessageType",
    "Metadata",
    "MetricRecord",
    "MetricsRecord",
    "MetricsRecordValues",
    "NoMainFunctionError",
    "NotAuthorizedError",
    "ParametersRecord",
    "RecordDict",
    "RecordSet",
    "RefusedByLinkError",
    "ResourceExhaustedError",
    "Run",
    "SType",
    "TTLExpiredError",
    "UnsupportedFeatureError",
    "UserConfig",
    "array_from_numpy",
    "log",
]

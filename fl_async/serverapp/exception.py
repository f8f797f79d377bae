"""Errors of the strategies in :mod:`fl_async.serverapp.strategy` (newest Flower's ``flwr.serverapp.exception``)."""

from __future__ import annotations

from fl_async.common.errors import FlAsyncError

__all__ = ["AggregationError", "InconsistentMessageReplies"]


class InconsistentMessageReplies(FlAsyncError):
    """Replies cannot be aggregated together (a missing or extra record, different keys, no or a list
    weight); raised as newest Flower's, ending the strategy. ``reason`` says which rule was broken."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class AggregationError(FlAsyncError):
    """Aggregation failed (e.g. shapes differ from the current model, or the total weight is 0)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason

"""``Result`` of a strategy run (newest Flower's fields) and ``ReplyCounts``, fl-async's per-round reply tally."""

from __future__ import annotations

import pprint
from dataclasses import dataclass, field

from fl_async.common.records import MetricsRecord, ParametersRecord

__all__ = ["ReplyCounts", "Result"]


@dataclass
class ReplyCounts:
    """What happened to the instructions of one phase (train or evaluate) of one round.

    Attributes:
        sent: instructions pushed.
        not_queued: instructions the link did not accept (their node was unknown or offline).
        results: replies that carried content (handed to the aggregation).
        errors: error replies (the ClientApp raised, the node went away, ...), not counting expiries.
        timed_out: instructions with no reply within the round's ``timeout`` (or that the link expired).
        seconds: wall time from the push to the last reply (or the timeout).
    """

    sent: int = 0
    not_queued: int = 0
    results: int = 0
    errors: int = 0
    timed_out: int = 0
    seconds: float = 0.0

    def __str__(self) -> str:
        return (
            f"{self.results}/{self.sent} results, {self.errors} errors, {self.timed_out} timed out, "
            f"{self.not_queued} not queued ({self.seconds:.2f} s)"
        )


@dataclass
class Result:
    """Records produced by :meth:`Strategy.start` (as newest Flower's ``Result``, plus the reply tallies).

    Attributes:
        arrays: the final global model.
        train_metrics_clientapp: aggregated train metrics of the ClientApps, by round.
        evaluate_metrics_clientapp: aggregated evaluate metrics of the ClientApps, by round.
        evaluate_metrics_serverapp: what ``evaluate_fn`` returned, by round (0 = before training).
        train_replies: :class:`ReplyCounts` of each round's training (fl-async's addition).
        evaluate_replies: :class:`ReplyCounts` of each round's evaluation (fl-async's addition).
    """

    arrays: ParametersRecord = field(default_factory=ParametersRecord)
    train_metrics_clientapp: dict[int, MetricsRecord] = field(default_factory=dict)
    evaluate_metrics_clientapp: dict[int, MetricsRecord] = field(default_factory=dict)
    evaluate_metrics_serverapp: dict[int, MetricsRecord] = field(default_factory=dict)
    train_replies: dict[int, ReplyCounts] = field(default_factory=dict)
    evaluate_replies: dict[int, ReplyCounts] = field(default_factory=dict)

    def __repr__(self) -> str:
        size = sum(a.nbytes for a in self.arrays.values()) / (1024**2)

        def fmt(d: dict[int, MetricsRecord]) -> str:
            return pprint.pformat({r: dict(m) for r, m in d.items()}, indent=2)

        return (
            f"Global Arrays:\n\tArrayRecord ({size:.3f} MB)\n\n"
            f"Aggregated ClientApp-side Train Metrics:\n{fmt(self.train_metrics_clientapp)}\n\n"
            f"Aggregated ClientApp-side Evaluate Metrics:\n{fmt(self.evaluate_metrics_clientapp)}\n\n"
            f"ServerApp-side Evaluate Metrics:\n{fmt(self.evaluate_metrics_serverapp)}\n"
        )

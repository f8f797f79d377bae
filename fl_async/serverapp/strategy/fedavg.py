"""``FedAvg`` (McMahan et al., 2017, arXiv:1602.05629) with newest Flower's constructor, aggregating on arrival."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable
from logging import INFO, WARNING

from fl_async.common.logger import log
from fl_async.common.message import Message, MessageType
from fl_async.common.records import ConfigsRecord, MetricsRecord, ParametersRecord, RecordSet
from fl_async.server.driver import Driver
from fl_async.serverapp.exception import InconsistentMessageReplies
from fl_async.serverapp.strategy._streaming import MetricMean, WeightedArrayMean
from fl_async.serverapp.strategy.strategy import Strategy

__all__ = ["FedAvg", "sample_nodes"]

MetricsAggrFn = Callable[[list[RecordSet], str], MetricsRecord]
"""``(contents, weighted_by_key) -> MetricRecord`` (newest Flower's ``train_metrics_aggr_fn``)."""


def sample_nodes(grid: Driver, min_available_nodes: int, sample_size: int) -> tuple[list[int], list[int]]:
    """``(sampled ids, all ids)``: wait until ``max(min_available_nodes, sample_size)`` nodes are online (a
    long-poll on the link, where newest Flower sleeps 1 s between checks), then sample ``sample_size``."""
    wanted = max(min_available_nodes, sample_size)
    nodes = list(grid.get_node_ids())
    if len(nodes) < wanted:
        log(INFO, "Waiting for nodes to connect: %d connected (minimum required: %d).", len(nodes), wanted)
        nodes = list(grid.wait_for_nodes(wanted))
    return random.sample(nodes, sample_size), nodes


class FedAvg(Strategy):
    """Federated Averaging, as newest Flower's ``flwr.serverapp.strategy.FedAvg`` (same arguments).

    Training replies must each carry one ArrayRecord and one MetricRecord holding ``weighted_by_key``;
    the new global model is their weighted mean, computed as they arrive (one reply in memory at a time,
    see :mod:`fl_async.serverapp.strategy._streaming`). Metrics are averaged with the same weights.

    Args:
        fraction_train: share of the online nodes sampled for training (at least ``min_train_nodes``).
        fraction_evaluate: share sampled for evaluation (at least ``min_evaluate_nodes``; 0 skips it).
        min_train_nodes, min_evaluate_nodes: least nodes sampled per phase.
        min_available_nodes: nodes that must be online before sampling (waited for on the link).
        weighted_by_key: the MetricRecord key whose value weighs each reply.
        arrayrecord_key, configrecord_key: keys of the model and the config in the instructions.
        train_metrics_aggr_fn, evaluate_metrics_aggr_fn: ``(list[RecordDict], weighted_by_key) ->
            MetricRecord`` replacing the weighted mean of metrics; they get each valid reply's metric and
            config records (not its arrays, which are not kept).
    """

    def __init__(
        self,
        fraction_train: float = 1.0,
        fraction_evaluate: float = 1.0,
        min_train_nodes: int = 2,
        min_evaluate_nodes: int = 2,
        min_available_nodes: int = 2,
        weighted_by_key: str = "num-examples",
        arrayrecord_key: str = "arrays",
        configrecord_key: str = "config",
        train_metrics_aggr_fn: MetricsAggrFn | None = None,
        evaluate_metrics_aggr_fn: MetricsAggrFn | None = None,
    ) -> None:
        self.fraction_train = fraction_train
        self.fraction_evaluate = fraction_evaluate
        self.min_train_nodes = min_train_nodes
        self.min_evaluate_nodes = min_evaluate_nodes
        self.min_available_nodes = min_available_nodes
        self.weighted_by_key = weighted_by_key
        self.arrayrecord_key = arrayrecord_key
        self.configrecord_key = configrecord_key
        self.train_metrics_aggr_fn = train_metrics_aggr_fn
        self.evaluate_metrics_aggr_fn = evaluate_metrics_aggr_fn
        if self.fraction_evaluate == 0.0:
            self.min_evaluate_nodes = 0
            log(WARNING, "fraction_evaluate is set to 0.0. Federated evaluation will be skipped.")
        if self.fraction_train == 0.0:
            self.min_train_nodes = 0
            log(WARNING, "fraction_train is set to 0.0. Federated training will be skipped.")

    def summary(self) -> None:
        """Log the sampling settings and record keys."""
        log(INFO, "\t├──> Sampling:")
        log(INFO, "\t│\t├──Fraction: train (%.2f) | evaluate ( %.2f)", self.fraction_train, self.fraction_evaluate)
        log(INFO, "\t│\t├──Minimum nodes: train (%d) | evaluate (%d)", self.min_train_nodes, self.min_evaluate_nodes)
        log(INFO, "\t│\t└──Minimum available nodes: %d", self.min_available_nodes)
        log(INFO, "\t└──> Keys in records:")
        log(INFO, "\t\t├── Weighted by: '%s'", self.weighted_by_key)
        log(INFO, "\t\t├── ArrayRecord key: '%s'", self.arrayrecord_key)
        log(INFO, "\t\t└── ConfigRecord key: '%s'", self.configrecord_key)

    # ------------------------------------------------------------------ configure

    def _configure(
        self, server_round: int, arrays: ParametersRecord, config: ConfigsRecord, grid: Driver, train: bool
    ) -> list[Message]:
        fraction = self.fraction_train if train else self.fraction_evaluate
        if fraction == 0.0:
            return []
        least = self.min_train_nodes if train else self.min_evaluate_nodes
        sample_size = max(int(len(list(grid.get_node_ids())) * fraction), least)
        node_ids, everyone = sample_nodes(grid, self.min_available_nodes, sample_size)
        log(
            INFO,
            "configure_%s: Sampled %s nodes (out of %s)",
            "train" if train else "evaluate",
            len(node_ids),
            len(everyone),
        )
        config["server-round"] = server_round
        content = RecordSet({self.arrayrecord_key: arrays, self.configrecord_key: config})
        kind = MessageType.TRAIN if train else MessageType.EVALUATE
        return [Message(content, node_id, kind) for node_id in node_ids]

    def configure_train(
        self, server_round: int, arrays: ParametersRecord, config: ConfigsRecord, grid: Driver
    ) -> Iterable[Message]:
        """One ``train`` instruction per sampled node carrying ``arrays`` and ``config`` (+ ``server-round``)."""
        return self._configure(server_round, arrays, config, grid, train=True)

    def configure_evaluate(
        self, server_round: int, arrays: ParametersRecord, config: ConfigsRecord, grid: Driver
    ) -> Iterable[Message]:
        """One ``evaluate`` instruction per sampled node (none when ``fraction_evaluate`` is 0)."""
        return self._configure(server_round, arrays, config, grid, train=False)

    # ------------------------------------------------------------------ aggregate

    def _weight_of(self, content: RecordSet, metric_keys: set[str] | None) -> tuple[MetricsRecord, float, set[str]]:
        """The reply's one MetricRecord, its weight and its key set, checked as newest Flower's
        ``validate_message_reply_consistency`` (against the first reply's keys)."""
        metrics = list(content.metrics_records.values())
        if len(metrics) != 1:
            raise InconsistentMessageReplies("Expected exactly one MetricRecord in replies. Skipping aggregation.")
        record = metrics[0]
        keys = set(record)
        if metric_keys is not None and keys != metric_keys:
            raise InconsistentMessageReplies(
                "All MetricRecords must have the same keys for aggregation. This condition wasn't met. "
                "Skipping aggregation."
            )
        if self.weighted_by_key not in record:
            raise InconsistentMessageReplies(
                f"Missing required key `{self.weighted_by_key}` in the MetricRecord of reply messages. Cannot "
                "average ArrayRecords and MetricRecords. Skipping aggregation."
            )
        weight = record[self.weighted_by_key]
        if isinstance(weight, list):
            raise InconsistentMessageReplies(
                f"Key `{self.weighted_by_key}` in the MetricRecord of reply messages must be a single value "
                "(int or float), but a list was found. Skipping aggregation."
            )
        return record, float(weight), keys

    def _stream(
        self, replies: Iterable[Message], train: bool
    ) -> tuple[WeightedArrayMean | None, MetricMean, list[RecordSet], int, int]:
        """Fold the replies in as they come: ``(array mean, metric mean, metric-only contents, ok, failed)``."""
        arrays = WeightedArrayMean() if train else None
        metric_mean = MetricMean(self.weighted_by_key)
        custom = self.train_metrics_aggr_fn if train else self.evaluate_metrics_aggr_fn
        kept: list[RecordSet] = []
        metric_keys: set[str] | None = None
        array_key: str | None = None
        ok = failed = 0
        for msg in replies:
            if msg.has_error():
                failed += 1
                log(INFO, "\t> Received error in reply from node %d: %s", msg.metadata.src_node_id, msg.error.reason)
                del msg
                continue
            content = msg.content
            record, weight, metric_keys = self._weight_of(content, metric_keys)
            if arrays is not None:
                records = list(content.parameters_records.items())
                if len(records) != 1:
                    raise InconsistentMessageReplies(
                        "Expected exactly one ArrayRecord in replies. Skipping aggregation."
                    )
                if array_key is not None and records[0][0] != array_key:
                    raise InconsistentMessageReplies(
                        "All ArrayRecords must have the same keys for aggregation. This condition wasn't met. "
                        "Skipping aggregation."
                    )
                array_key = records[0][0]
                arrays.add(records[0][1], weight)
                del records
            metric_mean.add(record, weight)
            if custom is not None:
                kept.append(RecordSet({**content.metrics_records, **content.configs_records}))
            ok += 1
            del msg, content, record
        log(
            INFO,
            "%s: Received %s results and %s failures",
            "aggregate_train" if train else "aggregate_evaluate",
            ok,
            failed,
        )
        return arrays, metric_mean, kept, ok, failed

    def _metrics(self, metric_mean: MetricMean, kept: list[RecordSet], train: bool) -> MetricsRecord:
        custom = self.train_metrics_aggr_fn if train else self.evaluate_metrics_aggr_fn
        return custom(kept, self.weighted_by_key) if custom is not None else metric_mean.result()

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ParametersRecord | None, MetricsRecord | None]:
        """Weighted mean of the replies' ArrayRecords and MetricRecords, folded in as they arrive.

        Error replies are counted and logged, not aggregated. Returns ``(None, None)`` when no reply
        carried content.

        Raises:
            InconsistentMessageReplies: a reply breaks newest Flower's consistency rules (one ArrayRecord
                and one MetricRecord, same keys as the first reply, a scalar ``weighted_by_key``).
            AggregationError: shapes differ, or all weights are 0.
        """
        arrays, metric_mean, kept, ok, _ = self._stream(replies, train=True)
        if not ok or arrays is None:
            return None, None
        return arrays.result(), self._metrics(metric_mean, kept, train=True)

    def aggregate_evaluate(self, server_round: int, replies: Iterable[Message]) -> MetricsRecord | None:
        """Weighted mean of the replies' MetricRecords (``None`` when no reply carried content)."""
        _, metric_mean, kept, ok, _ = self._stream(replies, train=False)
        if not ok:
            return None
        return self._metrics(metric_mean, kept, train=False)

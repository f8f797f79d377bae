"""``Strategy``: newest Flower's message-based strategy base, whose :meth:`~Strategy.start` runs the rounds.

As newest Flower's ``flwr.serverapp.strategy.Strategy``, with one change underneath: the replies of a round
reach ``aggregate_train`` / ``aggregate_evaluate`` as an iterator that yields each reply the moment it
arrives (:meth:`fl_async.server.Driver.receive`, which downloads one reply when the next is asked for), instead
of a list filled once all are in. The built-in strategies fold each reply into a running mean and drop
it, so the driver holds about two models (the running mean and the reply being folded in) whatever the
number of nodes.
"""

from __future__ import annotations

import functools
import math
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Generator, Iterable
from logging import INFO
from typing import Any

from fl_async.common.logger import log
from fl_async.common.message import ErrorCode, Message
from fl_async.common.records import ConfigsRecord, MetricsRecord, ParametersRecord
from fl_async.server.driver import Driver
from fl_async.serverapp.strategy.result import ReplyCounts, Result

__all__ = ["Strategy"]


def _config_text(config: ConfigsRecord | None) -> str:
    if not config:
        return "(empty!)"
    return "{" + ", ".join(f"'{k}': {'<bytes>' if isinstance(v, bytes) else v}" for k, v in config.items()) + "}"


class Strategy(ABC):
    """Abstract base of the strategies (as newest Flower's ``Strategy``): configure, aggregate, :meth:`start`."""

    @abstractmethod
    def configure_train(
        self, server_round: int, arrays: ParametersRecord, config: ConfigsRecord, grid: Driver
    ) -> Iterable[Message]:
        """The training instructions of round ``server_round`` (1-based) for the selected nodes."""

    @abstractmethod
    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ParametersRecord | None, MetricsRecord | None]:
        """Aggregate training replies (an iterator yielding them as they arrive, error replies included)."""

    @abstractmethod
    def configure_evaluate(
        self, server_round: int, arrays: ParametersRecord, config: ConfigsRecord, grid: Driver
    ) -> Iterable[Message]:
        """The evaluation instructions of round ``server_round``."""

    @abstractmethod
    def aggregate_evaluate(self, server_round: int, replies: Iterable[Message]) -> MetricsRecord | None:
        """Aggregate evaluation replies (as :meth:`aggregate_train`)."""

    @abstractmethod
    def summary(self) -> None:
        """Log the strategy's settings."""

    def start(
        self,
        grid: Driver,
        initial_arrays: ParametersRecord,
        num_rounds: int = 3,
        timeout: float = 3600,
        train_config: ConfigsRecord | None = None,
        evaluate_config: ConfigsRecord | None = None,
        evaluate_fn: Callable[[int, ParametersRecord], MetricsRecord | None] | None = None,
    ) -> Result:
        """Run ``num_rounds`` rounds of training and evaluation (as newest Flower's ``Strategy.start``).

        Each round: :meth:`configure_train`, push, :meth:`aggregate_train` over the replies as they arrive,
        then the same for evaluation, then ``evaluate_fn(round, arrays)`` (also once before round 1).
        Instructions get a time to live of at most ``timeout`` seconds, so the link expires what a round
        gave up on. Replies, error replies and timed-out nodes are counted per round
        (:attr:`Result.train_replies`, :attr:`Result.evaluate_replies`) and logged.

        Args:
            grid: the blocking Grid (:class:`fl_async.server.Driver`) a sync ``main`` receives.
            initial_arrays: the starting global model.
            num_rounds: rounds to run (>= 0).
            timeout: seconds each phase of a round waits for replies (> 0).
            train_config, evaluate_config: sent with every instruction (``"server-round"`` is added).
            evaluate_fn: centralized evaluation ``(round, arrays) -> MetricRecord | None``.

        Returns:
            A :class:`Result` with the final arrays, the metrics by round and the reply tallies.

        Raises:
            TypeError: ``grid`` is not a blocking Grid (an async main gets an ``AsyncGrid``; run
                strategies from a sync main).
            ValueError: ``num_rounds < 0`` or ``timeout`` not a number > 0.
            InconsistentMessageReplies, AggregationError: as the aggregation raises them.
            FlAsyncError: a subclass, if talking to the link fails.
        """
        if not isinstance(grid, Driver):
            raise TypeError(
                f"strategy.start needs the blocking Grid a sync main receives, got {type(grid).__name__} "
                "(write `def main(grid: Grid, context: Context)`, not `async def`)"
            )
        if isinstance(num_rounds, bool) or not isinstance(num_rounds, int) or num_rounds < 0:
            raise ValueError(f"num_rounds must be an int >= 0, got {num_rounds!r}")
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not timeout > 0:
            raise ValueError(f"timeout must be a number of seconds > 0, got {timeout!r}")
        log(INFO, "Starting %s strategy:", type(self).__name__)
        log(INFO, "\t├── Number of rounds: %d", num_rounds)
        log(INFO, "\t├── ArrayRecord (%.2f MB)", sum(a.nbytes for a in initial_arrays.values()) / 1024**2)
        log(INFO, "\t├── ConfigRecord (train): %s", _config_text(train_config))
        log(INFO, "\t├── ConfigRecord (evaluate): %s", _config_text(evaluate_config))
        self.summary()
        train_config = ConfigsRecord() if train_config is None else train_config
        evaluate_config = ConfigsRecord() if evaluate_config is None else evaluate_config
        result = Result(arrays=initial_arrays)
        started = time.monotonic()
        if evaluate_fn is not None:
            res = evaluate_fn(0, initial_arrays)
            log(INFO, "Initial global evaluation results: %s", res)
            if res is not None:
                result.evaluate_metrics_serverapp[0] = res
        arrays = initial_arrays
        for rnd in range(1, num_rounds + 1):
            log(INFO, "")
            log(INFO, "[ROUND %s/%s]", rnd, num_rounds)
            counts = ReplyCounts()
            messages = list(self.configure_train(rnd, arrays, train_config, grid))
            agg_arrays, agg_metrics = self._aggregate(
                grid, messages, timeout, counts, functools.partial(self.aggregate_train, rnd)
            )
            result.train_replies[rnd] = counts
            log(INFO, "\t└──> train: %s", counts)
            if agg_arrays is not None:
                result.arrays = arrays = agg_arrays
            if agg_metrics is not None:
                log(INFO, "\t└──> Aggregated MetricRecord: %s", agg_metrics)
                result.train_metrics_clientapp[rnd] = agg_metrics
            counts = ReplyCounts()
            messages = list(self.configure_evaluate(rnd, arrays, evaluate_config, grid))
            agg_eval = self._aggregate(grid, messages, timeout, counts, functools.partial(self.aggregate_evaluate, rnd))
            result.evaluate_replies[rnd] = counts
            if messages:
                log(INFO, "\t└──> evaluate: %s", counts)
            if agg_eval is not None:
                log(INFO, "\t└──> Aggregated MetricRecord: %s", agg_eval)
                result.evaluate_metrics_clientapp[rnd] = agg_eval
            if evaluate_fn is not None:
                res = evaluate_fn(rnd, arrays)
                log(INFO, "Global evaluation\n\t└──> MetricRecord: %s", res)
                if res is not None:
                    result.evaluate_metrics_serverapp[rnd] = res
        log(INFO, "")
        log(INFO, "Strategy execution finished in %.2fs", time.monotonic() - started)
        return result

    @staticmethod
    def _aggregate(
        grid: Driver,
        messages: list[Message],
        timeout: float,
        counts: ReplyCounts,
        aggregate: Callable[[Iterable[Message]], Any],
    ) -> Any:
        replies = _exchange(grid, messages, timeout, counts)
        try:
            return aggregate(replies)
        finally:
            replies.close()  # stops the polls if the aggregation did not read every reply


def _exchange(
    grid: Driver, messages: list[Message], timeout: float, counts: ReplyCounts
) -> Generator[Message, None, None]:
    """Push ``messages`` and yield their replies as they arrive, tallying them in ``counts``."""
    started = time.monotonic()
    counts.sent = len(messages)
    if not messages:
        return
    if math.isfinite(timeout):
        for msg in messages:
            msg.metadata.ttl = min(msg.metadata.ttl, float(timeout))
    ids = list(grid.push_messages(messages))
    del messages
    live = [i for i in ids if i]
    counts.not_queued = len(ids) - len(live)
    if not live:
        return
    with grid.receive(live, timeout=timeout) as stream:  # one reply downloaded at a time
        try:
            for reply in stream:
                if reply.has_content():
                    counts.results += 1
                elif reply.error.code == ErrorCode.MESSAGE_EXPIRED:
                    counts.timed_out += 1
                else:
                    counts.errors += 1
                yield reply
                del reply  # the consumer is done with it when it asks for the next: hold no reference here
        finally:
            counts.timed_out += len(stream.outstanding)
            counts.seconds = time.monotonic() - started

"""``FedAvgM``: FedAvg with server learning rate and momentum (Hsu et al., 2019, arXiv:1909.06335), as Flower 1.4x."""

from __future__ import annotations

from collections.abc import Iterable
from logging import INFO

import numpy as np

from fl_async.common.logger import log
from fl_async.common.message import Message
from fl_async.common.records import Array, ConfigsRecord, MetricsRecord, ParametersRecord
from fl_async.server.driver import Driver
from fl_async.serverapp.exception import AggregationError
from fl_async.serverapp.strategy.fedavg import FedAvg, MetricsAggrFn

__all__ = ["FedAvgM"]


class FedAvgM(FedAvg):
    """FedAvg with server momentum (arguments as :class:`FedAvg`, plus the two below).

    With ``server_learning_rate != 1`` or ``server_momentum != 0``, the pseudo-gradient
    ``old - mean`` drives an SGD step on the server (PyTorch's SGD convention, no Nesterov):
    ``v = momentum * v + g`` (``v = g`` the first time), ``new = old - lr * v``. Otherwise it is FedAvg.

    Args:
        server_learning_rate: server-side learning rate.
        server_momentum: server-side momentum factor.
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
        server_learning_rate: float = 1.0,
        server_momentum: float = 0.0,
    ) -> None:
        super().__init__(
            fraction_train=fraction_train,
            fraction_evaluate=fraction_evaluate,
            min_train_nodes=min_train_nodes,
            min_evaluate_nodes=min_evaluate_nodes,
            min_available_nodes=min_available_nodes,
            weighted_by_key=weighted_by_key,
            arrayrecord_key=arrayrecord_key,
            configrecord_key=configrecord_key,
            train_metrics_aggr_fn=train_metrics_aggr_fn,
            evaluate_metrics_aggr_fn=evaluate_metrics_aggr_fn,
        )
        self.server_learning_rate = server_learning_rate
        self.server_momentum = server_momentum
        self.server_opt = (self.server_momentum != 0.0) or (self.server_learning_rate != 1.0)
        self.current_arrays: ParametersRecord | None = None
        self.momentum_vector: list[np.ndarray] | None = None

    def summary(self) -> None:
        """Log the server optimizer settings, then FedAvg's."""
        log(INFO, "\t├──> FedAvgM settings:")
        log(INFO, "\t│\t├── Server optimization: %s", "ON" if self.server_opt else "OFF")
        log(INFO, "\t│\t├── Server learning rate: %s", self.server_learning_rate)
        log(INFO, "\t│\t└── Server Momentum: %s", self.server_momentum)
        super().summary()

    def configure_train(
        self, server_round: int, arrays: ParametersRecord, config: ConfigsRecord, grid: Driver
    ) -> Iterable[Message]:
        """Remember the first model (as newest Flower), then configure as FedAvg."""
        if self.current_arrays is None:
            self.current_arrays = arrays
        return super().configure_train(server_round, arrays, config, grid)

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ParametersRecord | None, MetricsRecord | None]:
        """FedAvg's streaming mean, then the server SGD step when enabled."""
        aggregated, metrics = super().aggregate_train(server_round, replies)
        if not self.server_opt or aggregated is None:
            return aggregated, metrics
        if self.current_arrays is None:
            raise AggregationError(
                "No initial parameters set for FedAvgM. Ensure that `configure_train` has been called before "
                "aggregation."
            )
        old = self.current_arrays.to_numpy_ndarrays()
        new = aggregated.to_numpy_ndarrays()
        keys = list(aggregated.keys())
        pseudo_gradient = [o - n for n, o in zip(new, old, strict=True)]
        if self.server_momentum > 0.0:
            if self.momentum_vector is None:
                self.momentum_vector = pseudo_gradient
            else:
                self.momentum_vector = [
                    self.server_momentum * mv + pg for mv, pg in zip(self.momentum_vector, pseudo_gradient, strict=True)
                ]
            pseudo_gradient = self.momentum_vector
        updated = ParametersRecord(
            {
                k: Array.from_numpy(np.asarray(o - self.server_learning_rate * pg))
                for k, o, pg in zip(keys, old, pseudo_gradient, strict=True)
            }
        )
        self.current_arrays = updated
        return updated, metrics

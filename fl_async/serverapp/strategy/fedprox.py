"""``FedProx`` (Li et al., 2020, arXiv:1812.06127), as newest Flower's: FedAvg sending ``proximal-mu`` to nodes."""

from __future__ import annotations

from collections.abc import Iterable
from logging import INFO, WARNING

from fl_async.common.logger import log
from fl_async.common.message import Message
from fl_async.common.records import ConfigsRecord, ParametersRecord
from fl_async.server.driver import Driver
from fl_async.serverapp.strategy.fedavg import FedAvg, MetricsAggrFn

__all__ = ["FedProx"]


class FedProx(FedAvg):
    """FedAvg whose training config carries ``"proximal-mu"``: the weight of the proximal term
    ``mu/2 * ||w - w_global||^2`` the ClientApp adds to its loss (arguments as :class:`FedAvg`, plus
    ``proximal_mu``). Aggregation is FedAvg's.
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
        proximal_mu: float = 0.0,
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
        self.proximal_mu = proximal_mu
        if self.proximal_mu == 0.0:
            log(WARNING, "FedProx initialized with `proximal_mu=0.0`. This makes the strategy equivalent to FedAvg.")

    def summary(self) -> None:
        """Log ``proximal_mu``, then FedAvg's settings."""
        log(INFO, "\t├──> FedProx settings:")
        log(INFO, "\t│\t└── Proximal mu: %s", self.proximal_mu)
        super().summary()

    def configure_train(
        self, server_round: int, arrays: ParametersRecord, config: ConfigsRecord, grid: Driver
    ) -> Iterable[Message]:
        """Put ``"proximal-mu"`` in the config, then configure as FedAvg."""
        config["proximal-mu"] = self.proximal_mu
        return super().configure_train(server_round, arrays, config, grid)

"""``FedYogi`` (Reddi et al., 2020), as newest Flower's: Yogi's additive second-moment update on the server."""

from __future__ import annotations

import numpy as np

from fl_async.serverapp.strategy.fedavg import MetricsAggrFn
from fl_async.serverapp.strategy.fedopt import FedOpt

__all__ = ["FedYogi"]


class FedYogi(FedOpt):
    """Adaptive Federated Optimization with Yogi (newest Flower's defaults: ``eta=1e-2``, ``eta_l=0.0316``,
    ``beta_1=0.9``, ``beta_2=0.99``, ``tau=1e-3``; other arguments as :class:`FedOpt`).

    ``v_t = v - (1 - beta_2) delta_t**2 sign(v - delta_t**2)``; step ``eta``.
    """

    def __init__(
        self,
        *,
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
        eta: float = 1e-2,
        eta_l: float = 0.0316,
        beta_1: float = 0.9,
        beta_2: float = 0.99,
        tau: float = 1e-3,
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
            eta=eta,
            eta_l=eta_l,
            beta_1=beta_1,
            beta_2=beta_2,
            tau=tau,
        )

    def _step(self, server_round: int, delta_t: dict[str, np.ndarray], agg: dict[str, np.ndarray]) -> float:
        if not self.v_t:
            self.v_t = {k: np.zeros_like(v) for k, v in agg.items()}
        self.v_t = {
            k: v - (1.0 - self.beta_2) * (delta_t[k] ** 2) * np.sign(v - delta_t[k] ** 2) for k, v in self.v_t.items()
        }
        return self.eta

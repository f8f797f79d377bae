"""``FedOpt``: base of the adaptive server optimizers (Reddi et al., 2020, arXiv:2003.00295), as newest Flower's.

The replies' weighted mean is computed as they arrive (:class:`~fl_async.serverapp.strategy.FedAvg`);
the server step then works on numpy arrays with newest Flower's formulas (``FedAdam``, ``FedYogi``,
``FedAdagrad``), and the new model keeps the current model's dtypes (newest Flower can return float64).
"""

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

__all__ = ["FedOpt"]


class FedOpt(FedAvg):
    """Adaptive federated optimization base (newest Flower's ``FedOpt``; keyword-only arguments).

    Args:
        fraction_train, fraction_evaluate, min_train_nodes, min_evaluate_nodes, min_available_nodes,
            weighted_by_key, arrayrecord_key, configrecord_key, train_metrics_aggr_fn,
            evaluate_metrics_aggr_fn: as :class:`FedAvg`.
        eta: server-side learning rate.
        eta_l: client-side learning rate (kept for reference, as newest Flower).
        beta_1: momentum parameter.
        beta_2: second moment parameter.
        tau: degree of adaptability (added to ``sqrt(v)``).
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
        eta: float = 1e-1,
        eta_l: float = 1e-1,
        beta_1: float = 0.0,
        beta_2: float = 0.0,
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
        )
        self.current_arrays: dict[str, np.ndarray] | None = None
        self.eta = eta
        self.eta_l = eta_l
        self.tau = tau
        self.beta_1 = beta_1
        self.beta_2 = beta_2
        self.m_t: dict[str, np.ndarray] | None = None
        self.v_t: dict[str, np.ndarray] | None = None

    def summary(self) -> None:
        """Log the optimizer settings, then FedAvg's."""
        log(INFO, "\t├──> FedOpt settings:")
        log(INFO, "\t│\t├── eta (%s) | eta_l (%s)", f"{self.eta:.6g}", f"{self.eta_l:.6g}")
        log(INFO, "\t│\t├── beta_1 (%s) | beta_2 (%s)", f"{self.beta_1:.6g}", f"{self.beta_2:.6g}")
        log(INFO, "\t│\t└── tau (%s)", f"{self.tau:.6g}")
        super().summary()

    def configure_train(
        self, server_round: int, arrays: ParametersRecord, config: ConfigsRecord, grid: Driver
    ) -> Iterable[Message]:
        """Remember ``arrays`` (the model the nodes start from), then configure as FedAvg."""
        self.current_arrays = {k: a.numpy() for k, a in arrays.items()}
        return super().configure_train(server_round, arrays, config, grid)

    def _compute_deltat_and_mt(
        self, aggregated: ParametersRecord
    ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], dict[str, np.ndarray]]:
        """``(delta_t, m_t, aggregated ndarrays)``, as newest Flower's (``m_t = beta_1 m + (1 - beta_1) delta``).

        Raises:
            AggregationError: no current arrays (configure_train not called), or keys/shapes differ.
        """
        if self.current_arrays is None:
            raise AggregationError(
                "Current arrays not set. Ensure that `configure_train` has been called before aggregation."
            )
        agg = {k: a.numpy() for k, a in aggregated.items()}
        if set(agg) != set(self.current_arrays):
            raise AggregationError(
                "Keys of the aggregated arrays do not match those of the arrays stored at the strategy. "
                "`delta_t = aggregated_arrays - current_arrays` cannot be computed."
            )
        for k, x in agg.items():
            if x.shape != self.current_arrays[k].shape:
                raise AggregationError(
                    f"Shape of aggregated array '{k}' does not match shape of the array under the same key "
                    "stored in the strategy. Cannot compute `delta_t`."
                )
        delta_t = {k: x - self.current_arrays[k] for k, x in agg.items()}
        if not self.m_t:
            self.m_t = {k: np.zeros_like(v) for k, v in agg.items()}
        self.m_t = {k: self.beta_1 * v + (1 - self.beta_1) * delta_t[k] for k, v in self.m_t.items()}
        return delta_t, self.m_t, agg

    def _step(self, server_round: int, delta_t: dict[str, np.ndarray], agg: dict[str, np.ndarray]) -> float:
        """Update ``self.v_t`` and return the step size; defined by each optimizer."""
        raise NotImplementedError

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ParametersRecord | None, MetricsRecord | None]:
        """FedAvg's streaming mean, then ``x + step * m_t / (sqrt(v_t) + tau)`` (dtypes of the current model)."""
        aggregated, metrics = super().aggregate_train(server_round, replies)
        if aggregated is None:
            return aggregated, metrics
        delta_t, m_t, agg = self._compute_deltat_and_mt(aggregated)
        del aggregated
        step = self._step(server_round, delta_t, agg)
        assert self.current_arrays is not None and self.v_t is not None
        out = ParametersRecord()
        for k, x in self.current_arrays.items():
            new = x + np.float64(step) * m_t[k] / (np.sqrt(self.v_t[k]) + self.tau)
            out[k] = Array.from_numpy(np.asarray(new).astype(x.dtype, copy=False))
        return out, metrics

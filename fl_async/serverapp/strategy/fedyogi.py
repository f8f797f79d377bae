"""``FedYogi`` (Reddi et al., 2020), as newest Flower's: Yogi's additive second-moment update on the server."""

from __future__ import annotations

from typing import Any

import numpy as np

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
        eta: float = 1e-2,
        eta_l: float = 0.0316,
        beta_1: float = 0.9,
        beta_2: float = 0.99,
        tau: float = 1e-3,
        **kwargs: Any,
    ) -> None:
        super().__init__(eta=eta, eta_l=eta_l, beta_1=beta_1, beta_2=beta_2, tau=tau, **kwargs)

    def _step(self, server_round: int, delta_t: dict[str, np.ndarray], agg: dict[str, np.ndarray]) -> float:
        if not self.v_t:
            self.v_t = {k: np.zeros_like(v) for k, v in agg.items()}
        self.v_t = {
            k: v - (1.0 - self.beta_2) * (delta_t[k] ** 2) * np.sign(v - delta_t[k] ** 2) for k, v in self.v_t.items()
        }
        return self.eta

"""``FedAdam`` (Reddi et al., 2020), as newest Flower's: Adam's moments on the server, bias-corrected step."""

from __future__ import annotations

from typing import Any

import numpy as np

from fl_async.serverapp.strategy.fedopt import FedOpt

__all__ = ["FedAdam"]


class FedAdam(FedOpt):
    """Adaptive Federated Optimization with Adam (newest Flower's defaults: ``eta=0.1``, ``eta_l=0.1``,
    ``beta_1=0.9``, ``beta_2=0.99``, ``tau=1e-3``; other arguments as :class:`FedOpt`).

    ``v_t = beta_2 v + (1 - beta_2) delta_t**2``; step ``eta * sqrt(1 - beta_2**(t+1)) / (1 - beta_1**(t+1))``.
    """

    def __init__(
        self,
        *,
        eta: float = 1e-1,
        eta_l: float = 1e-1,
        beta_1: float = 0.9,
        beta_2: float = 0.99,
        tau: float = 1e-3,
        **kwargs: Any,
    ) -> None:
        super().__init__(eta=eta, eta_l=eta_l, beta_1=beta_1, beta_2=beta_2, tau=tau, **kwargs)

    def _step(self, server_round: int, delta_t: dict[str, np.ndarray], agg: dict[str, np.ndarray]) -> float:
        if not self.v_t:
            self.v_t = {k: np.zeros_like(v) for k, v in agg.items()}
        self.v_t = {k: self.beta_2 * v + (1 - self.beta_2) * (delta_t[k] ** 2) for k, v in self.v_t.items()}
        return float(
            self.eta
            * np.sqrt(1 - np.power(self.beta_2, server_round + 1.0))
            / (1 - np.power(self.beta_1, server_round + 1.0))
        )

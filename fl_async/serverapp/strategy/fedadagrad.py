"""``FedAdagrad`` (Reddi et al., 2020), as newest Flower's: Adagrad's accumulated squares on the server."""

from __future__ import annotations

from typing import Any

import numpy as np

from fl_async.serverapp.strategy.fedopt import FedOpt

__all__ = ["FedAdagrad"]


class FedAdagrad(FedOpt):
    """Adaptive Federated Optimization with Adagrad (newest Flower's defaults: ``eta=0.1``, ``eta_l=0.1``,
    ``tau=1e-3``, no momentum; other arguments as :class:`FedOpt`).

    ``v_t = v + delta_t**2``; step ``eta``.
    """

    def __init__(self, *, eta: float = 1e-1, eta_l: float = 1e-1, tau: float = 1e-3, **kwargs: Any) -> None:
        super().__init__(eta=eta, eta_l=eta_l, beta_1=0.0, beta_2=0.0, tau=tau, **kwargs)

    def _step(self, server_round: int, delta_t: dict[str, np.ndarray], agg: dict[str, np.ndarray]) -> float:
        if not self.v_t:
            self.v_t = {k: np.zeros_like(v) for k, v in agg.items()}
        self.v_t = {k: v + (delta_t[k] ** 2) for k, v in self.v_t.items()}
        return self.eta

"""Newest Flower's message-based strategies, aggregating replies as they arrive.

``FedAvg``, ``FedAvgM``, ``FedProx``, ``FedOpt``, ``FedAdam``, ``FedYogi`` and ``FedAdagrad`` take newest
Flower's arguments and run with ``strategy.start(grid=grid, initial_arrays=..., num_rounds=...,
timeout=..., train_config=..., evaluate_config=..., evaluate_fn=...) -> Result``. Each reply is folded
into a running weighted mean the moment it arrives and then dropped (see
:mod:`fl_async.serverapp.strategy._streaming`), so the driver holds about two models whatever
the number of nodes, where newest Flower holds every reply. Error replies and timed-out nodes are counted
per round in :attr:`Result.train_replies` / :attr:`Result.evaluate_replies`.
"""

from __future__ import annotations

from fl_async.serverapp.strategy.fedadagrad import FedAdagrad
from fl_async.serverapp.strategy.fedadam import FedAdam
from fl_async.serverapp.strategy.fedavg import FedAvg
from fl_async.serverapp.strategy.fedavgm import FedAvgM
from fl_async.serverapp.strategy.fedopt import FedOpt
from fl_async.serverapp.strategy.fedprox import FedProx
from fl_async.serverapp.strategy.fedyogi import FedYogi
from fl_async.serverapp.strategy.result import ReplyCounts, Result
from fl_async.serverapp.strategy.strategy import Strategy

__all__ = [
    "FedAdagrad",
    "FedAdam",
    "FedAvg",
    "FedAvgM",
    "FedOpt",
    "FedProx",
    "FedYogi",
    "ReplyCounts",
    "Result",
    "Strategy",
]

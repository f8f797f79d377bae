"""The quickstart's ServerApp: FedAvg over all connected nodes with ``fl_async.serverapp.strategy.FedAvg``.

Written as newest Flower's ServerApps are (``strategy.start(grid=..., initial_arrays=..., ...)``); the
strategy folds each node's model into the average the moment it arrives. Each round the nodes train on
their own partition and the new global model is evaluated on the held-out test set (``evaluate_fn``, one
line per round on stdout); after the last round each node evaluates it on its own data.
``server_loop.py`` is the same FedAvg written by hand with the Driver API, as the guide does.

Run config (``--run-config KEY=VALUE``, defaults in :data:`task.DEFAULTS`): ``num-server-rounds`` (20),
``local-epochs`` (5), ``lr`` (0.5), ``alpha`` (0.5, Dirichlet label skew), ``seed`` (0), ``min-nodes``
(2), ``round-timeout`` (60.0 s), ``plot`` ("": if set, an accuracy-per-round PNG is written there).
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

from fl_async.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord
from fl_async.serverapp import Grid, ServerApp
from fl_async.serverapp.strategy import FedAvg

if __package__:  # loaded as examples.quickstart.server (from the repository root)
    from . import task
else:  # loaded as server (from this folder)
    import task

app = ServerApp()
DEFAULTS = task.DEFAULTS


class FedAvgEvaluateLast(FedAvg):
    """FedAvg whose federated evaluation (each node scores the model on its own data) runs after the last
    round only: a strategy is customized by overriding one step, as in newest Flower."""

    def __init__(self, last_round: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.last_round = last_round

    def configure_evaluate(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        if server_round != self.last_round:
            return []
        return super().configure_evaluate(server_round, arrays, config, grid)


@app.main()
def main(grid: Grid, context: Context) -> None:
    cfg = task.settings(context.run_config)
    num_rounds = int(cfg["num-server-rounds"])
    seed = int(cfg["seed"])
    x_test, y_test = task.load_test_set(seed)
    history: list[float] = []
    clock = [time.perf_counter()]

    def evaluate_fn(server_round: int, arrays: ArrayRecord) -> MetricRecord | None:
        """Centralized evaluation on the held-out test set, printed once per round."""
        if server_round == 0:
            return None
        loss, acc = task.evaluate(arrays.to_numpy_dict(), x_test, y_test)
        history.append(acc)
        now = time.perf_counter()
        took = now - clock[0]
        print(
            f"round {server_round:>3}/{num_rounds}: test accuracy {acc:6.2%}  loss {loss:.4f}  ({took:.2f} s)",
            flush=True,
        )
        clock[0] = now
        return MetricRecord({"accuracy": acc, "loss": loss})

    strategy = FedAvgEvaluateLast(
        num_rounds, min_available_nodes=int(cfg["min-nodes"]), min_train_nodes=1, min_evaluate_nodes=1
    )
    result = strategy.start(
        grid=grid,
        initial_arrays=ArrayRecord.from_numpy_dict(task.init_params(seed)),
        num_rounds=num_rounds,
        timeout=float(cfg["round-timeout"]),
        train_config=ConfigRecord(
            {
                "local-epochs": int(cfg["local-epochs"]),
                "lr": float(cfg["lr"]),
                "alpha": float(cfg["alpha"]),
                "seed": seed,
            }
        ),
        evaluate_config=ConfigRecord({"alpha": float(cfg["alpha"]), "seed": seed}),
        evaluate_fn=evaluate_fn,
    )
    failed = {r: c for r, c in result.train_replies.items() if c.results < c.sent}
    for server_round, counts in failed.items():
        print(f"round {server_round}: {counts}", flush=True)
    if result.evaluate_metrics_clientapp:
        last = max(result.evaluate_metrics_clientapp)
        nodes = result.evaluate_replies[last].results
        accuracy = float(result.evaluate_metrics_clientapp[last]["accuracy"])  # type: ignore[arg-type]
        print(f"federated evaluation on {nodes} nodes' own data: accuracy {accuracy:6.2%}", flush=True)
    if history:
        print(f"final test accuracy: {history[-1]:.2%} after {num_rounds} rounds (best {max(history):.2%})", flush=True)
    if cfg["plot"]:
        path = task.plot_accuracy(history, str(cfg["plot"]))
        print(f"accuracy plot written to {path}", flush=True)

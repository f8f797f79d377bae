"""The quickstart's ServerApp written by hand, like the Driver API guide: the same FedAvg as ``server.py``.

Each round: select the online nodes, push the global model with a ``train`` message to each (group id =
round number), collect the replies, average them weighted by example count (FedAvg), and evaluate the new
model on the held-out test set, printing one line per round on stdout. After the last round one
``evaluate`` message per node reports the accuracy on each node's own data. ``server.py`` does the same
with ``fl_async.serverapp.strategy.FedAvg``; this file shows the loop the strategy runs.

Run it with ``fl-async run examples.quickstart.server_loop:app examples.quickstart.client:app
--num-supernodes 10`` (from this folder: ``fl-async run server_loop:app client:app --num-supernodes 10``).

Run config (``--run-config KEY=VALUE``):

==================== ======== ==========================================================================
key                  default  meaning
==================== ======== ==========================================================================
num-server-rounds    20       rounds of FedAvg
local-epochs         5        epochs each node trains per round
lr                   0.5      SGD learning rate
alpha                0.5      Dirichlet label skew of the partitions (smaller: more non-IID)
seed                 0        data split and initial model seed
min-nodes            2        wait for at least this many online nodes before each round
round-timeout        60.0     seconds to wait for replies in a round
plot                 ""       if set, write an accuracy-per-round PNG to this path (needs matplotlib)
==================== ======== ==========================================================================
"""

from __future__ import annotations

import time

from fl_async.common import ConfigsRecord, Context, MessageType, ParametersRecord, RecordSet
from fl_async.server import Driver, ServerApp

if __package__:  # loaded as examples.quickstart.server_loop (from the repository root)
    from . import task
else:  # loaded as server_loop (from this folder)
    import task

app = ServerApp()


def _select_nodes(driver: Driver, min_nodes: int) -> list[int]:
    """All online node ids, waiting (on the link, no sleep loop) until at least ``min_nodes`` are online."""
    node_ids = list(driver.get_node_ids())
    if len(node_ids) < min_nodes:
        driver.wait_for_nodes(min_nodes, timeout=60.0)
        node_ids = list(driver.get_node_ids())
    if len(node_ids) < min_nodes:
        raise RuntimeError(f"only {len(node_ids)} node(s) online after 60 s, need {min_nodes}")
    return node_ids


def _model_record(params: dict) -> RecordSet:
    return RecordSet(parameters_records={"arrays": ParametersRecord.from_numpy_dict(params)})


@app.main()
def main(driver: Driver, context: Context) -> None:
    cfg = task.settings(context.run_config)
    num_rounds = int(cfg["num-server-rounds"])
    seed = int(cfg["seed"])
    params = task.init_params(seed)
    x_test, y_test = task.load_test_set(seed)
    train_config = ConfigsRecord(
        {"local-epochs": int(cfg["local-epochs"]), "lr": float(cfg["lr"]), "alpha": float(cfg["alpha"]), "seed": seed}
    )
    history: list[float] = []
    for server_round in range(1, num_rounds + 1):
        started = time.perf_counter()
        node_ids = _select_nodes(driver, int(cfg["min-nodes"]))

        content = _model_record(params)
        content.configs_records["config"] = ConfigsRecord({**train_config, "server-round": server_round})
        messages = [
            driver.create_message(
                content=content, message_type=MessageType.TRAIN, dst_node_id=node_id, group_id=str(server_round)
            )
            for node_id in node_ids
        ]
        replies = list(driver.send_and_receive(messages, timeout=float(cfg["round-timeout"])))
        results = [
            (
                r.content.parameters_records["arrays"].to_numpy_dict(),
                int(r.content.metrics_records["metrics"]["num-examples"]),
            )
            for r in replies
            if r.has_content()
        ]
        failures = [r.error for r in replies if r.has_error()]
        if not results:
            raise RuntimeError(f"round {server_round}: no node returned a model ({failures or 'no replies'})")
        params = task.fedavg(results)
        loss, acc = task.evaluate(params, x_test, y_test)
        history.append(acc)
        note = f", {len(failures)} error(s): {failures[0].reason}" if failures else ""
        print(
            f"round {server_round:>3}/{num_rounds}: test accuracy {acc:6.2%}  loss {loss:.4f}  "
            f"({len(results)}/{len(messages)} nodes, {time.perf_counter() - started:.2f} s{note})",
            flush=True,
        )

    # One federated evaluation: each node scores the final model on its own data.
    content = _model_record(params)
    content.configs_records["config"] = ConfigsRecord({**train_config, "server-round": num_rounds})
    messages = [
        driver.create_message(content=content, message_type=MessageType.EVALUATE, dst_node_id=n, group_id="final")
        for n in _select_nodes(driver, int(cfg["min-nodes"]))
    ]
    evals = [
        r.content.metrics_records["metrics"] for r in driver.send_and_receive(messages, timeout=60.0) if r.has_content()
    ]
    if evals:
        total = sum(int(m["num-examples"]) for m in evals)
        local = sum(float(m["accuracy"]) * int(m["num-examples"]) for m in evals) / max(total, 1)
        print(f"federated evaluation on {len(evals)} nodes' own data: accuracy {local:6.2%}", flush=True)
    print(f"final test accuracy: {history[-1]:.2%} after {num_rounds} rounds (best {max(history):.2%})", flush=True)

    if cfg["plot"]:
        path = task.plot_accuracy(history, str(cfg["plot"]))
        print(f"accuracy plot written to {path}", flush=True)

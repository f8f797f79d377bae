"""The quickstart's ClientApp: trains and evaluates the softmax regression on this node's partition.

The node's partition comes from its node config: ``partition-id`` and ``num-partitions`` (``fl-async run``
sets both; with ``fl-async supernode`` pass ``--node-config 'partition-id=0 num-partitions=10'``).
Training settings (epochs, learning rate, data seed, label skew) come with each message, from the server.
"""

from __future__ import annotations

import numpy as np

from examples.quickstart import task
from fl_async.client import ClientApp
from fl_async.common import Context, Message, MetricsRecord, ParametersRecord, RecordSet

app = ClientApp()


def _partition(message: Message, context: Context) -> tuple[int, np.ndarray, np.ndarray]:
    """``(partition_id, x, y)`` of this node."""
    try:
        pid = int(context.node_config["partition-id"])
        num = int(context.node_config["num-partitions"])
    except KeyError as exc:
        raise ValueError(
            f"node config has no {exc.args[0]!r}: start the node with --node-config 'partition-id=I num-partitions=N'"
        ) from None
    cfg = message.content.configs_records["config"]
    x, y = task.load_partition(pid, num, alpha=float(cfg["alpha"]), seed=int(cfg["seed"]))
    return pid, x, y


@app.train()
def train(message: Message, context: Context) -> Message:
    """Train the received model for ``local-epochs`` epochs; reply with the new model and example count."""
    pid, x, y = _partition(message, context)
    cfg = message.content.configs_records["config"]
    params = message.content.parameters_records["model"].to_numpy_dict()
    new_params, loss = task.train(
        params,
        x,
        y,
        epochs=int(cfg["local-epochs"]),
        lr=float(cfg["lr"]),
        seed=int(cfg["seed"]) * 1000 + int(message.metadata.group_id or 0) * 100 + pid,
    )
    return message.create_reply(
        RecordSet(
            parameters_records={"model": ParametersRecord.from_numpy_dict(new_params)},
            metrics_records={"metrics": MetricsRecord({"num-examples": len(y), "train-loss": loss})},
        )
    )


@app.evaluate()
def evaluate(message: Message, context: Context) -> Message:
    """Evaluate the received model on this node's partition; reply with loss, accuracy and example count."""
    _, x, y = _partition(message, context)
    params = message.content.parameters_records["model"].to_numpy_dict()
    loss, acc = task.evaluate(params, x, y)
    return message.create_reply(
        RecordSet(metrics_records={"metrics": MetricsRecord({"num-examples": len(y), "loss": loss, "accuracy": acc})})
    )

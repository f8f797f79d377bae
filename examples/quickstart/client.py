"""The quickstart's ClientApp: trains and evaluates the softmax regression on this node's partition.

Written as newest Flower's ClientApps are: the model arrives as ``msg.content["arrays"]`` (an ArrayRecord),
the settings as ``msg.content["config"]`` (a ConfigRecord, with ``server-round``), and the reply is
``Message(RecordDict({"arrays": ..., "metrics": ...}), reply_to=msg)``. Both ``server.py`` (the FedAvg
strategy) and ``server_loop.py`` (the hand-written loop) speak this format.

The node's partition comes from its node config: ``partition-id`` and ``num-partitions`` (``fl-async run``
sets both; with ``fl-async supernode`` pass ``--node-config 'partition-id=0 num-partitions=10'``).
"""

from __future__ import annotations

import numpy as np

from fl_async.app import ArrayRecord, Context, Message, MetricRecord, RecordDict
from fl_async.clientapp import ClientApp

if __package__:  # loaded as examples.quickstart.client (from the repository root)
    from . import task
else:  # loaded as client (from this folder)
    import task

app = ClientApp()


def _partition(msg: Message, context: Context) -> tuple[int, np.ndarray, np.ndarray]:
    """``(partition_id, x, y)`` of this node."""
    try:
        pid = int(context.node_config["partition-id"])
        num = int(context.node_config["num-partitions"])
    except KeyError as exc:
        raise ValueError(
            f"node config has no {exc.args[0]!r}: start the node with --node-config 'partition-id=I num-partitions=N'"
        ) from None
    cfg = msg.content["config"]
    x, y = task.load_partition(pid, num, alpha=float(cfg["alpha"]), seed=int(cfg["seed"]))
    return pid, x, y


@app.train()
def train(msg: Message, context: Context) -> Message:
    """Train the received model for ``local-epochs`` epochs; reply with the new model and example count."""
    pid, x, y = _partition(msg, context)
    cfg = msg.content["config"]
    params = msg.content["arrays"].to_numpy_dict()
    new_params, loss = task.train(
        params,
        x,
        y,
        epochs=int(cfg["local-epochs"]),
        lr=float(cfg["lr"]),
        seed=int(cfg["seed"]) * 1000 + int(cfg["server-round"]) * 100 + pid,
    )
    content = RecordDict(
        {
            "arrays": ArrayRecord.from_numpy_dict(new_params),
            "metrics": MetricRecord({"num-examples": len(y), "train-loss": loss}),
        }
    )
    return Message(content, reply_to=msg)


@app.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    """Evaluate the received model on this node's partition; reply with loss, accuracy and example count."""
    _, x, y = _partition(msg, context)
    loss, acc = task.evaluate(msg.content["arrays"].to_numpy_dict(), x, y)
    return Message(
        RecordDict({"metrics": MetricRecord({"num-examples": len(y), "loss": loss, "accuracy": acc})}), reply_to=msg
    )

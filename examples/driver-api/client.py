"""ClientApp for the Driver API example: trains the received model on the node's local data.

Answers each ``train`` message with the trained weights under ``"fancy_model_returned"`` (the key the
guide's server.py reads) and a ``"train_metrics"`` MetricsRecord. Run via
``fl-async supernode client:app --insecure --superlink 127.0.0.1:9092`` from this directory.
"""

from __future__ import annotations

import torch
from task import Net, load_local_data, parameters_to_pytorch_state_dict, pytorch_to_parameter_record, train

from fl_async.client import ClientApp
from fl_async.common import Context, Message, MetricsRecord, RecordSet

torch.set_num_threads(1)  # several nodes may share one machine

app = ClientApp()


@app.train()
def train_model(msg: Message, context: Context) -> Message:
    """Load ``my_model``, train for ``my_config["epochs"]`` epochs, reply with the new weights and metrics."""
    model = Net()
    model.load_state_dict(parameters_to_pytorch_state_dict(msg.content.parameters_records["my_model"]))
    epochs = int(msg.content.configs_records["my_config"]["epochs"])
    images, labels = load_local_data(context.node_id)
    train_loss = train(model, (images, labels), epochs)

    content = RecordSet()
    content.parameters_records["fancy_model_returned"] = pytorch_to_parameter_record(model)
    content.metrics_records["train_metrics"] = MetricsRecord({"train_loss": train_loss, "num_examples": len(images)})
    return msg.create_reply(content)

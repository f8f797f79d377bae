"""flower-numpy: A Flower / NumPy app (ClientApp, written for newest Flower; only `flwr` -> `fl_async`)."""

from task import evaluate as evaluate_fn
from task import load_data
from task import train as train_fn

from fl_async.app import ArrayRecord, Context, Message, MetricRecord, RecordDict
from fl_async.clientapp import ClientApp

# Flower ClientApp
app = ClientApp()


@app.train()
def train(msg: Message, context: Context):
    """Train the model on local data."""

    # Load the model as a list of numpy arrays
    params = msg.content["arrays"].to_numpy_ndarrays()

    # Load the data
    partition_id = context.node_config["partition-id"]
    num_partitions = context.node_config["num-partitions"]
    x, y = load_data(partition_id, num_partitions)

    # Call the training function
    new_params, train_loss = train_fn(
        params,
        x,
        y,
        context.run_config.get("local-epochs", 5),
        msg.content["config"]["lr"],
    )

    # Construct and return reply Message
    model_record = ArrayRecord(new_params)
    metrics = {
        "train_loss": train_loss,
        "num-examples": len(y),
    }
    metric_record = MetricRecord(metrics)
    content = RecordDict({"arrays": model_record, "metrics": metric_record})
    return Message(content=content, reply_to=msg)


@app.evaluate()
def evaluate(msg: Message, context: Context):
    """Evaluate the model on local data."""

    params = msg.content["arrays"].to_numpy_ndarrays()
    partition_id = context.node_config["partition-id"]
    num_partitions = context.node_config["num-partitions"]
    x, y = load_data(partition_id, num_partitions)

    eval_loss = evaluate_fn(params, x, y)

    metrics = {
        "eval_loss": eval_loss,
        "num-examples": len(y),
    }
    metric_record = MetricRecord(metrics)
    content = RecordDict({"metrics": metric_record})
    return Message(content=content, reply_to=msg)

# The "Use Driver API" guide's server.py, assembled from its snippets in order; only the imports differ
# (flwr -> fl_async, e.g. `from fl_async.common import Context, log`). One glue line the snippets leave
# implicit is marked "glue". Run via `fl-async server-app server:app --insecure --superlink 127.0.0.1:9091`
# from this directory, with nodes running client.py (see README.md).
import random
import time
from logging import INFO

import torch
from task import Net, parameters_to_pytorch_state_dict

from fl_async.common import DEFAULT_TTL, ConfigsRecord, Context, Message, MessageType, ParametersRecord, RecordSet, log
from fl_async.common import array_from_numpy as _ndarray_to_array
from fl_async.server import Driver, ServerApp

# Run via `flower-server-app server:app`
app = ServerApp()


def pytorch_to_parameter_record(pytorch_module: torch.nn.Module):
    state_dict = pytorch_module.state_dict()
    for k, v in state_dict.items():
        state_dict[k] = _ndarray_to_array(v.numpy())
    return ParametersRecord(state_dict)


@app.main()
def main(driver: Driver, context: Context) -> None:
    global_model = Net()
    num_rounds = 3

    num_client_nodes_per_round = 3

    for server_round in range(num_rounds):
        log(INFO, f"Commencing server round {server_round + 1}")

        # List of sampled node IDs in this round
        sampled_nodes: list[int] = []

        # Loop and wait until enough nodes are available.
        while True:
            all_node_ids = driver.get_node_ids()
            log(INFO, f"Got {len(all_node_ids)} client nodes: {all_node_ids}")
            if len(all_node_ids) >= num_client_nodes_per_round:
                # Sample client nodes
                sampled_nodes = random.sample(all_node_ids, num_client_nodes_per_round)
                break
            time.sleep(3)

        # Log sampled node IDs
        log(INFO, f"Sampled {len(sampled_nodes)} node IDs: {sampled_nodes}")

        node_ids = sampled_nodes  # glue: the guide's later snippets call the sampled list `node_ids`

        # Create a RecordSet
        recordset = RecordSet()

        # Add model parameters to the RecordSet
        recordset.parameters_records["my_model"] = pytorch_to_parameter_record(global_model)

        # Add a training configuration for 1 epoch only to the RecordSet
        recordset.configs_records["my_config"] = ConfigsRecord({"epochs": 1})

        messages = []
        for node_id in node_ids:
            message = driver.create_message(
                content=recordset,
                message_type=MessageType.TRAIN,
                dst_node_id=node_id,
                group_id=str(server_round),
                ttl=DEFAULT_TTL,
            )
            messages.append(message)

        message_ids = driver.push_messages(messages)

        # Wait for results, ignore empty message_ids
        message_ids = [message_id for message_id in message_ids if message_id != ""]

        all_replies: list[Message] = []
        while True:
            replies = driver.pull_messages(message_ids=message_ids)
            for res in replies:
                print(f"Got 1 {'result' if res.has_content() else 'error'}")
            all_replies += replies
            if len(all_replies) == len(message_ids):
                break
            print("Pulling messages...")
            time.sleep(3)

        # Filter correct results
        all_replies = [msg for msg in all_replies if msg.has_content()]
        print(f"Received {len(all_replies)} results")

        # Print metrics from nodes
        for reply in all_replies:
            print(reply.content.metrics_records)

        # Convert received parameters_records to state_dicts
        received_state_dicts = [
            parameters_to_pytorch_state_dict(reply.content.parameters_records["fancy_model_returned"])
            for reply in all_replies
        ]

"""The guide's workload written for asyncio: ``async def main`` with an ``AsyncDriver``.

Same rounds as server.py (sample 3 nodes, send the PyTorch model and a 1-epoch config, collect the
replies, print metrics, convert "fancy_model_returned" back to state_dicts), without any sleep:
``wait_for_nodes`` waits on the link until enough nodes are online, and ``receive`` yields each reply
the moment it arrives. Run via ``fl-async server-app server_async:app --insecure`` from this directory.
"""

from __future__ import annotations

import random
from logging import INFO

from task import Net, parameters_to_pytorch_state_dict, pytorch_to_parameter_record

from fl_async.common import DEFAULT_TTL, ConfigsRecord, Context, Message, MessageType, RecordSet, log
from fl_async.server import AsyncDriver, ServerApp

app = ServerApp()


@app.main()
async def main(driver: AsyncDriver, context: Context) -> None:
    """Run ``num-rounds`` (run config, default 3) rounds on ``nodes-per-round`` (default 3) sampled nodes."""
    global_model = Net()
    num_rounds = int(context.run_config.get("num-rounds", 3))
    num_client_nodes_per_round = int(context.run_config.get("nodes-per-round", 3))
    round_timeout = float(context.run_config.get("round-timeout", 60.0))

    for server_round in range(num_rounds):
        log(INFO, f"Commencing server round {server_round + 1}")

        # Wait on the link (no polling) until enough nodes are online, then sample.
        all_node_ids = await driver.wait_for_nodes(num_client_nodes_per_round, timeout=round_timeout)
        sampled_nodes = random.sample(all_node_ids, num_client_nodes_per_round)
        log(INFO, f"Sampled {len(sampled_nodes)} node IDs: {sampled_nodes}")

        recordset = RecordSet()
        recordset.parameters_records["my_model"] = pytorch_to_parameter_record(global_model)
        recordset.configs_records["my_config"] = ConfigsRecord({"epochs": 1})

        messages = [
            driver.create_message(
                content=recordset,
                message_type=MessageType.TRAIN,
                dst_node_id=node_id,
                group_id=str(server_round),
                ttl=DEFAULT_TTL,
            )
            for node_id in sampled_nodes
        ]
        message_ids = [mid for mid in await driver.push_messages(messages) if mid != ""]

        # Each reply as it arrives; the stream ends when all are in (or at the timeout).
        all_replies: list[Message] = []
        async with driver.receive(message_ids, timeout=round_timeout) as replies:
            async for res in replies:
                print(f"Got 1 {'result' if res.has_content() else 'error'}")
                all_replies.append(res)

        all_replies = [msg for msg in all_replies if msg.has_content()]
        print(f"Received {len(all_replies)} results")

        for reply in all_replies:
            print(reply.content.metrics_records)

        received_state_dicts = [
            parameters_to_pytorch_state_dict(reply.content.parameters_records["fancy_model_returned"])
            for reply in all_replies
        ]
        log(INFO, f"Round {server_round + 1}: {len(received_state_dicts)} state_dicts received")

"""Apps of the Ray backend benchmark (:mod:`benchmarks.ray_backend`): tiny rounds over every node.

``server``: waits until ``nodes`` (run config) nodes are online, then runs ``rounds`` rounds; each sends one
``train`` message with a 3-value config to every node and waits for all replies (``send_and_receive``). It
prints one line ``ROUNDS <json>`` on stdout: the wall time of each round in seconds and the replies per round.
``client``: an ``async def`` handler that answers at once with one metric (no work, no thread).
"""

from __future__ import annotations

import json
import time

from fl_async.client import ClientApp
from fl_async.common import ConfigsRecord, Context, Message, MessageType, MetricsRecord, RecordSet
from fl_async.server import Driver, ServerApp

server = ServerApp()
client = ClientApp()


@server.main()
def main(driver: Driver, context: Context) -> None:
    """Run ``rounds`` tiny rounds over all ``nodes`` nodes; print ``ROUNDS {"seconds": [...], "replies": [...]}``."""
    rounds = int(str(context.run_config.get("rounds", 10)))
    wanted = int(str(context.run_config.get("nodes", 1)))
    node_ids = list(driver.wait_for_nodes(wanted, timeout=300.0))
    seconds: list[float] = []
    replies: list[int] = []
    for r in range(1, rounds + 1):
        content = RecordSet(configs_records={"config": ConfigsRecord({"round": r, "lr": 0.1, "epochs": 1})})
        messages = [
            driver.create_message(content=content, message_type=MessageType.TRAIN, dst_node_id=n, group_id=str(r))
            for n in node_ids
        ]
        started = time.perf_counter()
        got = list(driver.send_and_receive(messages, timeout=300.0))
        seconds.append(time.perf_counter() - started)
        replies.append(sum(m.has_content() for m in got))
    print("ROUNDS " + json.dumps({"seconds": seconds, "replies": replies}), flush=True)


@client.train()  # type: ignore[untyped-decorator]
async def train(message: Message, context: Context) -> Message:
    """Answer at once with the round number."""
    r = int(str(message.content.configs_records["config"]["round"]))
    return message.create_reply(RecordSet(metrics_records={"m": MetricsRecord({"round": r})}))

"""Apps for the operations tests (loaded by reference from ``fl-async run`` subprocesses)."""

from __future__ import annotations

from fl_async.client import ClientApp
from fl_async.common import Context, Message, MessageType, RecordSet
from fl_async.server import Driver, ServerApp

client = ClientApp()


@client.train()
def train(msg: Message, context: Context) -> Message:
    return msg.create_reply(RecordSet())


server = ServerApp()


@server.main()
def main(driver: Driver, context: Context) -> None:
    nodes = driver.get_node_ids()
    for rnd in range(int(context.run_config.get("num-server-rounds", 3))):  # type: ignore[call-overload]
        msgs = [driver.create_message(RecordSet(), MessageType.TRAIN, n, group_id=str(rnd)) for n in nodes]
        assert len(driver.send_and_receive(msgs, timeout=30)) == len(nodes)


failing = ServerApp()


@failing.main()
def fail(driver: Driver, context: Context) -> None:
    with open("/nonexistent-dir-of-fl-async-tests/x"):  # raises FileNotFoundError, an OSError
        pass

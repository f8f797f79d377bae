"""Flower 1.10 ClientApp for the benchmarks: echo the received records back (run by ``flower-supernode``).

With ``BENCH_VICTIM=1`` the app instead touches ``BENCH_MARKER`` and blocks until the harness kills the node.
"""

from flwr.client import ClientApp
from flwr.common import Context, Message

from benchmarks.peer.appcfg import AppConfig, victim_block

app = ClientApp()


@app.train()
def train(msg: Message, context: Context) -> Message:
    """Reply with the instruction's own content (the model goes back to the server)."""
    cfg = AppConfig.from_env()
    if cfg.victim:
        victim_block(cfg)
    return msg.create_reply(content=msg.content)

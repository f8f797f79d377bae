"""fl-async ClientApp for the benchmarks: echo the received records back (run by ``fl-async supernode``).

The handler is ``async def`` (it does no blocking work), so it runs on the node's event loop. With
``BENCH_VICTIM=1`` it touches ``BENCH_MARKER`` and then blocks until the harness kills the node process.
"""

import anyio

from benchmarks.peer.appcfg import AppConfig
from fl_async.client import ClientApp
from fl_async.common import Context, Message

app = ClientApp()
_cfg = AppConfig.from_env()


@app.train()
async def train(msg: Message, context: Context) -> Message:
    """Reply with the instruction's own content (the model goes back to the server)."""
    if _cfg.victim:
        await anyio.Path(_cfg.marker).touch()
        await anyio.sleep(600)
    return msg.create_reply(content=msg.content)

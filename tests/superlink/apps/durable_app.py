"""A ClientApp for the durable-link process tests: echoes the instruction's content after sleeping
``configs_records["cfg"]["sleep"]`` seconds, and appends ``start <id>`` / ``done <id>`` lines to the file named by
the environment variable ``DURABLE_APP_LOG`` (so a test can count how often each instruction ran)."""

from __future__ import annotations

import os

import anyio

from fl_async.client import ClientApp
from fl_async.common import Context, Message

app = ClientApp()


def _note(what: str, message_id: str) -> None:
    path = os.environ.get("DURABLE_APP_LOG")
    if path:
        with open(path, "a") as f:
            f.write(f"{what} {message_id} {os.getpid()}\n")


@app.query()
async def query(msg: Message, ctx: Context) -> Message:
    _note("start", msg.metadata.message_id)
    cfg = msg.content.configs_records.get("cfg")
    sleep = float(cfg["sleep"]) if cfg is not None and "sleep" in cfg else 0.0
    if sleep:
        await anyio.sleep(sleep)
    _note("done", msg.metadata.message_id)
    return msg.create_reply(msg.content)

"""Newest Flower ClientApp for the benchmarks: echo the received records back.

The reply carries the instruction's own content (the model goes back to the server) plus a ``MetricRecord``
``"proc"`` with this ClientApp process's peak RSS (bytes) and CPU seconds so far: Flower 1.42 runs each message
in its own short-lived ``flwr-clientapp`` process, which the harness cannot sample. With ``BENCH_VICTIM=1``
(set on the victim's ``flower-supernode``; its SuperExec and ClientApp processes inherit the environment) the
app instead touches ``BENCH_MARKER`` and blocks until the harness kills the node.
"""

import resource

from flwr.app import Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from .appcfg import AppConfig, victim_block

app = ClientApp()


def _usage() -> MetricRecord:
    """Peak RSS (bytes, ``ru_maxrss`` is KiB on Linux) and CPU seconds of this process."""
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return MetricRecord({"rss": int(ru.ru_maxrss) * 1024, "cpu": float(ru.ru_utime + ru.ru_stime)})


@app.train()
def train(msg: Message, context: Context) -> Message:
    """Reply with the instruction's own content and this process's usage."""
    cfg = AppConfig.from_env()
    if cfg.victim:
        victim_block(cfg)
    content = RecordDict(dict(msg.content.items()))
    content["proc"] = _usage()
    return Message(content, reply_to=msg)

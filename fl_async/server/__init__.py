"""Server side of fl-async: ``ServerApp``, ``AsyncDriver`` and the blocking ``Driver`` facade.

Names and semantics follow Flower 1.9's ``flwr.server`` (``ServerApp``, ``Driver``), with the waiting
moved onto the SuperLink: ``pull_messages`` and ``send_and_receive`` long-poll instead of sleeping.
"""

from fl_async.server._base import DEFAULT_CALL_TIMEOUT, DEFAULT_PULL_TIMEOUT, DriverState
from fl_async.server.async_driver import MAX_CONCURRENT_POLLS, AsyncDriver, ReplyStream
from fl_async.server.driver import Driver, SyncReplyStream
from fl_async.server.server_app import ServerApp, async_run_server_app, run_server_app

__all__ = [
    "DEFAULT_CALL_TIMEOUT",
    "DEFAULT_PULL_TIMEOUT",
    "MAX_CONCURRENT_POLLS",
    "AsyncDriver",
    "Driver",
    "DriverState",
    "ReplyStream",
    "ServerApp",
    "SyncReplyStream",
    "async_run_server_app",
    "run_server_app",
]

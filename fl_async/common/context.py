"""``Context``: what a ServerApp or ClientApp knows about its run and keeps across messages."""

from __future__ import annotations

from dataclasses import dataclass, field

from fl_async.common.cancel import current_token
from fl_async.common.records import ConfigsRecordValues, RecordSet

__all__ = ["Context", "UserConfig"]

UserConfig = dict[str, ConfigsRecordValues]
"""``key -> int | float | str | bytes | bool`` (as Flower 1.10's ``UserConfig``)."""


@dataclass
class Context:
    """State of one run on one node (or on the server app), as Flower 1.10's ``Context``.

    Attributes:
        node_id: this node's id (0 on the server app side).
        node_config: the node's own settings (``--node-config k=v``).
        state: a :class:`RecordSet` the app may change; kept across messages of the same run.
        run_config: the run's settings (``--run-config k=v``).
        run_id: the run's id (as newest Flower's ``Context.run_id``; last here, so that positional use of
            Flower 1.10's order keeps working).
    """

    node_id: int = 0
    node_config: UserConfig = field(default_factory=dict)
    state: RecordSet = field(default_factory=RecordSet)
    run_config: UserConfig = field(default_factory=dict)
    run_id: int = 0

    @property
    def cancelled(self) -> bool:
        """Whether the message being handled (in the calling handler) was cancelled by the driver or a stopped run
        (fl-async's; not in Flower). A long-running sync handler can poll it and return early: the reply it then
        returns is dropped (the driver already got a CANCELLED error reply). An ``async def`` handler is
        cancelled at its next ``await`` instead. Always ``False`` outside a ClientApp call on a node."""
        return current_token().cancelled

"""A link restarting on its database: taking over what a durable store recovered.

:func:`resume` is :meth:`LinkState.resume <fl_async.superlink.state.LinkState.resume>` (the link calls it once, at
start, before serving): it re-arms node liveness (:meth:`~fl_async.superlink.nodes.NodeRegistry.resume`), the
answers of retried pushes (:meth:`~fl_async.superlink.pushes.PushMemory.recover`), instruction TTLs and reply
lifetimes, and answers what can no longer be delivered.
"""

from __future__ import annotations

import heapq
from typing import TYPE_CHECKING

from fl_async.common.message import ErrorCode
from fl_async.superlink.replies import synthetic_error_reply
from fl_async.superlink.store import Status

if TYPE_CHECKING:
    from fl_async.superlink.state import LinkState

__all__ = ["RESUME_GRACE", "resume"]

RESUME_GRACE = 30.0
"""Seconds every node gets after a link restart to show a sign of life (see :func:`resume`)."""


def resume(state: LinkState, grace: float = RESUME_GRACE) -> int:
    """Take over what a durable store loaded at start (a link restarting on its database); return how many
    instructions it recovered.

    Every node gets ``max(interval * patience, grace)`` seconds from now to show a sign of life (its
    reconnect backoff may exceed its liveness window); every run's idle TTL starts again now; unanswered
    instructions are queued again for their node (in push order, in-flight ones included: they were leased,
    not consumed) with their TTLs re-armed, or answered NODE_UNAVAILABLE if their node is gone; stored
    replies wait for their driver again. Instructions of runs that no longer exist are dropped.
    """
    now = state.clock()
    state.nodes.resume(now, grace)
    recovered = state.store.recovered_instructions()
    state.pushes.recover(recovered)
    for ins in recovered:
        if state.store.get_run(ins.run_id) is None:  # ended before the restart
            if ins.status is not Status.ANSWERED:
                state.store.set_reply(
                    ins.message_id, synthetic_error_reply(ins, ErrorCode.MESSAGE_EXPIRED, "run ended", now)
                )
            state.store.pop_reply(ins.message_id)
            continue
        if ins.status is Status.ANSWERED:
            assert ins.reply is not None
            state.payloads.retain(ins.reply)
            state.lifetimes.reply_stored(ins.message_id, now)
            continue
        state._unanswered += 1
        state.payloads.retain(ins.message)
        heapq.heappush(state._ttl_deadlines, (ins.expires_at, ins.message_id))
        if state.store.get_node(ins.node_id) is None:
            state._answer(
                ins,
                synthetic_error_reply(
                    ins, ErrorCode.NODE_UNAVAILABLE, f"node {ins.node_id} was gone when the link restarted", now
                ),
            )
    deadline = state.next_deadline()
    if deadline is not None:
        state.listener.deadline_added(deadline)
    return len(recovered)

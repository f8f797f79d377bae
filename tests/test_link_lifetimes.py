"""Sans-IO tests of state lifetimes: idle runs end and are freed, unpulled replies expire, dead nodes' work is
answered and its payload freed at once."""

from __future__ import annotations

import logging

import pytest

from fl_async.common.message import ErrorCode
from fl_async.proto.fl_async import v1 as pb
from fl_async.superlink import LinkConfig, LinkState
from tests.test_link_state import T0, Clock, Recorder, instruction, node, push_one, reply_to


def _state(clock: Clock, **kw: float) -> LinkState:
    return LinkState(heartbeat_patience=2.0, clock=clock, listener=Recorder(), **kw)


def test_idle_run_ends_and_is_freed(caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    state = _state(clock, run_idle_ttl=100.0)
    auth = node(state, interval=1000.0)
    run_id = state.create_run()
    state.touch_run(run_id)
    other = state.create_run()
    state.touch_run(other)
    in_flight = push_one(state, run_id, auth)
    queued = push_one(state, run_id, auth)
    assert [m.metadata.message_id for m in state.pull_instructions(auth, 1)] == [in_flight]
    clock.now = T0 + 60
    state.touch_run(other)  # the other run's driver is active
    assert state.next_deadline() is not None and state.next_deadline() <= T0 + 100
    clock.now = T0 + 101
    with caplog.at_level(logging.INFO, logger="fl_async.superlink"):
        state.advance()
    assert state.store.get_run(run_id) is None and state.store.get_run(other) is not None
    assert state.store.get_instruction(queued) is None and state.store.get_instruction(in_flight) is None
    assert not state.has_queued(auth.node_id) and state.stats().in_flight == 0
    assert "--run-idle-ttl" in caplog.text
    clock.now = T0 + 161
    state.advance()
    assert state.store.get_run(other) is None  # 100 s after its last call


def test_unpulled_reply_dropped_after_reply_ttl(caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    state = _state(clock, reply_ttl=50.0)
    auth = node(state, interval=1000.0)
    run_id = state.create_run()
    pulled, kept = push_one(state, run_id, auth), push_one(state, run_id, auth)
    instructions = state.pull_instructions(auth, 5)
    state.push_replies(auth, [reply_to(m, now=T0) for m in instructions])
    clock.now = T0 + 10
    assert [i.message_id for i in state.take_replies(run_id, [pulled])] == [pulled]
    clock.now = T0 + 51
    with caplog.at_level(logging.WARNING, logger="fl_async.superlink"):
        state.advance()
    assert state.store.get_instruction(kept) is None
    assert state.outstanding(run_id, [kept]) == ([], [])
    assert "--reply-ttl" in caplog.text and kept in caplog.text and pulled not in caplog.text


def test_dead_nodes_work_is_answered_and_its_payload_freed_at_once() -> None:
    clock = Clock()
    state = _state(clock)
    auth = node(state, interval=10.0)
    run_id = state.create_run()
    msg = instruction(run_id, auth.node_id)
    msg.content = pb.RecordSet(
        configs=[pb.ConfigsRecord(name="c", entries=[pb.ValueEntry(key="k", value=pb.Value(bytes=b"x" * 10_000))])]
    )
    ids, _ = state.push_instructions(run_id, [msg])
    state.delete_node(auth)
    ins = state.store.get_instruction(ids[0])
    assert ins is not None and ins.message.content is None  # the 10 KB payload is not held any more
    assert ins.reply is not None and ins.reply.error is not None
    assert ins.reply.error.code == ErrorCode.NODE_UNAVAILABLE


def test_lifetimes_must_exceed_the_poll_cap() -> None:
    with pytest.raises(ValueError, match="run_idle_ttl"):
        LinkConfig(run_idle_ttl=10.0, max_poll_timeout=30.0)
    assert LinkConfig(run_idle_ttl=10.0, reply_ttl=10.0, max_poll_timeout=5.0).run_idle_ttl == 10.0


async def test_nodes_waiters_woken_only_when_their_threshold_is_reached() -> None:
    from fl_async.superlink.wakeups import Wakeups

    count = [0]
    wakeups = Wakeups(node_count=lambda: count[0])
    waiters = [wakeups.wait_nodes(n) for n in (1, 2, 2, 5, 1000)]
    dropped = wakeups.wait_nodes(2)
    wakeups.drop_nodes(dropped)
    count[0] = 1
    wakeups.nodes_changed()
    assert [w.event.is_set() for w in waiters] == [True, False, False, False, False]
    count[0] = 4
    wakeups.nodes_changed()
    assert [w.event.is_set() for w in waiters] == [True, True, True, False, False]
    assert not dropped.event.is_set()
    wakeups.close()
    assert all(w.event.is_set() for w in waiters)

"""Sans-IO tests of the SuperLink's rules (no sockets, injected clock)."""

from __future__ import annotations

import logging
import math

import numpy as np
import pytest

from fl_async.codec import message_to_proto
from fl_async.common.message import ErrorCode, Message, Metadata
from fl_async.common.records import Array, ParametersRecord, RecordSet
from fl_async.proto.fl_async import v1 as pb
from fl_async.superlink import SYNTHETIC_REPLY_TTL, DigestRefCounts, LinkConfig, LinkState
from fl_async.superlink.state import (
    InvalidArgumentError,
    NotFoundError,
    PermissionDeniedError,
    UnauthenticatedError,
)

T0 = 1_800_000_000.0


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


class Recorder:
    """A LinkListener recording what it is told."""

    def __init__(self) -> None:
        self.queued: list[int] = []
        self.ready: list[str] = []
        self.nodes_changed_count = 0
        self.deadlines: list[float] = []

    def instructions_queued(self, node_id: int) -> None:
        self.queued.append(node_id)

    def replies_ready(self, message_ids):
        self.ready.extend(message_ids)

    def nodes_changed(self) -> None:
        self.nodes_changed_count += 1

    def deadline_added(self, at: float) -> None:
        self.deadlines.append(at)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def listener() -> Recorder:
    return Recorder()


@pytest.fixture
def state(clock: Clock, listener: Recorder) -> LinkState:
    return LinkState(
        heartbeat_patience=2.0, min_heartbeat_interval=0.5, max_heartbeat_interval=100.0, clock=clock, listener=listener
    )


def node(state: LinkState, interval: float = 1.0) -> pb.NodeAuth:
    node_id, token, _ = state.create_node(interval)
    return pb.NodeAuth(node_id=node_id, token=token)


def instruction(run_id: int, dst: int, *, ttl: float = 60.0, created_at: float = T0, **md: object) -> pb.Message:
    fields = dict(run_id=run_id, dst_node_id=dst, ttl=ttl, message_type="train", created_at=created_at, group_id="g1")
    fields.update(md)
    return pb.Message(metadata=pb.Metadata(**fields), content=pb.RecordSet())


def reply_to(ins: pb.Message, *, now: float = T0, **md: object) -> pb.Message:
    m = ins.metadata
    fields = dict(
        run_id=m.run_id,
        src_node_id=m.dst_node_id,
        dst_node_id=0,
        reply_to_message=m.message_id,
        ttl=30.0,
        message_type=m.message_type,
        created_at=now,
        group_id=m.group_id,
    )
    fields.update(md)
    return pb.Message(metadata=pb.Metadata(**fields), content=pb.RecordSet())


def push_one(state: LinkState, run_id: int, auth: pb.NodeAuth, **kw: object) -> str:
    ids, reasons = state.push_instructions(run_id, [instruction(run_id, auth.node_id, **kw)])
    assert ids[0], reasons
    return ids[0]


# ------------------------------------------------------------------------------------------ config


@pytest.mark.parametrize(
    "field,value,needle",
    [
        ("heartbeat_patience", 0.5, "heartbeat_patience"),
        ("min_heartbeat_interval", 0, "min_heartbeat_interval"),
        ("max_heartbeat_interval", 0.01, "max_heartbeat_interval"),
        ("max_poll_timeout", math.nan, "max_poll_timeout"),
        ("max_request_bytes", 0, "max_request_bytes"),
        ("backlog", -1, "backlog"),
        ("disconnect_grace", 0, "disconnect_grace"),
        ("disconnect_grace", math.inf, "disconnect_grace"),
        ("driver_api_address", "nope", "driver_api_address"),
        ("fleet_api_address", "host:99999", "fleet_api_address"),
        ("tls", "cert.pem", "tls"),
        ("blob_api_address", "h:x", "blob_api_address"),
        ("blob_header_timeout", 0, "blob_header_timeout"),
        ("blob_header_timeout", math.inf, "blob_header_timeout"),
    ],
)
def test_config_validation(field: str, value: object, needle: str) -> None:
    with pytest.raises(ValueError, match=needle):
        LinkConfig(**{field: value})


def test_config_defaults_are_flowers_ports() -> None:
    cfg = LinkConfig()
    assert cfg.driver_api_address.endswith(":9091") and cfg.fleet_api_address.endswith(":9092")
    assert cfg.backlog == 8192 and cfg.max_request_bytes == 64 * 2**20
    assert cfg.disconnect_grace == 3.0
    assert LinkState.from_config(LinkConfig(disconnect_grace=0.5)).disconnect_grace == 0.5


def test_config_blob_api_address_default_and_conflicts() -> None:
    """The blob data path defaults to the Fleet API's host with port 9093 (port 0 with a Fleet API on port 0);
    addresses sharing a port are refused before anything binds."""
    assert LinkConfig().blob_api_address == "0.0.0.0:9093"
    assert LinkConfig(fleet_api_address="10.0.0.1:7000").blob_api_address == "10.0.0.1:9093"
    assert LinkConfig(fleet_api_address="127.0.0.1:0").blob_api_address == "127.0.0.1:0"
    assert LinkConfig(blob_api_address="127.0.0.1:0").blob_api_address == "127.0.0.1:0"
    assert LinkConfig().blob_header_timeout == 10.0
    with pytest.raises(ValueError, match="driver_api_address .* and fleet_api_address .* use the same port"):
        LinkConfig(driver_api_address="127.0.0.1:9500", fleet_api_address="0.0.0.0:9500")
    with pytest.raises(ValueError, match="blob_api_address .* same port"):
        LinkConfig(blob_api_address="127.0.0.1:9091")
    LinkConfig(driver_api_address="127.0.0.1:9500", fleet_api_address="127.0.0.2:9500")  # other hosts: fine
    LinkConfig(driver_api_address="127.0.0.1:0", fleet_api_address="127.0.0.1:0", blob_api_address="127.0.0.1:0")


# ------------------------------------------------------------------------------------------ runs


def test_runs(state: LinkState) -> None:
    from fl_async.codec import config_to_proto

    run_id = state.create_run("app", "1.0", config_to_proto({"lr": 0.1, "rounds": 3}))
    assert run_id != 0
    run = state.get_run(run_id)
    assert (run.run_id, run.fab_id, run.fab_version) == (run_id, "app", "1.0")
    assert [e.key for e in run.run_config] == ["lr", "rounds"]
    with pytest.raises(NotFoundError, match="unknown run 42"):
        state.get_run(42)
    with pytest.raises(NotFoundError):
        state.online_node_ids(42)
    with pytest.raises(InvalidArgumentError, match="run_config"):
        state.create_run("", "", [pb.ValueEntry(key="x", value=pb.Value())])
    assert state.stats().runs == 1


# ------------------------------------------------------------------------------------------ nodes, auth


def test_create_node_ids_tokens_and_clamping(state: LinkState) -> None:
    seen = set()
    for _ in range(50):
        node_id, token, granted = state.create_node(1.0)
        assert 1 <= node_id <= 2**64 - 1 and node_id not in seen
        assert isinstance(token, bytes) and len(token) == 32
        assert granted == 1.0
        seen.add(node_id)
    assert state.create_node(0.001)[2] == 0.5
    assert state.create_node(1e9)[2] == 100.0
    for bad in (0.0, -1.0, math.nan, math.inf):
        with pytest.raises(InvalidArgumentError, match="heartbeat_interval"):
            state.create_node(bad)


def test_authentication(state: LinkState) -> None:
    auth = node(state)
    assert state.authenticate(auth).node_id == auth.node_id
    with pytest.raises(UnauthenticatedError, match="no NodeAuth"):
        state.authenticate(None)
    with pytest.raises(UnauthenticatedError, match="unknown node"):
        state.authenticate(pb.NodeAuth(node_id=auth.node_id + 1, token=auth.token))
    with pytest.raises(UnauthenticatedError, match="wrong token"):
        state.authenticate(pb.NodeAuth(node_id=auth.node_id, token=b"x" * 32))
    for call in (
        lambda a: state.heartbeat(a, 1.0),
        lambda a: state.pull_instructions(a, 1),
        lambda a: state.push_replies(a, []),
        state.delete_node,
    ):
        with pytest.raises(UnauthenticatedError):
            call(pb.NodeAuth(node_id=auth.node_id, token=b"wrong"))
    assert state.stats().nodes == 1  # nothing changed


def test_liveness_heartbeat_and_offline(state: LinkState, clock: Clock, listener: Recorder) -> None:
    run_id = state.create_run()
    a, b = node(state, 1.0), node(state, 10.0)
    assert sorted(state.online_node_ids(run_id)) == sorted([a.node_id, b.node_id])
    assert state.next_deadline() == T0 + 2.0  # interval 1 s x patience 2
    clock.now += 1.5
    assert state.heartbeat(a, 1.0) == 1.0  # online until T0 + 3.5
    clock.now = T0 + 3.4
    assert a.node_id in state.online_node_ids(run_id)
    clock.now = T0 + 3.5
    changes = listener.nodes_changed_count
    assert state.online_node_ids(run_id) == [b.node_id]
    assert listener.nodes_changed_count == changes + 1
    with pytest.raises(UnauthenticatedError, match="register again"):
        state.heartbeat(a, 1.0)  # an offline node must register again
    assert node(state).node_id != a.node_id


def test_pull_is_a_sign_of_life(state: LinkState, clock: Clock) -> None:
    run_id = state.create_run()
    a = node(state, 1.0)
    for _ in range(5):
        clock.now += 1.9
        assert state.pull_instructions(a, 1) == []
    assert state.online_node_ids(run_id) == [a.node_id]


def test_held_pull_keeps_node_online_then_countdown_restarts(state: LinkState, clock: Clock) -> None:
    run_id = state.create_run()
    a = node(state, 1.0)
    state.pull_instructions(a, 1)
    state.begin_pull(a.node_id)
    clock.now += 30
    state.advance()
    assert state.online_node_ids(run_id) == [a.node_id]
    state.end_pull(a.node_id)  # e.g. the connection closed: countdown from now
    assert state.next_deadline() == clock.now + 2.0
    clock.now += 2.0
    assert state.online_node_ids(run_id) == []


@pytest.mark.parametrize("how", ["offline", "deleted"])
def test_node_loss_answers_queued_and_in_flight_at_once(
    state: LinkState, clock: Clock, listener: Recorder, how: str
) -> None:
    run_id = state.create_run()
    a, other = node(state, 1.0), node(state, 50.0)
    queued = push_one(state, run_id, a)
    in_flight = push_one(state, run_id, a)
    unrelated = push_one(state, run_id, other)
    [handed] = state.pull_instructions(a, 1)
    assert handed.metadata.message_id == queued
    state.pull_instructions(a, 1)
    late = push_one(state, run_id, a)
    assert state.stats().per_node[a.node_id] == (1, 2)
    if how == "offline":
        clock.now += 2.0
        state.advance()
        reason = "offline"
    else:
        state.delete_node(a)
        reason = "deleted"
    ids = [queued, in_flight, late]
    assert set(listener.ready) == set(ids)
    assert a.node_id in listener.queued  # held pulls of that node are woken
    ready, waiting = state.outstanding(run_id, [*ids, unrelated])
    assert ready == ids and waiting == [unrelated]
    replies = {ins.message_id: ins.reply for ins in state.take_replies(run_id, ids)}
    for mid in ids:
        r = replies[mid]
        assert r.error.code == ErrorCode.NODE_UNAVAILABLE and reason in r.error.reason
        md = r.metadata
        assert md.message_id and md.message_id != mid
        assert (md.src_node_id, md.dst_node_id, md.reply_to_message) == (a.node_id, 0, mid)
        assert (md.run_id, md.group_id, md.message_type) == (run_id, "g1", "train")
        assert md.created_at == clock.now and 0 < md.ttl == SYNTHETIC_REPLY_TTL
        assert r.content is None
    with pytest.raises(UnauthenticatedError):  # its late reply is refused: it must register again
        state.push_replies(a, [reply_to(handed)])
    ids2, reasons = state.push_instructions(run_id, [instruction(run_id, a.node_id)])
    assert ids2 == [""] and "unknown or offline" in reasons[0]


# ------------------------------------------------------------------------------------------ TTL


def test_ttl_queued_instruction_expires_and_is_never_handed_out(
    state: LinkState, clock: Clock, listener: Recorder
) -> None:
    run_id = state.create_run()
    a = node(state, 50.0)
    short = push_one(state, run_id, a, ttl=5.0)
    long = push_one(state, run_id, a, ttl=60.0)
    assert state.next_deadline() == T0 + 5.0
    clock.now = T0 + 5.0
    got = state.pull_instructions(a, 10)
    assert [m.metadata.message_id for m in got] == [long]
    assert listener.ready == [short]
    [ins] = state.take_replies(run_id, [short])
    assert ins.reply.error.code == ErrorCode.MESSAGE_EXPIRED
    assert "ttl of 5 s" in ins.reply.error.reason
    assert ins.reply.metadata.reply_to_message == short and ins.reply.metadata.ttl > 0


def test_ttl_in_flight_then_late_reply_refused(state: LinkState, clock: Clock) -> None:
    run_id = state.create_run()
    a = node(state, 50.0)
    mid = push_one(state, run_id, a, ttl=5.0)
    [msg] = state.pull_instructions(a, 1)
    clock.now = T0 + 4.0
    ok = push_one(state, run_id, a, ttl=5.0, created_at=clock.now)
    clock.now = T0 + 6.0
    state.advance()
    ids, reasons = state.push_replies(a, [reply_to(msg, now=clock.now)])
    assert ids == [""] and "expired" in reasons[0]
    [ins] = state.take_replies(run_id, [mid])
    assert ins.reply.error.code == ErrorCode.MESSAGE_EXPIRED
    # a reply while the instruction is alive is accepted
    [msg2] = state.pull_instructions(a, 1)
    assert msg2.metadata.message_id == ok
    ids, reasons = state.push_replies(a, [reply_to(msg2, now=clock.now)])
    assert ids[0] and reasons == [""]


# ------------------------------------------------------------------------------------------ validation


def test_push_validation_positions(state: LinkState, caplog: pytest.LogCaptureFixture) -> None:
    run_id = state.create_run()
    other_run = state.create_run()
    a = node(state, 50.0)
    both = instruction(run_id, a.node_id)
    both.error = pb.Error(code=1, reason="x")
    neither = instruction(run_id, a.node_id)
    neither.content = None
    cases = [
        (instruction(run_id, a.node_id), ""),
        (instruction(run_id, 12345), "unknown or offline"),
        (instruction(run_id, a.node_id, ttl=0.0), "ttl"),
        (instruction(run_id, a.node_id, ttl=-1.0), "ttl"),
        (instruction(run_id, a.node_id, ttl=math.nan), "ttl"),
        (instruction(other_run, a.node_id), "differs from the request's run_id"),
        (instruction(run_id, a.node_id, message_id="abc"), "message_id must be empty"),
        (pb.Message(content=pb.RecordSet()), "no metadata"),
        (both, "exactly one of content and error"),
        (neither, "exactly one of content and error"),
        (instruction(run_id, a.node_id, created_at=T0 - 100, ttl=50.0), "already expired"),
        (instruction(run_id, a.node_id, src_node_id=7), "src_node_id"),
        (instruction(run_id, 0), "dst_node_id"),
        (instruction(run_id, a.node_id, message_type=""), "message_type"),
        (instruction(run_id, a.node_id, reply_to_message="x"), "reply_to_message"),
        (instruction(run_id, a.node_id), ""),
    ]
    with caplog.at_level(logging.WARNING, logger="fl_async.superlink"):
        ids, reasons = state.push_instructions(run_id, [m for m, _ in cases])
    assert len(ids) == len(reasons) == len(cases)
    for (_, needle), mid, reason in zip(cases, ids, reasons, strict=True):
        if needle:
            assert mid == "" and needle in reason, (needle, reason)
            assert reason in caplog.text
        else:
            assert mid and reason == ""
    assert state.stats().queued == 2
    ids, reasons = state.push_instructions(424242, [instruction(424242, a.node_id)])
    assert ids == [""] and "unknown run 424242" in reasons[0]
    assert state.push_instructions(run_id, []) == ([], [])


def test_push_assigns_unique_uuid_ids(state: LinkState) -> None:
    import uuid

    run_id = state.create_run()
    a = node(state, 50.0)
    ids, _ = state.push_instructions(run_id, [instruction(run_id, a.node_id) for _ in range(100)])
    assert len(set(ids)) == 100 and all(uuid.UUID(i) for i in ids)


def test_reply_validation_and_authorization(state: LinkState, listener: Recorder) -> None:
    run_id = state.create_run()
    a, b = node(state, 50.0), node(state, 50.0)
    push_one(state, run_id, a)
    push_one(state, run_id, b)
    [ins_a] = state.pull_instructions(a, 1)
    [ins_b] = state.pull_instructions(b, 1)
    before = state.stats()
    # answering b's instruction, or claiming b as source: PERMISSION_DENIED, nothing changes (even the good one)
    with pytest.raises(PermissionDeniedError, match="not addressed to node"):
        state.push_replies(a, [reply_to(ins_a), reply_to(ins_b, src_node_id=a.node_id)])
    with pytest.raises(PermissionDeniedError, match="is not the calling node"):
        state.push_replies(a, [reply_to(ins_a), reply_to(ins_a, src_node_id=b.node_id)])
    assert state.stats() == before and listener.ready == []
    both = reply_to(ins_a)
    both.error = pb.Error(code=2, reason="boom")
    cases = [
        (reply_to(ins_a, message_id="set"), "message_id must be empty"),
        (reply_to(ins_a, dst_node_id=5), "dst_node_id"),
        (reply_to(ins_a, reply_to_message=""), "reply_to_message"),
        (reply_to(ins_a, reply_to_message="nope"), "unknown instruction"),
        (reply_to(ins_a, run_id=run_id + 1), "differs from the instruction's run_id"),
        (reply_to(ins_a, ttl=0.0), "ttl"),
        (both, "exactly one"),
        (pb.Message(content=pb.RecordSet()), "no metadata"),
        (reply_to(ins_a), ""),
        (reply_to(ins_a), "already answered"),
    ]
    ids, reasons = state.push_replies(a, [m for m, _ in cases])
    for (_, needle), mid, reason in zip(cases, ids, reasons, strict=True):
        if needle:
            assert mid == "" and needle in reason, (needle, reason)
        else:
            assert mid and not reason
    assert listener.ready == [ins_a.metadata.message_id]
    assert state.push_replies(a, []) == ([], [])


def test_error_reply_from_node_is_accepted(state: LinkState) -> None:
    run_id = state.create_run()
    a = node(state, 50.0)
    mid = push_one(state, run_id, a)
    [ins] = state.pull_instructions(a, 1)
    err = reply_to(ins)
    err.content = None
    err.error = pb.Error(code=ErrorCode.CLIENT_APP_RAISED_EXCEPTION, reason="boom")
    ids, _ = state.push_replies(a, [err])
    [got] = state.take_replies(run_id, [mid])
    assert got.reply.metadata.message_id == ids[0] and got.reply.error.reason == "boom"


# ------------------------------------------------------------------------------------------ delivery


def test_pull_instructions_fifo_and_max(state: LinkState) -> None:
    run_id = state.create_run()
    a = node(state, 50.0)
    ids = [push_one(state, run_id, a) for _ in range(5)]
    assert [m.metadata.message_id for m in state.pull_instructions(a, 0)] == ids[:1]  # 0 means 1
    assert [m.metadata.message_id for m in state.pull_instructions(a, 3)] == ids[1:4]
    assert [m.metadata.message_id for m in state.pull_instructions(a, 10)] == ids[4:]
    assert state.pull_instructions(a, 10) == []
    assert state.stats().per_node[a.node_id] == (0, 5)


def test_requeue_after_failed_send(state: LinkState, listener: Recorder) -> None:
    run_id = state.create_run()
    a = node(state, 50.0)
    ids = [push_one(state, run_id, a) for _ in range(3)]
    taken = state.pull_instructions(a, 2)
    listener.queued.clear()
    state.requeue(a.node_id, taken)
    assert listener.queued == [a.node_id]
    assert [m.metadata.message_id for m in state.pull_instructions(a, 5)] == ids


def test_replies_delivered_exactly_once(state: LinkState) -> None:
    run_id = state.create_run()
    other_run = state.create_run()
    a = node(state, 50.0)
    ids = [push_one(state, run_id, a) for _ in range(3)]
    instructions = state.pull_instructions(a, 3)
    state.push_replies(a, [reply_to(m) for m in instructions[:2]])
    assert state.outstanding(run_id, ["", "unknown", *ids, ids[0]]) == (ids[:2], ids[2:])
    assert state.outstanding(other_run, ids) == ([], [])  # foreign run: ignored
    assert state.take_replies(other_run, ids) == []
    first = state.take_replies(run_id, ["", "bogus", *ids])
    assert [i.message_id for i in first] == ids[:2]
    assert state.take_replies(run_id, ids) == []
    state.restore_replies(first)  # the response could not be sent
    again = state.take_replies(run_id, ids)
    assert [i.message_id for i in again] == ids[:2]
    assert state.take_replies(run_id, ids) == []
    assert state.stats().replies == 0
    with pytest.raises(NotFoundError):
        state.take_replies(999, ids)


def test_wakeup_notifications(state: LinkState, clock: Clock, listener: Recorder) -> None:
    run_id = state.create_run()
    a, b = node(state, 1.0), node(state, 1.0)
    assert listener.nodes_changed_count == 2
    assert listener.deadlines[-1] == T0 + 2.0
    state.push_instructions(run_id, [instruction(run_id, a.node_id, ttl=3.0), instruction(run_id, b.node_id)])
    assert sorted(listener.queued) == sorted([a.node_id, b.node_id])
    assert listener.deadlines[-1] == T0 + 3.0
    [m] = state.pull_instructions(a, 1)
    state.push_replies(a, [reply_to(m)])
    assert listener.ready == [m.metadata.message_id]


def test_stats_and_per_node(state: LinkState) -> None:
    run_id = state.create_run()
    a, b = node(state, 50.0), node(state, 50.0)
    for _ in range(3):
        push_one(state, run_id, a)
    push_one(state, run_id, b)
    [m] = state.pull_instructions(a, 1)
    state.push_replies(a, [reply_to(m)])
    state.pull_instructions(a, 1)
    s = state.stats()
    assert (s.runs, s.nodes, s.queued, s.in_flight, s.replies) == (1, 2, 2, 1, 1)
    assert s.per_node == {a.node_id: (1, 1), b.node_id: (1, 0)}


def test_external_digests_are_ref_counted(clock: Clock) -> None:
    payloads = DigestRefCounts()
    state = LinkState(clock=clock, payloads=payloads)
    run_id = state.create_run()
    a = node(state, 50.0)
    arr = Array.from_numpy(np.arange(8, dtype=np.float32))
    content = RecordSet(parameters_records={"w": ParametersRecord({"x": arr})})
    md = Metadata(run_id, "", 0, a.node_id, "", "g", 60.0, "train")
    msg = Message(md, content=content)
    msg.metadata.created_at = T0
    blobs: dict = {}
    wire = [message_to_proto(msg, blobs=blobs, inline_limit=0) for _ in range(2)]
    [digest] = blobs
    ids, _ = state.push_instructions(run_id, wire)
    assert payloads.refs == {digest: 2} and payloads.nbytes == {digest: 32}
    [ins] = state.pull_instructions(a, 1)
    rep = reply_to(ins)
    rep.content = wire[1].content  # the node replies with the same array
    state.push_replies(a, [rep])
    assert payloads.refs == {digest: 2}  # one instruction released, one reply retained
    state.take_replies(run_id, ids)
    assert payloads.refs == {digest: 1}
    state.delete_node(a)  # the second instruction becomes NODE_UNAVAILABLE
    assert payloads.refs == {}


def test_deadline_heaps_stay_bounded(state: LinkState) -> None:
    run_id = state.create_run()
    a = node(state, 50.0)
    for _ in range(30):  # many rounds of long-TTL instructions answered at once, many pulls
        ids = [push_one(state, run_id, a, ttl=3600.0) for _ in range(100)]
        msgs = state.pull_instructions(a, 100)
        state.push_replies(a, [reply_to(m) for m in msgs])
        assert len(state.take_replies(run_id, ids)) == 100
    assert len(state._ttl_deadlines) <= 2 * 0 + 1024 + 100
    assert len(state.nodes.deadlines) <= 4 * state.stats().nodes + 64 + 1
    assert state.next_deadline() == pytest.approx(T0 + 100.0)  # only the node's liveness is left


# ------------------------------------------------------------------------------------------ connection loss


@pytest.fixture
def lossy(clock: Clock, listener: Recorder) -> LinkState:
    """Heartbeat window 30 s x 2 = 60 s, reconnect grace 3 s."""
    return LinkState(heartbeat_patience=2.0, disconnect_grace=3.0, clock=clock, listener=listener)


def test_lost_connection_node_offline_after_grace(lossy: LinkState, clock: Clock, listener: Recorder) -> None:
    run_id = lossy.create_run()
    a, b = node(lossy, 30.0), node(lossy, 30.0)
    queued, in_flight = push_one(lossy, run_id, a), push_one(lossy, run_id, a)
    lossy.pull_instructions(a, 1)  # busy with it in a handler, no pull held
    clock.now += 10
    lossy.connection_lost([a.node_id, 12345])  # an unknown id is ignored
    assert lossy.disconnected() == {a.node_id: T0 + 13}
    assert listener.deadlines[-1] == T0 + 13 and lossy.next_deadline() == T0 + 13
    clock.now = T0 + 12.999
    assert sorted(lossy.online_node_ids(run_id)) == sorted([a.node_id, b.node_id])
    clock.now = T0 + 13
    assert lossy.online_node_ids(run_id) == [b.node_id]  # long before the heartbeat window (T0 + 60)
    replies = {ins.message_id: ins.reply for ins in lossy.take_replies(run_id, [queued, in_flight])}
    assert set(replies) == {queued, in_flight}
    for r in replies.values():
        assert r.error.code == ErrorCode.NODE_UNAVAILABLE and "connection was lost" in r.error.reason
    assert lossy.disconnected() == {}
    with pytest.raises(UnauthenticatedError):
        lossy.heartbeat(a, 30.0)


@pytest.mark.parametrize("call", ["heartbeat", "pull", "push_replies", "authenticate"])
def test_any_authenticated_call_within_grace_keeps_the_node(lossy: LinkState, clock: Clock, call: str) -> None:
    run_id = lossy.create_run()
    a = node(lossy, 30.0)
    mid = push_one(lossy, run_id, a)
    [ins] = lossy.pull_instructions(a, 1)
    lossy.connection_lost([a.node_id])
    clock.now += 2.9
    if call == "heartbeat":
        lossy.heartbeat(a, 30.0)
    elif call == "pull":
        lossy.pull_instructions(a, 1)
    elif call == "push_replies":
        assert lossy.push_replies(a, [reply_to(ins)])[0][0]
    else:
        lossy.authenticate(a)  # e.g. GetRun: not a sign of life, but the node is back
    assert lossy.disconnected() == {}
    clock.now += 10  # far past the grace
    assert lossy.online_node_ids(run_id) == [a.node_id]
    if call != "push_replies":
        assert lossy.outstanding(run_id, [mid]) == ([], [mid])  # still waiting for the node, not unavailable
    until = lossy.store.get_node(a.node_id).online_until
    assert until == (T0 if call == "authenticate" else T0 + 2.9) + 60  # its normal deadline
    clock.now = until
    assert lossy.online_node_ids(run_id) == []


def test_held_pull_on_another_connection_keeps_the_node(lossy: LinkState, clock: Clock) -> None:
    run_id = lossy.create_run()
    a = node(lossy, 30.0)
    lossy.pull_instructions(a, 1)
    lossy.begin_pull(a.node_id)  # held on a connection that is still open
    lossy.connection_lost([a.node_id])
    clock.now += 5
    assert lossy.online_node_ids(run_id) == [a.node_id] and lossy.disconnected() == {}
    lossy.end_pull(a.node_id)
    clock.now += 60
    assert lossy.online_node_ids(run_id) == []


def test_lost_again_later_uses_the_latest_grace(lossy: LinkState, clock: Clock) -> None:
    run_id = lossy.create_run()
    a = node(lossy, 30.0)
    lossy.connection_lost([a.node_id])
    clock.now += 2
    lossy.heartbeat(a, 30.0)  # back on a new connection...
    lossy.connection_lost([a.node_id])  # ...which is lost too
    clock.now += 1.5  # the first grace has ended: its stale entry does nothing
    assert lossy.online_node_ids(run_id) == [a.node_id]
    assert lossy.next_deadline() == T0 + 5
    clock.now = T0 + 5
    assert lossy.online_node_ids(run_id) == []


def test_heartbeat_window_ending_first_leaves_no_grace(lossy: LinkState, clock: Clock) -> None:
    run_id = lossy.create_run()
    a = node(lossy, 1.0)  # window 2 s, shorter than the 3 s grace
    lossy.connection_lost([a.node_id])
    clock.now += 2
    assert lossy.online_node_ids(run_id) == []
    assert lossy.disconnected() == {} and lossy.next_deadline() is None

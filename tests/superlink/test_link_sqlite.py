"""The SQLite link store: what survives a crash (real SQLite files), schema versions and clear startup errors."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from fl_async.common.message import ErrorCode
from fl_async.proto.fl_async import v1 as pb
from fl_async.superlink import LinkConfig
from fl_async.superlink.sqlite_store import SCHEMA_VERSION, DatabaseError, SqliteStore, from_db, to_db
from fl_async.superlink.state import LinkState
from fl_async.superlink.store import Status
from fl_async.supernode._answered import RUNNING, AnsweredCache

T0 = 1_700_000_000.0


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


def instruction(run_id: int, dst: int, *, ttl: float = 600.0) -> pb.Message:
    md = pb.Metadata(run_id=run_id, dst_node_id=dst, ttl=ttl, message_type="query", created_at=T0, group_id="g")
    return pb.Message(metadata=md, content=pb.RecordSet())


def reply_to(ins: pb.Message, node_id: int) -> pb.Message:
    m = ins.metadata
    md = pb.Metadata(
        run_id=m.run_id,
        src_node_id=node_id,
        reply_to_message=m.message_id,
        ttl=30.0,
        message_type=m.message_type,
        created_at=T0,
        group_id=m.group_id,
    )
    return pb.Message(metadata=md, content=pb.RecordSet())


def crash(store: SqliteStore) -> None:
    """What kill -9 leaves: the open transaction is never committed; the lock is released by the OS."""
    store._db.close()
    store._lock.close()


def test_ids_map_to_signed_64_bit_and_back() -> None:
    for value in (1, 2**63 - 1, 2**63, 2**64 - 1):
        assert -(2**63) <= to_db(value) < 2**63 and from_db(to_db(value)) == value


def test_restart_keeps_runs_nodes_sessions_instructions_and_replies(tmp_path: Path) -> None:
    db = tmp_path / "link.db"
    clock = Clock()
    state = LinkState(clock=clock, store=SqliteStore(db))
    run_id = state.create_run("fab", "1.0", [])
    node_id, token, _ = state.create_node(2.0)
    other_id, other_token, _ = state.create_node(2.0)
    auth, other = pb.NodeAuth(node_id=node_id, token=token), pb.NodeAuth(node_id=other_id, token=other_token)
    ids, _ = state.push_instructions(run_id, [instruction(run_id, node_id) for _ in range(3)])
    ready_ids, _ = state.push_instructions(run_id, [instruction(run_id, other_id) for _ in range(2)])
    [in_flight] = state.pull_instructions(auth, 1)  # ids[0]: handed out, no reply yet
    for msg in state.pull_instructions(other, 2):
        state.push_replies(other, [reply_to(msg, other_id)])
    [delivered] = state.take_replies(run_id, ready_ids[:1])  # taken by the driver just before the crash
    state.store.commit()  # what the link does before answering
    state.push_instructions(run_id, [instruction(run_id, node_id)])  # never committed: its caller never knew
    crash(state.store)  # type: ignore[arg-type]

    clock.now += 100.0  # the link was down for a while: nobody is declared offline for it
    state = LinkState(clock=clock, store=SqliteStore(db))
    assert state.resume() == 5
    assert state.get_run(run_id).fab_id == "fab"
    assert state.authenticate(auth).node_id == node_id  # same session: no new registration
    assert sorted(state.online_node_ids(run_id)) == sorted([node_id, other_id])
    # the leased instruction is handed out again first, in push order, then the queued ones
    assert [m.metadata.message_id for m in state.pull_instructions(auth, 10)] == ids
    assert in_flight.metadata.message_id == ids[0]
    # the reply taken within the delivery margin is kept, so a driver whose pull response was cut gets it again
    ready, waiting = state.outstanding(run_id, [*ready_ids, *ids])
    assert sorted(ready) == sorted(ready_ids) and waiting == ids
    assert delivered.message_id == ready_ids[0]
    state.store.close()


def test_restart_answers_node_unavailable_for_a_node_gone_and_expires_on_schedule(tmp_path: Path) -> None:
    db = tmp_path / "link.db"
    clock = Clock()
    state = LinkState(clock=clock, store=SqliteStore(db), heartbeat_patience=2.0)
    run_id = state.create_run()
    node_id, _, _ = state.create_node(1.0)
    [mid], _ = state.push_instructions(run_id, [instruction(run_id, node_id, ttl=500.0)])
    state.store.commit()
    crash(state.store)  # type: ignore[arg-type]
    state = LinkState(clock=clock, store=SqliteStore(db), heartbeat_patience=2.0)
    state.resume(grace=30.0)
    clock.now += 29.0
    assert state.online_node_ids(run_id) == [node_id]  # within the restart grace
    clock.now += 2.0
    [ins] = state.take_replies(run_id, [mid])  # the node never came back
    assert ins.reply.error.code == ErrorCode.NODE_UNAVAILABLE
    state.store.close()


def test_delivered_replies_leave_the_file_after_the_margin(tmp_path: Path) -> None:
    db = tmp_path / "link.db"
    ticks = [0.0]
    store = SqliteStore(db, clock=lambda: ticks[0])
    state = LinkState(clock=Clock(), store=store)
    run_id = state.create_run()
    node_id, token, _ = state.create_node(1.0)
    auth = pb.NodeAuth(node_id=node_id, token=token)
    [mid], _ = state.push_instructions(run_id, [instruction(run_id, node_id)])
    [msg] = state.pull_instructions(auth, 1)
    state.push_replies(auth, [reply_to(msg, node_id)])
    state.take_replies(run_id, [mid])
    store.commit()
    count = "SELECT COUNT(*) FROM instructions"
    with sqlite3.connect(db) as conn:
        assert conn.execute(count).fetchone()[0] == 1
    ticks[0] = 10.0
    store.commit()
    with sqlite3.connect(db) as conn:
        assert conn.execute(count).fetchone()[0] == 0
    assert store.worst_commit > 0 and store.commits >= 2
    store.close()


def test_bad_files_are_refused_with_one_line_naming_the_file(tmp_path: Path) -> None:
    corrupt = tmp_path / "corrupt.db"
    corrupt.write_bytes(b"this is not a database" * 100)
    with pytest.raises(DatabaseError, match=f"{corrupt} is unreadable or corrupt"):
        SqliteStore(corrupt)
    newer = tmp_path / "newer.db"
    with sqlite3.connect(newer) as conn:
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    with pytest.raises(DatabaseError, match="newer than this fl-async"):
        SqliteStore(newer)
    foreign = tmp_path / "foreign.db"
    with sqlite3.connect(foreign) as conn:
        conn.execute("CREATE TABLE t (a INTEGER)")
    with pytest.raises(DatabaseError, match="not an fl-async link database"):
        SqliteStore(foreign)
    with pytest.raises(DatabaseError, match="cannot open"):
        SqliteStore(tmp_path / "missing-dir" / "x.db")
    first = SqliteStore(tmp_path / "shared.db")
    with pytest.raises(DatabaseError, match="in use by another SuperLink"):
        SqliteStore(tmp_path / "shared.db")
    first.close()
    SqliteStore(tmp_path / "shared.db").close()  # free again once the first link is gone


def test_new_file_gets_the_current_schema_version(tmp_path: Path) -> None:
    SqliteStore(tmp_path / "new.db").close()
    with sqlite3.connect(tmp_path / "new.db") as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_config_checks_database_fields() -> None:
    assert LinkConfig().database == ":memory:" and LinkConfig().database_sync == "normal"
    with pytest.raises(ValueError, match="database_sync"):
        LinkConfig(database_sync="sometimes")
    with pytest.raises(ValueError, match="LinkConfig.database"):
        LinkConfig(database="")


def test_cli_exits_1_with_one_line_on_a_corrupt_database(tmp_path: Path) -> None:
    bad = tmp_path / "bad.db"
    bad.write_bytes(b"garbage" * 1000)
    argv = [sys.executable, "-m", "fl_async", "superlink", "--insecure", "--database", str(bad)]
    argv += ["--driver-api-address", "127.0.0.1:0", "--fleet-api-address", "127.0.0.1:0"]
    argv += ["--blob-api-address", "127.0.0.1:0"]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and str(bad) in lines[0] and "corrupt" in lines[0], proc.stderr


def test_answered_cache_gives_one_answer_per_message_id() -> None:
    cache = AnsweredCache(max_entries=3, max_bytes=400)
    assert cache.begin("a") is None
    assert cache.begin("a") == RUNNING  # handed out again while running: dropped
    cache.answered("a", b"reply-a")
    cache.finished("a")
    assert cache.begin("a") == b"reply-a"  # answered: the same reply again
    assert cache.begin("b") is None
    cache.answered("b", b"x" * 200)  # larger than a quarter of the byte budget: remembered without bytes
    cache.finished("b")
    assert cache.begin("b") == b""
    for mid in ("c", "d", "e"):
        cache.begin(mid)
    assert cache.begin("a") is None  # pushed out by newer ones (only running entries are never evicted)
    assert cache.begin("c") == RUNNING


def test_status_names_are_stable() -> None:
    assert Status.ANSWERED.value == "answered"


def test_a_repeated_push_id_is_answered_as_the_first_push_across_a_restart(tmp_path: Path) -> None:
    db = tmp_path / "link.db"
    clock = Clock()
    state = LinkState(clock=clock, store=SqliteStore(db))
    run_id = state.create_run()
    node_id, _, _ = state.create_node(1.0)
    batch = [instruction(run_id, node_id), instruction(run_id, 12345)]  # the second is refused (unknown node)
    ids, reasons = state.push_instructions(run_id, batch, push_id="p1")
    assert ids[0] and not ids[1] and reasons[1]
    again = [instruction(run_id, node_id), instruction(run_id, 12345)]
    assert state.push_instructions(run_id, again, push_id="p1") == (ids, reasons)  # nothing queued twice
    assert state.stats().queued == 1
    state.store.commit()
    crash(state.store)  # type: ignore[arg-type]
    state = LinkState(clock=clock, store=SqliteStore(db))
    state.resume()
    retried_ids, retried_reasons = state.push_instructions(run_id, again, push_id="p1")
    assert retried_ids == ids and retried_reasons[0] == "" and retried_reasons[1]
    assert state.stats().queued == 1
    other_ids, _ = state.push_instructions(run_id, [instruction(run_id, node_id)], push_id="p2")
    assert other_ids[0] not in ids and state.stats().queued == 2
    state.store.close()

"""A durable :class:`~fl_async.superlink.store.LinkStore`: the in-memory store, written through to SQLite.

:class:`SqliteStore` keeps the working set in memory exactly as :class:`~fl_async.superlink.store.MemoryStore`
does (lookups never touch the disk) and records every change that must survive a crash in a SQLite database in
WAL mode: runs, nodes with their session credentials, instructions that are not answered yet, and replies that
no driver has taken. When the link starts on an existing file it loads all of it back
(:meth:`SqliteStore.recovered_instructions`; the link state re-arms its deadlines from them).

What is written, and when:

* every change is a statement in the current transaction; the transaction is committed before the link sends the
  response of the call that made the change (the RPC layer calls :meth:`SqliteStore.commit`), and at the end of
  the event-loop turn for changes no call made (deadlines, TTLs). A caller never learns of a change that a crash
  could undo.
* an instruction handed to its node stays *unanswered* on disk (a lease, not a consumption): if the link restarts
  before the node's reply is stored, the instruction is queued again for the same node.
* a reply taken by a driver is deleted from disk :data:`DELIVERY_MARGIN` seconds later, so that a driver whose
  pull response was cut by a crash gets it again from the restarted link (it asks again for every id it has no
  reply for; a reply it already has is never asked for).
* node liveness (``online_until``) is not written: after a restart every node gets a fresh window.

Durability (``sync``): ``"normal"`` (``PRAGMA synchronous=NORMAL``) survives a crash of the process (kill -9): a
committed transaction is in the WAL in the OS's page cache. A power loss or OS crash may lose the transactions of
the last moments (never corrupts the file). ``"full"`` (``synchronous=FULL``) syncs the WAL at every commit and
also survives power loss, at the cost of one ``fsync`` per commit.

Portability: the schema uses standard SQL types (``BIGINT``, ``DOUBLE PRECISION``, ``TEXT``, ``SMALLINT``) except
``BLOB`` (``BYTEA`` in PostgreSQL); uint64 ids are stored as signed 64-bit integers (:func:`to_db`); statements
use only ``INSERT``/``UPDATE``/``DELETE``/``SELECT`` with positional parameters. The SQLite specifics are the
pragmas (WAL, ``synchronous``, ``user_version`` holding the schema version) in :func:`open_database`.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import secrets
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fl_async._fastwire import TAIL_LIMIT, message_bytes
from fl_async.codec import external_arrays
from fl_async.errors import FlAsyncError
from fl_async.proto.fl_async import v1 as pb
from fl_async.superlink.store import InstructionRecord, MemoryStore, NodeRecord, RunRecord, Status

__all__ = [
    "CHECKPOINT_INTERVAL",
    "DELIVERY_MARGIN",
    "SCHEMA_VERSION",
    "SYNC_LEVELS",
    "DatabaseError",
    "SqliteStore",
    "from_db",
    "migrate",
    "open_database",
    "to_db",
]

log = logging.getLogger("fl_async.superlink")

SCHEMA_VERSION = 1
"""Version of the schema this code writes (``PRAGMA user_version``)."""

DELIVERY_MARGIN = 2.0
"""Seconds a reply taken by a driver stays on disk (see the module docstring)."""

CHECKPOINT_INTERVAL = 1.0
"""Seconds between WAL checkpoints (run in a thread of the store)."""

SYNC_LEVELS = {"normal": "NORMAL", "full": "FULL"}
"""``--database-sync`` values -> ``PRAGMA synchronous`` levels."""

_TAIL = "_fl_async_tail"  # the raw bytes _fastwire.remember_tails attached to a forwarded message


class DatabaseError(FlAsyncError):
    """The link's database cannot be used: unreadable or corrupt, from a newer schema, or in use by another link.
    The message names the file and the problem in one line."""


def to_db(value: int) -> int:
    """A uint64 id as the signed 64-bit integer stored in ``BIGINT`` columns."""
    return value - (1 << 64) if value >= 1 << 63 else value


def from_db(value: int) -> int:
    """Inverse of :func:`to_db`."""
    return value + (1 << 64) if value < 0 else value


_SCHEMA_V1 = (
    "CREATE TABLE link_meta (name VARCHAR(64) PRIMARY KEY, value BLOB NOT NULL)",
    "CREATE TABLE runs (run_id BIGINT PRIMARY KEY, fab_id TEXT NOT NULL, fab_version TEXT NOT NULL, "
    "run_config BLOB NOT NULL, owner TEXT NOT NULL, created_at DOUBLE PRECISION NOT NULL, stopped SMALLINT NOT NULL)",
    "CREATE TABLE nodes (node_id BIGINT PRIMARY KEY, token BLOB NOT NULL, heartbeat_interval DOUBLE PRECISION "
    "NOT NULL, public_key BLOB NOT NULL, registered_at DOUBLE PRECISION NOT NULL, address TEXT NOT NULL)",
    "CREATE TABLE instructions (message_id VARCHAR(64) PRIMARY KEY, seq BIGINT NOT NULL, node_id BIGINT NOT NULL, "
    "run_id BIGINT NOT NULL, answered SMALLINT NOT NULL, expires_at DOUBLE PRECISION NOT NULL, "
    "group_id TEXT NOT NULL, message_type TEXT NOT NULL, ttl DOUBLE PRECISION NOT NULL, "
    "created_at DOUBLE PRECISION NOT NULL, external SMALLINT NOT NULL, body BLOB NOT NULL, reply BLOB, "
    "push_id VARCHAR(64) NOT NULL, push_position INTEGER NOT NULL, pushed_at DOUBLE PRECISION NOT NULL)",
    "CREATE INDEX instructions_seq ON instructions (seq)",
)

_MIGRATIONS: dict[int, tuple[str, ...]] = {0: _SCHEMA_V1}
"""Version -> the statements that take a database from that version to the next."""

_OWN_TABLES = {"link_meta", "runs", "nodes", "instructions"}


def migrate(db: sqlite3.Connection, path: str) -> None:
    """Bring the database to :data:`SCHEMA_VERSION`, one migration per version, each in one transaction.

    Raises:
        DatabaseError: the file has a newer schema, or is another application's database.
    """
    version = int(db.execute("PRAGMA user_version").fetchone()[0])
    if version > SCHEMA_VERSION:
        raise DatabaseError(
            f"database {path} has schema version {version}, newer than this fl-async's {SCHEMA_VERSION}: "
            f"upgrade fl-async or use another --database file"
        )
    if version == 0:
        tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        foreign = tables - _OWN_TABLES
        if foreign:
            raise DatabaseError(
                f"database {path} is not an fl-async link database (it has tables {', '.join(sorted(foreign))})"
            )
    while version < SCHEMA_VERSION:
        db.execute("BEGIN")
        for statement in _MIGRATIONS[version]:
            db.execute(statement)
        version += 1
        db.execute(f"PRAGMA user_version = {version}")
        db.execute("COMMIT")
        log.info("database %s: schema migrated to version %d", path, version)


def open_database(path: str, sync: str = "normal") -> tuple[sqlite3.Connection, Any]:
    """Open (or create) the database at ``path`` for one link: take its lock, set WAL and ``sync``, migrate.

    Returns:
        ``(connection, lock_file)``: the lock is held while the lock file stays open.

    Raises:
        DatabaseError: another link uses the file; it cannot be opened, read or written; it is not a
            database; its schema is newer; ``sync`` is not one of :data:`SYNC_LEVELS`.
    """
    if sync not in SYNC_LEVELS:
        raise DatabaseError(f"database sync level must be one of {', '.join(SYNC_LEVELS)}, got {sync!r}")
    lock_path = path + ".lock"
    try:
        lock = open(lock_path, "a+b")  # noqa: SIM115  (held open for the life of the link)
    except OSError as exc:
        raise DatabaseError(f"database {path}: cannot open its lock file {lock_path}: {exc.strerror}") from None
    try:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        lock.close()
        raise DatabaseError(f"database {path} is in use by another SuperLink (lock {lock_path} is held)") from None
    try:
        db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    except sqlite3.Error as exc:
        lock.close()
        raise DatabaseError(f"database {path} cannot be opened: {exc}") from None
    try:
        mode = db.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise DatabaseError(f"database {path}: cannot switch to WAL mode (got {mode})")
        db.execute(f"PRAGMA synchronous = {SYNC_LEVELS[sync]}")
        migrate(db, path)
    except sqlite3.Error as exc:
        db.close()
        lock.close()
        raise DatabaseError(f"database {path} is unreadable or corrupt: {exc}") from None
    except DatabaseError:
        db.close()
        lock.close()
        raise
    return db, lock


def _message_bytes(message: pb.Message) -> bytes:
    """The message's wire bytes (its metadata re-encoded plus the raw tail it arrived with, when kept)."""
    tail = getattr(message, _TAIL, None)
    if tail is not None and message.metadata is not None:
        return message_bytes(pb.Message(metadata=message.metadata)) + bytes(tail)
    return message_bytes(message)


def _body(message: pb.Message) -> bytes:
    """The message's wire bytes without its metadata (content or error): the tail it arrived with, when kept."""
    tail = getattr(message, _TAIL, None)
    if tail is not None:
        return bytes(tail)
    return message_bytes(pb.Message(content=message.content, error=message.error))


def _instruction_from_row(row: tuple[Any, ...]) -> InstructionRecord:
    """An unanswered instruction from its row, without parsing its body when it is small and names no blob: the
    body becomes the message's tail, re-emitted verbatim when the instruction is handed out."""
    message_id, node_id, run_id, expires_at, group_id, message_type, ttl, created_at, external, body, push, pos, at = (
        row
    )
    md = pb.Metadata(
        run_id=from_db(run_id),
        message_id=message_id,
        dst_node_id=from_db(node_id),
        group_id=group_id,
        ttl=float(ttl),
        message_type=message_type,
        created_at=float(created_at),
    )
    body = bytes(body)
    if external or len(body) > TAIL_LIMIT:
        message = pb.Message.parse(body)
        message.metadata = md
    else:
        message = pb.Message(metadata=md)
        object.__setattr__(message, _TAIL, body)
    return InstructionRecord(
        message, expires_at=float(expires_at), push=(push, int(pos)) if push else None, pushed_at=float(at)
    )


class SqliteStore(MemoryStore):
    """A :class:`MemoryStore` whose changes are written through to a SQLite database (see the module docstring).

    Args:
        path: the database file (created if absent). Its lock file ``path + ".lock"`` keeps a second link out.
        sync: ``"normal"`` (survives kill -9) or ``"full"`` (also survives power loss).
        clock: monotonic clock for :data:`DELIVERY_MARGIN`.

    Raises:
        DatabaseError: see :func:`open_database`; also when a stored row cannot be decoded.

    Attributes:
        path: as the argument.
        worst_commit: the longest commit so far, seconds.
        worst_transaction: the most time one transaction spent in SQLite (its statements and its commit), seconds:
            the longest the link's event loop was held by writing.
        commits: how many transactions were committed.
    """

    def __init__(self, path: str | Path, *, sync: str = "normal", clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self.path = str(path)
        self.sync = sync
        self._clock = clock
        self._db, self._lock = open_database(self.path, sync)
        self._in_txn = False
        self._scheduled = False
        self._seq = 0
        self._doomed: dict[str, float] = {}  # message_id -> when its reply was taken (deleted after the margin)
        self.worst_commit = 0.0
        self.worst_transaction = 0.0
        self.commits = 0
        self._txn_sql = 0.0
        self._recovered: list[InstructionRecord] = []
        try:
            self._secret = self._load()
        except (sqlite3.Error, ValueError, IndexError) as exc:
            self.close()
            raise DatabaseError(f"database {self.path} is unreadable or corrupt: {exc}") from None
        # checkpoints (copying the WAL into the file; they fsync) run in a thread, not in a commit on the loop
        self._db.execute("PRAGMA wal_autocheckpoint = 0")
        self._stop_checkpoints = threading.Event()
        self._checkpointer = threading.Thread(
            target=self._checkpoint_loop, name="fl-async-link-checkpoint", daemon=True
        )
        self._checkpointer.start()

    def _checkpoint_loop(self) -> None:
        """Every :data:`CHECKPOINT_INTERVAL` seconds with commits since the last one: a PASSIVE checkpoint on a
        connection of this thread (it never blocks the link's writes)."""
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        try:
            conn.execute(f"PRAGMA synchronous = {SYNC_LEVELS[self.sync]}")
            done = 0
            while not self._stop_checkpoints.wait(CHECKPOINT_INTERVAL):
                if self.commits != done:
                    done = self.commits
                    conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
        except sqlite3.Error as exc:
            log.warning("database %s: checkpoints stopped: %s", self.path, exc)
        finally:
            conn.close()

    # ------------------------------------------------------------------------ loading
    def _load(self) -> bytes:
        db = self._db
        row = db.execute("SELECT value FROM link_meta WHERE name = ?", ("secret",)).fetchone()
        if row is None:
            secret = secrets.token_bytes(32)
            self._write("INSERT INTO link_meta (name, value) VALUES (?, ?)", ("secret", secret))
            self.commit()
        else:
            secret = bytes(row[0])
        for run_id, fab_id, fab_version, config, owner, created_at, stopped in db.execute(
            "SELECT run_id, fab_id, fab_version, run_config, owner, created_at, stopped FROM runs"
        ):
            entries = list(pb.Run.parse(bytes(config)).run_config)
            run = RunRecord(from_db(run_id), fab_id, fab_version, entries, owner=owner)
            run.created_at, run.stopped = float(created_at), bool(stopped)
            super().add_run(run)
        for node_id, token, interval, public_key, registered_at, address in db.execute(
            "SELECT node_id, token, heartbeat_interval, public_key, registered_at, address FROM nodes"
        ):
            node = NodeRecord(from_db(node_id), bytes(token), float(interval), 0.0, public_key=bytes(public_key))
            node.registered_at, node.address = float(registered_at), address
            super().add_node(node)
        for seq, answered, reply, *row in db.execute(
            "SELECT seq, answered, reply, message_id, node_id, run_id, expires_at, group_id, message_type, ttl, "
            "created_at, external, body, push_id, push_position, pushed_at FROM instructions ORDER BY seq"
        ):
            self._seq = max(self._seq, int(seq))
            ins = _instruction_from_row(tuple(row))
            if answered:
                ins.status = Status.ANSWERED
                ins.reply = pb.Message.parse(bytes(reply))
                self._instructions[ins.message_id] = ins
                self._replies += 1
            elif ins.node_id in self._nodes:
                super().add_instruction(ins)
            else:  # its node is gone: the link state answers it NODE_UNAVAILABLE
                self._instructions[ins.message_id] = ins
            self._recovered.append(ins)
        return secret

    def link_secret(self) -> bytes | None:
        """A 32-byte secret kept in the database (run tokens derived from it stay valid across restarts)."""
        return self._secret

    def recovered_instructions(self) -> list[InstructionRecord]:
        """The instructions loaded from the database at start, oldest first (then forgotten here)."""
        out, self._recovered = self._recovered, []
        return out

    # ------------------------------------------------------------------------ writing
    def _write(self, sql: str, params: tuple[Any, ...]) -> None:
        if not self._in_txn:
            self._db.execute("BEGIN")
            self._in_txn = True
            self._txn_sql = 0.0
            if not self._scheduled:
                with contextlib.suppress(RuntimeError):  # no running loop: the caller commits
                    import asyncio

                    asyncio.get_running_loop().call_soon(self._commit_soon)
                    self._scheduled = True
        started = time.perf_counter()
        self._db.execute(sql, params)
        self._txn_sql += time.perf_counter() - started

    def _commit_soon(self) -> None:
        self._scheduled = False
        try:
            self.commit()
        except DatabaseError:
            log.exception("database %s: commit failed", self.path)

    def commit(self) -> None:
        """Commit the open transaction (if any), and delete the replies delivered more than
        :data:`DELIVERY_MARGIN` seconds ago. Called before a response is sent.

        Raises:
            DatabaseError: the commit failed (e.g. the disk is full); the change is not durable.
        """
        if self._doomed:
            cutoff = self._clock() - DELIVERY_MARGIN
            due = [mid for mid, at in self._doomed.items() if at <= cutoff]
            for mid in due:
                del self._doomed[mid]
                self._write("DELETE FROM instructions WHERE message_id = ?", (mid,))
        if not self._in_txn:
            return
        started = time.perf_counter()
        try:
            self._db.execute("COMMIT")
        except sqlite3.Error as exc:
            raise DatabaseError(f"database {self.path}: commit failed: {exc}") from None
        finally:
            self._in_txn = False
        ended = time.perf_counter()
        self.commits += 1
        self.worst_commit = max(self.worst_commit, ended - started)
        self.worst_transaction = max(self.worst_transaction, self._txn_sql + ended - started)

    def close(self) -> None:
        """Commit what is pending (delivered replies are deleted now) and close the file. Idempotent."""
        if self._db is None:
            return
        stop = getattr(self, "_stop_checkpoints", None)
        if stop is not None:
            stop.set()
            self._checkpointer.join(timeout=10)
        with contextlib.suppress(sqlite3.Error, DatabaseError):
            for mid in self._doomed:
                self._write("DELETE FROM instructions WHERE message_id = ?", (mid,))
            self._doomed.clear()
            self.commit()
            log.info(
                "database %s closed: %d commits, worst commit %.2f ms, worst transaction %.2f ms",
                self.path,
                self.commits,
                self.worst_commit * 1e3,
                self.worst_transaction * 1e3,
            )
        with contextlib.suppress(sqlite3.Error):
            self._db.close()
        self._db = None  # type: ignore[assignment]
        self._lock.close()

    # ------------------------------------------------------------------------ runs
    def add_run(self, run: RunRecord) -> None:
        """Store a new run, or write a known run's changed record (e.g. ``stopped``) through."""
        known = run.run_id in self._runs
        super().add_run(run)
        if known:
            self._write(
                "UPDATE runs SET owner = ?, stopped = ? WHERE run_id = ?",
                (run.owner, 1 if run.stopped else 0, to_db(run.run_id)),
            )
            return
        self._write(
            "INSERT INTO runs (run_id, fab_id, fab_version, run_config, owner, created_at, stopped) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                to_db(run.run_id),
                run.fab_id,
                run.fab_version,
                bytes(pb.Run(run_config=run.run_config)),
                run.owner,
                run.created_at,
                1 if run.stopped else 0,
            ),
        )

    def remove_run(self, run_id: int) -> None:
        super().remove_run(run_id)
        self._write("DELETE FROM runs WHERE run_id = ?", (to_db(run_id),))

    # ------------------------------------------------------------------------ nodes
    def add_node(self, node: NodeRecord) -> None:
        super().add_node(node)
        self._write(
            "INSERT INTO nodes (node_id, token, heartbeat_interval, public_key, registered_at, address) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            (
                to_db(node.node_id),
                node.token,
                node.heartbeat_interval,
                node.public_key,
                node.registered_at,
                node.address,
            ),
        )

    def set_liveness(self, node_id: int, heartbeat_interval: float, online_until: float) -> None:
        changed = self._nodes[node_id].heartbeat_interval != heartbeat_interval
        super().set_liveness(node_id, heartbeat_interval, online_until)
        if changed:  # online_until is not kept: a restarted link gives every node a fresh window
            self._write(
                "UPDATE nodes SET heartbeat_interval = ? WHERE node_id = ?", (heartbeat_interval, to_db(node_id))
            )

    def remove_node(self, node_id: int) -> None:
        super().remove_node(node_id)
        self._write("DELETE FROM nodes WHERE node_id = ?", (to_db(node_id),))

    # ------------------------------------------------------------------------ instructions
    def _insert(self, ins: InstructionRecord, body: bytes, reply: bytes | None) -> None:
        md = ins.message.metadata
        assert md is not None
        self._seq += 1
        self._write(
            "INSERT INTO instructions (message_id, seq, node_id, run_id, answered, expires_at, group_id, "
            "message_type, ttl, created_at, external, body, reply, push_id, push_position, pushed_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                ins.message_id,
                self._seq,
                to_db(ins.node_id),
                to_db(ins.run_id),
                0 if reply is None else 1,
                ins.expires_at,
                md.group_id,
                md.message_type,
                md.ttl,
                md.created_at,
                1 if any(True for _ in external_arrays(ins.message)) else 0,
                body,
                reply,
                ins.push[0] if ins.push is not None else "",
                ins.push[1] if ins.push is not None else 0,
                ins.pushed_at,
            ),
        )

    def add_instruction(self, instruction: InstructionRecord) -> None:
        super().add_instruction(instruction)
        self._insert(instruction, _body(instruction.message), None)

    def set_reply(self, message_id: str, reply: pb.Message) -> None:
        super().set_reply(message_id, reply)
        self._write(
            "UPDATE instructions SET answered = 1, external = 0, body = ?, reply = ? WHERE message_id = ?",
            (b"", _message_bytes(reply), message_id),
        )

    def pop_reply(self, message_id: str) -> pb.Message:
        reply = super().pop_reply(message_id)
        self._doomed[message_id] = self._clock()
        return reply

    def restore_reply(self, instruction: InstructionRecord) -> None:
        super().restore_reply(instruction)
        if self._doomed.pop(instruction.message_id, None) is None and instruction.reply is not None:
            self._insert(instruction, b"", _message_bytes(instruction.reply))

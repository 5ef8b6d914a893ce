"""The event log: one hash-chained row per event, deduplicated by event id.

`AuditStore` contains the SQL that SQLite and PostgreSQL share. The subclasses
supply connections and the lock that serialises writers, because the chain
needs one insertion order. SQLite is the default; PostgreSQL is used when
`audit.database_url` is set. Blocking: every method is called from a worker
thread.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final, Protocol

from services.audit import chain
from services.audit.chain import GENESIS, ChainHead, StoredRecord, VerifyResult
from smimegw.settings import Settings

HEAD_NAME: Final = "chain"
_PAGE = 1000
_COLUMNS: Final = (
    "id, event_id, type, time, queue_id, correlation_id, causation_id, stream, "
    "stream_sequence, trace_id, data, prev_hash, hash"
)


class AuditStoreError(Exception):
    """The audit store cannot be opened, read or written."""


class Cursor(Protocol):
    """The part of a DB-API cursor the store uses (sqlite3 and psycopg)."""

    def execute(self, sql: Any, params: Sequence[Any] = ..., /) -> Any: ...

    def fetchone(self) -> Any: ...

    def fetchall(self) -> list[Any]: ...


def sortable_time(value: datetime) -> str:
    """UTC with a fixed width, so that text order is time order in SQL."""
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass(frozen=True)
class Record:
    """One bus message as the audit log stores it, before it joins the chain."""

    event_id: str
    type: str
    time: str
    queue_id: str | None
    correlation_id: str | None
    causation_id: str | None
    stream: str
    stream_sequence: int
    data: str
    trace_id: str | None = None


def record_of(
    stream: str, sequence: int, data: bytes, trace_id: str | None = None
) -> Record:
    """Read the envelope fields; bytes that are no event are kept as `invalid`."""
    try:
        event = json.loads(data)
        if not isinstance(event, dict):
            raise ValueError("not a JSON object")
        return Record(
            event_id=str(event["event_id"]),
            type=str(event["type"]),
            time=sortable_time(datetime.fromisoformat(str(event["time"]))),
            queue_id=event.get("queue_id"),
            correlation_id=event.get("correlation_id"),
            causation_id=event.get("causation_id"),
            stream=stream,
            stream_sequence=sequence,
            data=json.dumps(event, separators=(",", ":")),
            trace_id=trace_id,
        )
    except (ValueError, KeyError, TypeError):
        return Record(
            event_id=f"invalid/{stream}/{sequence}",
            type="invalid",
            time=sortable_time(datetime.now(UTC)),
            queue_id=None,
            correlation_id=None,
            causation_id=None,
            stream=stream,
            stream_sequence=sequence,
            data=json.dumps({"size": len(data)}),
            trace_id=trace_id,
        )


class AuditStore(ABC):
    """The SQL shared by the backends, written with `?` placeholders."""

    placeholder = "?"
    # Appended to the chain head query in add(): PostgreSQL locks the head row
    # so that replicas writing to one database take turns.
    lock_clause = ""

    @abstractmethod
    def _write(self) -> AbstractContextManager[Cursor]:
        """Yield a cursor in a transaction that holds the chain lock until it ends."""

    @abstractmethod
    def _read(self) -> AbstractContextManager[Cursor]:
        """Yield a cursor for reading."""

    @abstractmethod
    def close(self) -> None: ...

    def _sql(self, text: str) -> str:
        return text.replace("?", self.placeholder)

    def _execute(self, cursor: Cursor, text: str, params: Sequence[Any] = ()) -> Any:
        return cursor.execute(self._sql(text), params)

    def add(self, records: Sequence[Record]) -> int:
        """Append the records not stored yet to the chain; return how many."""
        with self._write() as cursor:
            head = self._head(cursor, lock=True)
            last_id, last_hash = head.last_id, head.last_hash
            added = 0
            for record in records:
                self._execute(
                    cursor,
                    "SELECT 1 FROM audit_events WHERE event_id = ?",
                    (record.event_id,),
                )
                if cursor.fetchone() is not None:
                    continue
                stored = _chained(record, last_id + 1, last_hash)
                self._insert(cursor, stored)
                last_id, last_hash = stored.id, stored.hash
                added += 1
            if added:
                self._execute(
                    cursor,
                    "UPDATE audit_head SET last_id = ?, last_hash = ? WHERE name = ?",
                    (last_id, last_hash, HEAD_NAME),
                )
            return added

    def _insert(self, cursor: Cursor, stored: StoredRecord) -> None:
        self._execute(
            cursor,
            f"INSERT INTO audit_events ({_COLUMNS}) "  # noqa: S608
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                stored.id,
                stored.event_id,
                stored.type,
                stored.time,
                stored.queue_id,
                stored.correlation_id,
                stored.causation_id,
                stored.stream,
                stored.stream_sequence,
                stored.trace_id,
                stored.data,
                stored.prev_hash,
                stored.hash,
            ),
        )

    def _head(self, cursor: Cursor, *, lock: bool = False) -> ChainHead:
        self._execute(
            cursor,
            "SELECT last_id, last_hash FROM audit_head WHERE name = ?"  # noqa: S608
            + (self.lock_clause if lock else ""),
            (HEAD_NAME,),
        )
        row = cursor.fetchone()
        if row is None:
            return ChainHead(0, GENESIS)
        return ChainHead(int(row[0]), str(row[1]))

    def head(self) -> ChainHead:
        with self._read() as cursor:
            return self._head(cursor)

    def records(
        self, since: datetime | None = None, until_id: int | None = None
    ) -> Iterator[StoredRecord]:
        """Records in chain order, read a page at a time.

        `since` keeps those whose event time is at or after it; `until_id`
        stops at that id.
        """
        last_id = 0
        while True:
            clauses = "id > ?"
            params: list[Any] = [last_id]
            if until_id is not None:
                clauses += " AND id <= ?"
                params.append(until_id)
            if since is not None:
                clauses += " AND time >= ?"
                params.append(sortable_time(since))
            with self._read() as cursor:
                self._execute(
                    cursor,
                    f"SELECT {_COLUMNS} FROM audit_events WHERE {clauses} "  # noqa: S608
                    f"ORDER BY id LIMIT {_PAGE}",
                    params,
                )
                page = [_stored(row) for row in cursor.fetchall()]
            yield from page
            if len(page) < _PAGE:
                return
            last_id = page[-1].id

    def verify(self) -> VerifyResult:
        """Recompute the hash chain; name the first record that does not match."""
        # Up to the head read first: records that a running audit service
        # appends meanwhile are left for the next check.
        head = self.head()
        return chain.verify_records(self.records(until_id=head.last_id), head)

    def query_records(
        self,
        *,
        event_type: str | None = None,
        queue_id: str | None = None,
        since: datetime | None = None,
        limit: int = 1000,
    ) -> list[StoredRecord]:
        """Return the newest `limit` matching records, oldest first.

        `event_type` ending in `.*` matches a prefix.

        `queue_id` also finds records of other messages in the same conversation
        (a DSN's events share the bounced message's correlation id).
        """
        clauses: list[str] = []
        params: list[Any] = []
        if event_type:
            if event_type.endswith(".*"):
                clauses.append("type LIKE ?")
                params.append(event_type[:-1] + "%")
            else:
                clauses.append("type = ?")
                params.append(event_type)
        if queue_id:
            clauses.append(
                "(queue_id = ? OR correlation_id IN "
                "(SELECT correlation_id FROM audit_events WHERE queue_id = ?))"
            )
            params += [queue_id, queue_id]
        if since is not None:
            clauses.append("time >= ?")
            params.append(sortable_time(since))
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        params.append(limit)
        with self._read() as cursor:
            self._execute(
                cursor,
                f"SELECT {_COLUMNS} FROM (SELECT {_COLUMNS} FROM audit_events "  # noqa: S608
                f"{where} ORDER BY id DESC LIMIT ?) AS newest ORDER BY id",
                params,
            )
            return [_stored(row) for row in cursor.fetchall()]

    def query(
        self,
        *,
        event_type: str | None = None,
        queue_id: str | None = None,
        since: datetime | None = None,
        limit: int = 1000,
    ) -> list[dict[str, object]]:
        """Return the decoded events of `query_records`."""
        records = self.query_records(
            event_type=event_type, queue_id=queue_id, since=since, limit=limit
        )
        return [json.loads(record.data) for record in records]


def _chained(record: Record, record_id: int, prev_hash: str) -> StoredRecord:
    unhashed = StoredRecord(
        id=record_id,
        event_id=record.event_id,
        type=record.type,
        time=record.time,
        queue_id=record.queue_id,
        correlation_id=record.correlation_id,
        causation_id=record.causation_id,
        stream=record.stream,
        stream_sequence=record.stream_sequence,
        trace_id=record.trace_id,
        data=record.data,
        prev_hash=prev_hash,
        hash="",
    )
    return replace(unhashed, hash=chain.record_hash(unhashed))


def _stored(row: Sequence[Any]) -> StoredRecord:
    return StoredRecord(
        id=int(row[0]),
        event_id=row[1],
        type=row[2],
        time=row[3],
        queue_id=row[4],
        correlation_id=row[5],
        causation_id=row[6],
        stream=row[7],
        stream_sequence=int(row[8]),
        trace_id=row[9],
        data=row[10],
        prev_hash=row[11],
        hash=row[12],
    )


_SQLITE_SCHEMA = """
CREATE TABLE IF NOT EXISTS audit_events (
    id INTEGER PRIMARY KEY,
    event_id TEXT NOT NULL UNIQUE,
    type TEXT NOT NULL,
    time TEXT NOT NULL,
    queue_id TEXT,
    correlation_id TEXT,
    causation_id TEXT,
    stream TEXT NOT NULL,
    stream_sequence INTEGER NOT NULL,
    trace_id TEXT,
    data TEXT NOT NULL,
    prev_hash TEXT NOT NULL,
    hash TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS audit_events_queue_id ON audit_events (queue_id);
CREATE INDEX IF NOT EXISTS audit_events_correlation_id
    ON audit_events (correlation_id);
CREATE INDEX IF NOT EXISTS audit_events_type ON audit_events (type);
CREATE INDEX IF NOT EXISTS audit_events_time ON audit_events (time);
CREATE TABLE IF NOT EXISTS audit_head (
    name TEXT PRIMARY KEY,
    last_id INTEGER NOT NULL,
    last_hash TEXT NOT NULL
);
"""


class SqliteAuditStore(AuditStore):
    """The audit log in one SQLite file, shared by the threads of one process."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(
                path, check_same_thread=False, isolation_level=None
            )
            self._lock = threading.Lock()
            with self._lock:
                self._db.execute("PRAGMA journal_mode=WAL")
                self._db.execute("PRAGMA synchronous=NORMAL")
                self._db.executescript(_SQLITE_SCHEMA)
                self._db.execute(
                    "INSERT OR IGNORE INTO audit_head (name, last_id, last_hash) "
                    "VALUES (?, 0, ?)",
                    (HEAD_NAME, GENESIS),
                )
        except (OSError, sqlite3.Error) as err:
            raise AuditStoreError(
                f"cannot open the audit store {str(path)!r}: {err}; check that "
                "data_dir is writable"
            ) from err

    @contextmanager
    def _write(self) -> Iterator[Cursor]:
        with self._lock, self._translated():
            cursor = self._db.cursor()
            # IMMEDIATE takes the write lock at once, so another process that
            # opened the same file cannot interleave its own chain links.
            cursor.execute("BEGIN IMMEDIATE")
            try:
                yield cursor
            except BaseException:
                cursor.execute("ROLLBACK")
                raise
            cursor.execute("COMMIT")

    @contextmanager
    def _read(self) -> Iterator[Cursor]:
        with self._lock, self._translated():
            yield self._db.cursor()

    @contextmanager
    def _translated(self) -> Iterator[None]:
        try:
            yield
        except sqlite3.Error as err:
            raise AuditStoreError(
                f"audit store {str(self.path)!r} failed: {err}"
            ) from err

    def close(self) -> None:
        with self._lock:
            self._db.close()


def open_store(settings: Settings) -> AuditStore:
    """PostgreSQL at `audit.database_url` when set, else SQLite under data_dir."""
    url = settings.audit.database_url.get_secret_value()
    if url:
        # Imported here: only a PostgreSQL store needs psycopg.
        from services.audit.postgres import PostgresAuditStore

        return PostgresAuditStore(url)
    return SqliteAuditStore(settings.data_dir / "audit.sqlite3")

"""The event log in SQLite, one row per event, deduplicated by event id.

Blocking: every method is called from a worker thread.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

_SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id TEXT NOT NULL UNIQUE,
    type TEXT NOT NULL,
    time TEXT NOT NULL,
    queue_id TEXT,
    correlation_id TEXT,
    causation_id TEXT,
    stream TEXT NOT NULL,
    stream_sequence INTEGER NOT NULL,
    data TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS events_queue_id ON events (queue_id);
CREATE INDEX IF NOT EXISTS events_type ON events (type);
CREATE INDEX IF NOT EXISTS events_time ON events (time);
"""


def sortable_time(value: datetime) -> str:
    """UTC with a fixed width, so that text order is time order in SQL."""
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass(frozen=True)
class Record:
    """One bus message as the audit log stores it."""

    event_id: str
    type: str
    time: str
    queue_id: str | None
    correlation_id: str | None
    causation_id: str | None
    stream: str
    stream_sequence: int
    data: str


def record_of(stream: str, sequence: int, data: bytes) -> Record:
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
        )


class AuditStore:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._lock = threading.Lock()
        with self._lock:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(_SCHEMA)

    def add(self, records: Sequence[Record]) -> int:
        """Insert in order, skipping event ids already stored; return rows added."""
        with self._lock:
            before = self._db.total_changes
            self._db.execute("BEGIN")
            self._db.executemany(
                "INSERT OR IGNORE INTO events (event_id, type, time, queue_id, "
                "correlation_id, causation_id, stream, stream_sequence, data) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    (
                        r.event_id,
                        r.type,
                        r.time,
                        r.queue_id,
                        r.correlation_id,
                        r.causation_id,
                        r.stream,
                        r.stream_sequence,
                        r.data,
                    )
                    for r in records
                ],
            )
            self._db.execute("COMMIT")
            return self._db.total_changes - before

    def query(
        self,
        *,
        event_type: str | None = None,
        queue_id: str | None = None,
        since: datetime | None = None,
        limit: int = 1000,
    ) -> list[dict[str, object]]:
        """Events oldest first; `event_type` ending in `.*` matches a prefix."""
        clauses: list[str] = []
        params: list[object] = []
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
                "(SELECT correlation_id FROM events WHERE queue_id = ?))"
            )
            params += [queue_id, queue_id]
        if since is not None:
            clauses.append("time >= ?")
            params.append(sortable_time(since))
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        sql = f"SELECT data FROM events {where} ORDER BY id LIMIT ?"  # noqa: S608
        params.append(limit)
        with self._lock:
            rows = self._db.execute(sql, params).fetchall()
        return [json.loads(row[0]) for row in rows]

    def close(self) -> None:
        with self._lock:
            self._db.close()

"""The audit log in PostgreSQL, for replicas of the audit service sharing one database.

Writers take turns through a row lock on the chain head (`SELECT ... FOR
UPDATE`), so the chain has one insertion order however many replicas write.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Final
from urllib.parse import urlsplit, urlunsplit

import psycopg

from services.audit.chain import GENESIS
from services.audit.store import HEAD_NAME, AuditStore, AuditStoreError, Cursor

# Serialises schema creation by several replicas starting at once; the key is
# arbitrary but fixed.
_SCHEMA_LOCK: Final = 0x736D696D65677761

_SCHEMA: Final = (
    """
CREATE TABLE IF NOT EXISTS audit_events (
    id BIGINT PRIMARY KEY,
    event_id TEXT NOT NULL UNIQUE,
    type TEXT NOT NULL,
    time TEXT NOT NULL,
    queue_id TEXT,
    correlation_id TEXT,
    causation_id TEXT,
    stream TEXT NOT NULL,
    stream_sequence BIGINT NOT NULL,
    trace_id TEXT,
    data TEXT NOT NULL,
    prev_hash TEXT NOT NULL,
    hash TEXT NOT NULL
)""",
    "CREATE INDEX IF NOT EXISTS audit_events_queue_id ON audit_events (queue_id)",
    "CREATE INDEX IF NOT EXISTS audit_events_correlation_id "
    "ON audit_events (correlation_id)",
    "CREATE INDEX IF NOT EXISTS audit_events_type ON audit_events (type)",
    "CREATE INDEX IF NOT EXISTS audit_events_time ON audit_events (time)",
    """
CREATE TABLE IF NOT EXISTS audit_head (
    name TEXT PRIMARY KEY,
    last_id BIGINT NOT NULL,
    last_hash TEXT NOT NULL
)""",
)


def redacted(url: str) -> str:
    """`url` without its password, for messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rpartition("@")
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{netloc[2]}"))


class PostgresAuditStore(AuditStore):
    """One connection, shared by the threads of one process under a lock."""

    placeholder = "%s"
    lock_clause = " FOR UPDATE"

    def __init__(self, url: str, connect_timeout: float = 10.0) -> None:
        self._url = url
        self._connect_timeout = connect_timeout
        self._lock = threading.Lock()
        self._connection: psycopg.Connection[tuple[object, ...]] | None = None
        with self._lock, self._translated("create the schema"):
            connection = self._connect()
            with connection.transaction(), connection.cursor() as cursor:
                cursor.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK,))
                for statement in _SCHEMA:
                    cursor.execute(statement)
                cursor.execute(
                    "INSERT INTO audit_head (name, last_id, last_hash) "
                    "VALUES (%s, 0, %s) ON CONFLICT (name) DO NOTHING",
                    (HEAD_NAME, GENESIS),
                )

    def _connect(self) -> psycopg.Connection[tuple[object, ...]]:
        """Return the open connection, reconnecting after the server closed it."""
        connection = self._connection
        if connection is None or connection.closed or connection.broken:
            connection = psycopg.connect(
                self._url,
                autocommit=True,
                connect_timeout=max(1, int(self._connect_timeout)),
            )
            self._connection = connection
        return connection

    @contextmanager
    def _translated(self, action: str) -> Iterator[None]:
        try:
            yield
        except psycopg.Error as err:
            raise AuditStoreError(
                f"audit store at {redacted(self._url)} could not {action}: "
                f"{type(err).__name__}: {err}; check audit.database_url and "
                "that the server is running"
            ) from err

    @contextmanager
    def _write(self) -> Iterator[Cursor]:
        with self._lock, self._translated("store events"):
            connection = self._connect()
            with connection.transaction(), connection.cursor() as cursor:
                yield cursor

    @contextmanager
    def _read(self) -> Iterator[Cursor]:
        with self._lock, self._translated("read events"):
            connection = self._connect()
            with connection.cursor() as cursor:
                yield cursor

    def close(self) -> None:
        with self._lock:
            if self._connection is not None:
                self._connection.close()
                self._connection = None

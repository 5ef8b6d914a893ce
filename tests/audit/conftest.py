"""Audit store backends for the contract suite: SQLite and a real PostgreSQL."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest

from services.audit.postgres import PostgresAuditStore
from services.audit.store import AuditStore, SqliteAuditStore
from tests.audit.pgserver import PostgresServer


@dataclass
class Backend:
    """Opens stores on one database and edits it behind the store's back."""

    name: str
    open: Callable[[], AuditStore]
    tamper: Callable[[str, tuple[Any, ...]], None]
    # The [audit] settings that point the gateway at this database.
    settings: dict[str, Any]


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    try:
        server = PostgresServer()
    except FileNotFoundError:
        pytest.skip(
            "PostgreSQL server binaries (initdb, pg_ctl) not found; install them "
            "with scripts/install-postgres.sh"
        )
    server.start()
    yield server
    server.stop()


def _sqlite_backend(tmp_path: Path) -> Backend:
    path = tmp_path / "var" / "audit.sqlite3"

    def tamper(sql: str, params: tuple[Any, ...]) -> None:
        with sqlite3.connect(path) as connection:
            connection.execute(sql, params)

    return Backend(
        "sqlite", lambda: SqliteAuditStore(path), tamper, {"database_url": ""}
    )


def _postgres_backend(server: PostgresServer) -> Backend:
    url = server.create_database()

    def tamper(sql: str, params: tuple[Any, ...]) -> None:
        with psycopg.connect(url, autocommit=True) as connection:
            connection.execute(sql.replace("?", "%s"), params)

    return Backend(
        "postgres", lambda: PostgresAuditStore(url), tamper, {"database_url": url}
    )


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    if request.param == "sqlite":
        return _sqlite_backend(tmp_path)
    return _postgres_backend(request.getfixturevalue("postgres_server"))


@pytest.fixture
def store(backend: Backend) -> Iterator[AuditStore]:
    opened = backend.open()
    yield opened
    opened.close()

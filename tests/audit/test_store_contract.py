"""The audit store's contract, run against SQLite and a real PostgreSQL server."""

from __future__ import annotations

import itertools
import json
import threading
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from services.audit import chain
from services.audit import store as store_module
from services.audit.chain import GENESIS
from services.audit.store import AuditStore, Record, record_of
from tests.audit.conftest import Backend

START = datetime(2026, 12, 4, 9, 0, tzinfo=UTC)


def event(
    index: int,
    *,
    type_: str = "mail.received",
    queue_id: str | None = "Q1",
    correlation_id: str | None = None,
    minutes: int = 0,
) -> dict[str, Any]:
    return {
        "event_id": f"e{index:04d}",
        "type": type_,
        "time": (START + timedelta(minutes=minutes)).isoformat(),
        "queue_id": queue_id,
        "correlation_id": correlation_id or f"c-{queue_id}",
        "causation_id": None,
        "note": f"event {index}",
    }


def records(*events: dict[str, Any], stream: str = "MAIL") -> list[Record]:
    return [
        record_of(stream, i + 1, json.dumps(e).encode(), trace_id="ab" * 16)
        for i, e in enumerate(events)
    ]


def fill(store: AuditStore, count: int) -> None:
    store.add(records(*(event(i, minutes=i) for i in range(1, count + 1))))


def test_add_assigns_ids_and_skips_duplicates(store: AuditStore) -> None:
    assert store.add(records(event(1), event(2))) == 2
    assert store.add(records(event(2), event(3), event(3))) == 1
    stored = list(store.records())
    assert [r.id for r in stored] == [1, 2, 3]
    assert [r.event_id for r in stored] == ["e0001", "e0002", "e0003"]
    assert stored[0].trace_id == "ab" * 16


def test_records_chain_to_previous(store: AuditStore) -> None:
    fill(store, 4)
    stored = list(store.records())
    assert stored[0].prev_hash == GENESIS
    for before, after in itertools.pairwise(stored):
        assert after.prev_hash == before.hash
    for record in stored:
        assert chain.record_hash(record) == record.hash
    assert store.head() == chain.ChainHead(4, stored[-1].hash)


def test_hash_covers_canonical_bytes(store: AuditStore) -> None:
    fill(store, 1)
    record = next(store.records())
    canonical = chain.canonical_bytes(record)
    assert b" " not in canonical.replace(b"event 1", b"")
    assert json.loads(canonical)["prev_hash"] == GENESIS
    assert "hash" not in json.loads(canonical)
    assert list(json.loads(canonical)) == sorted(json.loads(canonical))


def test_verify_passes_on_intact_store(store: AuditStore) -> None:
    fill(store, 5)
    result = store.verify()
    assert result.ok, result.reason
    assert result.records == 5
    assert result.head_hash == store.head().last_hash


def test_verify_passes_on_empty_store(store: AuditStore) -> None:
    result = store.verify()
    assert result.ok, result.reason
    assert result.records == 0
    assert result.head_hash == GENESIS


def test_verify_names_edited_record(store: AuditStore, backend: Backend) -> None:
    fill(store, 5)
    backend.tamper(
        "UPDATE audit_events SET data = ? WHERE id = ?", ('{"edited":true}', 3)
    )
    result = store.verify()
    assert not result.ok
    assert result.record_id == 3
    assert result.event_id == "e0003"
    assert result.reason.startswith("content changed")
    assert result.records == 2


def test_verify_names_deleted_record(store: AuditStore, backend: Backend) -> None:
    fill(store, 5)
    backend.tamper("DELETE FROM audit_events WHERE id = ?", (3,))
    result = store.verify()
    assert not result.ok
    assert result.record_id == 3
    assert "record 3 is missing" in result.reason
    assert "event e0004" in result.reason


def test_verify_finds_rehashed_record(store: AuditStore, backend: Backend) -> None:
    fill(store, 5)
    original = list(store.records())[2]
    forged = chain.StoredRecord(**{**original.as_dict(), "type": "mail.forged"})
    forged_hash = chain.record_hash(forged)
    backend.tamper(
        "UPDATE audit_events SET type = ?, hash = ? WHERE id = ?",
        ("mail.forged", forged_hash, 3),
    )
    result = store.verify()
    assert not result.ok
    assert result.record_id == 4
    assert result.reason.startswith("chain broken")
    assert "record 3" in result.reason


def test_verify_finds_deleted_last_record(store: AuditStore, backend: Backend) -> None:
    fill(store, 5)
    backend.tamper("DELETE FROM audit_events WHERE id = ?", (5,))
    result = store.verify()
    assert not result.ok
    assert result.record_id == 5
    assert "records 5 to 5 are missing" in result.reason


def test_new_records_after_deletion_keep_the_gap(
    store: AuditStore, backend: Backend
) -> None:
    fill(store, 3)
    backend.tamper("DELETE FROM audit_events WHERE id = ?", (3,))
    store.add(records(event(9)))
    assert [r.id for r in store.records()] == [1, 2, 4]
    result = store.verify()
    assert result.record_id == 3
    assert not result.ok


def test_streams_interleave_in_one_chain(store: AuditStore) -> None:
    store.add(records(event(1), event(2), stream="MAIL"))
    store.add(
        records(event(3, type_="config.ca.imported", queue_id=None), stream="CONFIG")
    )
    store.add(records(event(4), stream="MAIL"))
    stored = list(store.records())
    assert [r.stream for r in stored] == ["MAIL", "MAIL", "CONFIG", "MAIL"]
    assert store.verify().ok


def test_query_by_queue_id_follows_correlation(store: AuditStore) -> None:
    store.add(
        records(
            event(1, queue_id="Q1"),
            event(2, queue_id="Q2"),
            event(3, type_="mail.processed", queue_id="D1", correlation_id="c-Q1"),
        )
    )
    found = store.query_records(queue_id="Q1")
    assert [r.event_id for r in found] == ["e0001", "e0003"]
    assert [e["event_id"] for e in store.query(queue_id="Q2")] == ["e0002"]


def test_query_by_type_prefix_and_time(store: AuditStore) -> None:
    store.add(
        records(
            event(1, minutes=0),
            event(2, type_="mail.delivered", minutes=10),
            event(3, type_="config.ca.imported", minutes=20),
        )
    )
    assert [r.event_id for r in store.query_records(event_type="mail.*")] == [
        "e0001",
        "e0002",
    ]
    since = START + timedelta(minutes=5)
    assert [r.event_id for r in store.query_records(since=since)] == [
        "e0002",
        "e0003",
    ]
    assert len(store.query_records(limit=1)) == 1


def test_records_pages_and_filters_by_time(
    store: AuditStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(store_module, "_PAGE", 2)
    fill(store, 7)
    assert [r.id for r in store.records()] == [1, 2, 3, 4, 5, 6, 7]
    since = START + timedelta(minutes=4)
    assert [r.id for r in store.records(since)] == [4, 5, 6, 7]


def test_concurrent_writers_keep_one_chain(store: AuditStore, backend: Backend) -> None:
    second = backend.open()
    errors: list[BaseException] = []

    def write(target: AuditStore, offset: int) -> None:
        try:
            for batch in range(10):
                base = offset + batch * 5
                target.add(records(*(event(base + i) for i in range(5))))
        except BaseException as err:  # reported by the assert below
            errors.append(err)

    threads = [
        threading.Thread(target=write, args=(store, 0)),
        threading.Thread(target=write, args=(second, 1000)),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    second.close()
    assert errors == []
    result = store.verify()
    assert result.ok, result.reason
    assert result.records == 100


def test_invalid_bytes_are_kept_as_invalid(store: AuditStore) -> None:
    store.add([record_of("MAIL", 7, b"\xff not json")])
    (record,) = store.records()
    assert record.type == "invalid"
    assert record.event_id == "invalid/MAIL/7"
    assert json.loads(record.data) == {"size": 10}


def test_query_limit_keeps_newest(store: AuditStore) -> None:
    fill(store, 5)
    newest = store.query_records(limit=2)
    everything = store.query_records(limit=10)
    assert [r.id for r in newest] == [r.id for r in everything[-2:]]
    assert newest[0].id < newest[1].id

"""The hash chain that makes the audit log tamper-evident.

Each stored record carries `prev_hash`, the hash of the record before it in the
store's insertion order (64 zeros for the first). It also carries `hash`, the
SHA-256 of its canonical bytes. Those are the JSON object of every stored field
except `hash` itself, with keys sorted and no whitespace, in UTF-8.

Changing a field changes the hash. Deleting a record leaves a gap in the ids
and a `prev_hash` that matches nothing. Rewriting a record together with its
hash breaks the next record's `prev_hash`.

NOTE: records deleted from the end, together with the chain head, cannot be
detected from the store alone. Keep the head hash that `smimegw audit verify`
prints somewhere else (a ticket, a log collector) to detect that.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any, Final

GENESIS: Final = "0" * 64


@dataclass(frozen=True)
class StoredRecord:
    """One row of the audit store, as hashed and exported."""

    id: int
    event_id: str
    type: str
    time: str
    queue_id: str | None
    correlation_id: str | None
    causation_id: str | None
    stream: str
    stream_sequence: int
    trace_id: str | None
    data: str
    prev_hash: str
    hash: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def canonical_bytes(record: StoredRecord) -> bytes:
    """Encode every field but `hash` as canonical JSON: the bytes `hash` covers."""
    fields = record.as_dict()
    del fields["hash"]
    return json.dumps(
        fields, sort_keys=True, separators=(",", ":"), ensure_ascii=False
    ).encode("utf-8")


def record_hash(record: StoredRecord) -> str:
    return hashlib.sha256(canonical_bytes(record)).hexdigest()


@dataclass(frozen=True)
class ChainHead:
    """The id and hash of the last record, stored beside the records."""

    last_id: int
    last_hash: str


@dataclass(frozen=True)
class VerifyResult:
    """The outcome of a chain check: `ok`, or the first bad record and why."""

    ok: bool
    records: int
    head_hash: str
    record_id: int | None = None
    event_id: str | None = None
    reason: str = ""


def verify_records(records: Iterable[StoredRecord], head: ChainHead) -> VerifyResult:
    """Recompute the chain over `records` in id order; stop at the first mismatch."""
    expected_id = 1
    prev_hash = GENESIS
    count = 0
    for record in records:
        failure = _check_record(record, expected_id, prev_hash, count)
        if failure is not None:
            return failure
        prev_hash = record.hash
        expected_id += 1
        count += 1
    return _check_head(head, expected_id - 1, prev_hash, count)


def _check_record(
    record: StoredRecord, expected_id: int, prev_hash: str, count: int
) -> VerifyResult | None:
    def failed(record_id: int, event_id: str | None, reason: str) -> VerifyResult:
        return VerifyResult(False, count, prev_hash, record_id, event_id, reason)

    if record.id != expected_id:
        missing = (
            f"record {expected_id} is"
            if record.id == expected_id + 1
            else f"records {expected_id} to {record.id - 1} are"
        )
        return failed(
            expected_id,
            None,
            f"{missing} missing: the chain goes from record {expected_id - 1} "
            f"to record {record.id} (event {record.event_id})",
        )
    if record.prev_hash != prev_hash:
        return failed(
            record.id,
            record.event_id,
            f"chain broken: prev_hash does not match the hash of record "
            f"{record.id - 1}, which was rewritten together with its hash, or "
            "this record's prev_hash was edited",
        )
    if record_hash(record) != record.hash:
        return failed(
            record.id,
            record.event_id,
            "content changed: the stored fields do not match the record's hash",
        )
    return None


def _check_head(
    head: ChainHead, last_id: int, last_hash: str, count: int
) -> VerifyResult:
    if head.last_id > last_id:
        return VerifyResult(
            False,
            count,
            last_hash,
            last_id + 1,
            None,
            f"records {last_id + 1} to {head.last_id} are missing: the chain head "
            f"names record {head.last_id} but the store ends at record {last_id}",
        )
    if head.last_id != last_id or head.last_hash != last_hash:
        return VerifyResult(
            False,
            count,
            last_hash,
            last_id or None,
            None,
            f"chain head (record {head.last_id}, hash {head.last_hash[:16]}...) does "
            f"not match the last record {last_id}; the head or the last record "
            "was edited",
        )
    return VerifyResult(True, count, last_hash)

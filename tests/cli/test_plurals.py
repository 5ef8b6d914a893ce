"""Counts in command output agree with their nouns: 1 recipient, 2 recipients."""

from __future__ import annotations

import json
from typing import Any

import pytest

from services.audit.chain import VerifyResult
from smimegw.commands import plural
from smimegw.commands.audit import _verify_lines
from smimegw.commands.trace import step_of


def record(event_type: str, **fields: Any) -> dict[str, Any]:
    return {
        "type": event_type,
        "time": "2026-01-01T00:00:00Z",
        "queue_id": "Q1",
        "event_id": "e1",
        "trace_id": None,
        "data": json.dumps({"type": event_type, **fields}),
    }


@pytest.mark.parametrize(
    ("count", "expected"),
    [(0, "0 recipients"), (1, "1 recipient"), (2, "2 recipients")],
)
def test_plural(count: int, expected: str) -> None:
    assert plural(count, "recipient") == expected


def test_plural_irregular() -> None:
    assert plural(2, "body", "bodies") == "2 bodies"
    assert plural(1, "body", "bodies") == "1 body"


@pytest.mark.parametrize(
    ("recipients", "expected"),
    [(["a@example.com"], "1 recipient"), (["a@x", "b@x"], "2 recipients")],
)
def test_trace_received_recipients(recipients: list[str], expected: str) -> None:
    step = step_of(record("mail.received", recipients=recipients, body={"size": 9}))
    assert step.decision == expected


def test_trace_delivered_one_recipient() -> None:
    step = step_of(record("mail.delivered", recipients=["a@x"], reply="250 ok"))
    assert step.decision == "delivered 1 recipient"


def test_trace_parked_one_attempt() -> None:
    step = step_of(record("mail.parked", attempts=1, reason="undecodable"))
    assert step.decision == "parked after 1 attempt"


def test_audit_verify_one_record() -> None:
    intact = _verify_lines(VerifyResult(ok=True, records=1, head_hash="ab"))
    assert intact[0] == "audit log intact: 1 record"
    failed = _verify_lines(
        VerifyResult(ok=False, records=1, head_hash="", record_id=2, reason="bad")
    )
    assert failed[2] == "1 record before it is intact"

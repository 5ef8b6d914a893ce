"""Events decode strictly, derive ids from their cause, and document themselves."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from schemas import (
    EVENT_TYPES,
    BodyRef,
    ClientInfo,
    EventDecodeError,
    MailReceived,
    MailRouted,
)
from tests.harness import REPO

BODY = BodyRef(key="Q1", size=10, sha256="00" * 32, chunks=1)


def received() -> MailReceived:
    return MailReceived.create(
        queue_id="Q1",
        sender="alice@example.com",
        recipients=("bob@example.com",),
        client=ClientInfo(address="127.0.0.1", helo="client.test", tls=False),
        body=BODY,
    )


def test_round_trip() -> None:
    event = received()
    assert MailReceived.decode(event.encode()) == event


def test_unknown_field_rejected() -> None:
    data = json.loads(received().encode())
    data["surprise"] = 1
    with pytest.raises(EventDecodeError, match="surprise: extra_forbidden"):
        MailReceived.decode(json.dumps(data).encode())


def test_wrong_type_rejected() -> None:
    data = json.loads(received().encode())
    data["body"]["size"] = "10"
    with pytest.raises(EventDecodeError, match=r"body\.size: int_type"):
        MailReceived.decode(json.dumps(data).encode())


def test_other_event_type_rejected() -> None:
    routed = MailRouted.create(
        cause=received(),
        plan_id="p",
        group=0,
        groups=1,
        sender="a@example.com",
        recipients=("b@example.com",),
        action="relay",
        reason="test",
        body=BODY,
    )
    with pytest.raises(EventDecodeError):
        MailReceived.decode(routed.encode())


def test_future_schema_version_rejected() -> None:
    data = json.loads(received().encode())
    data["schema_version"] = 2
    with pytest.raises(EventDecodeError, match="schema version 2"):
        MailReceived.decode(json.dumps(data).encode())


def test_decode_error_hides_values() -> None:
    data = json.loads(received().encode())
    data["sender"] = 12345
    with pytest.raises(EventDecodeError) as error:
        MailReceived.decode(json.dumps(data).encode())
    assert "12345" not in str(error.value)


def test_derived_ids_repeat_for_same_cause() -> None:
    cause = received()
    fields = dict(
        plan_id="p",
        group=0,
        groups=1,
        sender="a@example.com",
        recipients=("b@example.com",),
        action="relay",
        reason="test",
        body=BODY,
    )
    first = MailRouted.create(cause=cause, key="0", **fields)
    again = MailRouted.create(cause=cause, key="0", **fields)
    other = MailRouted.create(cause=cause, key="1", **fields)
    assert first.event_id == again.event_id
    assert first.event_id != other.event_id
    assert first.correlation_id == cause.correlation_id
    assert first.causation_id == cause.event_id
    assert first.queue_id == "Q1"


def test_events_frozen() -> None:
    event = received()
    with pytest.raises(ValueError):
        event.sender = "mallory@example.com"  # type: ignore[misc]


def test_asyncapi_lists_every_event() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "smimegw", "asyncapi"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    document = json.loads(result.stdout)
    assert document["asyncapi"].startswith("3.")
    schemas = document["components"]["schemas"]
    for event_type in EVENT_TYPES.values():
        assert event_type.__name__ in schemas
    assert set(EVENT_TYPES) <= set(document["channels"])

"""Parked bus messages: list them, send them back to their stage, or drop them.

A consumer parks a message it gave up on by copying it to `parked.<stage>` in
the PARKED stream (see runtime.py). These functions read and change that
stream directly through JetStream, so they work while every service is down
and need no request handler: the stream is the single place parked messages
live, whichever replica parked them.

Retry publishes the original bytes again on their original subject with a new
`Nats-Msg-Id` (JetStream would drop the event id as a duplicate within its
window), then deletes the parked copy. Handlers are idempotent, so a retry that
is interrupted between the two steps and run again does no harm. Drop deletes
the parked copy only. The message body stays in the BODIES stream, because
other plans of the same message may still need it, and the result names it.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any, Final

from nats.js import JetStreamContext
from nats.js.api import RawStreamMsg
from nats.js.errors import NotFoundError

from smimegw import streams

SUBJECT_HEADER: Final = "Smimegw-Parked-Subject"
REASON_HEADER: Final = "Smimegw-Parked-Reason"
_ALL: Final = "parked.>"


class ParkingError(Exception):
    """A parked message could not be found, read or moved."""


class ParkedNotFoundError(ParkingError):
    def __init__(self, sequence: int) -> None:
        super().__init__(
            f"no parked message has sequence {sequence} in the {streams.PARKED} "
            "stream: it was retried or dropped already; list them with "
            "`smimegw parked list`"
        )
        self.sequence = sequence


@dataclass(frozen=True)
class ParkedMessage:
    """One message in the PARKED stream, described without its payload."""

    sequence: int
    stage: str
    subject: str
    reason: str
    parked_at: datetime | None
    size: int
    event_type: str | None
    event_id: str | None
    queue_id: str | None
    body_key: str | None

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["parked_at"] = self.parked_at.isoformat() if self.parked_at else None
        return data


def describe(message: RawStreamMsg) -> ParkedMessage:
    headers = message.headers or {}
    envelope = _envelope(message.data or b"")
    body = envelope.get("body")
    return ParkedMessage(
        sequence=message.seq or 0,
        stage=(message.subject or "").removeprefix("parked."),
        subject=headers.get(SUBJECT_HEADER, ""),
        reason=headers.get(REASON_HEADER, ""),
        parked_at=message.time,
        size=len(message.data or b""),
        event_type=_text(envelope.get("type")),
        event_id=_text(envelope.get("event_id")),
        queue_id=_text(envelope.get("queue_id")),
        body_key=_text(body.get("key")) if isinstance(body, dict) else None,
    )


def _envelope(data: bytes) -> dict[str, Any]:
    """Parse the event's JSON object, or return {} for bytes that are not one."""
    try:
        value = json.loads(data)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _text(value: object) -> str | None:
    return value if isinstance(value, str) else None


async def list_parked(
    js: JetStreamContext, *, stage: str | None = None, limit: int = 1000
) -> list[ParkedMessage]:
    """List parked messages oldest first, at most `limit`, of one stage or all."""
    subject = f"parked.{stage}" if stage else _ALL
    found: list[ParkedMessage] = []
    sequence = 1
    while len(found) < limit:
        try:
            message = await js.get_msg(
                streams.PARKED, seq=sequence, subject=subject, next=True
            )
        except NotFoundError:
            break
        found.append(describe(message))
        sequence = (message.seq or sequence) + 1
    return found


async def get_parked(js: JetStreamContext, sequence: int) -> RawStreamMsg:
    try:
        return await js.get_msg(streams.PARKED, seq=sequence)
    except NotFoundError as err:
        raise ParkedNotFoundError(sequence) from err


async def retry(js: JetStreamContext, sequence: int) -> ParkedMessage:
    """Publish parked message `sequence` on its original subject, then unpark it."""
    message = await get_parked(js, sequence)
    parked = describe(message)
    if not parked.subject:
        raise ParkingError(
            f"parked message {sequence} has no {SUBJECT_HEADER} header, so its "
            "original subject is unknown; drop it instead"
        )
    headers = {"Nats-Msg-Id": f"retry/{parked.stage}/{sequence}"}
    await js.publish(parked.subject, message.data or b"", headers=headers)
    await js.delete_msg(streams.PARKED, sequence)
    return parked


async def drop(js: JetStreamContext, sequence: int) -> ParkedMessage:
    """Delete parked message `sequence` for good."""
    parked = describe(await get_parked(js, sequence))
    await js.delete_msg(streams.PARKED, sequence)
    return parked

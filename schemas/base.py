"""The envelope every event and command on the bus carries.

Models are frozen and decoded strictly: an unknown field or a value of the wrong
type is a validation error, so a producer and a consumer that drift apart fail
loudly instead of guessing.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Annotated, ClassVar, Self

from pydantic import BaseModel, ConfigDict, Field, ValidationError

# JSON has no datetime type, so timestamps arrive as ISO 8601 strings; strict
# mode would reject those, and this one field opts out of it.
Timestamp = Annotated[datetime, Field(strict=False)]

# Namespace for event ids derived from the event that caused them: a handler
# that runs twice for the same input publishes the same ids, and JetStream's
# deduplication (Nats-Msg-Id) stores the output once.
_EVENT_ID_NAMESPACE = uuid.UUID("6f1c2a7e-3d1b-4f7e-9a55-0c2f3d1a9b10")


class Model(BaseModel):
    """Base of every payload: frozen, strict, no unknown fields."""

    model_config = ConfigDict(frozen=True, strict=True, extra="forbid")


class EventDecodeError(ValueError):
    """Bytes from the bus that are not a valid event of the expected type."""

    def __init__(self, expected: str, detail: str) -> None:
        super().__init__(f"invalid {expected} event: {detail}")
        self.expected = expected
        self.detail = detail


class Event(Model):
    """Envelope fields shared by every event.

    `correlation_id` ties every event of one message (or one configuration
    command) together; `causation_id` is the id of the event this one answers.
    """

    TYPE: ClassVar[str] = ""
    SCHEMA_VERSION: ClassVar[int] = 1

    event_id: str
    type: str
    schema_version: int
    time: Timestamp
    queue_id: str | None = None
    correlation_id: str
    causation_id: str | None = None

    @classmethod
    def create(
        cls, *, cause: Event | None = None, key: str = "", **fields: object
    ) -> Self:
        """Build an event of this type with its envelope filled in.

        With a `cause`, the id is derived from the cause's id, this type and
        `key`, so that handling the same input twice yields the same event.
        """
        if cause is not None:
            name = f"{cause.event_id}/{cls.TYPE}/{key}"
            event_id = str(uuid.uuid5(_EVENT_ID_NAMESPACE, name))
            fields.setdefault("correlation_id", cause.correlation_id)
            fields.setdefault("causation_id", cause.event_id)
            fields.setdefault("queue_id", cause.queue_id)
        else:
            event_id = str(uuid.uuid4())
            fields.setdefault("correlation_id", event_id)
        return cls(
            event_id=event_id,
            type=cls.TYPE,
            schema_version=cls.SCHEMA_VERSION,
            time=datetime.now(UTC),
            **fields,  # type: ignore[arg-type]
        )

    @classmethod
    def decode(cls, data: bytes) -> Self:
        """Parse bytes from the bus, raising EventDecodeError on any mismatch."""
        try:
            event = cls.model_validate_json(data)
        except ValidationError as err:
            raise EventDecodeError(cls.TYPE, _summarise(err)) from err
        if event.type != cls.TYPE:
            raise EventDecodeError(cls.TYPE, f"type is {event.type!r}")
        if event.schema_version != cls.SCHEMA_VERSION:
            raise EventDecodeError(
                cls.TYPE,
                f"schema version {event.schema_version} is not the supported "
                f"version {cls.SCHEMA_VERSION}",
            )
        return event

    def encode(self) -> bytes:
        return self.model_dump_json().encode()


def _summarise(err: ValidationError) -> str:
    # Name the fields and error kinds only: the input values may hold
    # addresses or other data that does not belong in a log line.
    parts = [
        f"{'.'.join(str(p) for p in e['loc']) or '<root>'}: {e['type']}"
        for e in err.errors()[:5]
    ]
    return "; ".join(parts)

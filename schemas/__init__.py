"""Pydantic models of every event and command on the gateway's bus."""

from schemas.base import Event, EventDecodeError, Model
from schemas.mail import (
    MAIL_EVENTS,
    BodyRef,
    ClientInfo,
    MailBounced,
    MailDeferred,
    MailDelivered,
    MailParked,
    MailProcessed,
    MailReceived,
    MailRouted,
)

EVENT_TYPES: dict[str, type[Event]] = {cls.TYPE: cls for cls in MAIL_EVENTS}

__all__ = [
    "EVENT_TYPES",
    "MAIL_EVENTS",
    "BodyRef",
    "ClientInfo",
    "Event",
    "EventDecodeError",
    "MailBounced",
    "MailDeferred",
    "MailDelivered",
    "MailParked",
    "MailProcessed",
    "MailReceived",
    "MailRouted",
    "Model",
]

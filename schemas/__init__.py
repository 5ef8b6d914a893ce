"""Pydantic models of every event and command on the gateway's bus."""

from schemas.base import Event, EventDecodeError, Model
from schemas.config import CONFIG_EVENTS
from schemas.mail import (
    MAIL_EVENTS,
    BodyRef,
    ClientInfo,
    CryptoOperation,
    MailBounced,
    MailDecrypted,
    MailDeferred,
    MailDelivered,
    MailHeld,
    MailParked,
    MailProcessed,
    MailReceived,
    MailReleased,
    MailRouted,
    MailUnprotected,
    MailVerified,
    ProfileSpec,
    RecipientCertificate,
    SignerReport,
)

EVENT_TYPES: dict[str, type[Event]] = {
    cls.TYPE: cls for cls in (*MAIL_EVENTS, *CONFIG_EVENTS)
}

__all__ = [
    "CONFIG_EVENTS",
    "EVENT_TYPES",
    "MAIL_EVENTS",
    "BodyRef",
    "ClientInfo",
    "CryptoOperation",
    "Event",
    "EventDecodeError",
    "MailBounced",
    "MailDecrypted",
    "MailDeferred",
    "MailDelivered",
    "MailHeld",
    "MailParked",
    "MailProcessed",
    "MailReceived",
    "MailReleased",
    "MailRouted",
    "MailUnprotected",
    "MailVerified",
    "Model",
    "ProfileSpec",
    "RecipientCertificate",
    "SignerReport",
]

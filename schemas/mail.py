"""Events of a message's lifecycle, published to the MAIL stream (`mail.>`)."""

from __future__ import annotations

from typing import ClassVar, Literal

from schemas.base import Event, Model, Timestamp


class BodyRef(Model):
    """A message body in the body store (claim check): events carry this, not bytes."""

    key: str
    size: int
    sha256: str
    chunks: int


class ClientInfo(Model):
    """The SMTP client a message came from."""

    address: str
    helo: str
    tls: bool
    authenticated: bool = False


class MailReceived(Event):
    """Ingress stored a message and is about to answer 250 to its DATA."""

    TYPE: ClassVar[str] = "mail.received"
    type: Literal["mail.received"]
    sender: str
    recipients: tuple[str, ...]
    client: ClientInfo
    body: BodyRef
    smtputf8: bool = False
    body_8bitmime: bool = False


class MailRouted(Event):
    """Policy's plan for one group of recipients that get the same treatment."""

    TYPE: ClassVar[str] = "mail.routed"
    type: Literal["mail.routed"]
    plan_id: str
    group: int
    groups: int
    sender: str
    recipients: tuple[str, ...]
    action: Literal["relay"]
    reason: str
    body: BodyRef


class MailProcessed(Event):
    """Crypto's output for one plan: the body to hand to the next hop."""

    TYPE: ClassVar[str] = "mail.processed"
    type: Literal["mail.processed"]
    kind: Literal["message", "dsn"] = "message"
    sender: str
    recipients: tuple[str, ...]
    operations: tuple[str, ...]
    body: BodyRef
    # Delivery deletes the bodies listed here once every recipient is finished.
    release_bodies: tuple[str, ...] = ()


class MailDelivered(Event):
    """The next hop accepted the message for these recipients."""

    TYPE: ClassVar[str] = "mail.delivered"
    type: Literal["mail.delivered"]
    recipients: tuple[str, ...]
    next_hop: str
    reply: str
    attempt: int


class MailDeferred(Event):
    """A temporary failure; delivery tries these recipients again later."""

    TYPE: ClassVar[str] = "mail.deferred"
    type: Literal["mail.deferred"]
    recipients: tuple[str, ...]
    next_hop: str
    reason: str
    attempt: int
    retry_at: Timestamp


class MailBounced(Event):
    """A permanent failure, or the message outlived `delivery.max_age`."""

    TYPE: ClassVar[str] = "mail.bounced"
    type: Literal["mail.bounced"]
    recipients: tuple[str, ...]
    next_hop: str
    status: str
    reason: str
    # None when the sender is the null sender (<>): RFC 5321 section 4.5.5 forbids
    # a DSN about a DSN.
    dsn_queue_id: str | None


class MailParked(Event):
    """A bus message that a service could not handle, moved aside for an operator."""

    TYPE: ClassVar[str] = "mail.parked"
    type: Literal["mail.parked"]
    stage: str
    subject: str
    stream_sequence: int
    reason: str
    attempts: int


MAIL_EVENTS: tuple[type[Event], ...] = (
    MailReceived,
    MailRouted,
    MailProcessed,
    MailDelivered,
    MailDeferred,
    MailBounced,
    MailParked,
)

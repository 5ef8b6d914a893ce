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
    """Ingress stored a message and is about to reply 250 to its DATA."""

    TYPE: ClassVar[str] = "mail.received"
    type: Literal["mail.received"]
    sender: str
    recipients: tuple[str, ...]
    client: ClientInfo
    body: BodyRef
    smtputf8: bool = False
    body_8bitmime: bool = False


class ProfileSpec(Model):
    """An encryption profile as it stood when policy made the plan."""

    name: str
    action: Literal["encrypt", "sign", "sign-and-encrypt"]
    algorithm: str
    digest: Literal["sha256", "sha384", "sha512"]
    signature: Literal["detached", "opaque"]
    on_failure: Literal["send-plain", "bounce", "hold"]
    encrypt_to_self: bool
    # Signature scheme of RSA signer keys; EC keys always sign with ECDSA.
    rsa_padding: Literal["pkcs1v15", "pss"] = "pkcs1v15"


class RecipientCertificate(Model):
    """The external binding whose certificate encrypts to one recipient."""

    address: str
    binding_id: str
    fingerprint: str


class MailRouted(Event):
    """Policy's plan for one group of recipients that get the same treatment.

    Actions: `relay` passes the message on unchanged. `protect` signs and/or
    encrypts it with `profile`. `open` decrypts and verifies incoming S/MIME.
    `bounce` returns it to the sender with `reason`, without delivery.
    """

    TYPE: ClassVar[str] = "mail.routed"
    type: Literal["mail.routed"]
    plan_id: str
    group: int
    groups: int
    sender: str
    recipients: tuple[str, ...]
    action: Literal["relay", "protect", "open", "bounce"]
    reason: str
    body: BodyRef
    rule_id: str | None = None
    profile: ProfileSpec | None = None
    # The sender's internal binding that signs (sign, sign-and-encrypt).
    signer_binding: str | None = None
    # One entry per recipient certificate, plus the sender's with encrypt-to-self.
    encrypt_to: tuple[RecipientCertificate, ...] = ()
    # Enhanced status code for `bounce`, RFC 3463.
    status: str | None = None
    # Content encryption for `protect` with encryption: the profile's algorithm,
    # or a stronger one that every recipient announced (SMIMECapabilities).
    content_algorithm: str | None = None
    algorithm_reason: str | None = None


class MailHeld(Event):
    """Recipients parked until a usable certificate for them is imported."""

    TYPE: ClassVar[str] = "mail.held"
    type: Literal["mail.held"]
    plan_id: str
    recipients: tuple[str, ...]
    reason: str
    release_by: Timestamp


class MailReleased(Event):
    """Held recipients no longer held: a certificate arrived, or they bounce.

    They bounce when the hold timed out or an operator dropped them.
    """

    TYPE: ClassVar[str] = "mail.released"
    type: Literal["mail.released"]
    plan_id: str
    recipients: tuple[str, ...]
    outcome: Literal["certificate-imported", "timed-out", "dropped"]


class MailUnprotected(Event):
    """A profile's send-plain failure action: these copies leave without S/MIME."""

    TYPE: ClassVar[str] = "mail.unprotected"
    type: Literal["mail.unprotected"]
    recipients: tuple[str, ...]
    profile: str
    reason: str


class CryptoOperation(Model):
    """One S/MIME step applied to a message, for the event log."""

    operation: Literal["sign", "encrypt", "decrypt", "verify"]
    algorithm: str
    # SHA-256 fingerprints of the certificates involved.
    certificates: tuple[str, ...] = ()
    binding_ids: tuple[str, ...] = ()
    weak: bool = False
    detail: str = ""


class MailProcessed(Event):
    """Crypto's output for one plan: the body to hand to the next hop."""

    TYPE: ClassVar[str] = "mail.processed"
    type: Literal["mail.processed"]
    kind: Literal["message", "dsn"] = "message"
    sender: str
    recipients: tuple[str, ...]
    operations: tuple[CryptoOperation, ...]
    body: BodyRef
    profile: str | None = None
    # Delivery deletes the bodies listed here once every recipient is finished.
    release_bodies: tuple[str, ...] = ()
    # Set for a plan whose recipients bounce without a delivery attempt.
    bounce_status: str | None = None
    bounce_reason: str | None = None
    # The received body and how many plans share it: delivery deletes it after
    # the last of them finished.
    original_body: str | None = None
    plans: int = 1


class SignerReport(Model):
    """One signer of an incoming message, each result reported separately."""

    signature: Literal["valid", "invalid"]
    signature_reason: str | None
    digest_algorithm: str
    signature_algorithm: str
    weak: bool
    certificate_status: Literal["trusted", "untrusted", "expired", "not-yet-valid"]
    certificate_reason: str | None
    subject: str
    fingerprint: str
    from_matches: bool | None
    signing_time: Timestamp | None
    # The signer certificate's email addresses, and the algorithms its
    # SMIMECapabilities attribute announced, most preferred first.
    addresses: tuple[str, ...] = ()
    capabilities: tuple[str, ...] = ()


class MailVerified(Event):
    """Signature layers found in an incoming message, outermost first."""

    TYPE: ClassVar[str] = "mail.verified"
    type: Literal["mail.verified"]
    recipients: tuple[str, ...]
    layers: tuple[tuple[SignerReport, ...], ...]
    summary: Literal["valid", "invalid", "weak", "untrusted"]


class MailDecrypted(Event):
    """The outcome of decrypting an incoming enveloped message."""

    TYPE: ClassVar[str] = "mail.decrypted"
    type: Literal["mail.decrypted"]
    recipients: tuple[str, ...]
    status: Literal["decrypted", "no-key", "failed"]
    reason: str | None
    content_algorithm: str | None
    key_algorithm: str | None
    binding_id: str | None
    fingerprint: str | None


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
    MailHeld,
    MailReleased,
    MailUnprotected,
    MailProcessed,
    MailVerified,
    MailDecrypted,
    MailDelivered,
    MailDeferred,
    MailBounced,
    MailParked,
)

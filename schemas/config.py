"""Configuration events, published to the CONFIG stream (`config.>`) and kept forever.

The state of the gateway's configuration is the fold of these events in stream
order. Certificates travel as PEM text: they are public. Private keys never
appear here; an internal binding names the key by `key_id`, and only the crypto
service can open it.
"""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal

from pydantic import Field, TypeAdapter

from schemas.base import Event


class CaImported(Event):
    """A CA certificate that personal certificates may chain to."""

    TYPE: ClassVar[str] = "config.ca.imported"
    type: Literal["config.ca.imported"]
    ca_id: str
    certificate: str
    file_name: str


class CaDeleted(Event):
    TYPE: ClassVar[str] = "config.ca.deleted"
    type: Literal["config.ca.deleted"]
    ca_id: str


class LocalCertImported(Event):
    """A server certificate with its key, stored under a name for internal bindings."""

    TYPE: ClassVar[str] = "config.localcert.imported"
    type: Literal["config.localcert.imported"]
    name: str
    certificate: str
    chain: tuple[str, ...]
    key_id: str
    file_name: str


class LocalCertDeleted(Event):
    TYPE: ClassVar[str] = "config.localcert.deleted"
    type: Literal["config.localcert.deleted"]
    name: str


class BindingCreated(Event):
    """An address or domain tied to a certificate, and for `internal` to a key."""

    TYPE: ClassVar[str] = "config.binding.created"
    type: Literal["config.binding.created"]
    binding_id: str
    kind: Literal["internal", "external"]
    pattern: str
    certificate: str
    chain: tuple[str, ...]
    key_id: str | None
    local_cert: str | None
    file_name: str


class BindingDeleted(Event):
    TYPE: ClassVar[str] = "config.binding.deleted"
    type: Literal["config.binding.deleted"]
    binding_id: str


class ConfigWarning(Event):
    """Something an operator should know about an entry that was imported anyway."""

    TYPE: ClassVar[str] = "config.warning"
    type: Literal["config.warning"]
    entry_kind: Literal["ca", "localcert", "binding"]
    entry_id: str
    code: str
    message: str


class CertificateImportFailed(Event):
    """A certificate or key import that failed, with its cause."""

    TYPE: ClassVar[str] = "config.certificate.import_failed"
    type: Literal["config.certificate.import_failed"]
    command: str
    pattern: str | None
    name: str | None
    file_name: str
    file_type: str
    category: str
    message: str
    algorithm: str | None = None


class ProfileCreated(Event):
    """An encryption profile: what to do to outgoing mail that a rule selects."""

    TYPE: ClassVar[str] = "config.profile.created"
    type: Literal["config.profile.created"]
    name: str
    action: Literal["encrypt", "sign", "sign-and-encrypt"]
    algorithm: str
    digest: Literal["sha256", "sha384", "sha512"]
    signature: Literal["detached", "opaque"]
    on_failure: Literal["send-plain", "bounce", "hold"]
    encrypt_to_self: bool
    # Seconds a held copy waits for a certificate before it bounces.
    hold_timeout: float
    # Signature scheme of RSA signer keys (RFC 8017); EC keys sign with ECDSA.
    rsa_padding: Literal["pkcs1v15", "pss"] = "pkcs1v15"


class ProfileDeleted(Event):
    TYPE: ClassVar[str] = "config.profile.deleted"
    type: Literal["config.profile.deleted"]
    name: str


class RuleCreated(Event):
    """A delivery rule; rules are checked in `position` order, first match wins."""

    TYPE: ClassVar[str] = "config.rule.created"
    type: Literal["config.rule.created"]
    rule_id: str
    position: int
    profile: str
    sender: str | None
    recipient: str | None
    client_ip: str | None


class RuleMoved(Event):
    TYPE: ClassVar[str] = "config.rule.moved"
    type: Literal["config.rule.moved"]
    rule_id: str
    position: int


class RuleDeleted(Event):
    TYPE: ClassVar[str] = "config.rule.deleted"
    type: Literal["config.rule.deleted"]
    rule_id: str


CONFIG_EVENTS: tuple[type[Event], ...] = (
    CaImported,
    CaDeleted,
    LocalCertImported,
    LocalCertDeleted,
    BindingCreated,
    BindingDeleted,
    ConfigWarning,
    CertificateImportFailed,
    ProfileCreated,
    ProfileDeleted,
    RuleCreated,
    RuleMoved,
    RuleDeleted,
)

AnyConfigEvent = Annotated[
    CaImported
    | CaDeleted
    | LocalCertImported
    | LocalCertDeleted
    | BindingCreated
    | BindingDeleted
    | ConfigWarning
    | CertificateImportFailed
    | ProfileCreated
    | ProfileDeleted
    | RuleCreated
    | RuleMoved
    | RuleDeleted,
    Field(discriminator="type"),
]

config_event_adapter: TypeAdapter[AnyConfigEvent] = TypeAdapter(AnyConfigEvent)

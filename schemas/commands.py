"""Commands from the CLI to the service that owns a piece of configuration.

Commands go over NATS request/reply (`smimegw.cmd.<service>`), never into a
stream, because they may carry a PKCS#12 password.
"""

from __future__ import annotations

import base64
from typing import Annotated, Any, Literal

from pydantic import Field, SecretStr, SerializationInfo, TypeAdapter, field_serializer

from schemas.base import Model

POLICY_COMMANDS = "smimegw.cmd.policy"
CRYPTO_COMMANDS = "smimegw.cmd.crypto"


class Upload(Model):
    """A file read by the CLI; `data` is base64."""

    name: str
    data: str

    @classmethod
    def of(cls, name: str, content: bytes) -> Upload:
        return cls(name=name, data=base64.b64encode(content).decode())

    def content(self) -> bytes:
        return base64.b64decode(self.data, validate=True)


class _WithPassword(Model):
    password: SecretStr | None = None

    @field_serializer("password")
    def _reveal_on_request(
        self, value: SecretStr | None, info: SerializationInfo
    ) -> str | None:
        # Masked everywhere except in the request the CLI sends to crypto.
        if value is None:
            return None
        context = info.context or {}
        return value.get_secret_value() if context.get("reveal") else str(value)


class CaImport(Model):
    command: Literal["ca.import"]
    files: tuple[Upload, ...]


class CaDelete(Model):
    command: Literal["ca.delete"]
    ca_id: str


class CertImport(_WithPassword):
    command: Literal["cert.import"]
    name: str
    pkcs12: Upload | None = None
    cert: Upload | None = None
    key: Upload | None = None


class CertDelete(Model):
    command: Literal["cert.delete"]
    name: str


class BindingCreate(_WithPassword):
    command: Literal["binding.create"]
    kind: Literal["internal", "external"]
    pattern: str
    pkcs12: Upload | None = None
    cert: Upload | None = None
    key: Upload | None = None
    local_cert: str | None = None


class BindingDelete(Model):
    command: Literal["binding.delete"]
    binding_id: str


class ProfileCreate(Model):
    command: Literal["profile.create"]
    name: str
    action: Literal["encrypt", "sign", "sign-and-encrypt"]
    algorithm: str = "aes256-cbc"
    digest: Literal["sha256", "sha384", "sha512"] = "sha256"
    signature: Literal["detached", "opaque"] = "detached"
    on_failure: Literal["send-plain", "bounce", "hold"] = "bounce"
    encrypt_to_self: bool = False
    hold_timeout: str | None = None
    rsa_padding: Literal["pkcs1v15", "pss"] = "pkcs1v15"


class ProfileDelete(Model):
    command: Literal["profile.delete"]
    name: str


class RuleCreate(Model):
    command: Literal["rule.create"]
    profile: str
    sender: str | None = None
    recipient: str | None = None
    client_ip: str | None = None
    # 1-based; None appends the rule at the end.
    position: int | None = None


class RuleMove(Model):
    command: Literal["rule.move"]
    rule_id: str
    position: int


class RuleDelete(Model):
    command: Literal["rule.delete"]
    rule_id: str


class HeldList(Model):
    """List the copies held for a missing certificate (profile action `hold`)."""

    command: Literal["held.list"]


class HeldRelease(Model):
    """Plan the held copies of a message again now, or only `recipient`'s copy."""

    command: Literal["held.release"]
    queue_id: str
    recipient: str | None = None


class HeldDrop(Model):
    """Bounce the held copies of a message, or only `recipient`'s, to the sender."""

    command: Literal["held.drop"]
    queue_id: str
    recipient: str | None = None


class Query(Model):
    command: Literal[
        "ca.list",
        "cert.list",
        "binding.list",
        "binding.show",
        "history",
        "profile.list",
        "rule.list",
    ]
    entry_id: str | None = None


AnyCommand = Annotated[
    CaImport
    | CaDelete
    | CertImport
    | CertDelete
    | BindingCreate
    | BindingDelete
    | ProfileCreate
    | ProfileDelete
    | RuleCreate
    | RuleMove
    | RuleDelete
    | HeldList
    | HeldRelease
    | HeldDrop
    | Query,
    Field(discriminator="command"),
]

command_adapter: TypeAdapter[AnyCommand] = TypeAdapter(AnyCommand)


class CommandFailure(Model):
    category: str
    message: str


class CommandReply(Model):
    ok: bool
    result: Any = None
    error: CommandFailure | None = None
    warnings: tuple[str, ...] = ()

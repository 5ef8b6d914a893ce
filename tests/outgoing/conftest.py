"""A gateway with Alice as an internal user and Bob, Dave and Eve as correspondents."""

from __future__ import annotations

import subprocess
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiosmtplib
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import pkcs12

from schemas.commands import (
    POLICY_COMMANDS,
    ProfileCreate,
    RuleCreate,
    RuleDelete,
)
from smimegw.service import SERVICE_NAMES
from tests.config.conftest import THUNDERBIRD, Admin
from tests.conftest import gateway_settings
from tests.harness import Gateway, NatsServer, SinkServer, free_port

CORRESPONDENTS = ("Bob", "Dave", "Eve")


@dataclass
class Keys:
    """PEM files for OpenSSL: the CA, and each correspondent's key and certificate."""

    ca: Path
    folder: Path

    def key(self, name: str) -> Path:
        return self.folder / f"{name}.key"

    def cert(self, name: str) -> Path:
        return self.folder / f"{name}.crt"


def export_pems(folder: Path) -> Keys:
    folder.mkdir(exist_ok=True)
    for name in ("Alice", *CORRESPONDENTS):
        key, certificate, _ = pkcs12.load_key_and_certificates(
            (THUNDERBIRD / f"{name}.p12").read_bytes(), b"nss"
        )
        assert key is not None and certificate is not None
        (folder / f"{name}.key").write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        (folder / f"{name}.crt").write_bytes(
            certificate.public_bytes(serialization.Encoding.PEM)
        )
    return Keys(THUNDERBIRD / "TestCA.pem", folder)


class Outgoing:
    """The gateway, its sink, and the commands and checks the tests use."""

    def __init__(self, gateway: Gateway, sink: SinkServer, keys: Keys) -> None:
        self.gateway = gateway
        self.sink = sink
        self.keys = keys
        self.admin = Admin(gateway)
        self.rule_id: str | None = None

    async def use_profile(self, name: str, **options: object) -> None:
        """Create profile `name` and make it the only rule's profile."""
        reply = await self.admin.send(
            POLICY_COMMANDS,
            ProfileCreate(command="profile.create", name=name, **options),  # type: ignore[arg-type]
        )
        assert reply.ok, reply.error
        if self.rule_id is not None:
            deleted = await self.admin.send(
                POLICY_COMMANDS, RuleDelete(command="rule.delete", rule_id=self.rule_id)
            )
            assert deleted.ok, deleted.error
        created = await self.admin.send(
            POLICY_COMMANDS,
            RuleCreate(command="rule.create", profile=name, sender="*@example.com"),
        )
        assert created.ok, created.error
        self.rule_id = created.result["id"]

    async def send(
        self, recipients: list[str], body: bytes, sender: str = "alice@example.com"
    ) -> str:
        host, port = self.gateway.smtp_address
        async with aiosmtplib.SMTP(hostname=host, port=port) as smtp:
            _, reply = await smtp.sendmail(sender, recipients, body)
        return reply.rsplit(" ", 1)[-1]


def openssl(
    *args: str | Path, data: bytes | None = None
) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        ["openssl", *map(str, args)], input=data, capture_output=True, check=False
    )


def decrypt(keys: Keys, name: str, message: bytes) -> bytes:
    result = openssl(
        "cms",
        "-decrypt",
        "-inkey",
        keys.key(name),
        "-recip",
        keys.cert(name),
        data=message,
    )
    assert result.returncode == 0, result.stderr.decode()
    return result.stdout


def verify(keys: Keys, message: bytes) -> bytes:
    """Verify an S/MIME message against the test CA; return the signed content."""
    result = openssl("cms", "-verify", "-CAfile", keys.ca, data=message)
    assert result.returncode == 0, result.stderr.decode()
    return result.stdout


@pytest.fixture
async def outgoing(
    tmp_path: Path, nats_server: NatsServer, sink: SinkServer
) -> AsyncIterator[Outgoing]:
    settings = gateway_settings(
        tmp_path,
        internal_domains=("internal.test",),
        smtp={"listen": f"127.0.0.1:{free_port()}", "hostname": "gw.test"},
        delivery={"relay_host": f"127.0.0.1:{sink.port}"},
        policy={"hold_check_interval": "300ms"},
        nats={"url": nats_server.url},
    )
    gateway = Gateway(settings, nats_server.url)
    await gateway.start(SERVICE_NAMES)
    keys = export_pems(tmp_path / "pem")
    admin = Admin(gateway)
    assert (await admin.import_ca(keys.ca)).ok
    alice = await admin.internal("alice@example.com", THUNDERBIRD / "Alice.p12")
    assert alice.ok, alice.error
    for name in CORRESPONDENTS[:2]:
        reply = await admin.external(f"{name.lower()}@example.com", keys.cert(name))
        assert reply.ok, reply.error
    yield Outgoing(gateway, sink, keys)
    await gateway.stop()

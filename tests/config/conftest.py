from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from schemas.base import Model
from schemas.commands import (
    CRYPTO_COMMANDS,
    POLICY_COMMANDS,
    BindingCreate,
    CaImport,
    CommandReply,
    Query,
    Upload,
)
from smimegw.client import send_command
from tests.conftest import gateway_settings
from tests.harness import REPO, Gateway, NatsServer

INTEROP = REPO.parent / "shared" / "interop"
THUNDERBIRD = INTEROP / "thunderbird" / "smime"
RFC4134 = INTEROP / "rfc4134"
RFC9216 = INTEROP / "rfc9216"


class Admin:
    """Sends the commands the CLI sends, and reads the replies."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway

    async def send(self, subject: str, command: Model) -> CommandReply:
        return await send_command(self.gateway.settings, subject, command)

    async def import_ca(self, *paths: Path) -> CommandReply:
        files = tuple(Upload.of(p.name, p.read_bytes()) for p in paths)
        return await self.send(
            POLICY_COMMANDS, CaImport(command="ca.import", files=files)
        )

    async def internal(
        self, pattern: str, pkcs12: Path, password: str | None = "nss"
    ) -> CommandReply:
        command = BindingCreate(
            command="binding.create",
            kind="internal",
            pattern=pattern,
            pkcs12=Upload.of(pkcs12.name, pkcs12.read_bytes()),
            password=password,
        )
        return await self.send(CRYPTO_COMMANDS, command)

    async def internal_pem(
        self, pattern: str, cert: Path, key: Path, password: str | None = None
    ) -> CommandReply:
        command = BindingCreate(
            command="binding.create",
            kind="internal",
            pattern=pattern,
            cert=Upload.of(cert.name, cert.read_bytes()),
            key=Upload.of(key.name, key.read_bytes()),
            password=password,
        )
        return await self.send(CRYPTO_COMMANDS, command)

    async def external(self, pattern: str, cert: Path) -> CommandReply:
        command = BindingCreate(
            command="binding.create",
            kind="external",
            pattern=pattern,
            cert=Upload.of(cert.name, cert.read_bytes()),
        )
        return await self.send(POLICY_COMMANDS, command)

    async def query(self, what: str, entry_id: str | None = None) -> object:
        reply = await self.send(POLICY_COMMANDS, Query(command=what, entry_id=entry_id))  # type: ignore[arg-type]
        assert reply.ok, reply.error
        return reply.result

    async def binding(self, binding_id: str) -> dict[str, object]:
        result = await self.query("binding.show", binding_id)
        assert isinstance(result, dict)
        return result


@pytest.fixture
async def admin(tmp_path: Path, nats_server: NatsServer) -> AsyncIterator[Admin]:
    settings = gateway_settings(tmp_path, nats={"url": nats_server.url})
    gateway = Gateway(settings, nats_server.url)
    await gateway.start(["policy", "crypto", "audit"])
    yield Admin(gateway)
    await gateway.stop()

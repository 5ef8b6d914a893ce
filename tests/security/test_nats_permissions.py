"""Each service's NATS user may use only its own subjects."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from email.message import EmailMessage
from pathlib import Path

import aiosmtplib
import httpx
import nats
import nats.errors
import pytest
from nats.aio.client import Client

from services.admin.service import AdminService
from services.admin.tokens import Role, token_store
from smimegw import natsauth
from smimegw.service import SERVICE_NAMES
from tests.conftest import gateway_settings
from tests.harness import Gateway, wait_until
from tests.security.nats_auth import AuthNatsServer


@pytest.fixture
def auth_server(tmp_path: Path) -> AsyncIterator[AuthNatsServer]:
    server = AuthNatsServer(tmp_path / "nats")
    server.start()
    yield server
    server.stop()


class Connection:
    """A connection as one user that records the server's permission errors."""

    def __init__(self) -> None:
        self.errors: list[str] = []
        self.nc: Client | None = None

    async def open(self, server: AuthNatsServer, user: str, password: str) -> Client:
        async def on_error(error: Exception) -> None:
            self.errors.append(str(error))

        self.nc = await nats.connect(
            server.url,
            user=user,
            password=password,
            inbox_prefix=natsauth.inbox_prefix(user),
            error_cb=on_error,
            allow_reconnect=False,
        )
        return self.nc

    async def settle(self) -> None:
        assert self.nc is not None
        await self.nc.flush()
        # The server's -ERR arrives after the PONG that ends flush at the latest.
        await asyncio.sleep(0.2)


async def test_ingress_denied_keys_and_config(auth_server: AuthNatsServer) -> None:
    connection = Connection()
    nc = await connection.open(auth_server, "ingress", auth_server.passwords["ingress"])
    try:
        await nc.subscribe("$KV.keys.>")
        await nc.subscribe(natsauth.CRYPTO_COMMANDS)
        await nc.publish("config.ca.imported", b"{}")
        await nc.publish("mail.routed", b"{}")
        await nc.publish("mail.parked", b"{}")
        await nc.publish("mail.received", b"{}")
        await nc.publish("body.q1.0", b"body")
        await connection.settle()
    finally:
        await nc.close()
    joined = "\n".join(connection.errors).lower()
    assert 'subscription to "$kv.keys.>"' in joined
    assert f'subscription to "{natsauth.CRYPTO_COMMANDS}"' in joined
    assert 'publish to "config.ca.imported"' in joined
    assert 'publish to "mail.routed"' in joined
    assert 'publish to "mail.parked"' in joined
    # What ingress exists for: the event and the body.
    assert 'publish to "mail.received"' not in joined
    assert 'publish to "body.q1.0"' not in joined


async def test_only_crypto_reads_keys(auth_server: AuthNatsServer) -> None:
    crypto = Connection()
    nc = await crypto.open(auth_server, "crypto", auth_server.passwords["crypto"])
    try:
        bucket = await nc.jetstream().create_key_value(bucket="keys")
        await bucket.put("k1", b"sealed")
    finally:
        await nc.close()
    for user in ("ingress", "policy", "delivery", "audit", "admin"):
        other = Connection()
        nc = await other.open(auth_server, user, auth_server.passwords[user])
        try:
            with pytest.raises(nats.errors.Error):
                kv = await nc.jetstream(timeout=1).key_value("keys")
                await kv.get("k1")
        finally:
            await nc.close()


async def test_wrong_password_refused(auth_server: AuthNatsServer) -> None:
    with pytest.raises(nats.errors.Error):
        await Connection().open(auth_server, "crypto", "not-the-password")


async def test_cli_without_credentials(auth_server: AuthNatsServer) -> None:
    connection = Connection()
    nc = await nats.connect(auth_server.url, error_cb=_collect(connection.errors))
    connection.nc = nc
    try:
        await nc.subscribe("$KV.keys.>")
        await nc.publish("config.ca.imported", b"{}")
        await nc.publish("body.q1.0", b"forged body")
        await connection.settle()
    finally:
        await nc.close()
    joined = "\n".join(connection.errors).lower()
    assert 'subscription to "$kv.keys.>"' in joined
    assert 'publish to "config.ca.imported"' in joined
    assert 'publish to "body.q1.0"' in joined


def _collect(errors: list[str]):  # type: ignore[no-untyped-def]
    async def on_error(error: Exception) -> None:
        errors.append(str(error))

    return on_error


async def test_pipeline_within_permissions(
    tmp_path: Path, auth_server: AuthNatsServer
) -> None:
    base = gateway_settings(tmp_path)
    gateways = []
    try:
        for name in SERVICE_NAMES:
            settings = auth_server.settings_for(base, name)
            gateway = Gateway(settings, auth_server.url)
            gateways.append(gateway)
            await gateway.start_one(name)
        host, port = gateways[0].smtp_address
        message = EmailMessage()
        message["From"] = "alice@example.com"
        message["To"] = "bob@example.com"
        message["Subject"] = "permissions"
        message.set_content("hello\n")
        await aiosmtplib.send(message, hostname=host, port=port)
        outbox = Path(base.delivery.outbox_dir)

        async def delivered() -> bool:
            return outbox.is_dir() and any(outbox.glob("*.eml"))

        await wait_until(delivered, timeout=30)

        # The admin API reads configuration, the audit log and parked messages.
        settings = auth_server.settings_for(base, "admin")
        admin = Gateway(settings, auth_server.url)
        gateways.append(admin)
        await admin.start_one("admin")
        _, token = token_store(settings).create(Role.READ, "permissions")
        service = admin.services["admin"][1]
        assert isinstance(service, AdminService)
        assert service.app is not None
        transport = httpx.ASGITransport(app=service.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://a") as api:
            for path in ("/api/v1/bindings", "/api/v1/audit", "/api/v1/parked"):
                response = await api.get(
                    path, headers={"Authorization": f"Bearer {token}"}
                )
                assert response.status_code == 200, (path, response.text)
    finally:
        for gateway in reversed(gateways):
            await gateway.stop()
    assert auth_server.violations() == []

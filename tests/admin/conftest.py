from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx
import pytest
import pytest_asyncio

from services.admin.service import AdminService
from services.admin.tokens import Role, token_store
from tests.conftest import gateway_settings
from tests.harness import REPO, Gateway, NatsServer, free_port

THUNDERBIRD = REPO.parent / "shared" / "interop" / "thunderbird" / "smime"
TEST_CA = THUNDERBIRD / "TestCA.pem"


@dataclass
class Admin:
    gateway: Gateway
    client: httpx.AsyncClient
    read_token: str
    write_token: str
    service: AdminService

    def headers(self, token: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {token}"}

    @property
    def reader(self) -> dict[str, str]:
        return self.headers(self.read_token)

    @property
    def writer(self) -> dict[str, str]:
        return self.headers(self.write_token)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def admin(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Admin]:
    """One gateway for a whole test module, so each test costs no start-up."""
    tmp_path = tmp_path_factory.mktemp("admin")
    nats_server = NatsServer(tmp_path / "nats")
    nats_server.start()
    settings = gateway_settings(
        tmp_path,
        nats={"url": nats_server.url},
        admin={
            "listen": f"127.0.0.1:{free_port()}",
            "max_upload": 64 * 1024,
            "max_request": 256 * 1024,
        },
    )
    tokens = token_store(settings)
    _, read_token = tokens.create(Role.READ, "test reader")
    _, write_token = tokens.create(Role.READ_WRITE, "test writer")
    gateway = Gateway(settings, nats_server.url)
    await gateway.start(["policy", "crypto", "audit", "admin"])
    service = gateway.services["admin"][1]
    assert isinstance(service, AdminService)
    assert service.app is not None
    transport = httpx.ASGITransport(app=service.app)
    async with httpx.AsyncClient(
        transport=transport, base_url="http://admin"
    ) as client:
        admin = Admin(gateway, client, read_token, write_token, service)
        # NOTE: policy's history query sends no reply while CONFIG is empty,
        # so every module starts with one CA imported.
        response = await client.post(
            "/api/v1/cas",
            headers=admin.writer,
            files={"files": ("TestCA.pem", TEST_CA.read_bytes())},
        )
        assert response.status_code == 201, response.text
        yield admin
    await gateway.stop()
    nats_server.stop()

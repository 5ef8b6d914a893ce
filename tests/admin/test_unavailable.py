"""The admin API when no service responds on the bus."""

from __future__ import annotations

from pathlib import Path

import httpx
import nats

from services.admin.api import create_app
from services.admin.bus import AdminBus
from services.admin.tokens import Role, TokenStore
from tests.harness import NatsServer


async def test_no_service_gives_503(tmp_path: Path, nats_server: NatsServer) -> None:
    tokens = TokenStore(tmp_path / "tokens.json")
    _, token = tokens.create(Role.READ_WRITE)
    nc = await nats.connect(nats_server.url)
    try:
        app = create_app(
            AdminBus(nc, timeout=2), tokens, max_upload=1024, max_request=4096
        )
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://a") as api:
            headers = {"Authorization": f"Bearer {token}"}
            listed = await api.get("/api/v1/cas", headers=headers)
            assert listed.status_code == 503
            assert "smimegw.cmd.policy" in listed.json()["detail"]
            audit = await api.get("/api/v1/audit", headers=headers)
            assert audit.status_code == 503
    finally:
        await nc.close()

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from services.crypto import keyvault
from smimegw.settings import Settings
from tests.harness import Gateway, NatsServer, SinkServer, free_port


@pytest.fixture
def nats_server(tmp_path: Path) -> Iterator[NatsServer]:
    server = NatsServer(tmp_path / "nats")
    server.start()
    yield server
    server.stop()


@pytest.fixture
async def sink() -> AsyncIterator[SinkServer]:
    server = SinkServer()
    await server.start()
    yield server
    await server.stop()


def gateway_settings(tmp_path: Path, **overrides: object) -> Settings:
    values: dict[str, object] = {
        "data_dir": tmp_path / "var",
        "internal_domains": ("example.com",),
        "smtp": {"listen": f"127.0.0.1:{free_port()}", "hostname": "gw.test"},
        "delivery": {"outbox_dir": tmp_path / "outbox"},
    }
    values.update(overrides)
    settings = Settings(**values)  # type: ignore[arg-type]
    if not settings.kek_path.exists():
        settings.kek_path.parent.mkdir(parents=True, exist_ok=True)
        keyvault.create_kek(settings.kek_path)
    return settings


@pytest.fixture
async def gateway_factory(
    nats_server: NatsServer,
) -> AsyncIterator[list[Gateway]]:
    started: list[Gateway] = []
    yield started
    for gateway in started:
        await gateway.stop()

"""Ingress limits against hostile clients: per IP, per connection, timeouts, AUTH.

Ingress runs here without a broker: none of these dialogues reaches DATA's
hand-off to JetStream.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.smtp import AuthResult

from services.ingress.limits import ClientLimits
from services.ingress.service import IngressService
from services.ingress.smtp import GatewaySMTP
from smimegw.runtime import Runtime
from smimegw.settings import Settings
from tests.conftest import gateway_settings
from tests.harness import free_port, wait_until
from tests.pipeline.test_smtp import Dialogue

Start = Callable[..., Any]


@pytest.fixture
async def ingress(tmp_path: Path) -> AsyncIterator[Start]:
    started: list[IngressService] = []

    async def start(trusted: tuple[str, ...] = ("192.0.2.0/24",), **smtp: Any):
        settings = gateway_settings(
            tmp_path,
            trusted_networks=trusted,
            smtp={"listen": f"127.0.0.1:{free_port()}", **smtp},
        )
        # Nothing listens on port 9: no test here publishes.
        runtime = Runtime("ingress", settings, "nats://127.0.0.1:9")
        service = IngressService(runtime)
        await service.start()
        started.append(service)
        return service

    yield start
    for service in started:
        await service.stop()


async def closed(dialogue: Dialogue) -> bool:
    return await asyncio.wait_for(dialogue.reader.read(), 10) == b""


async def test_connections_per_ip(ingress: Start) -> None:
    service = await ingress(max_connections_per_ip=2)
    first = await Dialogue.open(service.address)
    second = await Dialogue.open(service.address)
    reader, writer = await asyncio.open_connection(*service.address)
    third = Dialogue(reader, writer)
    assert (await third.reply()).startswith("421 4.7.0")
    assert await closed(third)
    await first.close()

    async def released() -> bool:
        return service.limits.connections.get("127.0.0.1") == 1

    await wait_until(released, timeout=10, step=0.02)
    fourth = await Dialogue.open(service.address)
    await second.close()
    await fourth.close()


async def test_trusted_network_exempt(ingress: Start) -> None:
    service = await ingress(trusted=("127.0.0.0/8",), max_connections_per_ip=1)
    dialogues = [await Dialogue.open(service.address) for _ in range(3)]
    for dialogue in dialogues:
        assert (await dialogue.command("NOOP")).startswith("250")
        await dialogue.close()


async def test_messages_per_connection(ingress: Start) -> None:
    service = await ingress(max_messages_per_connection=2)
    smtp = await Dialogue.open(service.address)
    assert (await smtp.command("EHLO client.test")).startswith("250")
    for _ in range(2):
        assert (await smtp.command("MAIL FROM:<a@partner.test>")).startswith("250")
        assert (await smtp.command("RSET")).startswith("250")
    assert (await smtp.command("MAIL FROM:<a@partner.test>")).startswith("421 4.7.0")
    assert await closed(smtp)


async def test_messages_per_ip_per_minute(ingress: Start) -> None:
    service = await ingress(max_messages_per_ip_per_minute=3)
    for _ in range(3):
        smtp = await Dialogue.open(service.address)
        assert (await smtp.command("HELO client.test")).startswith("250")
        assert (await smtp.command("MAIL FROM:<a@partner.test>")).startswith("250")
        await smtp.close()
    smtp = await Dialogue.open(service.address)
    assert (await smtp.command("HELO client.test")).startswith("250")
    assert (await smtp.command("MAIL FROM:<a@partner.test>")).startswith("450 4.7.1")
    # The session stays open; the client may try again later.
    assert (await smtp.command("NOOP")).startswith("250")
    await smtp.close()


def test_rate_window_slides(tmp_path: Path) -> None:
    now = [1000.0]
    settings = Settings(trusted_networks=(), smtp={"max_messages_per_ip_per_minute": 2})
    limits = ClientLimits(settings, clock=lambda: now[0])
    assert limits.start_message("198.51.100.1")
    assert limits.start_message("198.51.100.1")
    assert not limits.start_message("198.51.100.1")
    assert limits.start_message("198.51.100.2")
    now[0] += 60.5
    assert limits.start_message("198.51.100.1")


async def test_max_recipients(ingress: Start) -> None:
    service = await ingress(max_recipients=3)
    smtp = await Dialogue.open(service.address)
    assert (await smtp.command("EHLO client.test")).startswith("250")
    assert (await smtp.command("MAIL FROM:<a@partner.test>")).startswith("250")
    for index in range(3):
        reply = await smtp.command(f"RCPT TO:<user{index}@example.com>")
        assert reply.startswith("250")
    assert (await smtp.command("RCPT TO:<user9@example.com>")).startswith("452 4.5.3")
    await smtp.close()


async def test_idle_client_timed_out(ingress: Start) -> None:
    service = await ingress(command_timeout="300ms")
    smtp = await Dialogue.open(service.address)
    assert (await smtp.reply()).startswith("421 4.4.2")
    assert await closed(smtp)


async def test_slow_data_timed_out(ingress: Start) -> None:
    service = await ingress(command_timeout="30s", data_timeout="300ms")
    smtp = await Dialogue.open(service.address)
    assert (await smtp.command("EHLO client.test")).startswith("250")
    assert (await smtp.command("MAIL FROM:<a@partner.test>")).startswith("250")
    assert (await smtp.command("RCPT TO:<b@example.com>")).startswith("250")
    assert (await smtp.command("DATA")).startswith("354")
    # One line and then silence, as a client trickling its body would.
    smtp.writer.write(b"Subject: slow\r\n")
    assert (await smtp.reply()).startswith("421 4.4.2")
    assert await closed(smtp)


async def test_auth_needs_tls() -> None:
    def authenticator(*args: Any) -> AuthResult:
        return AuthResult(success=True)

    def factory() -> GatewaySMTP:
        return GatewaySMTP(
            _Handler(),
            max_line=2048,
            on_close=lambda session: None,
            data_timeout=30,
            max_messages=10,
            authenticator=authenticator,
            auth_require_tls=True,
        )

    server = await asyncio.get_running_loop().create_server(factory, "127.0.0.1", 0)
    try:
        smtp = await Dialogue.open(server.sockets[0].getsockname()[:2])
        ehlo = await smtp.command("EHLO client.test")
        assert "AUTH" not in ehlo
        reply = await smtp.command("AUTH PLAIN AGFAYg==")
        assert reply.startswith("538 5.7.11")
        await smtp.close()
    finally:
        server.close()


class _Handler:
    pass

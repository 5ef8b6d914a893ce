"""End to end: SMTP in, JetStream through every service, SMTP out."""

from __future__ import annotations

import asyncio
import logging
from email.message import EmailMessage
from pathlib import Path

import aiosmtplib
import pytest

from smimegw.service import SERVICE_NAMES
from tests.conftest import gateway_settings
from tests.harness import (
    Gateway,
    NatsServer,
    SinkServer,
    audit_events,
    strip_received,
    wait_until,
)


def make_message(index: int, recipient: str) -> bytes:
    message = EmailMessage()
    message["From"] = "alice@example.com"
    message["To"] = recipient
    message["Subject"] = f"message {index}"
    message["Message-ID"] = f"<m{index}@example.com>"
    message.set_content(f"Body of message {index}.\nÄ line with UTF-8.\n" * 3)
    return message.as_bytes().replace(b"\n", b"\r\n")


async def test_200_messages_reach_sink(
    tmp_path: Path, nats_server: NatsServer, sink: SinkServer
) -> None:
    settings = gateway_settings(
        tmp_path, delivery={"relay_host": f"127.0.0.1:{sink.port}"}
    )
    gateway = Gateway(settings, nats_server.url)
    await gateway.start(SERVICE_NAMES)
    host, port = gateway.smtp_address
    sent: dict[str, tuple[str, list[str], bytes]] = {}

    async def client(number: int) -> None:
        async with aiosmtplib.SMTP(hostname=host, port=port) as smtp:
            for i in range(50):
                index = number * 50 + i
                # Both outside internal_domains: one plan, relayed as is.
                recipients = [f"user{index}@example.org", f"other{index}@example.net"]
                body = make_message(index, recipients[0])
                _, reply = await smtp.sendmail(
                    f"sender{index}@example.com", recipients, body
                )
                queue_id = reply.rsplit(" ", 1)[-1]
                sent[queue_id] = (f"sender{index}@example.com", recipients, body)

    try:
        await asyncio.gather(*(client(n) for n in range(4)))
        assert len(sent) == 200
        received = await sink.wait_for(200, timeout=120)
        by_subject = {}
        for message in received:
            body = strip_received(message.content)
            by_subject[body] = message
        for queue_id, (sender, recipients, body) in sent.items():
            assert body in by_subject, f"{queue_id} missing or altered"
            arrived = by_subject[body]
            assert arrived.sender == sender
            assert arrived.recipients == recipients

        async def audited() -> bool:
            events = await audit_events(nats_server.url, limit=10_000)
            return sum(e["type"] == "mail.delivered" for e in events) >= 200

        await wait_until(audited, timeout=60)
        events = await audit_events(nats_server.url, limit=10_000)
        for queue_id in sent:
            types = {e["type"] for e in events if e["queue_id"] == queue_id}
            assert types >= {
                "mail.received",
                "mail.routed",
                "mail.processed",
                "mail.delivered",
            }, (queue_id, types)
    finally:
        await gateway.stop()


async def test_no_per_message_framework_lines_at_info(
    tmp_path: Path,
    nats_server: NatsServer,
    sink: SinkServer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Each service logs its own outcome once; FastStream's lines are debug.

    FastStream logs "Received" and "Processed" for every bus message it hands
    to a handler. At INFO that doubled the log volume of every service and
    cost CPU time per message.
    """
    settings = gateway_settings(
        tmp_path, delivery={"relay_host": f"127.0.0.1:{sink.port}"}
    )
    gateway = Gateway(settings, nats_server.url)
    await gateway.start(SERVICE_NAMES)
    caplog.set_level(logging.INFO)
    host, port = gateway.smtp_address
    try:
        await aiosmtplib.send(
            make_message(1, "user@example.org"),
            sender="alice@example.com",
            recipients=["user@example.org"],
            hostname=host,
            port=port,
        )
        await sink.wait_for(1, timeout=30)
    finally:
        await gateway.stop()
    framework = [
        r.getMessage()
        for r in caplog.records
        if r.name.endswith(".faststream") and r.levelno >= logging.INFO
    ]
    assert "Received" not in framework
    assert "Processed" not in framework
    delivered = [r for r in caplog.records if r.name == "smimegw.delivery"]
    assert any("delivered to 1 recipient" in r.getMessage() for r in delivered)

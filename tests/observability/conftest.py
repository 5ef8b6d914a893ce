"""A gateway whose services all report spans to one in-memory exporter."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from email.message import EmailMessage
from pathlib import Path

import aiosmtplib
import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import (
    InMemorySpanExporter,
)

from smimegw import telemetry
from smimegw.service import SERVICE_NAMES
from tests.conftest import gateway_settings
from tests.harness import Gateway, NatsServer, SinkServer

# Body text that the tests look for in span attributes and metric names.
BODY_MARKER = "Body-marker-7f3a: confidential text of the message."


@pytest.fixture
def span_exporter() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    processor = SimpleSpanProcessor(exporter)
    telemetry.add_span_processor(processor)
    yield exporter
    telemetry.remove_span_processor(processor)
    exporter.clear()


@pytest.fixture
async def gateway(
    tmp_path: Path,
    nats_server: NatsServer,
    sink: SinkServer,
    span_exporter: InMemorySpanExporter,
) -> AsyncIterator[Gateway]:
    settings = gateway_settings(
        tmp_path,
        nats={"url": nats_server.url},
        delivery={
            "relay_host": f"127.0.0.1:{sink.port}",
            "retry_initial": "1h",
        },
        telemetry={"metrics_listen": "127.0.0.1:0"},
    )
    started = Gateway(settings, nats_server.url)
    await started.start(SERVICE_NAMES)
    yield started
    await started.stop()


def make_message(subject: str, recipient: str) -> bytes:
    message = EmailMessage()
    message["From"] = "alice@example.com"
    message["To"] = recipient
    message["Subject"] = subject
    message.set_content(f"{BODY_MARKER}\n")
    return message.as_bytes().replace(b"\n", b"\r\n")


async def send(gateway: Gateway, recipients: list[str], subject: str = "hello") -> str:
    """Send one message; return its queue id from the 250 reply."""
    host, port = gateway.smtp_address
    async with aiosmtplib.SMTP(hostname=host, port=port) as smtp:
        _, reply = await smtp.sendmail(
            "alice@example.com", recipients, make_message(subject, recipients[0])
        )
    return reply.rsplit(" ", 1)[-1]


async def send_with_nul(gateway: Gateway) -> int:
    """Send a message with a NUL byte, which ingress rejects; return the code."""
    host, port = gateway.smtp_address
    async with aiosmtplib.SMTP(hostname=host, port=port) as smtp:
        await smtp.mail("alice@example.com")
        await smtp.rcpt("bob@example.com")
        try:
            await smtp.data(b"Subject: x\r\n\r\nnul \x00 byte\r\n")
        except aiosmtplib.SMTPDataError as err:
            return err.code
    return 250


async def wait_for_spans(
    exporter: InMemorySpanExporter,
    ready: object,
    timeout: float = 30.0,
) -> list[ReadableSpan]:
    """Poll the exporter until `ready(spans)` is true, bounded in time."""
    assert callable(ready)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        spans = list(exporter.get_finished_spans())
        if ready(spans):
            return spans
        await asyncio.sleep(0.1)
    names = sorted({s.name for s in exporter.get_finished_spans()})
    raise AssertionError(f"spans not complete within {timeout} s; have {names}")

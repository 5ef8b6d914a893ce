"""A known password and private key go through the whole gateway and leak nowhere.

The password protects the PKCS#12 file imported through the admin API; the
key then signs outgoing mail and decrypts incoming mail. Neither may appear in
a log line, a bus message (events, parked messages, headers), a span, the
audit database, an admin API response or the nats-server log.
"""

from __future__ import annotations

import base64
import logging
from collections.abc import AsyncIterator, Iterator
from email.message import EmailMessage
from pathlib import Path

import aiosmtplib
import httpx
import nats
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import pkcs12
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import (
    InMemorySpanExporter,
)

from services.admin.service import AdminService
from services.admin.tokens import Role, token_store
from smimegw import streams, telemetry
from smimegw.service import SERVICE_NAMES
from tests.conftest import gateway_settings
from tests.harness import Gateway, NatsServer, SinkServer, audit_events, wait_until
from tests.incoming.conftest import THUNDERBIRD

PASSWORD = "Leak-Test-Passphrase-4417-quartz"
BOB = "bob@example.com"
ENCRYPTED_TO_BOB = THUNDERBIRD / "alice.dsig.SHA1.multipart.env.eml"


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    processor = SimpleSpanProcessor(exporter)
    telemetry.add_span_processor(processor)
    yield exporter
    telemetry.remove_span_processor(processor)


@pytest.fixture
async def gateway(
    tmp_path: Path,
    nats_server: NatsServer,
    sink: SinkServer,
    spans: InMemorySpanExporter,
) -> AsyncIterator[Gateway]:
    # After `spans`: tracer providers take the span processors present at start.
    settings = gateway_settings(
        tmp_path,
        nats={"url": nats_server.url},
        delivery={"relay_host": f"127.0.0.1:{sink.port}"},
    )
    started = Gateway(settings, nats_server.url)
    await started.start([*SERVICE_NAMES, "admin"])
    yield started
    await started.stop()


def protected_pkcs12() -> tuple[bytes, bytes]:
    """Bob's key and certificate under PASSWORD; returns the file and key DER."""
    key, certificate, extra = pkcs12.load_key_and_certificates(
        (THUNDERBIRD / "Bob.p12").read_bytes(), b"nss"
    )
    assert isinstance(key, rsa.RSAPrivateKey)
    data = pkcs12.serialize_key_and_certificates(
        b"bob",
        key,
        certificate,
        extra,
        serialization.BestAvailableEncryption(PASSWORD.encode()),
    )
    der = key.private_bytes(
        serialization.Encoding.DER,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return data, der


def needles_of(key_der: bytes, token: str) -> dict[str, bytes]:
    key = serialization.load_der_private_key(key_der, None)
    assert isinstance(key, rsa.RSAPrivateKey)
    numbers = key.private_numbers()
    return {
        "password": PASSWORD.encode(),
        "key DER": key_der[40:80],
        "key base64": base64.b64encode(key_der)[60:120],
        "private exponent": numbers.d.to_bytes(256, "big")[:32],
        "prime p in hex": f"{numbers.p:x}"[:40].encode(),
        "admin token": token.encode(),
    }


async def bus_messages(url: str) -> dict[str, bytes]:
    found: dict[str, bytes] = {}
    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        for stream in (streams.MAIL, streams.CONFIG, streams.PARKED):
            info = await js.stream_info(stream)
            data = b""
            for sequence in range(
                max(info.state.first_seq, 1), info.state.last_seq + 1
            ):
                message = await js.get_msg(stream, seq=sequence)
                data += (message.data or b"") + repr(message.headers).encode()
            found[stream] = data
    finally:
        await nc.close()
    return found


def span_text(exporter: InMemorySpanExporter) -> bytes:
    parts = []
    for span in exporter.get_finished_spans():
        parts.append(span.name)
        parts.append(repr(dict(span.attributes or {})))
        parts.append(repr(span.status.description))
        for event in span.events:
            parts.append(event.name + repr(dict(event.attributes or {})))
    return "\n".join(parts).encode()


async def test_password_and_key_leak_nowhere(
    gateway: Gateway,
    sink: SinkServer,
    spans: InMemorySpanExporter,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    tokens = token_store(gateway.settings)
    _, token = tokens.create(Role.READ_WRITE, "leak test")
    headers = {"Authorization": f"Bearer {token}"}
    pkcs12_file, key_der = protected_pkcs12()
    service = gateway.services["admin"][1]
    assert isinstance(service, AdminService)
    assert service.app is not None
    responses: list[bytes] = []

    transport = httpx.ASGITransport(app=service.app)
    async with httpx.AsyncClient(transport=transport, base_url="http://a") as api:

        async def call(method: str, path: str, **kwargs: object) -> httpx.Response:
            response = await api.request(method, path, headers=headers, **kwargs)  # type: ignore[arg-type]
            responses.append(response.content)
            return response

        ca = await call(
            "POST",
            "/api/v1/cas",
            files={"files": ("TestCA.pem", (THUNDERBIRD / "TestCA.pem").read_bytes())},
        )
        assert ca.status_code == 201, ca.text
        wrong = await call(
            "POST",
            "/api/v1/bindings",
            data={"kind": "internal", "pattern": BOB, "password": PASSWORD[::-1]},
            files={"pkcs12": ("bob.p12", pkcs12_file)},
        )
        assert wrong.status_code == 422
        created = await call(
            "POST",
            "/api/v1/bindings",
            data={"kind": "internal", "pattern": BOB, "password": PASSWORD},
            files={"pkcs12": ("bob.p12", pkcs12_file)},
        )
        assert created.status_code == 201, created.text
        profile = await call(
            "POST", "/api/v1/profiles", json={"name": "sign", "action": "sign"}
        )
        assert profile.status_code == 201, profile.text
        rule = await call(
            "POST", "/api/v1/rules", json={"profile": "sign", "sender": BOB}
        )
        assert rule.status_code == 201, rule.text

        # Outgoing: signed with the key. Incoming: decrypted with it.
        outgoing = EmailMessage()
        outgoing["From"] = BOB
        outgoing["To"] = "carol@example.com"
        outgoing["Subject"] = "signed by the gateway"
        outgoing.set_content("Hello Carol.\n")
        host, port = gateway.smtp_address
        await aiosmtplib.send(
            outgoing,
            hostname=host,
            port=port,
            sender=BOB,
            recipients=["carol@example.com"],
        )
        async with aiosmtplib.SMTP(hostname=host, port=port) as smtp:
            await smtp.sendmail(
                "alice@partner.test", [BOB], ENCRYPTED_TO_BOB.read_bytes()
            )
        delivered = await sink.wait_for(2, timeout=90)
        by_recipient = {m.recipients[0]: m.content for m in delivered}
        assert b"application/pkcs7-signature" in by_recipient["carol@example.com"]
        assert b"status=decrypted" in by_recipient[BOB]

        async def audited() -> bool:
            events = await audit_events(gateway.url, type="mail.delivered")
            return len(events) >= 2

        await wait_until(audited, timeout=30)
        for path in (
            "/api/v1/bindings",
            "/api/v1/certs",
            "/api/v1/config/history",
            "/api/v1/audit?limit=10000",
            "/api/v1/parked",
        ):
            assert (await call("GET", path)).status_code == 200, path
        for event in (await call("GET", "/api/v1/audit")).json()["events"]:
            if event.get("queue_id"):
                await call("GET", f"/api/v1/messages/{event['queue_id']}/trace")
        binding_id = created.json()["result"]["id"]
        assert (await call("GET", f"/api/v1/bindings/{binding_id}")).status_code == 200

    haystacks: dict[str, bytes] = {
        "logs": caplog.text.encode(),
        "API responses": b"\n".join(responses),
        "spans": span_text(spans),
        "audit database": b"".join(
            p.read_bytes() for p in gateway.settings.data_dir.glob("audit*")
        ),
        "nats-server log": (
            Path(gateway.settings.data_dir).parent / "nats" / "nats-server.log"
        ).read_bytes(),
        **await bus_messages(gateway.url),
    }
    assert spans.get_finished_spans(), "the services should have made spans"
    assert b"config.binding.created" in haystacks["audit database"]
    for place, haystack in haystacks.items():
        for name, needle in needles_of(key_der, token).items():
            assert needle not in haystack, f"{name} found in {place}"

"""The SMTP dialogue of ingress: relay control, sizes, bad input, NUL, bare LF."""

from __future__ import annotations

import asyncio
import datetime
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import aiosmtplib
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from smimegw.service import SERVICE_NAMES
from tests.conftest import gateway_settings
from tests.harness import Gateway, NatsServer, free_port, wait_until


class Dialogue:
    """A raw SMTP client: send exact bytes, read whole replies."""

    def __init__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def open(cls, address: tuple[str, int]) -> Dialogue:
        reader, writer = await asyncio.open_connection(*address)
        dialogue = cls(reader, writer)
        assert (await dialogue.reply()).startswith("220")
        return dialogue

    async def reply(self) -> str:
        lines = []
        while True:
            line = (await asyncio.wait_for(self.reader.readline(), 10)).decode()
            lines.append(line.rstrip("\r\n"))
            if len(line) < 4 or line[3] != "-":
                return "\n".join(lines)

    async def command(self, data: bytes | str) -> str:
        if isinstance(data, str):
            data = data.encode() + b"\r\n"
        self.writer.write(data)
        await self.writer.drain()
        return await self.reply()

    async def close(self) -> None:
        self.writer.close()


@pytest.fixture
async def gateway(tmp_path: Path, nats_server: NatsServer) -> AsyncIterator[Gateway]:
    settings = gateway_settings(
        tmp_path,
        # Loopback is not trusted here, so relaying needs an internal recipient.
        trusted_networks=("192.0.2.0/24",),
        smtp={
            "listen": f"127.0.0.1:{free_port()}",
            "hostname": "gw.test",
            "max_message_size": 20_000,
        },
    )
    gateway = Gateway(settings, nats_server.url)
    await gateway.start(SERVICE_NAMES)
    yield gateway
    await gateway.stop()


async def outbox_file(gateway: Gateway, queue_id: str) -> bytes:
    outbox = gateway.settings.delivery.outbox_dir

    async def written() -> bool:
        return any(outbox.glob(f"{queue_id}.*.eml"))

    await wait_until(written, timeout=60)
    return next(outbox.glob(f"{queue_id}.*.eml")).read_bytes()


async def test_relay_to_outside_rejected(gateway: Gateway) -> None:
    smtp = await Dialogue.open(gateway.smtp_address)
    assert (await smtp.command("EHLO client.test")).startswith("250")
    assert (await smtp.command("MAIL FROM:<a@elsewhere.test>")).startswith("250")
    reply = await smtp.command("RCPT TO:<victim@elsewhere.test>")
    assert reply.startswith("554 5.7.1")
    assert "victim@elsewhere.test" in reply
    assert (await smtp.command("RCPT TO:<Bob@EXAMPLE.com>")).startswith("250")
    await smtp.close()


async def test_ehlo_extensions(gateway: Gateway) -> None:
    smtp = await Dialogue.open(gateway.smtp_address)
    reply = await smtp.command("EHLO client.test")
    assert "SIZE 20000" in reply
    assert "8BITMIME" in reply
    assert "SMTPUTF8" in reply
    assert "AUTH" not in reply
    assert "STARTTLS" not in reply  # no certificate configured
    assert (await smtp.command("AUTH PLAIN AGFAYg==")).startswith("502 5.5.1")
    await smtp.close()


async def test_declared_size_over_limit_552(gateway: Gateway) -> None:
    smtp = await Dialogue.open(gateway.smtp_address)
    await smtp.command("EHLO client.test")
    assert (await smtp.command("MAIL FROM:<a@example.com> SIZE=20001")).startswith(
        "552"
    )
    await smtp.close()


async def test_actual_size_over_limit_552(gateway: Gateway) -> None:
    # No SIZE declared, so only the received bytes exceed the limit.
    reply = await transaction(
        gateway, b"Subject: big\r\n\r\n" + (b"y" * 76 + b"\r\n") * 300
    )
    assert reply.startswith("552")
    assert not any(gateway.settings.delivery.outbox_dir.glob("*.eml"))


async def test_malformed_commands(gateway: Gateway) -> None:
    smtp = await Dialogue.open(gateway.smtp_address)
    assert (await smtp.command("FROBNICATE")).startswith("500")
    assert (await smtp.command("EHLO")).startswith("501")
    assert (await smtp.command("EHLO client.test")).startswith("250")
    assert (await smtp.command("RCPT TO:<b@example.com>")).startswith("503")
    assert (await smtp.command("MAIL TO:<a@example.com>")).startswith("501")
    assert (await smtp.command("MAIL FROM:<a@example.com>")).startswith("250")
    assert (await smtp.command("DATA")).startswith("503")
    assert (await smtp.command("RCPT TO:<b@example.com> BOGUS=1")).startswith("555")
    assert (await smtp.command("QUIT")).startswith("221")
    await smtp.close()


async def transaction(gateway: Gateway, data: bytes) -> str:
    smtp = await Dialogue.open(gateway.smtp_address)
    await smtp.command("EHLO client.test")
    assert (await smtp.command("MAIL FROM:<a@example.com>")).startswith("250")
    assert (await smtp.command("RCPT TO:<b@example.com>")).startswith("250")
    assert (await smtp.command("DATA")).startswith("354")
    reply = await smtp.command(data + b"\r\n.\r\n")
    await smtp.close()
    return reply


async def test_nul_bytes_rejected(gateway: Gateway) -> None:
    reply = await transaction(gateway, b"Subject: nul\r\n\r\nbefore\x00after")
    assert reply.startswith("554 5.6.0")
    assert "NUL" in reply
    assert not any(gateway.settings.delivery.outbox_dir.glob("*.eml"))


async def test_too_many_header_fields_rejected(gateway: Gateway) -> None:
    """Crypto refuses over 1000 fields as hostile, so ingress refuses them first.

    The Received field that ingress adds is one of the 1000.
    """
    fields = b"".join(b"X-Field-%d: value\r\n" % i for i in range(1000))
    reply = await transaction(gateway, fields + b"\r\nbody\r\n")
    assert reply.startswith("552 5.3.4")
    assert "header fields (at most 999)" in reply
    assert not any(gateway.settings.delivery.outbox_dir.glob("*.eml"))

    reply = await transaction(
        gateway, fields[: fields.index(b"X-Field-999")] + b"\r\nbody"
    )
    assert reply.startswith("250 2.0.0 Ok: queued as ")


async def test_bare_lf_carried_unchanged(gateway: Gateway) -> None:
    body = b"Subject: lf\n\nline one\nline two\n\nlast line"
    reply = await transaction(gateway, body)
    assert reply.startswith("250 2.0.0 Ok: queued as ")
    stored = await outbox_file(gateway, reply.rsplit(" ", 1)[-1])
    assert stored.endswith(body + b"\r\n")


async def test_long_lines_and_8bit_kept(gateway: Gateway) -> None:
    body = b"Subject: long\r\n\r\n" + "ü".encode() * 3000 + b"\r\nend"
    reply = await transaction(gateway, body)
    assert reply.startswith("250")
    stored = await outbox_file(gateway, reply.rsplit(" ", 1)[-1])
    assert stored.endswith(body + b"\r\n")


async def test_dot_stuffing_undone(gateway: Gateway) -> None:
    # A line starting with "." is sent as "..", RFC 5321 section 4.5.2.
    reply = await transaction(gateway, b"Subject: dots\r\n\r\n..leading dot")
    assert reply.startswith("250"), reply
    stored = await outbox_file(gateway, reply.rsplit(" ", 1)[-1])
    assert stored.endswith(b"\r\n\r\n.leading dot\r\n")


def self_signed(directory: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "gw.test")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "tls.crt", directory / "tls.key"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


async def test_starttls_offered_with_certificate(
    tmp_path: Path, nats_server: NatsServer
) -> None:
    cert, key = self_signed(tmp_path)
    settings = gateway_settings(
        tmp_path,
        smtp={"listen": f"127.0.0.1:{free_port()}", "tls_cert": cert, "tls_key": key},
    )
    gateway = Gateway(settings, nats_server.url)
    await gateway.start(SERVICE_NAMES)
    try:
        context = ssl.create_default_context(cafile=str(cert))
        context.check_hostname = False
        async with aiosmtplib.SMTP(
            hostname=gateway.smtp_address[0],
            port=gateway.smtp_address[1],
            tls_context=context,
            start_tls=False,
        ) as smtp:
            await smtp.ehlo()
            assert smtp.supports_extension("starttls")
            await smtp.starttls()
            await smtp.ehlo()
            assert not smtp.supports_extension("auth")
            _, reply = await smtp.sendmail(
                "a@example.com", ["b@example.com"], b"Subject: tls\r\n\r\nhi\r\n"
            )
        stored = await outbox_file(gateway, reply.rsplit(" ", 1)[-1])
        assert b"with ESMTPS id" in stored
    finally:
        await gateway.stop()

"""A whole gateway that opens incoming S/MIME for bob@example.com, driven over SMTP."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiosmtplib
import pytest

from smimegw.service import SERVICE_NAMES
from tests.config.conftest import RFC4134, THUNDERBIRD, Admin
from tests.conftest import gateway_settings
from tests.harness import (
    Gateway,
    NatsServer,
    Received,
    SinkServer,
    audit_events,
    free_port,
    strip_received,
    wait_until,
)

BOB = "bob@example.com"
RESULT_FIELD = re.compile(rb"X-Smimegw-(Signature|Decryption): ([^\r\n]*)\r\n")
_PARAMETER = re.compile(r'([a-z-]+)=("(?:[^"\\]|\\.)*"|[^;\s]*)')


@dataclass(frozen=True)
class Delivered:
    """One message as the next hop received it, with the gateway's result fields."""

    content: bytes
    signatures: tuple[dict[str, str], ...]
    decryptions: tuple[dict[str, str], ...]

    @property
    def message(self) -> bytes:
        """The delivered message without the result fields and the Received field."""
        position = 0
        while match := RESULT_FIELD.match(self.content, position):
            position = match.end()
        return strip_received(self.content[position:])


def parameters(value: str) -> dict[str, str]:
    """Read `name=value; name="quoted"` into a dict, quotes removed."""
    found = {}
    for name, raw in _PARAMETER.findall(value):
        if raw.startswith('"'):
            raw = re.sub(r"\\(.)", r"\1", raw[1:-1])
        found[name] = raw
    return found


def parse_delivered(content: bytes) -> Delivered:
    signatures, decryptions = [], []
    position = 0
    while match := RESULT_FIELD.match(content, position):
        fields = parameters(match.group(2).decode("ascii"))
        if match.group(1) == b"Signature":
            signatures.append(fields)
        else:
            decryptions.append(fields)
        position = match.end()
    return Delivered(content, tuple(signatures), tuple(decryptions))


def wire_form(message: bytes) -> bytes:
    """The message as SMTP carries it: CRLF line ends and a final CRLF."""
    crlf = re.sub(rb"\r\n|\r|\n", b"\r\n", message)
    return crlf if crlf.endswith(b"\r\n") else crlf + b"\r\n"


class Incoming:
    """Sends messages to bob@example.com and reads what the next hop got."""

    def __init__(
        self, gateway: Gateway, sink: SinkServer, admin: Admin, bob_binding: str
    ) -> None:
        self.gateway = gateway
        self.sink = sink
        self.admin = admin
        self.bob_binding = bob_binding
        # Queue id that ingress answered, by sender address.
        self.queue_ids: dict[str, str] = {}
        self._count = 0

    async def send(self, message: bytes, recipient: str = BOB) -> str:
        """Send `message` with a sender address of its own; return that address."""
        self._count += 1
        sender = f"m{self._count}@example.net"
        host, port = self.gateway.smtp_address
        async with aiosmtplib.SMTP(hostname=host, port=port) as smtp:
            _, reply = await smtp.sendmail(sender, [recipient], message)
        self.queue_ids[sender] = reply.rsplit(" ", 1)[-1]
        return sender

    async def delivered(self, senders: list[str]) -> dict[str, Delivered]:
        """Wait until every sender's message reached the sink."""

        async def arrived() -> bool:
            got = {message.sender for message in self.sink.messages}
            return set(senders) <= got

        await wait_until(arrived, timeout=90)
        by_sender: dict[str, Received] = {m.sender: m for m in self.sink.messages}
        return {s: parse_delivered(by_sender[s].content) for s in senders}

    async def events(self, event_type: str) -> dict[str, list[dict[str, Any]]]:
        """Events of one type by the sender of their message."""
        url = self.gateway.url
        received = await audit_events(url, type="mail.received", limit=10_000)
        senders = {e["queue_id"]: e["sender"] for e in received}
        found: dict[str, list[dict[str, Any]]] = {}
        for event in await audit_events(url, type=event_type, limit=10_000):
            found.setdefault(senders.get(event["queue_id"], ""), []).append(event)
        return found

    async def wait_for_events(self, event_type: str, count: int) -> None:
        async def stored() -> bool:
            events = await audit_events(self.gateway.url, type=event_type, limit=10_000)
            return len(events) >= count

        await wait_until(stored, timeout=60)


@pytest.fixture
async def incoming(
    tmp_path: Path, nats_server: NatsServer, sink: SinkServer
) -> AsyncIterator[Incoming]:
    settings = gateway_settings(
        tmp_path,
        nats={"url": nats_server.url},
        # Loopback is not trusted, so the messages come in as from outside.
        trusted_networks=("192.0.2.0/24",),
        smtp={
            "listen": f"127.0.0.1:{free_port()}",
            "hostname": "gw.test",
            # One test sends more than the default of 120 messages a minute.
            "max_messages_per_ip_per_minute": 10_000,
        },
        delivery={"relay_host": f"127.0.0.1:{sink.port}"},
    )
    gateway = Gateway(settings, nats_server.url)
    await gateway.start(SERVICE_NAMES)
    admin = Admin(gateway)
    try:
        assert (await admin.import_ca(THUNDERBIRD / "TestCA.pem")).ok
        reply = await admin.internal(BOB, THUNDERBIRD / "Bob.p12")
        assert reply.ok, reply.error
        yield Incoming(gateway, sink, admin, reply.result["id"])
    finally:
        await gateway.stop()


__all__ = ["BOB", "RFC4134", "THUNDERBIRD", "Delivered", "Incoming", "wire_form"]

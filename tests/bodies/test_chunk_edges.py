"""Header sections and bodies at the edges of the chunking, stored and sent whole.

The body store keeps the header section as a chunk of its own. Policy reads only
that chunk, so it must still find every To and Cc field, and each body must come
back byte for byte whatever its size and line ends.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator
from pathlib import Path

import nats
import pytest

from services.ingress.handlers import _header_section_size
from smimegw import streams
from smimegw.bodies import BodyStore, _chunk_bounds
from smimegw.service import SERVICE_NAMES
from smimegw.settings import Settings
from tests.conftest import gateway_settings
from tests.harness import (
    Gateway,
    NatsServer,
    SinkServer,
    free_port,
    strip_received,
)
from tests.outgoing.conftest import (  # noqa: F401 (the fixture)
    Outgoing,
    decrypt,
    outgoing,
)

CHUNK = 1024 * 1024 - 4096


@pytest.fixture
async def store(nats_server: NatsServer, tmp_path: Path) -> AsyncIterator[BodyStore]:
    client = await nats.connect(nats_server.url)
    await streams.provision(client.jetstream(), Settings(data_dir=tmp_path))
    yield BodyStore(client, client.jetstream())
    await client.close()


def pattern(size: int, seed: int) -> bytes:
    block = hashlib.sha256(str(seed).encode()).digest() * 64
    return (block * (size // len(block) + 1))[:size]


@pytest.mark.parametrize(
    ("size", "head_size"),
    [
        (0, None),
        (1, 1),
        (CHUNK - 1, None),
        (CHUNK, None),
        (CHUNK + 1, None),
        (CHUNK - 1, 100),
        (CHUNK, 100),
        (CHUNK + 1, 100),
        (CHUNK + 1, CHUNK),
        (2 * CHUNK + 1, CHUNK - 1),
        (CHUNK + 1, CHUNK + 1),
    ],
)
async def test_body_round_trip_at_chunk_edges(
    store: BodyStore, size: int, head_size: int | None
) -> None:
    assert store._chunk_size == CHUNK
    prefix = b"Received: from client\r\n"
    data = pattern(size, size)
    body = prefix + data
    head_total = None if head_size is None else len(prefix) + head_size
    key = f"edge{size}x{head_size}"
    ref = await store.put(key, data, prefix=prefix, head_size=head_total)

    assert ref.size == len(body)
    assert ref.chunks == len(_chunk_bounds(len(body), CHUNK, head_total))
    assert await store.get(ref) == body
    head = await store.head(ref)
    if head_total is not None and head_total < len(body):
        assert head == body[: min(head_total, CHUNK)]
    else:
        assert head == body[:CHUNK]


async def test_body_of_30_mb_round_trip(store: BodyStore) -> None:
    data = pattern(30 * 1024 * 1024 + 7, 30)
    ref = await store.put("large", data, prefix=b"Received: x\r\n", head_size=40)
    assert await store.get(ref) == b"Received: x\r\n" + data
    assert await store.head(ref) == (b"Received: x\r\n" + data)[:40]


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"", None),
        (b"\r\n\r\n", 4),
        (b"\n\n", 2),
        (b"Subject: only headers\r\n\r\n", 25),
        (b"Subject: a\n\r\nbody\r\n", None),
        (b"Subject: a\r\n" + b"X: " + b"y" * 300_000 + b"\r\n\r\nbody", None),
    ],
)
def test_header_section_size_edges(content: bytes, expected: int | None) -> None:
    assert _header_section_size(content, 0) == expected


async def raw_smtp(
    address: tuple[str, int], sender: str, recipients: list[str], data: bytes
) -> bytes:
    """Send `data` as the DATA payload as it is, bare LF included."""
    reader, writer = await asyncio.open_connection(*address)
    try:

        async def command(line: bytes | None) -> bytes:
            if line is not None:
                writer.write(line + b"\r\n")
            reply = b""
            while True:
                answer = await asyncio.wait_for(reader.readline(), 30)
                reply += answer
                if answer[3:4] != b"-":
                    return reply

        assert (await command(None)).startswith(b"220")
        assert (await command(b"EHLO client.test")).startswith(b"250")
        assert (await command(f"MAIL FROM:<{sender}>".encode())).startswith(b"250")
        for recipient in recipients:
            reply = await command(f"RCPT TO:<{recipient}>".encode())
            assert reply.startswith(b"250")
        assert (await command(b"DATA")).startswith(b"354")
        writer.write(data.replace(b"\n.", b"\n.."))
        # The CRLF before "." ends the last line of `data` when it has none.
        return await command(b"." if data.endswith(b"\r\n") else b"\r\n.")
    finally:
        writer.close()


@pytest.mark.parametrize(
    ("filler", "newline"),
    [(0, b"\n"), (200_000, b"\r\n"), (800_000, b"\r\n"), (800_000, b"\n")],
)
async def test_bcc_found_past_large_header_section(
    outgoing: Outgoing,  # noqa: F811
    filler: int,
    newline: bytes,
) -> None:
    """To and Cc after a large header section still decide who is a Bcc."""
    await outgoing.use_profile("p", action="encrypt")
    eve = await outgoing.admin.external("eve@example.com", outgoing.keys.cert("Eve"))
    assert eve.ok, eve.error
    lines = [b"From: Alice <alice@example.com>", b"Subject: large header section"]
    # Long lines: crypto rejects a header block of more than 1000 fields.
    lines += [b"X-Filler: " + b"f" * 890] * (filler // 900)
    lines += [b"To: bob@example.com", b"Cc: dave@example.com", b""]
    lines += [b"Body line.", b"\xc3\xa9 8-bit line", b""]
    message = newline.join(lines)

    reply = await raw_smtp(
        outgoing.gateway.smtp_address,
        "alice@example.com",
        ["bob@example.com", "dave@example.com", "eve@example.com"],
        message,
    )
    assert reply.startswith(b"250"), reply

    received = await outgoing.sink.wait_for(2, timeout=30)
    await asyncio.sleep(0.5)
    assert len(outgoing.sink.messages) == 2
    shared = next(m for m in received if len(m.recipients) == 2)
    bcc = next(m for m in received if len(m.recipients) == 1)
    assert sorted(shared.recipients) == ["bob@example.com", "dave@example.com"]
    assert bcc.recipients == ["eve@example.com"]
    opened = decrypt(outgoing.keys, "Bob", shared.content)
    assert b"\r\n\r\nBody line.\r\n=C3=A9 8-bit line\r\n" in opened
    assert decrypt(outgoing.keys, "Eve", bcc.content) == decrypt(
        outgoing.keys, "Dave", shared.content
    )


def relay_message(kind: str) -> bytes:
    head = b"From: a@example.com\r\nTo: r@partner.example\r\nSubject: edge\r\n"
    if kind == "headers-only":
        return head
    if kind == "empty-body":
        return head + b"\r\n"
    line = b"0123456789abcdef" * 4 + b"\r\n"
    size = CHUNK if kind == "one-chunk" else 30 * 1024 * 1024
    body = (line * (size // len(line) + 1))[: size - len(head) - 2 - 2] + b"\r\n"
    return head + b"\r\n" + body


@pytest.mark.parametrize("kind", ["headers-only", "empty-body", "one-chunk", "30mb"])
async def test_relayed_body_arrives_byte_for_byte(
    tmp_path: Path, nats_server: NatsServer, sink: SinkServer, kind: str
) -> None:
    settings = gateway_settings(
        tmp_path,
        smtp={"listen": f"127.0.0.1:{free_port()}", "hostname": "gw.test"},
        delivery={"relay_host": f"127.0.0.1:{sink.port}"},
        nats={"url": nats_server.url},
    )
    gateway = Gateway(settings, nats_server.url)
    await gateway.start(SERVICE_NAMES)
    try:
        message = relay_message(kind)
        reply = await raw_smtp(
            gateway.smtp_address, "a@example.com", ["r@partner.example"], message
        )
        assert reply.startswith(b"250"), reply
        [received] = await sink.wait_for(1, timeout=60)
    finally:
        await gateway.stop()
    assert received.recipients == ["r@partner.example"]
    expected = message if message.endswith(b"\r\n") else message + b"\r\n"
    assert strip_received(received.content) == expected

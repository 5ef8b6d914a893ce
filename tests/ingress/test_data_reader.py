"""DATA as GatewaySMTP reads it in pieces, compared with what the client sent."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import aiosmtplib
import pytest
from aiosmtpd.smtp import SMTP, Envelope, Session
from aiosmtplib.protocol import normalize_message_line_endings

from services.ingress.smtp import GatewaySMTP
from tests.harness import free_port

SIZE_LIMIT = 200_000
# A stream limit far below the message size, so DATA arrives in many pieces.
STREAM_LIMIT = 4096


@dataclass
class Keeper:
    contents: list[bytes] = field(default_factory=list)

    async def handle_DATA(
        self, server: SMTP, session: Session, envelope: Envelope
    ) -> str:
        self.contents.append(envelope.original_content or b"")
        return "250 2.0.0 kept"


@dataclass
class Server:
    port: int
    keeper: Keeper


@pytest.fixture
async def server() -> AsyncIterator[Server]:
    keeper = Keeper()
    port = free_port()

    def factory() -> GatewaySMTP:
        return GatewaySMTP(
            keeper,
            max_line=STREAM_LIMIT,
            on_close=lambda session: None,
            data_timeout=30.0,
            max_messages=100,
            data_size_limit=SIZE_LIMIT,
            decode_data=False,
            enable_SMTPUTF8=True,
            hostname="gw.test",
        )

    listener = await asyncio.get_running_loop().create_server(
        factory, "127.0.0.1", port
    )
    yield Server(port, keeper)
    listener.close()


async def session(port: int, data: list[bytes]) -> list[bytes]:
    """Send one transaction whose DATA is written as the given pieces, then a
    second transaction and QUIT; return every reply line."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    replies = [await reader.readline()]
    for command in (
        b"EHLO c.test",
        b"MAIL FROM:<a@example.com>",
        b"RCPT TO:<b@x.test>",
    ):
        writer.write(command + b"\r\n")
        replies.append(await reader.readline())
        while replies[-1][3:4] == b"-":
            replies.append(await reader.readline())
    writer.write(b"DATA\r\n")
    replies.append(await reader.readline())
    for piece in data:
        writer.write(piece)
        await writer.drain()
        await asyncio.sleep(0.01)
    replies.append(await reader.readline())
    for command in (b"MAIL FROM:<a@example.com>", b"RCPT TO:<b@x.test>", b"DATA"):
        writer.write(command + b"\r\n")
        replies.append(await reader.readline())
    writer.write(b"after\r\n.\r\nQUIT\r\n")
    replies.append(await reader.readline())
    replies.append(await reader.readline())
    writer.close()
    return replies


@pytest.mark.parametrize(
    "message",
    [
        b"",
        b"x",
        b".",
        b"..",
        b".lead\r\nmid\r\n.\r\n..two\r\nend.",
        b"Subject: s\r\n\r\nline ending in a dot.\r\nanother.\r\n.\r\n",
        b"a" * 150_000,
        b"first\r\n" + b".\r\n" * 500 + b"last",
    ],
)
async def test_content_round_trips(server: Server, message: bytes) -> None:
    client = aiosmtplib.SMTP(hostname="127.0.0.1", port=server.port, timeout=10)
    async with client:
        await client.sendmail("a@example.com", ["b@example.com"], message)
    expected = message if message.endswith(b"\r\n") else message + b"\r\n"
    assert server.keeper.contents == [expected]


async def test_random_content_round_trips(server: Server) -> None:
    rng = random.Random(3)
    parts = [b"\r\n", b".", b"..", b"\r\n.\r", b"\n", b"x" * 900, b"y" * 4090]
    sent = []
    client = aiosmtplib.SMTP(hostname="127.0.0.1", port=server.port, timeout=10)
    async with client:
        for _ in range(25):
            message = b"".join(rng.choice(parts) for _ in range(rng.randrange(1, 60)))
            await client.sendmail("a@example.com", ["b@example.com"], message)
            sent.append(normalize_message_line_endings(message))
    assert server.keeper.contents == sent


async def test_terminator_split_across_writes(server: Server) -> None:
    pieces = [b"one\r\n..two\r", b"\n.", b"\r", b"\n"]
    replies = await session(server.port, pieces)
    assert replies[-6].startswith(b"250 2.0.0 kept")
    assert replies[-2].startswith(b"250 2.0.0 kept")
    assert replies[-1].startswith(b"221")
    assert server.keeper.contents == [b"one\r\n.two\r\n", b"after\r\n"]


async def test_empty_message_then_second(server: Server) -> None:
    client = aiosmtplib.SMTP(hostname="127.0.0.1", port=server.port, timeout=10)
    async with client:
        await client.sendmail("a@example.com", ["b@example.com"], b"")
        await client.sendmail("a@example.com", ["b@example.com"], b"second\r\n")
    assert server.keeper.contents == [b"\r\n", b"second\r\n"]


@pytest.mark.parametrize("line", [b"x" * 1000 + b"\r\n", b"x" * 300_000 + b"\r\n"])
async def test_oversize_rejected_session_continues(server: Server, line: bytes) -> None:
    pieces = [line] * (SIZE_LIMIT // len(line) + 2) + [b".\r\n"]
    replies = await session(server.port, pieces)
    assert replies[-6].startswith(b"552")
    assert replies[-2].startswith(b"250 2.0.0 kept")
    assert server.keeper.contents == [b"after\r\n"]

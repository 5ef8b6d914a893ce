"""DATA in pieces from the delivery relay, checked against aiosmtplib and a sink."""

from __future__ import annotations

import random

import pytest
from aiosmtplib.protocol import PERIOD_REGEX, normalize_message_line_endings

from services.delivery import relay
from tests.harness import SinkServer, free_port


def aiosmtplib_payload(message: bytes) -> bytes:
    """The DATA payload that aiosmtplib 5.1 builds in one piece."""
    return PERIOD_REGEX.sub(b"..", normalize_message_line_endings(message)) + b".\r\n"


@pytest.mark.parametrize(
    "message",
    [
        b"",
        b"x",
        b".",
        b"\r",
        b"\n",
        b"a\r\n.b\r\n",
        b"a\n.\nb\rc\r\n..d",
        b".start\r\n" + b"y" * 300_000 + b"\r\n.mid\r\n",
        b"\n" * 600_000,
    ],
)
def test_pieces_match_aiosmtplib(message: bytes) -> None:
    assert b"".join(relay.data_pieces(message)) == aiosmtplib_payload(message)


@pytest.mark.parametrize(
    "message", [b"", b"x", b"\r", b"\n", b"a\r\nb", b"a\nb\rc\r\n", b"\r\r\n\n"]
)
def test_size_matches_aiosmtplib(message: bytes) -> None:
    assert relay.payload_size(message) == len(normalize_message_line_endings(message))


def test_pieces_match_aiosmtplib_random() -> None:
    rng = random.Random(7)
    parts = [b"\r\n", b"\n", b"\r", b".", b"..", b"a", b"z" * 70]
    for _ in range(60):
        message = b"".join(rng.choice(parts) for _ in range(rng.randrange(0, 40_000)))
        assert b"".join(relay.data_pieces(message)) == aiosmtplib_payload(message)
        size = len(normalize_message_line_endings(message))
        assert relay.payload_size(message) == size


def test_pieces_are_bounded() -> None:
    message = b"line of text\r\n" * 200_000
    pieces = list(relay.data_pieces(message))
    assert len(pieces) > 5
    assert max(len(p) for p in pieces) < 300 * 1024


async def test_large_message_arrives_intact(sink: SinkServer) -> None:
    message = b"Subject: big\r\n\r\n" + b".dot line\r\nplain line\r\n" * 250_000
    replies = await relay.send(
        host="127.0.0.1",
        port=sink.port,
        helo="gw.test",
        sender="a@example.com",
        recipients=["b@partner.example", "c@partner.example"],
        message=message,
        mail_options=[],
        timeout=30,
    )
    assert all(reply.accepted for reply in replies.values())
    assert len(replies) == 2
    received = await sink.wait_for(1, timeout=30)
    assert received[0].content == message
    assert received[0].recipients == ["b@partner.example", "c@partner.example"]


async def test_refused_recipient_is_permanent(sink: SinkServer) -> None:
    sink.handler.rcpt_replies["b@partner.example"] = "550 5.1.1 no such user"
    replies = await relay.send(
        host="127.0.0.1",
        port=sink.port,
        helo="gw.test",
        sender="a@example.com",
        recipients=["b@partner.example", "c@partner.example"],
        message=b"Subject: x\r\n\r\nbody\r\n",
        mail_options=[],
        timeout=30,
    )
    assert replies["b@partner.example"].permanent
    assert replies["c@partner.example"].accepted


async def test_all_recipients_refused(sink: SinkServer) -> None:
    sink.handler.rcpt_replies["b@partner.example"] = "550 5.1.1 no such user"
    sink.handler.rcpt_replies["c@partner.example"] = "450 4.2.1 mailbox busy"
    replies = await relay.send(
        host="127.0.0.1",
        port=sink.port,
        helo="gw.test",
        sender="a@example.com",
        recipients=["b@partner.example", "c@partner.example"],
        message=b"Subject: x\r\n\r\nbody\r\n",
        mail_options=[],
        timeout=30,
    )
    assert replies["b@partner.example"].permanent
    assert not replies["c@partner.example"].accepted
    assert not replies["c@partner.example"].permanent
    assert sink.messages == []


async def test_closed_port_defers() -> None:
    port = free_port()
    replies = await relay.send(
        host="127.0.0.1",
        port=port,
        helo="gw.test",
        sender="a@example.com",
        recipients=["b@partner.example"],
        message=b"Subject: x\r\n\r\nbody\r\n",
        mail_options=[],
        timeout=5,
    )
    assert replies["b@partner.example"].code == 451

"""Sessions to the next hop kept open and used again, as an MTA's cache does."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest

from services.delivery import relay
from tests.harness import SinkServer

MESSAGE = b"Subject: x\r\n\r\nbody\r\n"


async def send(
    port: int, cache: relay.ConnectionCache | None, recipient: str
) -> dict[str, relay.Reply]:
    return await relay.send(
        host="127.0.0.1",
        port=port,
        helo="gw.test",
        sender="a@example.com",
        recipients=[recipient],
        message=MESSAGE,
        mail_options=[],
        timeout=10,
        cache=cache,
    )


async def test_transactions_share_one_connection(sink: SinkServer) -> None:
    cache = relay.ConnectionCache(idle_limit=30)
    try:
        for index in range(4):
            replies = await send(sink.port, cache, f"r{index}@partner.example")
            assert replies[f"r{index}@partner.example"].accepted
        received = await sink.wait_for(4, timeout=10)
        assert len({m.peer for m in received}) == 1
        assert [m.recipients for m in received] == [
            [f"r{i}@partner.example"] for i in range(4)
        ]
        assert cache.idle_count("127.0.0.1", sink.port) == 1
    finally:
        await cache.close()
    assert cache.idle_count("127.0.0.1", sink.port) == 0


async def test_without_cache_each_transaction_connects(sink: SinkServer) -> None:
    for index in range(3):
        await send(sink.port, None, f"r{index}@partner.example")
    received = await sink.wait_for(3, timeout=10)
    assert len({m.peer for m in received}) == 3


async def test_concurrent_transactions_use_separate_sessions(
    sink: SinkServer,
) -> None:
    cache = relay.ConnectionCache(idle_limit=30)
    try:
        await asyncio.gather(
            *(send(sink.port, cache, f"r{i}@partner.example") for i in range(3))
        )
        assert cache.idle_count("127.0.0.1", sink.port) == 3
        await asyncio.gather(
            *(send(sink.port, cache, f"s{i}@partner.example") for i in range(3))
        )
        received = await sink.wait_for(6, timeout=10)
        assert len({m.peer for m in received}) == 3
    finally:
        await cache.close()


async def test_idle_session_is_closed_after_the_limit(sink: SinkServer) -> None:
    cache = relay.ConnectionCache(idle_limit=0.2)
    try:
        await send(sink.port, cache, "r@partner.example")
        assert cache.idle_count("127.0.0.1", sink.port) == 1
        await asyncio.sleep(0.5)
        assert cache.idle_count("127.0.0.1", sink.port) == 0
        await send(sink.port, cache, "s@partner.example")
        received = await sink.wait_for(2, timeout=10)
        assert received[0].peer != received[1].peer
    finally:
        await cache.close()


async def test_session_older_than_reuse_limit_is_not_kept(sink: SinkServer) -> None:
    now = [100.0]
    cache = relay.ConnectionCache(idle_limit=30, reuse_limit=60, clock=lambda: now[0])
    try:
        await send(sink.port, cache, "r@partner.example")
        now[0] += 61
        assert cache.take("127.0.0.1", sink.port) is None
    finally:
        await cache.close()


async def test_disabled_cache_keeps_nothing(sink: SinkServer) -> None:
    cache = relay.ConnectionCache(idle_limit=0)
    await send(sink.port, cache, "r@partner.example")
    assert cache.idle_count("127.0.0.1", sink.port) == 0
    await cache.close()


@dataclass
class OneShotServer:
    """An SMTP server that ends every connection after one transaction.

    `farewell` is what it does after the DATA reply. "close" drops the
    connection at once. "421" replies 421 to the next command and closes, as a
    server that ends idle sessions does.
    """

    farewell: str
    connections: int = 0
    delivered: list[bytes] = field(default_factory=list)

    async def handle(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        self.connections += 1
        writer.write(b"220 oneshot ESMTP\r\n")
        done = False
        try:
            while line := await reader.readline():
                verb = line[:4].upper()
                if done and self.farewell == "421":
                    writer.write(b"421 4.4.2 idle too long, closing\r\n")
                    break
                if verb == b"EHLO":
                    writer.write(b"250-oneshot\r\n250 8BITMIME\r\n")
                elif verb in (b"MAIL", b"RCPT", b"RSET", b"NOOP"):
                    writer.write(b"250 2.0.0 ok\r\n")
                elif verb == b"DATA":
                    writer.write(b"354 go ahead\r\n")
                    body = await reader.readuntil(b"\r\n.\r\n")
                    self.delivered.append(body)
                    writer.write(b"250 2.0.0 stored\r\n")
                    done = True
                    if self.farewell == "close":
                        break
                elif verb == b"QUIT":
                    writer.write(b"221 bye\r\n")
                    break
                else:
                    writer.write(b"500 5.5.1 unknown\r\n")
                await writer.drain()
        finally:
            writer.close()


@pytest.fixture(params=["close", "421"])
async def one_shot(
    request: pytest.FixtureRequest,
) -> AsyncIterator[tuple[int, OneShotServer]]:
    server = OneShotServer(request.param)
    listener = await asyncio.start_server(server.handle, "127.0.0.1", 0)
    port = listener.sockets[0].getsockname()[1]
    try:
        yield port, server
    finally:
        listener.close()


async def test_session_closed_by_next_hop_is_replaced(
    one_shot: tuple[int, OneShotServer],
) -> None:
    port, server = one_shot
    cache = relay.ConnectionCache(idle_limit=30)
    try:
        first = await send(port, cache, "r@partner.example")
        # Let the server's close reach the cached session, or not: both end
        # in a new connection and a delivered message.
        await asyncio.sleep(0.05)
        second = await send(port, cache, "s@partner.example")
    finally:
        await cache.close()
    assert first["r@partner.example"].accepted
    assert second["s@partner.example"].accepted
    assert len(server.delivered) == 2
    assert server.connections == 2

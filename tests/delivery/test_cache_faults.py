"""Faults of the next hop on cached sessions: each recipient is decided once.

A scripted SMTP server misbehaves on a chosen transaction of a connection. A
transaction that fails before its DATA reply must come back as a temporary
reply (so delivery defers it), never as accepted, and a session that failed
must not be used again.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from services.delivery import relay
from smimegw.service import SERVICE_NAMES
from tests.conftest import gateway_settings
from tests.harness import (
    Gateway,
    NatsServer,
    SinkServer,
    audit_events,
    free_port,
    wait_until,
)
from tests.pipeline.test_failures import send as smtp_send

MESSAGE = b"Subject: x\r\n\r\n" + b"line of the body\r\n" * 4000


@dataclass
class ScriptedServer:
    """An SMTP server whose `fault` hits the `on`-th transaction of a connection.

    Faults:
    - "mail-421" and "mail-554": the reply to MAIL.
    - "drop-in-data": the connection closes after a part of the DATA payload.
    - "refuse-second": the second RCPT gets 550.
    - "hold-data": the DATA reply waits for `release`.
    - "mute-quit": QUIT gets no reply.
    """

    fault: str = ""
    on: int = 2
    drop_after: int = len(MESSAGE) // 2
    connections: int = 0
    quits: int = 0
    delivered: list[tuple[int, list[str], bytes]] = field(default_factory=list)
    in_data: asyncio.Event = field(default_factory=asyncio.Event)
    release: asyncio.Event = field(default_factory=asyncio.Event)

    async def handle(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        self.connections += 1
        connection = self.connections
        transaction = 0
        recipients: list[str] = []
        writer.write(b"220 scripted ESMTP\r\n")
        try:
            while line := await reader.readline():
                verb = line[:4].upper()
                faulty = transaction + 1 == self.on
                if verb == b"EHLO":
                    writer.write(b"250-scripted\r\n250-8BITMIME\r\n250 SIZE 0\r\n")
                elif verb == b"MAIL":
                    if faulty and self.fault == "mail-421":
                        writer.write(b"421 4.3.2 closing this session\r\n")
                        await writer.drain()
                        break
                    if faulty and self.fault == "mail-554":
                        writer.write(b"554 5.7.1 sender rejected\r\n")
                        await writer.drain()
                        transaction += 1
                        continue
                    recipients = []
                    writer.write(b"250 2.1.0 ok\r\n")
                elif verb == b"RCPT":
                    address = line[8:].strip().strip(b"<>").decode()
                    if faulty and self.fault == "refuse-second" and recipients:
                        writer.write(b"550 5.1.1 no such user\r\n")
                    else:
                        recipients.append(address)
                        writer.write(b"250 2.1.5 ok\r\n")
                elif verb == b"DATA":
                    writer.write(b"354 go ahead\r\n")
                    await writer.drain()
                    transaction += 1
                    if faulty and self.fault == "drop-in-data":
                        await reader.readexactly(self.drop_after)
                        break
                    body = await reader.readuntil(b"\r\n.\r\n")
                    if faulty and self.fault == "hold-data":
                        self.in_data.set()
                        await self.release.wait()
                    self.delivered.append((connection, recipients, body))
                    writer.write(b"250 2.0.0 stored\r\n")
                elif verb == b"RSET":
                    writer.write(b"250 2.0.0 ok\r\n")
                elif verb == b"QUIT" and self.fault == "mute-quit":
                    self.quits += 1
                    await reader.read()
                    break
                elif verb == b"QUIT":
                    self.quits += 1
                    writer.write(b"221 2.0.0 bye\r\n")
                    await writer.drain()
                    break
                else:
                    writer.write(b"500 5.5.1 unknown command\r\n")
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()


@pytest.fixture
async def scripted() -> AsyncIterator[tuple[int, ScriptedServer]]:
    server = ScriptedServer()
    listener = await asyncio.start_server(server.handle, "127.0.0.1", 0, limit=1 << 20)
    port = listener.sockets[0].getsockname()[1]
    try:
        yield port, server
    finally:
        server.release.set()
        listener.close()


async def send(
    port: int, cache: relay.ConnectionCache | None, *recipients: str
) -> dict[str, relay.Reply]:
    return await relay.send(
        host="127.0.0.1",
        port=port,
        helo="gw.test",
        sender="a@example.com",
        recipients=list(recipients),
        message=MESSAGE,
        mail_options=[],
        timeout=10,
        cache=cache,
    )


async def test_421_to_mail_on_reused_session_reconnects(
    scripted: tuple[int, ScriptedServer],
) -> None:
    port, server = scripted
    server.fault = "mail-421"
    cache = relay.ConnectionCache(idle_limit=30)
    try:
        first = await send(port, cache, "r@partner.example")
        second = await send(port, cache, "s@partner.example")
    finally:
        await cache.close()
    assert first["r@partner.example"].accepted
    assert second["s@partner.example"].accepted
    assert [recipients for _, recipients, _ in server.delivered] == [
        ["r@partner.example"],
        ["s@partner.example"],
    ]
    assert server.connections == 2


async def test_554_to_mail_on_reused_session_is_final(
    scripted: tuple[int, ScriptedServer],
) -> None:
    port, server = scripted
    server.fault = "mail-554"
    cache = relay.ConnectionCache(idle_limit=30)
    try:
        await send(port, cache, "r@partner.example")
        second = await send(port, cache, "s@partner.example", "t@partner.example")
    finally:
        await cache.close()
    for recipient in ("s@partner.example", "t@partner.example"):
        assert second[recipient].code == 554
        assert second[recipient].enhanced_status() == "5.7.1"
    assert len(server.delivered) == 1
    assert cache.idle_count("127.0.0.1", port) == 0


async def test_drop_in_data_on_reused_session_defers(
    scripted: tuple[int, ScriptedServer],
) -> None:
    port, server = scripted
    server.fault = "drop-in-data"
    cache = relay.ConnectionCache(idle_limit=30)
    try:
        await send(port, cache, "r@partner.example")
        dropped = await send(port, cache, "s@partner.example")
        assert cache.idle_count("127.0.0.1", port) == 0
        retried = await send(port, cache, "s@partner.example")
    finally:
        await cache.close()
    reply = dropped["s@partner.example"]
    assert not reply.accepted
    assert not reply.permanent
    assert retried["s@partner.example"].accepted
    assert [recipients for _, recipients, _ in server.delivered] == [
        ["r@partner.example"],
        ["s@partner.example"],
    ]
    assert server.connections == 2


async def test_refused_recipient_on_reused_session(
    scripted: tuple[int, ScriptedServer],
) -> None:
    port, server = scripted
    server.fault = "refuse-second"
    cache = relay.ConnectionCache(idle_limit=30)
    try:
        await send(port, cache, "r@partner.example")
        replies = await send(port, cache, "s@partner.example", "t@partner.example")
        third = await send(port, cache, "u@partner.example")
    finally:
        await cache.close()
    assert replies["s@partner.example"].accepted
    assert replies["t@partner.example"].code == 550
    assert third["u@partner.example"].accepted
    assert [recipients for _, recipients, _ in server.delivered] == [
        ["r@partner.example"],
        ["s@partner.example"],
        ["u@partner.example"],
    ]
    assert server.connections == 1


async def test_session_returned_after_close_is_quit(
    scripted: tuple[int, ScriptedServer],
) -> None:
    """A transaction in flight while the service stops closes its own session."""
    port, server = scripted
    server.fault = "hold-data"
    server.on = 1
    cache = relay.ConnectionCache(idle_limit=30)
    delivery = asyncio.create_task(send(port, cache, "r@partner.example"))
    await asyncio.wait_for(server.in_data.wait(), 10)
    await cache.close()
    server.release.set()
    replies = await asyncio.wait_for(delivery, 10)
    assert replies["r@partner.example"].accepted
    # send returned: its session must be closed by now, not by a task that no
    # one waits for after the service stopped.
    assert server.quits == 1
    assert cache.idle_count("127.0.0.1", port) == 0


async def test_restarted_next_hop_between_messages(sink: SinkServer) -> None:
    cache = relay.ConnectionCache(idle_limit=30)
    try:
        first = await send(sink.port, cache, "r@partner.example")
        await sink.stop()
        await sink.start()
        second = await send(sink.port, cache, "s@partner.example")
        received = await sink.wait_for(2, timeout=10)
    finally:
        await cache.close()
    assert first["r@partner.example"].accepted
    assert second["s@partner.example"].accepted
    assert [m.recipients for m in received] == [
        ["r@partner.example"],
        ["s@partner.example"],
    ]


async def test_many_concurrent_deliveries_once_each(sink: SinkServer) -> None:
    cache = relay.ConnectionCache(idle_limit=30, max_idle=4)
    recipients = [f"r{index}@partner.example" for index in range(40)]
    try:
        for wave in range(0, len(recipients), 10):
            results = await asyncio.gather(
                *(send(sink.port, cache, r) for r in recipients[wave : wave + 10])
            )
            for recipient, replies in zip(
                recipients[wave : wave + 10], results, strict=True
            ):
                assert list(replies) == [recipient]
                assert replies[recipient].accepted
        assert cache.idle_count("127.0.0.1", sink.port) <= 4
        received = await sink.wait_for(40, timeout=10)
    finally:
        await cache.close()
    delivered = sorted(r for m in received for r in m.recipients)
    assert delivered == sorted(recipients)
    assert all(m.content.endswith(b"line of the body\r\n") for m in received)


@pytest.mark.parametrize("cache_time", ["30s", "0s"])
async def test_gateway_delivers_each_message_once(
    tmp_path: Path,
    nats_server: NatsServer,
    scripted: tuple[int, ScriptedServer],
    cache_time: str,
) -> None:
    """Every second transaction of a connection is cut in DATA; all arrive once."""
    port, server = scripted
    server.fault = "drop-in-data"
    server.drop_after = 200
    settings = gateway_settings(
        tmp_path,
        smtp={"listen": f"127.0.0.1:{free_port()}", "hostname": "gw.test"},
        delivery={
            "relay_host": f"127.0.0.1:{port}",
            "retry_initial": "200ms",
            "connection_cache_time": cache_time,
        },
        nats={"url": nats_server.url},
    )
    gateway = Gateway(settings, nats_server.url)
    await gateway.start(SERVICE_NAMES)
    queue_ids: list[str] = []
    try:
        for index in range(8):
            body = (
                f"From: a@example.com\r\nTo: r{index}@partner.example\r\n"
                f"Subject: message {index}\r\n\r\n"
            ).encode() + b"line of the body\r\n" * 50
            reply = await smtp_send(
                gateway.smtp_address,
                "a@example.com",
                [f"r{index}@partner.example"],
                body,
            )
            queue_ids.append(reply.rsplit(" ", 1)[-1])

        async def all_delivered() -> bool:
            return len(server.delivered) >= 8

        await wait_until(all_delivered, timeout=30)
        for queue_id in queue_ids:
            await wait_until(lambda q=queue_id: _delivered(nats_server.url, q))
        await asyncio.sleep(0.5)
        histories = [
            [e["type"] for e in await audit_events(nats_server.url, queue_id=q)]
            for q in queue_ids
        ]
    finally:
        await gateway.stop()

    subjects = sorted(
        body.split(b"Subject: ", 1)[1].split(b"\r\n", 1)[0]
        for _, _, body in server.delivered
    )
    assert subjects == [f"message {index}".encode() for index in range(8)]
    for types in histories:
        assert types.count("mail.delivered") == 1
        assert "mail.bounced" not in types
        assert "mail.parked" not in types
    if cache_time == "0s":
        assert server.connections == 8
    else:
        # Each cut transaction cost its connection, and was deferred.
        assert server.connections > 1
        assert any("mail.deferred" in types for types in histories)


async def _delivered(url: str, queue_id: str) -> bool:
    events = await audit_events(url, queue_id=queue_id)
    return any(event["type"] == "mail.delivered" for event in events)


async def test_close_leaves_no_task_when_quit_hangs(
    scripted: tuple[int, ScriptedServer],
) -> None:
    port, server = scripted
    server.fault = "mute-quit"
    cache = relay.ConnectionCache(idle_limit=30)
    replies = await send(port, cache, "r@partner.example")
    assert replies["r@partner.example"].accepted
    assert cache.idle_count("127.0.0.1", port) == 1

    await asyncio.wait_for(cache.close(), 15)
    finishing = [
        task
        for task in asyncio.all_tasks()
        if getattr(task.get_coro(), "__name__", "") == "_finish"
    ]
    assert finishing == []
    assert server.quits == 1


async def test_reuse_limit_counts_from_open(sink: SinkServer) -> None:
    """A session open longer than the reuse limit is not taken, however fresh."""
    now = [100.0]
    cache = relay.ConnectionCache(idle_limit=1000, reuse_limit=60, clock=lambda: now[0])
    try:
        await send(sink.port, cache, "r@partner.example")
        now[0] += 50
        await send(sink.port, cache, "s@partner.example")
        now[0] += 11
        assert cache.take("127.0.0.1", sink.port) is None
    finally:
        await cache.close()
    received = await sink.wait_for(2, timeout=10)
    assert received[0].peer == received[1].peer

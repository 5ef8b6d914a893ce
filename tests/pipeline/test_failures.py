"""Failures on the way: delivery killed, the broker down, the next hop down."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import aiosmtplib
import pytest

from tests.conftest import gateway_settings
from tests.harness import (
    Gateway,
    NatsServer,
    SinkServer,
    audit_events,
    free_port,
    service_process,
    stop_process,
    strip_received,
    wait_until,
)
from tests.pipeline.test_flow import make_message


async def send(
    address: tuple[str, int], sender: str, recipients: list[str], body: bytes
) -> str:
    async with aiosmtplib.SMTP(hostname=address[0], port=address[1]) as smtp:
        _, reply = await smtp.sendmail(sender, recipients, body)
    return reply


async def test_delivery_killed_and_restarted_loses_nothing(
    tmp_path: Path, nats_server: NatsServer, sink: SinkServer
) -> None:
    outbox = tmp_path / "outbox"
    config = tmp_path / "gateway.toml"
    config.write_text(
        f'data_dir = "{tmp_path / "var"}"\n'
        f'[delivery]\nrelay_host = "127.0.0.1:{sink.port}"\noutbox_dir = "{outbox}"\n'
        '[bus]\nack_wait = "5s"\n'
    )
    settings = gateway_settings(
        tmp_path, delivery={"relay_host": f"127.0.0.1:{sink.port}"}
    )
    gateway = Gateway(settings, nats_server.url)
    await gateway.start(["ingress", "policy", "crypto"])
    delivery = service_process("delivery", config, nats_server.url)
    total = 150
    try:

        async def sender() -> None:
            for index in range(total):
                await send(
                    gateway.smtp_address,
                    "alice@example.com",
                    [f"user{index}@example.com"],
                    make_message(index, f"user{index}@example.com"),
                )

        sending = asyncio.create_task(sender())
        await sink.wait_for(20, timeout=60)
        delivery.send_signal(signal.SIGKILL)
        delivery.wait(timeout=10)
        killed_after = len(sink.messages)
        await sending
        delivery = service_process("delivery", config, nats_server.url)

        async def all_arrived() -> bool:
            bodies = {strip_received(m.content) for m in sink.messages}
            return len(bodies) == total

        await wait_until(all_arrived, timeout=120)
        bodies = [strip_received(m.content) for m in sink.messages]
        duplicates = len(bodies) - len(set(bodies))
        # The window that cannot be closed: a message handed to the sink but not
        # yet recorded when the process died arrives twice.
        print(f"killed after {killed_after} arrivals; {duplicates} arrived twice")
        assert duplicates <= 16  # at most one batch of in-flight messages
    finally:
        stop_process(delivery)
        await gateway.stop()


async def test_broker_down_answers_451_then_250(
    tmp_path: Path, nats_server: NatsServer
) -> None:
    settings = gateway_settings(
        tmp_path,
        smtp={
            "listen": f"127.0.0.1:{free_port()}",
            "publish_timeout": "2s",
        },
    )
    gateway = Gateway(settings, nats_server.url)
    await gateway.start(["ingress"])
    body = make_message(1, "bob@example.com")
    try:
        reply = await send(
            gateway.smtp_address, "a@example.com", ["bob@example.com"], body
        )
        assert reply.startswith("2.0.0 Ok: queued as")
        nats_server.stop()
        with pytest.raises(aiosmtplib.SMTPDataError) as refused:
            await send(gateway.smtp_address, "a@example.com", ["bob@example.com"], body)
        assert refused.value.code == 451
        assert "4.3.0" in refused.value.message
        nats_server.start()

        async def accepted() -> bool:
            try:
                await send(
                    gateway.smtp_address, "a@example.com", ["bob@example.com"], body
                )
            except aiosmtplib.SMTPDataError as err:
                assert err.code == 451
                return False
            return True

        await wait_until(accepted, timeout=30, step=0.5)
    finally:
        await gateway.stop()


async def test_next_hop_down_defers_then_delivers(
    tmp_path: Path, nats_server: NatsServer
) -> None:
    port = free_port()
    settings = gateway_settings(
        tmp_path,
        delivery={
            "relay_host": f"127.0.0.1:{port}",
            "retry_initial": "300ms",
            "retry_max": "1s",
            "connect_timeout": "2s",
        },
    )
    gateway = Gateway(settings, nats_server.url)
    await gateway.start(["ingress", "policy", "crypto", "delivery", "audit"])
    sink = SinkServer(port)
    try:
        reply = await send(
            gateway.smtp_address,
            "a@example.com",
            ["bob@example.com"],
            make_message(1, "bob@example.com"),
        )
        queue_id = reply.rsplit(" ", 1)[-1]

        async def deferred() -> bool:
            events = await audit_events(nats_server.url, queue_id=queue_id)
            return any(e["type"] == "mail.deferred" for e in events)

        await wait_until(deferred, timeout=30)
        await sink.start()
        await sink.wait_for(1, timeout=30)

        async def delivered() -> bool:
            events = await audit_events(nats_server.url, queue_id=queue_id)
            return any(e["type"] == "mail.delivered" for e in events)

        await wait_until(delivered, timeout=30)
        assert sink.messages[0].recipients == ["bob@example.com"]
    finally:
        await sink.stop()
        await gateway.stop()


async def test_permanent_failure_sends_dsn(
    tmp_path: Path, nats_server: NatsServer, sink: SinkServer
) -> None:
    sink.handler.rcpt_replies["nobody@example.net"] = (
        "550 5.1.1 <nobody@example.net>: no such user"
    )
    settings = gateway_settings(
        tmp_path, delivery={"relay_host": f"127.0.0.1:{sink.port}"}
    )
    gateway = Gateway(settings, nats_server.url)
    await gateway.start(["ingress", "policy", "crypto", "delivery", "audit"])
    try:
        reply = await send(
            gateway.smtp_address,
            "alice@example.com",
            ["nobody@example.net", "carol@example.net"],
            make_message(7, "nobody@example.net"),
        )
        queue_id = reply.rsplit(" ", 1)[-1]
        messages = await sink.wait_for(2, timeout=30)
        original = next(m for m in messages if m.sender == "alice@example.com")
        assert original.recipients == ["carol@example.net"]
        dsn = next(m for m in messages if m.sender == "")
        assert dsn.recipients == ["alice@example.com"]
        assert b"multipart/report; report-type=delivery-status" in dsn.content
        assert b"Final-Recipient: rfc822; nobody@example.net" in dsn.content
        assert b"Status: 5.1.1" in dsn.content
        assert b"Subject: message 7" in dsn.content  # the original headers

        async def bounced() -> bool:
            events = await audit_events(nats_server.url, queue_id=queue_id)
            return any(e["type"] == "mail.bounced" for e in events)

        await wait_until(bounced, timeout=30)
        events = await audit_events(nats_server.url, queue_id=queue_id)
        bounce = next(e for e in events if e["type"] == "mail.bounced")
        assert bounce["recipients"] == ["nobody@example.net"]
        assert bounce["status"] == "5.1.1"
        assert bounce["dsn_queue_id"]
    finally:
        await gateway.stop()


async def test_bounce_of_null_sender_sends_no_dsn(
    tmp_path: Path, nats_server: NatsServer, sink: SinkServer
) -> None:
    sink.handler.rcpt_replies["nobody@example.net"] = "550 5.1.1 no such user"
    settings = gateway_settings(
        tmp_path, delivery={"relay_host": f"127.0.0.1:{sink.port}"}
    )
    gateway = Gateway(settings, nats_server.url)
    await gateway.start(["ingress", "policy", "crypto", "delivery", "audit"])
    try:
        reply = await send(
            gateway.smtp_address, "", ["nobody@example.net"], make_message(8, "x")
        )
        queue_id = reply.rsplit(" ", 1)[-1]

        async def bounced() -> bool:
            events = await audit_events(nats_server.url, queue_id=queue_id)
            return any(e["type"] == "mail.bounced" for e in events)

        await wait_until(bounced, timeout=30)
        await asyncio.sleep(1.0)
        assert sink.messages == []
        events = await audit_events(nats_server.url, type="mail.bounced")
        assert events[0]["dsn_queue_id"] is None
    finally:
        await gateway.stop()

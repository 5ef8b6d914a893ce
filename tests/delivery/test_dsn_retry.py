"""A DSN whose body was stored but whose mail.processed failed to publish.

Each build of a DSN has its own Date and Message-ID, so the retry's bytes differ
from the stored ones. The DSN must still reach the sender after the retry.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from schemas import MailProcessed
from tests.conftest import gateway_settings
from tests.harness import Gateway, NatsServer, SinkServer, audit_events, wait_until
from tests.pipeline.test_failures import send
from tests.pipeline.test_flow import make_message


async def test_dsn_after_failed_publish_arrives(
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
        runtime = gateway.services["delivery"][0]
        publish = runtime.publish
        failures: list[str] = []

        async def publish_failing_once(event: Any, timeout: float = 10.0) -> None:
            is_dsn = isinstance(event, MailProcessed) and event.kind == "dsn"
            if is_dsn and not failures:
                failures.append(event.event_id)
                raise TimeoutError("publish of the DSN timed out (test fault)")
            await publish(event, timeout)

        runtime.publish = publish_failing_once  # type: ignore[method-assign]
        reply = await send(
            gateway.smtp_address,
            "alice@example.com",
            ["nobody@example.net"],
            make_message(8, "nobody@example.net"),
        )
        queue_id = reply.rsplit(" ", 1)[-1]

        [dsn] = await sink.wait_for(1, timeout=30)
        assert failures
        assert dsn.sender == ""
        assert dsn.recipients == ["alice@example.com"]
        assert b"Final-Recipient: rfc822; nobody@example.net" in dsn.content

        async def dsn_delivered() -> bool:
            bounced = [
                e
                for e in await audit_events(nats_server.url, queue_id=queue_id)
                if e["type"] == "mail.bounced"
            ]
            if not bounced:
                return False
            dsn_id = bounced[0]["dsn_queue_id"]
            events = await audit_events(nats_server.url, queue_id=dsn_id)
            types = [e["type"] for e in events]
            assert "mail.parked" not in types
            return "mail.delivered" in types

        await wait_until(dsn_delivered, timeout=20)
    finally:
        await gateway.stop()

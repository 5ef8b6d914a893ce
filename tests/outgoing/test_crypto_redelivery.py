"""A crypto attempt that stored its result but failed to publish it, then retried.

Encryption draws a new content-encryption key and IV on every attempt, so the
retry produces other bytes than the attempt before it. Both attempts store
under the plan's body key: the delivered message must be the one its
reference describes, whatever the earlier attempt left in the body store.
"""

from __future__ import annotations

from typing import Any

import pytest

from schemas import MailProcessed
from smimegw import parking
from smimegw.runtime import PermanentError
from tests.harness import audit_events, wait_until
from tests.outgoing.conftest import Outgoing, decrypt, verify

BODY = (
    b"From: Alice <alice@example.com>\r\n"
    b"To: Bob <bob@example.com>\r\n"
    b"Subject: retried after a failed publish\r\n"
    b"\r\n"
) + b"A line of the message that the crypto service encrypts.\r\n" * 40


@pytest.mark.parametrize("size", [len(BODY), 3 * 1024 * 1024])
async def test_retry_after_failed_publish_delivers(
    outgoing: Outgoing, size: int
) -> None:
    await outgoing.use_profile("p", action="sign-and-encrypt")
    runtime = outgoing.gateway.services["crypto"][0]
    publish = runtime.publish
    failures: list[str] = []

    async def publish_failing_once(event: Any, timeout: float = 10.0) -> None:
        if isinstance(event, MailProcessed) and not failures:
            failures.append(event.event_id)
            raise TimeoutError("publish of mail.processed timed out (test fault)")
        await publish(event, timeout)

    runtime.publish = publish_failing_once  # type: ignore[method-assign]
    line = b"A line of the message that the crypto service encrypts.\r\n"
    body = BODY + line * ((size - len(BODY)) // len(line))
    queue_id = await outgoing.send(["bob@example.com"], body)

    received = await outgoing.sink.wait_for(1, timeout=30)
    assert failures
    assert len(received) == 1
    content = verify(outgoing.keys, decrypt(outgoing.keys, "Bob", received[0].content))
    assert content.endswith(line * 3)
    await wait_until(lambda: _delivered(outgoing, queue_id), timeout=10)


async def _delivered(outgoing: Outgoing, queue_id: str, parked: int = 0) -> bool:
    events = await audit_events(outgoing.gateway.url, queue_id=queue_id)
    types = [event["type"] for event in events]
    assert types.count("mail.parked") == parked
    return "mail.delivered" in types


async def test_parked_retry_after_stored_result_delivers(outgoing: Outgoing) -> None:
    """A plan parked after its result was stored is sent back by `parked retry`."""
    await outgoing.use_profile("p", action="sign-and-encrypt")
    runtime = outgoing.gateway.services["crypto"][0]
    publish = runtime.publish
    failures: list[str] = []

    async def publish_parking_once(event: Any, timeout: float = 10.0) -> None:
        if isinstance(event, MailProcessed) and not failures:
            failures.append(event.event_id)
            raise PermanentError("mail.processed rejected (test fault)")
        await publish(event, timeout)

    runtime.publish = publish_parking_once  # type: ignore[method-assign]
    queue_id = await outgoing.send(["bob@example.com"], BODY)

    async def parked() -> list[parking.ParkedMessage]:
        return await parking.list_parked(runtime.js)

    await wait_until(parked, timeout=30)
    [message] = await parked()
    await parking.retry(runtime.js, message.sequence)

    received = await outgoing.sink.wait_for(1, timeout=30)
    assert len(received) == 1
    content = verify(outgoing.keys, decrypt(outgoing.keys, "Bob", received[0].content))
    assert content.endswith(b"encrypts.\r\n")
    await wait_until(lambda: _delivered(outgoing, queue_id, parked=1), timeout=10)

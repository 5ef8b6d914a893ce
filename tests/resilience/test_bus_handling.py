"""The consumer wrapper under concurrency: each handler call gets its own message.

Handlers take the bus message from FastStream's context, not as an argument.
With many messages in flight at once, each call must see the event of the bus
message it acks. RetryLater must bring the same event back as attempt 2. Bytes
that are not an event must be parked once, without reaching the handler.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from pathlib import Path

import nats

from schemas import BodyRef, ClientInfo, MailReceived
from smimegw import streams
from smimegw.ids import new_queue_id
from smimegw.runtime import Attempt, RetryLater, Runtime
from tests.conftest import gateway_settings
from tests.harness import NatsServer, wait_until


def received(index: int) -> MailReceived:
    queue_id = new_queue_id()
    return MailReceived.create(
        queue_id=queue_id,
        sender=f"sender{index}@example.com",
        recipients=(f"r{index}@example.net",),
        client=ClientInfo(address="127.0.0.1", helo="test", tls=False),
        body=BodyRef(
            key=queue_id, size=0, sha256=hashlib.sha256(b"").hexdigest(), chunks=1
        ),
    )


async def test_concurrent_handlers_see_their_events(
    tmp_path: Path, nats_server: NatsServer
) -> None:
    count = 48
    settings = gateway_settings(tmp_path, nats={"url": nats_server.url})
    runtime = Runtime("policy", settings, nats_server.url)
    seen: list[tuple[str, str, int]] = []

    async def handler(event: MailReceived, attempt: Attempt) -> None:
        # Interleave the handlers, so that contexts of messages overlap.
        index = int(event.sender.removeprefix("sender").split("@")[0])
        await asyncio.sleep((index % 5) * 0.01)
        seen.append((event.event_id, event.sender, attempt.number))
        if index % 7 == 0 and attempt.number == 1:
            raise RetryLater(0.1, "test deferral")

    runtime.consume("mail.received", MailReceived, handler, concurrency=8)
    await runtime.connect()
    await runtime.broker.start()
    nc = await nats.connect(nats_server.url)
    js = nc.jetstream()
    try:
        events = [received(index) for index in range(count)]
        await js.publish(
            "mail.received", b"\xff\x00 not json", headers={"Nats-Msg-Id": "junk-1"}
        )
        await js.publish(
            "mail.received",
            json.dumps({"type": "mail.received", "data": {}}).encode(),
            headers={"Nats-Msg-Id": "junk-2"},
        )
        await asyncio.gather(
            *(
                js.publish(
                    "mail.received",
                    event.encode(),
                    headers={"Nats-Msg-Id": event.event_id},
                )
                for event in events
            )
        )
        deferred = [e for i, e in enumerate(events) if i % 7 == 0]
        expected = len(events) + len(deferred)

        async def all_seen() -> bool:
            return len(seen) >= expected

        await wait_until(all_seen, timeout=30)

        async def both_parked() -> bool:
            info = await js.stream_info(streams.PARKED)
            return info.state.messages == 2

        await wait_until(both_parked, timeout=30)
        await asyncio.sleep(0.3)
    finally:
        await runtime.broker.stop()
        runtime.close()
        await nc.close()

    assert len(seen) == expected
    by_id = {event.event_id: event for event in events}
    for event_id, sender, _ in seen:
        assert by_id[event_id].sender == sender
    attempts: dict[str, list[int]] = {}
    for event_id, _, number in seen:
        attempts.setdefault(event_id, []).append(number)
    for index, event in enumerate(events):
        if index % 7 == 0:
            assert sorted(attempts[event.event_id]) == [1, 2]
        else:
            assert attempts[event.event_id] == [1]

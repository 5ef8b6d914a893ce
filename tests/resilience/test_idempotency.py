"""A redelivered input yields the same output ids, and delivery sends once.

JetStream redelivers a message whose ack was lost. The test does the same by
publishing each stored input again under a new Nats-Msg-Id, so that the
server's deduplication cannot hide a handler that mints new ids: a plain NATS
subscription sees every publish, duplicates included.
"""

from __future__ import annotations

import json
import logging
from collections import defaultdict
from pathlib import Path

import nats
import pytest
from nats.aio.msg import Msg

from smimegw import streams
from smimegw.service import SERVICE_NAMES
from tests.cluster import consumers_settled
from tests.conftest import gateway_settings
from tests.harness import Gateway, NatsServer, SinkServer, wait_until
from tests.pipeline.test_failures import send
from tests.pipeline.test_flow import make_message

# Each stage's input and the output it publishes, in pipeline order.
STAGES = (
    ("mail.received", "mail.routed"),
    ("mail.routed", "mail.processed"),
    ("mail.processed", "mail.delivered"),
)


async def test_redelivered_inputs_give_the_same_ids(
    tmp_path: Path,
    nats_server: NatsServer,
    sink: SinkServer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="smimegw.runtime")
    settings = gateway_settings(
        tmp_path, delivery={"relay_host": f"127.0.0.1:{sink.port}"}
    )
    gateway = Gateway(settings, nats_server.url)
    # Delivery starts later: it releases the body, which policy and crypto
    # read, so their inputs are redelivered while the message is in flight.
    await gateway.start([name for name in SERVICE_NAMES if name != "delivery"])
    nc = await nats.connect(nats_server.url)
    js = nc.jetstream()
    published: dict[str, list[str]] = defaultdict(list)

    async def record(msg: Msg) -> None:
        published[msg.subject].append(json.loads(msg.data)["event_id"])

    subscription = await nc.subscribe("mail.>", cb=record)
    try:
        await send(
            gateway.smtp_address,
            "alice@example.com",
            ["bob@example.net"],
            make_message(1, "bob@example.net"),
        )

        async def processed() -> bool:
            return len(published["mail.processed"]) == 1

        await wait_until(processed, timeout=30)

        for number, (source, output) in enumerate(STAGES):
            if source == "mail.processed":
                await gateway.start_one("delivery")
                await sink.wait_for(1, timeout=30)

                async def delivered() -> bool:
                    return len(published["mail.delivered"]) == 1

                await wait_until(delivered, timeout=30)
            stored = await js.get_msg(streams.MAIL, subject=source)
            before = len(published[output])
            await js.publish(
                source,
                stored.data or b"",
                headers={"Nats-Msg-Id": f"redelivered-{number}"},
            )

            async def published_again(
                output: str = output, before: int = before
            ) -> bool:
                return len(published[output]) > before

            await wait_until(published_again, timeout=30)

        for _, output in STAGES:
            assert len(published[output]) >= 2, output
            assert len(set(published[output])) == 1, (output, published[output])
        assert len(sink.messages) == 1

        # Every event in MAIL was published with Nats-Msg-Id = its event id.
        info = await js.stream_info(streams.MAIL)
        for sequence in range(1, info.state.last_seq + 1):
            stored = await js.get_msg(streams.MAIL, seq=sequence)
            msg_id = (stored.headers or {}).get("Nats-Msg-Id")
            if msg_id and msg_id.startswith("redelivered-"):
                continue
            assert msg_id == json.loads(stored.data or b"{}")["event_id"], sequence

        # Once delivery released the body, a late redelivery finds it gone;
        # it is acked as stale instead of retried and parked.
        stored = await js.get_msg(streams.MAIL, subject="mail.received")
        await js.publish(
            "mail.received", stored.data or b"", headers={"Nats-Msg-Id": "late"}
        )

        async def acked_as_stale() -> bool:
            return "policy acked a stale redelivery" in caplog.text

        await wait_until(acked_as_stale, timeout=30)
        await wait_until(
            lambda: consumers_settled(nats_server.url, [(streams.MAIL, "policy")]),
            timeout=30,
        )
        parked = await js.stream_info(streams.PARKED)
        assert parked.state.messages == 0
    finally:
        await subscription.unsubscribe()
        await nc.close()
        await gateway.stop()

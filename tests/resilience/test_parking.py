"""Poison messages: parked at once or after the retry budget, never in the way.

Then `smimegw parked list|retry|drop` on what was parked.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from pathlib import Path
from typing import Any

import nats
import pytest

from schemas import BodyRef, ClientInfo, MailReceived
from smimegw import cli, streams
from smimegw.ids import new_queue_id
from smimegw.service import SERVICE_NAMES
from tests.conftest import gateway_settings
from tests.harness import (
    Gateway,
    NatsServer,
    SinkServer,
    audit_events,
    strip_received,
    wait_until,
)
from tests.pipeline.test_failures import send
from tests.pipeline.test_flow import make_message


async def run_cli(
    capsys: pytest.CaptureFixture[str], url: str, *args: str
) -> tuple[int, str, str]:
    capsys.readouterr()
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SMIMEGW_NATS__URL", url)
        status = await asyncio.to_thread(cli.main, ["parked", *args])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def received_without_body(queue_id: str, body: bytes) -> MailReceived:
    """A valid event whose body was never stored: every try to read it fails."""
    ref = BodyRef(
        key=queue_id,
        size=len(body),
        sha256=hashlib.sha256(body).hexdigest(),
        chunks=1,
    )
    return MailReceived.create(
        queue_id=queue_id,
        sender="alice@example.com",
        recipients=("poison@example.net",),
        client=ClientInfo(address="127.0.0.1", helo="test", tls=False),
        body=ref,
    )


async def parked_events(url: str) -> list[dict[str, Any]]:
    return await audit_events(url, type="mail.parked")


async def test_poison_is_parked_and_retried_or_dropped(
    tmp_path: Path,
    nats_server: NatsServer,
    sink: SinkServer,
    capsys: pytest.CaptureFixture[str],
) -> None:
    settings = gateway_settings(
        tmp_path,
        delivery={"relay_host": f"127.0.0.1:{sink.port}"},
        bus={"max_deliver": 2},
    )
    gateway = Gateway(settings, nats_server.url)
    await gateway.start(SERVICE_NAMES)
    nc = await nats.connect(nats_server.url)
    js = nc.jetstream()
    try:
        # Bytes that are no event at all, then an event whose body is missing.
        await js.publish(
            "mail.received", b"\x00not json", headers={"Nats-Msg-Id": "garbage-1"}
        )
        poison_id = new_queue_id()
        poison_body = make_message(999, "poison@example.net")
        poison = received_without_body(poison_id, poison_body)
        await js.publish(
            "mail.received", poison.encode(), headers={"Nats-Msg-Id": poison.event_id}
        )

        # The messages behind the poison go through while it is retried.
        bodies = [make_message(i, f"user{i}@example.com") for i in range(5)]
        for i, body in enumerate(bodies):
            await send(
                gateway.smtp_address, "a@example.com", [f"user{i}@example.com"], body
            )
        arrived = await sink.wait_for(5, timeout=30)
        assert {strip_received(m.content) for m in arrived} == set(bodies)

        async def both_parked() -> bool:
            return len(await parked_events(nats_server.url)) == 2

        await wait_until(both_parked, timeout=30)
        events = await parked_events(nats_server.url)
        garbage = next(e for e in events if e["queue_id"] is None)
        assert garbage["stage"] == "policy"
        assert garbage["attempts"] == 1
        assert "mail.received" in garbage["reason"]
        missing = next(e for e in events if e["queue_id"] == poison_id)
        assert 1 <= missing["attempts"] <= 2
        assert poison_id in missing["reason"]

        status, out, _ = await run_cli(capsys, nats_server.url, "list", "--json")
        assert status == 0
        listed = json.loads(out)
        assert [m["queue_id"] for m in listed] == [None, poison_id]
        assert listed[1]["event_id"] == missing["causation_id"]
        assert listed[1]["stage"] == missing["stage"]
        assert listed[1]["body_key"] == poison_id

        # The fix arrives (the body), and a retry delivers the message.
        await gateway.services["ingress"][0].bodies.put(poison_id, poison_body)
        status, out, _ = await run_cli(
            capsys, nats_server.url, "retry", str(listed[1]["sequence"])
        )
        assert status == 0, out
        messages = await sink.wait_for(6, timeout=30)
        assert messages[-1].content == poison_body

        status, out, _ = await run_cli(capsys, nats_server.url, "drop", "--all")
        assert status == 0
        assert out.startswith(f"drop: {listed[0]['sequence']} mail.received")
        status, out, _ = await run_cli(capsys, nats_server.url, "list")
        assert (status, out) == (0, "no parked messages\n")
        info = await js.stream_info(streams.PARKED)
        assert info.state.messages == 0

        status, _, err = await run_cli(capsys, nats_server.url, "drop", "1")
        assert status == 1
        assert "no parked message has sequence 1" in err
    finally:
        await nc.close()
        await gateway.stop()

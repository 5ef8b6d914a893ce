"""The audit service storing bus events in each backend, with their trace ids."""

from __future__ import annotations

import json
from pathlib import Path

import nats
import pytest

from smimegw.cli import main
from tests.audit.conftest import Backend
from tests.audit.test_cli import write_config
from tests.audit.test_store_contract import event
from tests.conftest import gateway_settings
from tests.harness import Gateway, NatsServer, audit_events, wait_until

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"


async def test_service_stores_chained_events(
    tmp_path: Path,
    nats_server: NatsServer,
    backend: Backend,
    capsys: pytest.CaptureFixture[str],
) -> None:
    settings = gateway_settings(
        tmp_path, nats={"url": nats_server.url}, audit=backend.settings
    )
    gateway = Gateway(settings, nats_server.url)
    await gateway.start(["audit"])
    try:
        nc = await nats.connect(nats_server.url)
        js = nc.jetstream()
        for index in range(1, 4):
            headers = {"Nats-Msg-Id": f"e{index}"}
            if index == 2:
                headers["traceparent"] = f"00-{TRACE_ID}-00f067aa0ba902b7-01"
            await js.publish(
                "mail.received",
                json.dumps(event(index)).encode(),
                stream="MAIL",
                headers=headers,
            )
        await nc.close()

        async def stored() -> bool:
            return len(await audit_events(nats_server.url, queue_id="Q1")) == 3

        await wait_until(stored, timeout=20)
        nc = await nats.connect(nats_server.url)
        query = {"queue_id": "Q1", "records": True}
        reply = await nc.request(
            "smimegw.audit.query", json.dumps(query).encode(), timeout=10
        )
        await nc.close()
    finally:
        await gateway.stop()

    answered = json.loads(reply.data)["records"]
    assert [r["trace_id"] for r in answered] == [None, TRACE_ID, None]
    assert answered[1]["prev_hash"] == answered[0]["hash"]
    store = backend.open()
    try:
        records = list(store.records())
    finally:
        store.close()
    assert [r.trace_id for r in records] == [None, TRACE_ID, None]
    assert [r.stream_sequence for r in records] == [1, 2, 3]

    config = write_config(tmp_path, backend)
    assert main(["audit", "verify", "--config", str(config)]) == 0
    assert "audit log intact: 3 records" in capsys.readouterr().out

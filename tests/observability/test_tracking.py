"""`smimegw trace` shows a message's path; editing the audit store fails verify."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import (
    InMemorySpanExporter,
)
from opentelemetry.trace.span import format_trace_id

from smimegw import telemetry
from smimegw.cli import main
from smimegw.service import SERVICE_NAMES
from tests.conftest import gateway_settings
from tests.harness import Gateway, NatsServer, SinkServer, audit_events, wait_until
from tests.observability.conftest import send


def write_config(gateway: Gateway, tmp_path: Path) -> Path:
    config = tmp_path / "cli.toml"
    config.write_text(
        f'data_dir = "{gateway.settings.data_dir}"\n[nats]\nurl = "{gateway.url}"\n'
    )
    return config


async def run_cli(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> tuple[int, str]:
    # main() runs its own event loop, so it runs on a thread here.
    status = await asyncio.to_thread(main, argv)
    return status, capsys.readouterr().out


async def wait_delivered(gateway: Gateway, queue_id: str) -> list[dict[str, Any]]:
    async def done() -> bool:
        events = await audit_events(gateway.url, queue_id=queue_id)
        return any(e["type"] == "mail.delivered" for e in events)

    await wait_until(done, timeout=30)
    return await audit_events(gateway.url, queue_id=queue_id)


async def test_trace_shows_whole_path(
    gateway: Gateway,
    sink: SinkServer,
    span_exporter: InMemorySpanExporter,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    queue_id = await send(gateway, ["carol@example.net"])
    await wait_delivered(gateway, queue_id)
    config = write_config(gateway, tmp_path)

    status, out = await run_cli(
        ["trace", queue_id, "--json", "--config", str(config)], capsys
    )
    assert status == 0
    steps = json.loads(out)
    assert [s["type"] for s in steps] == [
        "mail.received",
        "mail.routed",
        "mail.processed",
        "mail.delivered",
    ]
    assert [s["service"] for s in steps] == ["ingress", "policy", "crypto", "delivery"]
    assert steps[1]["decision"] == "relay: no delivery rule matched"
    assert steps[3]["decision"].startswith("delivered 1 recipient via smtp:")
    assert steps[3]["outcome"].startswith("250")

    (root,) = [
        s
        for s in span_exporter.get_finished_spans()
        if (s.attributes or {}).get("smimegw.queue_id") == queue_id
    ]
    assert root.context is not None
    trace_id = format_trace_id(root.context.trace_id)
    assert {s["trace_id"] for s in steps} == {trace_id}

    status, out = await run_cli(["trace", queue_id, "--config", str(config)], capsys)
    assert status == 0
    lines = out.splitlines()
    assert lines[0] == f"message {queue_id}"
    assert lines[1] == f"trace   {trace_id}"
    assert len(lines) == 6
    assert "delivery  mail.delivered" in lines[5]


async def test_trace_of_unknown_queue_id(
    gateway: Gateway, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(gateway, tmp_path)
    status = await asyncio.to_thread(
        main, ["trace", "NOSUCHID", "--config", str(config)]
    )
    assert status == 1
    assert "no audit events for queue id 'NOSUCHID'" in capsys.readouterr().err


@pytest.mark.parametrize("tampering", ["edit", "delete"])
async def test_verify_names_tampered_row(
    gateway: Gateway,
    sink: SinkServer,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    tampering: str,
) -> None:
    queue_id = await send(gateway, ["carol@example.net"])
    await wait_delivered(gateway, queue_id)
    config = write_config(gateway, tmp_path)
    status, out = await run_cli(["audit", "verify", "--config", str(config)], capsys)
    assert status == 0, out

    path = gateway.settings.data_dir / "audit.sqlite3"
    with sqlite3.connect(path) as db:
        row_id, event_id = db.execute(
            "SELECT id, event_id FROM audit_events WHERE type = 'mail.routed'"
        ).fetchone()
        if tampering == "edit":
            db.execute(
                "UPDATE audit_events SET data = replace(data, 'relay', 'protect') "
                "WHERE id = ?",
                (row_id,),
            )
        else:
            db.execute("DELETE FROM audit_events WHERE id = ?", (row_id,))

    status, out = await run_cli(["audit", "verify", "--config", str(config)], capsys)
    assert status == 1
    if tampering == "edit":
        assert f"FAILED at record {row_id} (event {event_id})" in out
        assert "content changed" in out
    else:
        assert f"FAILED at record {row_id}\n" in out
        assert f"record {row_id} is missing" in out


async def test_trace_includes_bounce_and_dsn(
    gateway: Gateway,
    sink: SinkServer,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    sink.handler.rcpt_replies["gone@example.net"] = "550 5.1.1 no such user"
    queue_id = await send(gateway, ["gone@example.net"])

    async def dsn_delivered() -> bool:
        events = await audit_events(gateway.url, queue_id=queue_id)
        return any(
            e["type"] == "mail.delivered" and e["queue_id"] != queue_id for e in events
        )

    await wait_until(dsn_delivered, timeout=30)
    config = write_config(gateway, tmp_path)
    status, out = await run_cli(
        ["trace", queue_id, "--json", "--config", str(config)], capsys
    )
    assert status == 0
    steps = json.loads(out)
    (bounced,) = [s for s in steps if s["type"] == "mail.bounced"]
    assert bounced["service"] == "delivery"
    assert bounced["outcome"].startswith("550")
    dsn = [s for s in steps if s["queue_id"] != queue_id]
    assert [s["type"] for s in dsn] == ["mail.processed", "mail.delivered"]
    assert dsn[0]["decision"] == "DSN"
    assert dsn[0]["service"] == "delivery"
    assert len({s["trace_id"] for s in steps}) == 1


async def test_without_exporter_trace_ids_still_flow(
    tmp_path: Path,
    nats_server: NatsServer,
    sink: SinkServer,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """No OTLP endpoint: no span is recorded, and one trace id still ties a message.

    The services pass the trace id that the SMTP transaction started on in
    `traceparent`, so the audit records and log lines carry it all the same.
    """
    settings = gateway_settings(
        tmp_path,
        nats={"url": nats_server.url},
        delivery={"relay_host": f"127.0.0.1:{sink.port}"},
    )
    provider = telemetry.build_tracer_provider("test", settings.telemetry)
    with provider.get_tracer("test").start_as_current_span("probe") as span:
        assert not span.is_recording()
        assert span.get_span_context().is_valid
    gateway = Gateway(settings, nats_server.url)
    await gateway.start(SERVICE_NAMES)
    try:
        queue_id = await send(gateway, ["carol@example.net"])
        await wait_delivered(gateway, queue_id)
        config = write_config(gateway, tmp_path)
        status, out = await run_cli(
            ["trace", queue_id, "--json", "--config", str(config)], capsys
        )
    finally:
        await gateway.stop()
    assert status == 0
    steps = json.loads(out)
    assert len(steps) == 4
    trace_ids = {s["trace_id"] for s in steps}
    assert len(trace_ids) == 1
    assert int(trace_ids.pop(), 16) != 0

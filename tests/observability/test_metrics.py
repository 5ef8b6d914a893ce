"""The Prometheus endpoint shows the gateway's counters moving."""

from __future__ import annotations

import asyncio
import urllib.request

import nats
import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import (
    InMemorySpanExporter,
)
from prometheus_client.parser import text_string_to_metric_families

from schemas.commands import CRYPTO_COMMANDS, BindingCreate, Upload
from smimegw import metrics
from smimegw.client import send_command
from smimegw.runtime import Runtime
from smimegw.settings import Settings
from tests.harness import Gateway, SinkServer, audit_events, free_port, wait_until
from tests.observability.conftest import BODY_MARKER, send, send_with_nul

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def fetch(address: tuple[str, int]) -> tuple[str, str]:
    host, port = address
    url = f"http://{host}:{port}/metrics"
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.headers.get("Content-Type", ""), response.read().decode()


async def scrape(gateway: Gateway, service: str = "ingress") -> Samples:
    server = gateway.services[service][0].metrics_server
    assert server is not None, f"{service} serves no metrics"
    _, text = await asyncio.to_thread(fetch, server.address)
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


async def test_every_service_serves_metrics(gateway: Gateway) -> None:
    for service in gateway.services:
        server = gateway.services[service][0].metrics_server
        assert server is not None, service
        content_type, text = await asyncio.to_thread(fetch, server.address)
        assert content_type.startswith("text/plain"), service
        assert "smimegw_messages_accepted_total" in text, service


async def test_counters_move(gateway: Gateway, sink: SinkServer) -> None:
    sink.handler.rcpt_replies["gone@example.net"] = "550 5.1.1 no such user"
    sink.handler.rcpt_replies["later@example.net"] = "451 4.2.0 try again later"
    before = await scrape(gateway)

    await send(gateway, ["carol@example.net"], "delivered")
    assert await send_with_nul(gateway) == 554
    await send(gateway, ["gone@example.net"], "bounced")
    await send(gateway, ["later@example.net"], "deferred")

    async def outcomes_counted() -> bool:
        now = await scrape(gateway)
        name = "smimegw_delivery_recipients_total"
        return all(
            value(now, name, result=result) > value(before, name, result=result)
            for result in ("delivered", "bounced", "deferred")
        )

    await wait_until(outcomes_counted, timeout=30)
    after = await scrape(gateway)

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert delta("smimegw_messages_accepted_total") == 3
    assert delta("smimegw_messages_rejected_total", reply_code="554") == 1
    delivered = delta("smimegw_delivery_recipients_total", result="delivered")
    # The sender also gets the DSN about the bounce, which the sink accepts.
    assert delivered >= 1
    assert delta("smimegw_delivery_recipients_total", result="bounced") == 1
    assert delta("smimegw_delivery_recipients_total", result="deferred") == 1
    assert delta("smimegw_stage_duration_seconds_count", stage="ingress") == 4
    assert delta("smimegw_stage_duration_seconds_count", stage="policy") >= 3
    assert delta("smimegw_stage_duration_seconds_count", stage="delivery") >= 3
    received = value(
        after,
        "smimegw_bus_received_messages_total",
        app_name="smimegw-policy",
        broker="nats",
        handler="mail.received",
    )
    assert received >= 3
    for (name, _), _ in after.items():
        assert BODY_MARKER not in name


async def test_parked_message_counted(gateway: Gateway) -> None:
    before = await scrape(gateway)
    nc = await nats.connect(gateway.url)
    try:
        await nc.jetstream().publish(
            "mail.received",
            b"not an event",
            stream="MAIL",
            headers={"Nats-Msg-Id": "metrics-test-junk"},
        )
    finally:
        await nc.close()

    async def parked() -> bool:
        now = await scrape(gateway)
        name = "smimegw_messages_parked_total"
        return value(now, name, stage="policy") > value(before, name, stage="policy")

    await wait_until(parked, timeout=30)


async def test_import_failure_counted(
    gateway: Gateway, span_exporter: InMemorySpanExporter
) -> None:
    before = await scrape(gateway, "crypto")
    command = BindingCreate(
        command="binding.create",
        kind="internal",
        pattern="someone@example.com",
        pkcs12=Upload.of("junk.p12", b"this is not a PKCS#12 file"),
        password="import-test-password",
    )
    reply = await send_command(gateway.settings, CRYPTO_COMMANDS, command)
    assert not reply.ok
    assert reply.error is not None
    cause = reply.error.category
    after = await scrape(gateway, "crypto")
    name = "smimegw_certificate_import_failures_total"
    assert value(after, name, cause=cause) - value(before, name, cause=cause) == 1

    async def audited() -> bool:
        events = await audit_events(
            gateway.url, type="config.certificate.import_failed"
        )
        return len(events) == 1

    await wait_until(audited, timeout=20)
    for span in span_exporter.get_finished_spans():
        for attribute in (span.attributes or {}).values():
            assert "import-test-password" not in str(attribute), span.name


async def test_crypto_counters_exposed(gateway: Gateway) -> None:
    # NOTE: the S/MIME code does not call record_crypto or record_held yet, so
    # no message drives these counters; this checks their names and labels.
    before = await scrape(gateway)
    metrics.record_crypto("sign", "ok")
    metrics.record_crypto("encrypt", "ok")
    metrics.record_crypto("verify", "untrusted")
    metrics.record_held("no-certificate")
    after = await scrape(gateway)
    name = "smimegw_crypto_operations_total"
    for operation, result in (
        ("sign", "ok"),
        ("encrypt", "ok"),
        ("verify", "untrusted"),
    ):
        labels = {"operation": operation, "result": result}
        assert value(after, name, **labels) - value(before, name, **labels) == 1
    held = "smimegw_messages_held_total"
    assert (
        value(after, held, reason="no-certificate")
        - value(before, held, reason="no-certificate")
        == 1
    )


def test_labels_reject_data() -> None:
    with pytest.raises(ValueError, match="is unknown"):
        metrics.record_crypto("compress", "ok")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="not a short lower-case word"):
        metrics.record_crypto("sign", "failed for alice@example.com")
    with pytest.raises(ValueError, match="not a 4xx or 5xx"):
        metrics.record_rejected(250)


def test_port_in_use_logged(caplog: pytest.LogCaptureFixture) -> None:
    settings = Settings(telemetry={"metrics_listen": f"127.0.0.1:{free_port()}"})
    first = Runtime("ingress", settings, "nats://127.0.0.1:1")
    second = Runtime("policy", settings, "nats://127.0.0.1:1")
    try:
        first.start_metrics()
        second.start_metrics()
        assert first.metrics_server is not None
        assert second.metrics_server is None
        assert "policy serves no metrics" in caplog.text
    finally:
        first.close()
        second.close()


def test_odd_stage_counted_as_other() -> None:
    count = metrics.STAGE_DURATION.labels(stage="other")
    before = sum(b.get() for b in count._buckets)
    with metrics.time_stage("Odd Stage"):
        pass
    metrics.record_parked("Odd Stage")
    assert sum(b.get() for b in count._buckets) - before == 1

"""One trace per message, from the SMTP transaction to the delivery attempt."""

from __future__ import annotations

from collections.abc import Sequence

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import (
    InMemorySpanExporter,
)
from opentelemetry.trace import SpanKind, StatusCode

from tests.harness import Gateway, SinkServer
from tests.observability.conftest import (
    BODY_MARKER,
    send,
    send_with_nul,
    wait_for_spans,
)

# From the delivery attempt up to the root, each span's parent in turn.
DELIVERY_ANCESTRY = [
    "delivery.attempt",
    "mail.processed process",
    "mail.processed create",
    "mail.routed process",
    "mail.routed create",
    "mail.received process",
    "mail.received create",
    "smtp.transaction",
]


def by_trace(spans: Sequence[ReadableSpan], trace_id: int) -> list[ReadableSpan]:
    return [
        s for s in spans if s.context is not None and s.context.trace_id == trace_id
    ]


def root_of(spans: Sequence[ReadableSpan], queue_id: str) -> ReadableSpan:
    roots = [
        s
        for s in spans
        if s.name == "smtp.transaction"
        and (s.attributes or {}).get("smimegw.queue_id") == queue_id
    ]
    assert len(roots) == 1, [s.name for s in spans]
    return roots[0]


def ancestry(span: ReadableSpan, spans: Sequence[ReadableSpan]) -> list[str]:
    by_id = {s.context.span_id: s for s in spans if s.context is not None}
    names = [span.name]
    current = span
    while current.parent is not None:
        parent = by_id.get(current.parent.span_id)
        assert parent is not None, f"parent of {current.name} was not exported"
        names.append(parent.name)
        current = parent
    return names


def delivered(queue_ids: list[str]) -> object:
    def ready(spans: list[ReadableSpan]) -> bool:
        roots = [
            s
            for s in spans
            if s.name == "smtp.transaction"
            and (s.attributes or {}).get("smimegw.queue_id") in queue_ids
        ]
        trace_ids = {s.context.trace_id for s in roots if s.context is not None}
        done = {
            s.context.trace_id
            for s in spans
            if s.name == "mail.delivered process" or s.name == "delivery.attempt"
            if s.context is not None
        }
        processed = {
            s.context.trace_id
            for s in spans
            if s.name == "mail.processed process" and s.context is not None
        }
        return len(trace_ids) == len(queue_ids) and trace_ids <= done & processed

    return ready


async def test_message_is_one_trace(
    gateway: Gateway, sink: SinkServer, span_exporter: InMemorySpanExporter
) -> None:
    first = await send(gateway, ["carol@example.net"], "first")
    second = await send(gateway, ["dave@example.net"], "second")
    await sink.wait_for(2)
    spans = await wait_for_spans(span_exporter, delivered([first, second]))

    root = root_of(spans, first)
    assert root.context is not None
    assert root.parent is None
    assert root.kind == SpanKind.SERVER
    trace = by_trace(spans, root.context.trace_id)
    other_root = root_of(spans, second)
    assert other_root.context is not None
    assert other_root.context.trace_id != root.context.trace_id

    roots = [s for s in trace if s.parent is None]
    assert [s.name for s in roots] == ["smtp.transaction"]
    names = {s.name for s in trace}
    assert names >= set(DELIVERY_ANCESTRY) | {"policy.decision", "crypto.relay"}
    (attempt,) = [s for s in trace if s.name == "delivery.attempt"]
    assert ancestry(attempt, trace) == DELIVERY_ANCESTRY
    (decision,) = [s for s in trace if s.name == "policy.decision"]
    assert ancestry(decision, trace)[1:] == DELIVERY_ANCESTRY[5:]
    (crypto,) = [s for s in trace if s.name == "crypto.relay"]
    assert ancestry(crypto, trace)[1:] == DELIVERY_ANCESTRY[3:]


async def test_span_attributes(
    gateway: Gateway, sink: SinkServer, span_exporter: InMemorySpanExporter
) -> None:
    queue_id = await send(gateway, ["carol@example.net"])
    await sink.wait_for(1)
    spans = await wait_for_spans(span_exporter, delivered([queue_id]))
    root = root_of(spans, queue_id)
    assert root.context is not None
    trace = by_trace(spans, root.context.trace_id)

    attributes = dict(root.attributes or {})
    assert attributes["smimegw.smtp.reply_code"] == 250
    assert attributes["smimegw.smtp.tls"] is False
    assert attributes["smimegw.smtp.recipients"] == 1
    assert attributes["smimegw.message.size"] > len(BODY_MARKER)
    assert root.status.status_code != StatusCode.ERROR

    (attempt,) = [s for s in trace if s.name == "delivery.attempt"]
    attempt_attributes = dict(attempt.attributes or {})
    assert attempt_attributes["smimegw.next_hop"] == f"smtp:127.0.0.1:{sink.port}"
    assert attempt_attributes["smimegw.smtp.reply_code"] == 250
    assert attempt_attributes["smimegw.delivery.attempt"] == 1

    (crypto,) = [s for s in trace if s.name == "crypto.relay"]
    assert dict(crypto.attributes or {}) == {"smimegw.crypto.operation": "relay"}

    (decision,) = [s for s in trace if s.name == "policy.decision"]
    assert (decision.attributes or {})["smimegw.policy.actions"] == "relay"

    consumed = [s for s in trace if s.name == "mail.routed process"]
    assert consumed[0].kind == SpanKind.CONSUMER
    assert (consumed[0].attributes or {})["messaging.system"] == "nats"

    for span in trace:
        for value in (span.attributes or {}).values():
            assert BODY_MARKER not in str(value), span.name


async def test_rejected_transaction_is_root_span(
    gateway: Gateway, span_exporter: InMemorySpanExporter
) -> None:
    assert await send_with_nul(gateway) == 554

    def ready(spans: list[ReadableSpan]) -> bool:
        return any(
            (s.attributes or {}).get("smimegw.smtp.reply_code") == 554 for s in spans
        )

    spans = await wait_for_spans(span_exporter, ready, timeout=10)
    (rejected,) = [
        s for s in spans if (s.attributes or {}).get("smimegw.smtp.reply_code") == 554
    ]
    assert rejected.name == "smtp.transaction"
    assert rejected.parent is None
    assert "smimegw.queue_id" not in (rejected.attributes or {})

"""A signed and encrypted message is one trace with the crypto stage inside."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import (
    InMemorySpanExporter,
)

from tests.observability.conftest import wait_for_spans
from tests.observability.test_traces import ancestry, by_trace, root_of
from tests.outgoing.conftest import Outgoing, outgoing  # noqa: F401

TEXT = (
    b"From: Alice <alice@example.com>\r\n"
    b"To: Bob <bob@example.com>\r\n"
    b"Subject: figures\r\n"
    b"\r\n"
    b"Signed and encrypted.\r\n"
)


@pytest.fixture
async def traced(
    span_exporter: InMemorySpanExporter,
    outgoing: Outgoing,  # noqa: F811 (the fixture imported above)
) -> AsyncIterator[Outgoing]:
    # Requests span_exporter first, so the processor is in place before the
    # gateway's services build their tracer providers.
    yield outgoing


async def test_protect_stage_in_trace(
    traced: Outgoing, span_exporter: InMemorySpanExporter
) -> None:
    await traced.use_profile("p", action="sign-and-encrypt")
    queue_id = await traced.send(["bob@example.com"], TEXT)
    await traced.sink.wait_for(1)

    def ready(spans: list[ReadableSpan]) -> bool:
        return any(s.name == "delivery.attempt" for s in spans) and any(
            s.name == "mail.processed process" for s in spans
        )

    spans = await wait_for_spans(span_exporter, ready)
    root = root_of(spans, queue_id)
    assert root.context is not None
    trace = by_trace(spans, root.context.trace_id)
    (protect,) = [s for s in trace if s.name == "crypto.protect"]
    assert ancestry(protect, trace)[1:] == [
        "mail.routed process",
        "mail.routed create",
        "mail.received process",
        "mail.received create",
        "smtp.transaction",
    ]
    attributes = dict(protect.attributes or {})
    assert attributes["smimegw.crypto.operations"] == "sign,encrypt"
    assert attributes["smimegw.plan_id"].startswith(queue_id)
    assert any(s.name == "delivery.attempt" for s in trace)
    # Storing the result is a span of its own: for a result over 1 MiB it
    # covers the encryption too, which then runs as the result is stored.
    (store,) = [s for s in trace if s.name == "crypto.store"]
    assert ancestry(store, trace)[1] == "mail.routed process"
    assert (store.attributes or {})["smimegw.crypto.streamed"] is False

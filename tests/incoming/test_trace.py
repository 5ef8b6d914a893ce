"""The decrypt and verify spans of an opened message, inside its trace."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import (
    InMemorySpanExporter,
)

from tests.incoming.conftest import THUNDERBIRD, Incoming
from tests.observability.conftest import span_exporter, wait_for_spans  # noqa: F401
from tests.observability.test_traces import ancestry, by_trace, root_of


@pytest.fixture
async def traced(
    span_exporter: InMemorySpanExporter,  # noqa: F811
    incoming: Incoming,
) -> AsyncIterator[Incoming]:
    # Requests span_exporter first, so the processor is in place before the
    # gateway's services build their tracer providers.
    yield incoming


async def test_open_spans_in_trace(
    traced: Incoming,
    span_exporter: InMemorySpanExporter,  # noqa: F811
) -> None:
    # Signed by Alice, then encrypted to Bob.
    message = (THUNDERBIRD / "alice.sig.SHA256.opaque.env.eml").read_bytes()
    sender = await traced.send(message)
    await traced.delivered([sender])
    queue_id = traced.queue_ids[sender]

    def ready(spans: list[ReadableSpan]) -> bool:
        return any(s.name == "delivery.attempt" for s in spans)

    spans = await wait_for_spans(span_exporter, ready)
    root = root_of(spans, queue_id)
    assert root.context is not None
    trace = by_trace(spans, root.context.trace_id)
    (decrypt,) = [s for s in trace if s.name == "crypto.decrypt"]
    (verify,) = [s for s in trace if s.name == "crypto.verify"]
    (stage,) = [s for s in trace if s.name == "crypto.open"]
    assert ancestry(decrypt, trace)[1] == "crypto.open"
    assert ancestry(verify, trace)[1] == "crypto.open"
    assert ancestry(stage, trace)[-1] == "smtp.transaction"

    decrypted = dict(decrypt.attributes or {})
    assert decrypted["smimegw.crypto.status"] == "decrypted"
    assert decrypted["smimegw.binding.id"] == traced.bob_binding
    assert str(decrypted["smimegw.crypto.algorithm"]).startswith("aes")
    verified = dict(verify.attributes or {})
    assert verified["smimegw.crypto.layer"] == 1
    assert verified["smimegw.crypto.signers"] == 1
    assert verified["smimegw.crypto.result"] == "valid"
    assert verified["smimegw.crypto.algorithm"] == "rsa-pkcs1v15-sha256"
    assert verified["smimegw.certificate.status"] == "trusted"
    assert decrypt.start_time is not None and verify.start_time is not None
    # The signature is inside the enveloped body: verified after decrypting.
    assert decrypt.start_time < verify.start_time

"""Log lines with trace ids, rate-limited repeats, and guarded span attributes."""

from __future__ import annotations

import http.server
import json
import logging
import threading
from typing import ClassVar

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
)
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import (
    InMemorySpanExporter,
)
from opentelemetry.trace import StatusCode
from opentelemetry.trace.span import format_trace_id

from smimegw import metrics, telemetry
from smimegw.logs import JsonFormatter, RepeatFilter, message_context
from smimegw.settings import TelemetrySettings


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def record(message: str, level: int = logging.ERROR) -> logging.LogRecord:
    return logging.LogRecord("smimegw.test", level, __file__, 1, message, (), None)


@pytest.fixture
def exporter() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture
def tracer_provider(exporter: InMemorySpanExporter) -> TracerProvider:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider


def test_repeats_dropped_and_counted() -> None:
    clock = Clock()
    repeats = RepeatFilter(window=60, clock=clock)
    before = metrics.LOG_SUPPRESSED.labels(logger="smimegw.test")._value.get()
    assert repeats.filter(record("broker down"))
    assert not repeats.filter(record("broker down"))
    assert not repeats.filter(record("broker down"))
    assert repeats.filter(record("another error"))
    clock.now += 61
    again = record("broker down")
    assert repeats.filter(again)
    assert getattr(again, "repeated", 0) == 2
    after = metrics.LOG_SUPPRESSED.labels(logger="smimegw.test")._value.get()
    assert after - before == 2


def test_repeat_filter_passes_info() -> None:
    repeats = RepeatFilter(window=60, clock=Clock())
    assert repeats.filter(record("accepted", logging.INFO))
    assert repeats.filter(record("accepted", logging.INFO))


def test_repeat_filter_bounds_keys() -> None:
    repeats = RepeatFilter(window=60, max_keys=2, clock=Clock())
    for text in ("a", "b", "c"):
        assert repeats.filter(record(text))
    # "a" was forgotten, so it passes again.
    assert repeats.filter(record("a"))
    assert not repeats.filter(record("c"))


def test_json_line_has_ids(tracer_provider: TracerProvider) -> None:
    tracer = tracer_provider.get_tracer("test")
    formatter = JsonFormatter()
    repeated = record("broker down")
    repeated.repeated = 3
    with (
        tracer.start_as_current_span("work") as span,
        message_context("Q123", "E456"),
    ):
        entry = json.loads(formatter.format(repeated))
    assert entry["queue_id"] == "Q123"
    assert entry["event_id"] == "E456"
    assert entry["trace_id"] == format_trace_id(span.get_span_context().trace_id)
    assert entry["repeated"] == 3
    assert "service" in entry
    outside = json.loads(formatter.format(record("no span")))
    assert "trace_id" not in outside


@pytest.mark.parametrize(
    "name",
    ["smimegw.password", "pkcs12.passphrase", "smimegw.private_key", "mail.body"],
)
def test_secret_attribute_names_rejected(name: str) -> None:
    with pytest.raises(telemetry.SpanAttributeError, match="secret or message"):
        telemetry.checked_attributes({name: "x"})


def test_long_and_odd_attributes_rejected() -> None:
    with pytest.raises(telemetry.SpanAttributeError, match="characters long"):
        telemetry.checked_attributes({"smimegw.note": "x" * 300})
    with pytest.raises(telemetry.SpanAttributeError, match="has type bytes"):
        telemetry.checked_attributes({"smimegw.note": b"raw"})
    assert telemetry.checked_attributes({"a": 1, "b": None}) == {"a": 1}


def test_crypto_span_records_operation(
    tracer_provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    tracer = tracer_provider.get_tracer("test")
    fingerprint = "ab" * 32
    with (
        telemetry.use_tracer(tracer),
        telemetry.crypto_span("sign", "rsa-pss-sha256", fingerprint),
    ):
        pass
    (span,) = exporter.get_finished_spans()
    assert span.name == "crypto.sign"
    assert dict(span.attributes or {}) == {
        "smimegw.crypto.operation": "sign",
        "smimegw.crypto.algorithm": "rsa-pss-sha256",
        "smimegw.certificate.fingerprint": fingerprint,
    }


def test_failed_span_hides_exception_text(
    tracer_provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    tracer = tracer_provider.get_tracer("test")
    with (
        pytest.raises(ValueError, match="hunter2"),
        telemetry.use_tracer(tracer),
        telemetry.crypto_span("decrypt", "aes256-cbc", None),
    ):
        raise ValueError("wrong password hunter2")
    (span,) = exporter.get_finished_spans()
    assert span.status.status_code == StatusCode.ERROR
    assert span.status.description == "ValueError"
    assert span.events == ()
    assert "smimegw.certificate.fingerprint" not in (span.attributes or {})


def test_provider_exports_only_when_configured() -> None:
    quiet = telemetry.build_tracer_provider("policy", TelemetrySettings())
    assert quiet.resource.attributes["service.name"] == "smimegw-policy"
    processors = quiet._active_span_processor._span_processors
    assert processors == ()
    exporting = telemetry.build_tracer_provider(
        "policy", TelemetrySettings(otlp_endpoint="http://127.0.0.1:9/v1/traces")
    )
    (processor,) = exporting._active_span_processor._span_processors
    assert type(processor).__name__ == "BatchSpanProcessor"
    exporting.shutdown()


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "4bf92f3577b34da6a3ce929d0e0e4736",
        ),
        ("00-00000000000000000000000000000000-00f067aa0ba902b7-01", None),
        ("garbage", None),
        (None, None),
    ],
)
def test_trace_id_of_traceparent(header: str | None, expected: str | None) -> None:
    assert telemetry.trace_id_of(header) == expected


def test_otlp_endpoint_must_be_http() -> None:
    with pytest.raises(ValueError, match="not an HTTP URL"):
        TelemetrySettings(otlp_endpoint="collector:4317")


class Collector(http.server.BaseHTTPRequestHandler):
    """An OTLP/HTTP trace receiver that keeps each request body."""

    requests: ClassVar[list[tuple[str, str, bytes]]] = []

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", "0"))
        body = self.rfile.read(length)
        self.requests.append((self.path, self.headers.get("Content-Type", ""), body))
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        return None


def test_spans_exported_over_otlp() -> None:
    Collector.requests.clear()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Collector)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        endpoint = f"http://127.0.0.1:{server.server_port}/v1/traces"
        provider = telemetry.build_tracer_provider(
            "delivery", TelemetrySettings(otlp_endpoint=endpoint)
        )
        tracer = provider.get_tracer("test")
        with telemetry.stage_span(
            "delivery.attempt", {"smimegw.next_hop": "smtp:relay:25"}, tracer=tracer
        ):
            pass
        assert provider.force_flush(10_000)
        provider.shutdown()
    finally:
        server.shutdown()
        server.server_close()
    (path, content_type, body) = Collector.requests[0]
    assert path == "/v1/traces"
    assert content_type == "application/x-protobuf"
    request = ExportTraceServiceRequest.FromString(body)
    (resource_spans,) = request.resource_spans
    service = {a.key: a.value.string_value for a in resource_spans.resource.attributes}[
        "service.name"
    ]
    assert service == "smimegw-delivery"
    names = [s.name for scope in resource_spans.scope_spans for s in scope.spans]
    assert names == ["delivery.attempt"]

"""OpenTelemetry tracing: a tracer provider per service, one trace per message.

FastStream's telemetry middleware makes a span for each publish and each
consumed bus message and carries W3C `traceparent` in the NATS headers, so the
spans made here join the SMTP transaction's trace in every service. Spans are
made whether or not they are exported: their trace ids appear in the logs and
in the audit log. They are exported over OTLP/HTTP only when
`telemetry.otlp_endpoint` is set.

Span attributes are ids, sizes, algorithms, fingerprints and reply codes. The
helpers here reject attribute names that point at secrets or content
(`password`, `private_key`, `body`...) and long string values, so that a body,
a key or a password cannot be attached by mistake.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Final

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ALWAYS_ON
from opentelemetry.trace import Span, SpanKind, Status, StatusCode, Tracer
from opentelemetry.trace.span import format_trace_id

from smimegw.settings import TelemetrySettings

INSTRUMENTATION_NAME: Final = "smimegw"

AttributeValue = str | int | float | bool
# Checked at run time by checked_attributes: None values are dropped.
Attributes = Mapping[str, object]

# Names that suggest a secret or message content; see the module docstring.
_FORBIDDEN_NAME: Final = re.compile(
    r"password|passphrase|secret|private_key|privatekey|pkcs12|kek|body",
    re.IGNORECASE,
)
# Longer strings are no id, name or algorithm; a body or a PEM block would be.
MAX_STRING_ATTRIBUTE: Final = 256

# W3C Trace Context: version-traceid-parentid-flags.
_TRACEPARENT: Final = re.compile(
    r"^[0-9a-f]{2}-([0-9a-f]{32})-[0-9a-f]{16}-[0-9a-f]{2}$"
)


class _SharedProcessor(SpanProcessor):
    """A processor that several tracer providers use: closing one leaves it open."""

    def __init__(self, processor: SpanProcessor) -> None:
        self.processor = processor

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        self.processor.on_start(span, parent_context)  # type: ignore[arg-type]

    def on_end(self, span: ReadableSpan) -> None:
        self.processor.on_end(span)

    def shutdown(self) -> None:
        return None

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self.processor.force_flush(timeout_millis)


_extra_processors: list[_SharedProcessor] = []
_tracer_var: ContextVar[Tracer | None] = ContextVar("smimegw_tracer", default=None)


class SpanAttributeError(ValueError):
    """A span attribute that could carry a secret or message content."""


def add_span_processor(processor: SpanProcessor) -> None:
    """Attach `processor` to every tracer provider built after this call.

    For tests and embedding: an in-memory exporter shared by all services of
    one process receives each message's whole trace.
    """
    _extra_processors.append(_SharedProcessor(processor))


def remove_span_processor(processor: SpanProcessor) -> None:
    """Stop attaching `processor` to new providers; existing ones keep it."""
    _extra_processors[:] = [
        p for p in _extra_processors if p.processor is not processor
    ]


def build_tracer_provider(service: str, settings: TelemetrySettings) -> TracerProvider:
    """Build service `service`'s tracer provider, exporting when configured.

    Spans are recorded only when something receives them: an OTLP endpoint or
    a processor added with add_span_processor. Otherwise every span is a
    non-recording one, which still carries the trace id from `traceparent` to
    the next service and into log lines and audit records, at a fraction of
    the cost of a recorded span.
    """
    exporting = bool(settings.otlp_endpoint) or bool(_extra_processors)
    provider = TracerProvider(
        resource=Resource.create(
            {"service.name": f"smimegw-{service}", "service.namespace": "smimegw"}
        ),
        sampler=ALWAYS_ON if exporting else ALWAYS_OFF,
    )
    if settings.otlp_endpoint:
        # Imported here: only a configured exporter needs the OTLP packages.
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
            OTLPSpanExporter,
        )

        exporter = OTLPSpanExporter(endpoint=settings.otlp_endpoint)
        provider.add_span_processor(BatchSpanProcessor(exporter))
    for processor in _extra_processors:
        provider.add_span_processor(processor)
    return provider


@contextmanager
def use_tracer(tracer: Tracer) -> Iterator[None]:
    """Make `tracer` the one that `crypto_span` and `stage_span` use in this block."""
    token = _tracer_var.set(tracer)
    try:
        yield
    finally:
        _tracer_var.reset(token)


def current_tracer() -> Tracer:
    """Return the service's tracer set by `use_tracer`, else the global one."""
    return _tracer_var.get() or trace.get_tracer(INSTRUMENTATION_NAME)


def checked_attributes(attributes: Attributes) -> dict[str, AttributeValue]:
    """Drop None values; raise SpanAttributeError for a name or value that may leak."""
    checked: dict[str, AttributeValue] = {}
    for name, value in attributes.items():
        if value is None:
            continue
        if _FORBIDDEN_NAME.search(name):
            raise SpanAttributeError(
                f"span attribute {name!r} names a secret or message content; "
                "record its size or a fingerprint instead"
            )
        if not isinstance(value, str | int | float | bool):
            raise SpanAttributeError(
                f"span attribute {name!r} has type {type(value).__name__}; "
                "use str, int, float or bool"
            )
        if isinstance(value, str) and len(value) > MAX_STRING_ATTRIBUTE:
            raise SpanAttributeError(
                f"span attribute {name!r} is {len(value)} characters long, over "
                f"the {MAX_STRING_ATTRIBUTE} allowed; record an id or a size instead"
            )
        checked[name] = value
    return checked


@contextmanager
def stage_span(
    name: str,
    attributes: Attributes,
    *,
    tracer: Tracer | None = None,
    kind: SpanKind = SpanKind.INTERNAL,
) -> Iterator[Span]:
    """Run the block in a child span of the current one.

    An exception sets the span's status to ERROR with the exception's type
    name only: its text is not recorded, in case a library put data into it.
    """
    span_tracer = tracer or current_tracer()
    with span_tracer.start_as_current_span(
        name,
        kind=kind,
        attributes=checked_attributes(attributes),
        record_exception=False,
        set_status_on_exception=False,
    ) as span:
        try:
            yield span
        except BaseException as err:
            span.set_status(Status(StatusCode.ERROR, type(err).__name__))
            raise


@contextmanager
def crypto_span(
    operation: str, algorithm: str | None, fingerprint: str | None
) -> Iterator[Span]:
    """Span `crypto.<operation>` for one S/MIME operation on a message.

    `operation` is sign, encrypt, decrypt or verify, or the plan's action
    (relay, bounce) when the body passes through unchanged. `algorithm` names
    the algorithm ("aes256-cbc", "rsa-pss-sha256"). `fingerprint` is the
    SHA-256 fingerprint of the certificate used, in hex. Add more with
    `span.set_attributes(checked_attributes({...}))`.
    """
    attributes: dict[str, AttributeValue | None] = {
        "smimegw.crypto.operation": operation,
        "smimegw.crypto.algorithm": algorithm,
        "smimegw.certificate.fingerprint": fingerprint,
    }
    with stage_span(f"crypto.{operation}", attributes) as span:
        yield span


def current_trace_id() -> str | None:
    """Return the current span's trace id in 32 hex digits, or None outside one."""
    context = trace.get_current_span().get_span_context()
    if not context.is_valid:
        return None
    return format_trace_id(context.trace_id)


def trace_id_of(traceparent: str | None) -> str | None:
    """Extract the trace id from a W3C `traceparent` value; None if invalid."""
    if not traceparent:
        return None
    match = _TRACEPARENT.match(traceparent.strip().lower())
    if match is None or match.group(1) == "0" * 32:
        return None
    return match.group(1)

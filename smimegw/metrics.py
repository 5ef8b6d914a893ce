"""Prometheus metrics of the gateway: counters of outcomes and stage latencies.

One registry per process. `smimegw serve NAME` runs one service per process, so
an endpoint shows that service's counters plus FastStream's middleware metrics,
which carry the service in their `app_name` label. Services started in one
process (the test harness) share the registry and therefore every counter.

Label values are categories: a reply code, an operation, a result word, a
stage name. The `record_*` functions reject values that are not short
lower-case words, so an address or a message text cannot become a label.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Final, Literal, get_args
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server
from prometheus_client.exposition import generate_latest

from schemas import Event
from schemas.config import CertificateImportFailed
from smimegw.settings import parse_host_port

REGISTRY: Final = CollectorRegistry()

CryptoOperation = Literal["sign", "encrypt", "decrypt", "verify"]
DeliveryResult = Literal["delivered", "deferred", "bounced"]

_CRYPTO_OPERATIONS: Final = frozenset(get_args(CryptoOperation))
_DELIVERY_RESULTS: Final = frozenset(get_args(DeliveryResult))
# A label word: lower case, digits, "_", "-" and ".", at most 48 characters.
_LABEL_WORD: Final = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,47}$")

# Seconds, from a fast in-memory step to an SMTP relay that is slow to reply.
_STAGE_BUCKETS: Final = (
    0.001,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
)

ACCEPTED: Final = Counter(
    "smimegw_messages_accepted",
    "Messages answered 250 after DATA, stored durably in JetStream.",
    registry=REGISTRY,
)
REJECTED: Final = Counter(
    "smimegw_messages_rejected",
    "SMTP commands of a mail transaction answered with a 4xx or 5xx reply.",
    ["reply_code"],
    registry=REGISTRY,
)
# NOTE: the S/MIME code does not call record_crypto or record_held yet, so
# these two counters stay at zero until it does, once per finished operation.
CRYPTO_OPERATIONS: Final = Counter(
    "smimegw_crypto_operations",
    "S/MIME operations on messages: sign, encrypt, decrypt, verify, by result.",
    ["operation", "result"],
    registry=REGISTRY,
)
DELIVERY_RECIPIENTS: Final = Counter(
    "smimegw_delivery_recipients",
    "Recipients per delivery attempt outcome: delivered, deferred or bounced.",
    ["result"],
    registry=REGISTRY,
)
HELD: Final = Counter(
    "smimegw_messages_held",
    "Messages held until a recipient certificate arrives, by reason.",
    ["reason"],
    registry=REGISTRY,
)
PARKED: Final = Counter(
    "smimegw_messages_parked",
    "Bus messages a stage could not handle and moved to the PARKED stream.",
    ["stage"],
    registry=REGISTRY,
)
IMPORT_FAILURES: Final = Counter(
    "smimegw_certificate_import_failures",
    "Failed certificate and key imports, by cause.",
    ["cause"],
    registry=REGISTRY,
)
STAGE_DURATION: Final = Histogram(
    "smimegw_stage_duration_seconds",
    "Time one stage spent on one message, including its publishes.",
    ["stage"],
    buckets=_STAGE_BUCKETS,
    registry=REGISTRY,
)
LOG_SUPPRESSED: Final = Counter(
    "smimegw_log_records_suppressed",
    "Log records dropped because the same message repeated within the window.",
    ["logger"],
    registry=REGISTRY,
)


def _label(value: str, name: str) -> str:
    if not _LABEL_WORD.match(value):
        raise ValueError(
            f"metric label {name}={value!r} is not a short lower-case word; pass a "
            "fixed category such as 'ok' or 'unsupported-algorithm', never data"
        )
    return value


def _stage_label(stage: str) -> str:
    # Stage names come from consumer names; an odd one is counted as "other"
    # because raising here would fail the message being handled.
    return stage if _LABEL_WORD.match(stage) else "other"


def record_accepted() -> None:
    ACCEPTED.inc()


def record_rejected(reply_code: int) -> None:
    """Count a 4xx or 5xx reply to a command of a mail transaction."""
    if not 400 <= reply_code <= 599:
        raise ValueError(f"reply code {reply_code} is not a 4xx or 5xx rejection")
    REJECTED.labels(reply_code=str(reply_code)).inc()


def record_crypto(operation: CryptoOperation, result: str) -> None:
    """Count one S/MIME operation on a message.

    `result` is a category word: "ok" for success, otherwise the error kind
    ("no-certificate", "bad-signature", "untrusted", "unsupported-algorithm").
    """
    if operation not in _CRYPTO_OPERATIONS:
        raise ValueError(
            f"crypto operation {operation!r} is unknown; use one of "
            f"{', '.join(sorted(_CRYPTO_OPERATIONS))}"
        )
    CRYPTO_OPERATIONS.labels(operation=operation, result=_label(result, "result")).inc()


def record_delivery(result: DeliveryResult, recipients: int) -> None:
    if result not in _DELIVERY_RESULTS:
        raise ValueError(
            f"delivery result {result!r} is unknown; use one of "
            f"{', '.join(sorted(_DELIVERY_RESULTS))}"
        )
    DELIVERY_RECIPIENTS.labels(result=result).inc(recipients)


def record_held(reason: str) -> None:
    """Count a message held for a missing certificate; `reason` is a category."""
    HELD.labels(reason=_label(reason, "reason")).inc()


def record_parked(stage: str) -> None:
    PARKED.labels(stage=_stage_label(stage)).inc()


def record_import_failure(cause: str) -> None:
    """Count a failed import; `cause` is the failure category of the event."""
    IMPORT_FAILURES.labels(cause=_label(cause, "cause")).inc()


def record_published(event: Event) -> None:
    """Count what an event records that no handler counts itself.

    Never raises: the event is already stored when this runs.
    """
    if isinstance(event, CertificateImportFailed):
        cause = event.category if _LABEL_WORD.match(event.category) else "other"
        IMPORT_FAILURES.labels(cause=cause).inc()


def record_log_suppressed(logger: str, count: int) -> None:
    LOG_SUPPRESSED.labels(logger=logger).inc(count)


@contextmanager
def time_stage(stage: str) -> Iterator[None]:
    """Observe the duration of the block in the stage latency histogram."""
    label = _stage_label(stage)
    start = time.perf_counter()
    try:
        yield
    finally:
        STAGE_DURATION.labels(stage=label).observe(time.perf_counter() - start)


def exposition() -> bytes:
    """Render the registry in the Prometheus text format."""
    return generate_latest(REGISTRY)


class MetricsServer:
    """GET /metrics on `listen` (HOST:PORT, port 0 for a free one), in a thread.

    prometheus_client's server handles requests on its own thread, so a busy
    event loop does not delay a scrape.
    """

    def __init__(self, listen: str) -> None:
        host, _, port = listen.rpartition(":")
        if port != "0":
            host, _ = parse_host_port(listen, "telemetry.metrics_listen")
        self.host = host.strip("[]")
        self.port = int(port)
        self._server: WSGIServer | None = None

    def start(self) -> None:
        server, _thread = start_http_server(self.port, self.host, REGISTRY)
        self._server = server
        self.port = server.server_port

    @property
    def address(self) -> tuple[str, int]:
        return self.host, self.port

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

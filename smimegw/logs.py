"""Structured logging: one JSON object per line, with the ids of the message at hand.

Handlers set the queue id and event id in context variables; every log record
made while they run carries them without passing them to each call. A record
also carries the trace id of the current span.

Warnings and errors that repeat word for word are rate-limited: the first
passes, the repeats within the window are counted, and the next one after the
window carries that count as `repeated`.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime

from opentelemetry import trace
from opentelemetry.trace.span import format_trace_id

from smimegw import metrics

queue_id_var: ContextVar[str | None] = ContextVar("queue_id", default=None)
event_id_var: ContextVar[str | None] = ContextVar("event_id", default=None)

_service_name = "smimegw"


@contextmanager
def message_context(queue_id: str | None, event_id: str | None) -> Iterator[None]:
    queue_token = queue_id_var.set(queue_id)
    event_token = event_id_var.set(event_id)
    try:
        yield
    finally:
        event_id_var.reset(event_token)
        queue_id_var.reset(queue_token)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname.lower(),
            "service": _service_name,
            "logger": record.name,
            "message": record.getMessage(),
        }
        queue_id = queue_id_var.get()
        if queue_id:
            entry["queue_id"] = queue_id
        event_id = event_id_var.get()
        if event_id:
            entry["event_id"] = event_id
        span_context = trace.get_current_span().get_span_context()
        if span_context.is_valid:
            entry["trace_id"] = format_trace_id(span_context.trace_id)
        repeated = getattr(record, "repeated", 0)
        if repeated:
            entry["repeated"] = repeated
        if record.exc_info:
            entry["error"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


class RepeatFilter(logging.Filter):
    """Rate-limit warnings and errors whose text repeats within `window` seconds.

    For each distinct (logger, level, text), the first record passes. Repeats
    within the window are dropped and counted, and the first one after the
    window passes with `record.repeated` set to the number dropped. At most
    `max_keys` texts are tracked, and the least recently seen is forgotten first.
    """

    def __init__(
        self,
        window: float = 60.0,
        max_keys: int = 1024,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__()
        self.window = window
        self.max_keys = max_keys
        self.clock = clock
        # key -> (time the last record passed, records dropped since)
        self._seen: OrderedDict[tuple[str, int, str], tuple[float, int]] = OrderedDict()

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING:
            return True
        key = (record.name, record.levelno, record.getMessage())
        now = self.clock()
        seen = self._seen.get(key)
        if seen is not None and now - seen[0] < self.window:
            self._seen[key] = (seen[0], seen[1] + 1)
            self._seen.move_to_end(key)
            metrics.record_log_suppressed(record.name, 1)
            return False
        if seen is not None and seen[1]:
            record.repeated = seen[1]
        self._seen[key] = (now, 0)
        self._seen.move_to_end(key)
        while len(self._seen) > self.max_keys:
            self._seen.popitem(last=False)
        return True


class FetchTimeoutFilter(logging.Filter):
    """Lower FastStream's report of a timed-out pull task from ERROR to DEBUG.

    FastStream's task supervisor logs "... raised an exception, retrying" with
    the traceback at ERROR whenever a consumer task ends with an exception, and
    restarts the task. A TimeoutError there means a fetch or a JetStream API
    call outlasted its timeout while the server was slow or reconnecting, and the
    restarted task fetches again, so it is not an error. Any other exception
    keeps its level.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if not _is_faststream(record.name) or record.levelno < logging.WARNING:
            return True
        error = record.exc_info[1] if record.exc_info else None
        if not isinstance(error, TimeoutError):
            return True
        record.levelno = logging.DEBUG
        record.levelname = logging.getLevelName(logging.DEBUG)
        return logging.getLogger(record.name).isEnabledFor(logging.DEBUG)


def _is_faststream(logger_name: str) -> bool:
    # The runtime names each broker's logger smimegw.<service>.faststream.
    return logger_name.endswith(".faststream") or logger_name.split(".")[0] == (
        "faststream"
    )


def configure_logging(service: str, level: str = "INFO") -> None:
    """Send JSON lines to stderr for `service`, replacing earlier handlers."""
    global _service_name
    _service_name = service
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    # Before RepeatFilter, so that a lowered record is not counted as a repeat.
    handler.addFilter(FetchTimeoutFilter())
    handler.addFilter(RepeatFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # FastStream logs every message it handles at INFO; the services log the
    # lifecycle themselves with the ids that matter.
    logging.getLogger("faststream").setLevel(logging.WARNING)
    logging.getLogger("nats").setLevel(logging.WARNING)
    # aiosmtpd logs every SMTP command, addresses included, at INFO; ingress
    # logs each transaction's outcome itself.
    logging.getLogger("mail.log").setLevel(logging.WARNING)

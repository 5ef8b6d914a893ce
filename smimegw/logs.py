"""Structured logging: one JSON object per line, with the ids of the message at hand.

Handlers set the queue id and event id in context variables; every log record
made while they run carries them, without passing them to each call.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime

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
        if record.exc_info:
            entry["error"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


def configure_logging(service: str, level: str = "INFO") -> None:
    """Send JSON lines to stderr for `service`, replacing earlier handlers."""
    global _service_name
    _service_name = service
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # FastStream logs every message it handles at INFO; the services log the
    # lifecycle themselves with the ids that matter.
    logging.getLogger("faststream").setLevel(logging.WARNING)
    logging.getLogger("nats").setLevel(logging.WARNING)

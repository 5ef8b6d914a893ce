"""A pull fetch that times out is logged at DEBUG, other consumer failures at ERROR."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from smimegw.logs import FetchTimeoutFilter, configure_logging
from tests.conftest import gateway_settings
from tests.harness import Gateway, NatsServer, wait_until

SUPERVISOR_MESSAGE = "raised an exception"


@pytest.fixture
def service_log() -> Iterator[io.StringIO]:
    """Send the services' log lines to a buffer, then restore pytest's logging."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    configure_logging("policy")
    [handler] = root.handlers
    assert isinstance(handler, logging.StreamHandler)
    buffer = io.StringIO()
    handler.setStream(buffer)
    yield buffer
    root.handlers[:] = handlers
    root.setLevel(level)


async def fail_next_fetch(
    gateway: Gateway, error: BaseException, log: io.StringIO
) -> list[dict[str, Any]]:
    """Make the policy consumer's next fetch raise `error`; return the log lines."""
    runtime, _ = gateway.services["policy"]
    [subscriber] = [
        s for s in runtime.broker.subscribers if "mail.received" in str(s.subject)
    ]
    subscription: Any = subscriber.subscription
    fetch = subscription.fetch
    calls: list[int] = []

    async def failing_fetch(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        if len(calls) == 1:
            raise error
        return await fetch(*args, **kwargs)

    subscription.fetch = failing_fetch

    async def fetched_again() -> bool:
        # The supervisor restarts the task, which fetches a second time.
        return len(calls) >= 2

    await wait_until(fetched_again, timeout=10)
    return [json.loads(line) for line in log.getvalue().splitlines()]


@pytest.fixture
async def policy(tmp_path: Path, nats_server: NatsServer) -> Any:
    settings = gateway_settings(tmp_path, nats={"url": nats_server.url})
    gateway = Gateway(settings, nats_server.url)
    await gateway.start(["policy"])
    yield gateway
    await gateway.stop()


async def test_fetch_timeout_not_an_error(
    service_log: io.StringIO, policy: Gateway
) -> None:
    lines = await fail_next_fetch(policy, TimeoutError(), service_log)
    # The supervisor logs this at INFO just before its report of the exception,
    # so the buffer did receive the supervisor's lines.
    assert any("is being executed" in line["message"] for line in lines)
    reported = [line for line in lines if SUPERVISOR_MESSAGE in line["message"]]
    assert reported == [], reported


async def test_other_consumer_failure_stays_error(
    service_log: io.StringIO, policy: Gateway
) -> None:
    lines = await fail_next_fetch(policy, RuntimeError("stream gone"), service_log)
    [reported] = [line for line in lines if SUPERVISOR_MESSAGE in line["message"]]
    assert reported["level"] == "error"
    assert reported["logger"] == "smimegw.policy.faststream"
    assert "RuntimeError: stream gone" in reported["error"]


def supervisor_record(name: str, error: BaseException) -> logging.LogRecord:
    return logging.getLogger(name).makeRecord(
        name,
        logging.ERROR,
        __file__,
        1,
        "task raised an exception, retrying...",
        (),
        (type(error), error, None),
    )


def test_filter_lowers_timeout_to_debug() -> None:
    logger = logging.getLogger("smimegw.test.faststream")
    logger.setLevel(logging.DEBUG)
    try:
        record = supervisor_record(logger.name, TimeoutError())
        assert FetchTimeoutFilter().filter(record)
        assert record.levelno == logging.DEBUG
        assert record.levelname == "DEBUG"
    finally:
        logger.setLevel(logging.NOTSET)


def test_filter_keeps_timeouts_of_other_loggers() -> None:
    record = supervisor_record("smimegw.policy", TimeoutError())
    assert FetchTimeoutFilter().filter(record)
    assert record.levelno == logging.ERROR

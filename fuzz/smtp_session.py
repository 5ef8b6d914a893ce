"""Fuzz target: an SMTP session of the ingress service, in memory.

The input is the byte stream a client sends. It goes to `GatewaySMTP` with the
ingress handler through an in-memory transport, followed by a trailer that ends
any DATA and quits, so every session ends on its own. The bus is replaced by a
recorder, which is the one thing not exercised here. A finding is an exception
that reaches aiosmtpd's `handle_exception`, a reply that echoes exception text,
or a session that does not end.
"""

from __future__ import annotations

import asyncio
import hashlib
from typing import Any

from opentelemetry import trace

from schemas import BodyRef, Event
from services.ingress.handlers import IngressHandler, smtp_kwargs
from services.ingress.smtp import GatewaySMTP
from smimegw.settings import Settings

TRAILER = b"\r\n.\r\nQUIT\r\n"
# A session that has not ended this long after the trailer arrived is a finding.
_SESSION_TIMEOUT = 5.0


class SessionFailedError(AssertionError):
    """The SMTP session raised, leaked exception text, or did not end."""


class _RecordingBodies:
    async def put(self, key: str, data: bytes, timeout: float = 10.0) -> BodyRef:
        return BodyRef(
            key=key, size=len(data), sha256=hashlib.sha256(data).hexdigest(), chunks=1
        )


class _RecordingRuntime:
    """The parts of `Runtime` that ingress uses, without a broker."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.tracer = trace.NoOpTracer()
        self.bodies = _RecordingBodies()
        self.published: list[Event] = []

    async def publish(self, event: Event, timeout: float = 10.0) -> None:
        self.published.append(event)


class _CheckedHandler(IngressHandler):
    def __init__(self, runtime: Any) -> None:
        super().__init__(runtime)
        self.errors: list[BaseException] = []

    async def handle_exception(self, error: BaseException) -> str:
        self.errors.append(error)
        return await super().handle_exception(error)


class _MemoryTransport(asyncio.Transport):
    def __init__(self, peer: tuple[str, int]) -> None:
        super().__init__({"peername": peer})
        self.output = bytearray()
        self.closed = False
        self.protocol: asyncio.Protocol | None = None

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.output += data

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            if self.protocol is not None:
                asyncio.get_running_loop().call_soon(
                    self.protocol.connection_lost, None
                )

    def get_write_buffer_size(self) -> int:
        return 0


SETTINGS = Settings(
    internal_domains=("example.com",),
    trusted_networks=("192.0.2.0/24",),
    smtp={"max_message_size": 65536},
)


async def run_session(data: bytes, trusted: bool) -> bytes:
    """Run one session over `data` and return what the server wrote."""
    runtime = _RecordingRuntime(SETTINGS)
    handler = _CheckedHandler(runtime)
    peer = ("192.0.2.7" if trusted else "198.51.100.9", 40000)
    transport = _MemoryTransport(peer)
    protocol = GatewaySMTP(
        handler,
        on_close=lambda session: None,
        **smtp_kwargs(runtime),  # type: ignore[arg-type]
    )
    transport.protocol = protocol
    protocol.connection_made(transport)
    protocol.data_received(data + TRAILER)
    task = protocol._handler_coroutine
    assert task is not None
    # The task ends cancelled after QUIT: connection_lost cancels it.
    await asyncio.wait({task}, timeout=_SESSION_TIMEOUT)
    if not task.done():
        transport.close()
        raise SessionFailedError("the session did not end after QUIT")
    if handler.errors:
        raise SessionFailedError("the session raised") from handler.errors[0]
    output = bytes(transport.output)
    if b"Traceback" in output or b"Error: (" in output:
        raise SessionFailedError(f"a reply carries exception text: {output[-200:]!r}")
    return output


_loop: asyncio.AbstractEventLoop | None = None


def test_one_input(data: bytes) -> None:
    global _loop
    if _loop is None:
        _loop = asyncio.new_event_loop()
    # Inputs of odd length come from a trusted network, which may relay.
    _loop.run_until_complete(run_session(data, trusted=len(data) % 2 == 1))

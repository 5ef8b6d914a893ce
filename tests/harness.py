"""Real servers for tests: nats-server, the gateway's services, and a sink SMTP server.

Everything listens on 127.0.0.1 on free ports and is stopped by the test that
started it.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nats
from aiosmtpd.smtp import SMTP, Envelope, Session

from smimegw import embedded
from smimegw.runtime import Runtime
from smimegw.service import Service, serve
from smimegw.settings import Settings

REPO = Path(__file__).resolve().parent.parent


# Ports handed out in this process. Binding port 0 twice can return the same
# port, and an outgoing connection can take a port of the ephemeral range
# before the server binds it. Ports come from below that range, never twice.
_HANDED_OUT: set[int] = set()
_PORT_RANGE = (20000, 32000)


def free_port() -> int:
    """Return a loopback port that is free now and not handed out before."""
    for _ in range(1000):
        port = random.randint(*_PORT_RANGE)
        if port in _HANDED_OUT:
            continue
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
        _HANDED_OUT.add(port)
        return port
    raise RuntimeError(f"no free loopback port in {_PORT_RANGE}")


class NatsServer:
    """A nats-server with JetStream; stop() and start() keep the store and port."""

    def __init__(self, store: Path) -> None:
        self.store = store
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.process = embedded.start_server(self.store, self.port)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=15)
        self.process = None


@dataclass
class Received:
    sender: str
    recipients: list[str]
    content: bytes
    # The client's address and port: one per SMTP connection.
    peer: tuple[str, int] | None = None


@dataclass
class SinkHandler:
    """Stores what it accepts; replies chosen per recipient for failure tests."""

    messages: list[Received] = field(default_factory=list)
    # recipient -> reply for RCPT, e.g. "550 5.1.1 no such user"
    rcpt_replies: dict[str, str] = field(default_factory=dict)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)

    async def handle_RCPT(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        reply = self.rcpt_replies.get(address.lower())
        if reply:
            return reply
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(
        self, server: SMTP, session: Session, envelope: Envelope
    ) -> str:
        self.messages.append(
            Received(
                "" if envelope.mail_from in (None, "<>") else envelope.mail_from,
                list(envelope.rcpt_tos),
                envelope.original_content or b"",
                session.peer,
            )
        )
        self.arrived.set()
        return "250 2.0.0 Ok: stored"


class SinkServer:
    """An SMTP server in the test's event loop that keeps every message."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.handler = SinkHandler()
        self.server: asyncio.Server | None = None

    @property
    def messages(self) -> list[Received]:
        return self.handler.messages

    async def start(self) -> None:
        def factory() -> SMTP:
            session = SMTP(self.handler, decode_data=False, enable_SMTPUTF8=True)
            session.line_length_limit = 10**8
            return session

        self.server = await asyncio.get_running_loop().create_server(
            factory, "127.0.0.1", self.port
        )

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            self.server = None

    async def wait_for(self, count: int, timeout: float = 60.0) -> list[Received]:
        deadline = time.monotonic() + timeout
        while len(self.messages) < count:
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"sink got {len(self.messages)} of {count} messages in {timeout} s"
                )
            await asyncio.sleep(0.05)
        return self.messages


class Gateway:
    """The five services in this process, each with its own broker connection."""

    def __init__(self, settings: Settings, url: str) -> None:
        self.settings = settings
        self.url = url
        self.stops: dict[str, asyncio.Event] = {}
        self.tasks: dict[str, asyncio.Task[None]] = {}
        self.services: dict[str, tuple[Runtime, Service]] = {}

    async def start(self, names: Iterable[str]) -> None:
        for name in names:
            await self.start_one(name)

    async def start_one(self, name: str, timeout: float = 20.0) -> None:
        ready = asyncio.Event()
        stop = asyncio.Event()

        def on_ready(runtime: Runtime, service: Service) -> None:
            self.services[name] = (runtime, service)
            ready.set()

        task = asyncio.create_task(
            serve(name, self.settings, stop, url=self.url, on_ready=on_ready)
        )
        self.stops[name], self.tasks[name] = stop, task
        done, _ = await asyncio.wait(
            {task, asyncio.create_task(ready.wait())},
            timeout=timeout,
            return_when=asyncio.FIRST_COMPLETED,
        )
        if task in done:
            task.result()
        assert ready.is_set(), f"{name} did not start in {timeout} s"

    async def stop_one(self, name: str) -> None:
        self.stops[name].set()
        await asyncio.wait_for(self.tasks.pop(name), timeout=60)
        self.services.pop(name, None)

    async def stop(self) -> None:
        for name in list(self.tasks):
            await self.stop_one(name)

    @property
    def smtp_address(self) -> tuple[str, int]:
        service = self.services["ingress"][1]
        address: tuple[str, int] = service.address  # type: ignore[attr-defined]
        return address


def service_process(name: str, config: Path, url: str) -> subprocess.Popen[bytes]:
    """`smimegw serve NAME` as a child process, for kill -9 tests."""
    env = dict(os.environ, SMIMEGW_NATS__URL=url)
    return subprocess.Popen(
        [sys.executable, "-m", "smimegw", "serve", name, "--config", str(config)],
        env=env,
        cwd=REPO,
    )


def stop_process(process: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> None:
    if process.poll() is None:
        process.send_signal(sig)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


async def audit_events(url: str, **query: Any) -> list[dict[str, Any]]:
    nc = await nats.connect(url)
    try:
        reply = await nc.request(
            "smimegw.audit.query", json.dumps(query).encode(), timeout=10
        )
    finally:
        await nc.close()
    events: list[dict[str, Any]] = json.loads(reply.data)["events"]
    return events


async def wait_until(predicate: Any, timeout: float = 30.0, step: float = 0.1) -> None:
    """Poll an async predicate until it returns true, bounded in time."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await predicate():
            return
        await asyncio.sleep(step)
    raise AssertionError(f"condition not met within {timeout} s")


def strip_received(content: bytes) -> bytes:
    """The message without the gateway's Received header (first field, folded)."""
    assert content.startswith(b"Received: "), content[:80]
    index = 0
    while True:
        end = content.index(b"\r\n", index) + 2
        if content[end : end + 1] not in (b" ", b"\t"):
            return content[end:]
        index = end

"""A three-node nats-server cluster and replicas of the services as processes.

Used by the resilience tests and by benchmarks/soak. Every server listens on
127.0.0.1: client ports and cluster routes alike. Each service replica is a
`smimegw serve NAME` child process with its own health port, so a test can wait
for readiness and kill it with SIGKILL or SIGTERM by pid.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import aiosmtplib
import nats
import nats.errors
from nats.js.errors import ServiceUnavailableError

from smimegw import embedded, streams
from smimegw.settings import Settings
from tests.harness import REPO, free_port


class ClusterError(RuntimeError):
    """A server or service of the test cluster did not start or stop in time."""


@dataclass
class NatsNode:
    name: str
    port: int
    route_port: int
    store: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None


class NatsCluster:
    """`size` nats-server processes with JetStream, routed to each other."""

    def __init__(self, base: Path, size: int = 3) -> None:
        self.base = base
        self.nodes = [
            NatsNode(f"n{i + 1}", free_port(), free_port(), base / f"n{i + 1}")
            for i in range(size)
        ]

    @property
    def urls(self) -> str:
        """Every member's client URL, comma-separated, as `nats.url` takes them."""
        return ",".join(node.url for node in self.nodes)

    def _config(self, node: NatsNode) -> Path:
        routes = ", ".join(
            f"nats-route://127.0.0.1:{other.route_port}"
            for other in self.nodes
            if other is not node
        )
        node.store.mkdir(parents=True, exist_ok=True)
        path = node.store / "nats.conf"
        path.write_text(
            f"server_name: {node.name}\n"
            f"listen: 127.0.0.1:{node.port}\n"
            f'jetstream {{ store_dir: "{node.store}", max_memory_store: 64MB }}\n'
            "cluster {\n"
            "  name: smimegw\n"
            f"  listen: 127.0.0.1:{node.route_port}\n"
            f"  routes: [{routes}]\n"
            "}\n"
        )
        return path

    def start_node(self, node: NatsNode) -> None:
        config = self._config(node)
        log = open(node.store.parent / f"{node.name}.log", "ab")  # noqa: SIM115
        node.process = subprocess.Popen(
            [str(embedded.server_binary()), "-c", str(config)],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()

    def start(self) -> None:
        for node in self.nodes:
            self.start_node(node)
        for node in self.nodes:
            embedded.wait_for_port("127.0.0.1", node.port, timeout=15)

    def kill(self, node: NatsNode, sig: int = signal.SIGKILL) -> None:
        if node.process is not None and node.process.poll() is None:
            node.process.send_signal(sig)
            node.process.wait(timeout=15)

    def stop(self) -> None:
        for node in self.nodes:
            self.kill(node, signal.SIGTERM)

    async def wait_for_jetstream(self, settings: Settings, timeout: float = 30) -> None:
        """Wait for a meta leader, then create the streams with their replicas."""
        deadline = time.monotonic() + timeout
        nc = await nats.connect(self.urls.split(","), connect_timeout=2)
        try:
            js = nc.jetstream(timeout=5)
            while True:
                try:
                    await js.account_info()
                    await streams.provision(js, settings)
                    return
                except (ServiceUnavailableError, nats.errors.Error) as err:
                    if time.monotonic() > deadline:
                        raise ClusterError(
                            f"JetStream of the cluster not ready in {timeout} s: {err}"
                        ) from err
                    await asyncio.sleep(0.25)
        finally:
            await nc.close()


@dataclass
class Replica:
    """One `smimegw serve` process."""

    service: str
    index: int
    health_port: int
    smtp_port: int | None
    log_path: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def name(self) -> str:
        return f"{self.service}-{self.index}"

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    async def ready(self) -> bool:
        try:
            reader, writer = await asyncio.open_connection(
                "127.0.0.1", self.health_port
            )
        except OSError:
            return False
        try:
            writer.write(b"GET /readyz HTTP/1.1\r\n\r\n")
            await writer.drain()
            head = await asyncio.wait_for(reader.readline(), timeout=2)
        except (OSError, TimeoutError):
            return False
        finally:
            writer.close()
        return head.split()[1:2] == [b"200"]


@dataclass
class Fleet:
    """Replicas of every service against one NATS URL list, from one config file."""

    config: Path
    nats_url: str
    logs: Path
    replicas: list[Replica] = field(default_factory=list)

    def add(self, service: str, count: int) -> None:
        for index in range(count):
            smtp_port = free_port() if service == "ingress" else None
            self.replicas.append(
                Replica(
                    service,
                    index,
                    free_port(),
                    smtp_port,
                    self.logs / f"{service}-{index}.log",
                )
            )

    def of(self, service: str) -> list[Replica]:
        return [r for r in self.replicas if r.service == service]

    @property
    def smtp_ports(self) -> list[int]:
        return [r.smtp_port for r in self.replicas if r.smtp_port is not None]

    def spawn(self, replica: Replica) -> None:
        env = dict(
            os.environ,
            SMIMEGW_NATS__URL=self.nats_url,
            SMIMEGW_HEALTH__LISTEN=f"127.0.0.1:{replica.health_port}",
        )
        if replica.smtp_port is not None:
            env["SMIMEGW_SMTP__LISTEN"] = f"127.0.0.1:{replica.smtp_port}"
        self.logs.mkdir(parents=True, exist_ok=True)
        log = open(replica.log_path, "ab")  # noqa: SIM115
        replica.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "smimegw",
                "serve",
                replica.service,
                "--config",
                str(self.config),
            ],
            env=env,
            cwd=REPO,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()

    async def wait_ready(
        self, replicas: Iterable[Replica] | None = None, timeout: float = 60
    ) -> None:
        waiting = list(self.replicas if replicas is None else replicas)
        deadline = time.monotonic() + timeout
        while waiting:
            for replica in list(waiting):
                if not replica.alive:
                    raise ClusterError(
                        f"{replica.name} exited with status "
                        f"{replica.process.returncode if replica.process else None}; "
                        f"see {replica.log_path}"
                    )
                if await replica.ready():
                    waiting.remove(replica)
            if time.monotonic() > deadline:
                names = ", ".join(r.name for r in waiting)
                raise ClusterError(f"{names} not ready within {timeout} s")
            await asyncio.sleep(0.2)

    async def start(self, timeout: float = 90) -> None:
        for replica in self.replicas:
            self.spawn(replica)
        await self.wait_ready(timeout=timeout)

    def signal(self, replica: Replica, sig: int) -> None:
        if replica.process is not None and replica.process.poll() is None:
            replica.process.send_signal(sig)

    async def wait_exit(self, replica: Replica, timeout: float = 60) -> int:
        assert replica.process is not None
        deadline = time.monotonic() + timeout
        while replica.process.poll() is None:
            if time.monotonic() > deadline:
                raise ClusterError(f"{replica.name} still running after {timeout} s")
            await asyncio.sleep(0.1)
        return replica.process.returncode

    def stop(self) -> None:
        """SIGTERM every replica, then SIGKILL those still running after 30 s."""
        for replica in self.replicas:
            self.signal(replica, signal.SIGTERM)
        deadline = time.monotonic() + 30
        for replica in self.replicas:
            if replica.process is None:
                continue
            try:
                replica.process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                replica.process.kill()
                replica.process.wait()


def write_config(path: Path, settings: Settings) -> Path:
    """The TOML that every replica reads; per-replica ports come from the env."""
    delivery = settings.delivery
    bus = settings.bus
    path.write_text(
        f'data_dir = "{settings.data_dir}"\n'
        f"internal_domains = {json.dumps(list(settings.internal_domains))}\n"
        "[smtp]\n"
        f'hostname = "{settings.smtp.hostname}"\n'
        "[nats]\n"
        f"replicas = {settings.nats.replicas}\n"
        "[bus]\n"
        f"max_deliver = {bus.max_deliver}\n"
        f'ack_wait = "{bus.ack_wait.total_seconds()}s"\n'
        "[delivery]\n"
        f'relay_host = "{delivery.relay_host}"\n'
        f'outbox_dir = "{delivery.outbox_dir}"\n'
        f'retry_initial = "{delivery.retry_initial.total_seconds()}s"\n'
        f'retry_max = "{delivery.retry_max.total_seconds()}s"\n'
        f'connect_timeout = "{delivery.connect_timeout.total_seconds()}s"\n'
    )
    return path


@dataclass
class LoadResult:
    """What a load run sent: index -> queue ids answered 250 (one, or more)."""

    accepted: dict[int, list[str]] = field(default_factory=dict)
    # index -> time.monotonic() of its first 250
    accepted_at: dict[int, float] = field(default_factory=dict)
    resends: int = 0
    first_accept: float = 0.0
    last_accept: float = 0.0


def message(index: int) -> bytes:
    return (
        "From: alice@example.com\r\n"
        f"To: user{index}@example.com\r\n"
        f"Subject: load {index}\r\n"
        f"Message-ID: <load{index}@example.com>\r\n"
        "\r\n"
        f"Load message {index}.\r\n"
    ).encode()


def index_of(content: bytes) -> int:
    """The load index of a message that arrived at the sink."""
    start = content.index(b"Subject: load ") + len(b"Subject: load ")
    return int(content[start : content.index(b"\r\n", start)])


async def send_load(
    ports: list[int],
    indexes: Iterable[int],
    *,
    connections: int = 8,
    result: LoadResult | None = None,
    deadline: float = 600,
    rate: float | None = None,
) -> LoadResult:
    """Send each message until some ingress answers 250, spreading connections.

    A connection that breaks (a killed replica) or a 4xx reply (the broker
    unreachable) makes the client try again, on the next port, as an MTA would.
    A message sent again after its first DATA got no answer may arrive twice.
    With `rate`, at most that many messages a second are sent in total.
    """
    result = result or LoadResult()
    queue: asyncio.Queue[int] = asyncio.Queue()
    for index in indexes:
        queue.put_nowait(index)
    started = time.monotonic()
    stop_at = started + deadline
    dispatched = 0

    async def worker(number: int) -> None:
        turn = number
        smtp: aiosmtplib.SMTP | None = None
        nonlocal dispatched
        while not queue.empty():
            index = queue.get_nowait()
            if rate:
                # At most `rate` messages a second over all connections.
                dispatched += 1
                await asyncio.sleep(
                    max(0.0, started + dispatched / rate - time.monotonic())
                )
            tries = 0
            while True:
                if time.monotonic() > stop_at:
                    raise ClusterError(f"message {index} not accepted in {deadline} s")
                try:
                    if smtp is None:
                        port = ports[turn % len(ports)]
                        smtp = aiosmtplib.SMTP(
                            hostname="127.0.0.1", port=port, timeout=15
                        )
                        await smtp.connect()
                    _, reply = await smtp.sendmail(
                        "alice@example.com",
                        [f"user{index}@example.com"],
                        message(index),
                    )
                except (aiosmtplib.SMTPException, OSError, TimeoutError):
                    tries += 1
                    result.resends += 1
                    if smtp is not None:
                        smtp.close()
                    smtp = None
                    turn += 1
                    await asyncio.sleep(min(0.05 * tries, 1.0))
                    continue
                now = time.monotonic()
                result.first_accept = result.first_accept or now
                result.last_accept = now
                result.accepted.setdefault(index, []).append(reply.rsplit(" ", 1)[-1])
                result.accepted_at.setdefault(index, now)
                break
        if smtp is not None:
            try:
                await smtp.quit()
            except (aiosmtplib.SMTPException, OSError):
                smtp.close()

    await asyncio.gather(*(worker(n) for n in range(connections)))
    return result


async def consumers_settled(url: str, durables: Iterable[tuple[str, str]]) -> bool:
    """True when no listed consumer has messages pending or awaiting an ack."""
    nc = await nats.connect(url.split(","), connect_timeout=2)
    try:
        js = nc.jetstream(timeout=5)
        for stream, durable in durables:
            info = await js.consumer_info(stream, durable)
            if info.num_pending or info.num_ack_pending:
                return False
        return True
    finally:
        await nc.close()


MAIL_CONSUMERS = (
    (streams.MAIL, "policy"),
    (streams.MAIL, "crypto"),
    (streams.MAIL, "delivery"),
    (streams.MAIL, "audit_mail"),
)

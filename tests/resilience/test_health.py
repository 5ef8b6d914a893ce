"""Health and readiness endpoints of a service process."""

from __future__ import annotations

import asyncio
import json
import signal
from pathlib import Path

import nats
import pytest

from schemas import MailReceived
from services.policy.handlers import PolicyHandlers
from smimegw.ids import new_queue_id
from smimegw.runtime import Attempt
from tests.conftest import gateway_settings
from tests.harness import (
    Gateway,
    NatsServer,
    free_port,
    service_process,
    wait_until,
)
from tests.resilience.test_parking import received_without_body


async def http_get(port: int, path: str) -> tuple[int, dict[str, object]]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(f"GET {path} HTTP/1.1\r\nHost: probe\r\n\r\n".encode())
        await writer.drain()
        response = await asyncio.wait_for(reader.read(), timeout=5)
    finally:
        writer.close()
    head, _, body = response.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(body)


async def test_ready_follows_the_nats_connection(
    tmp_path: Path, nats_server: NatsServer
) -> None:
    port = free_port()
    settings = gateway_settings(tmp_path, health={"listen": f"127.0.0.1:{port}"})
    gateway = Gateway(settings, nats_server.url)
    await gateway.start(["policy"])
    try:
        assert await http_get(port, "/healthz") == (
            200,
            {"service": "policy", "status": "alive"},
        )
        code, state = await http_get(port, "/readyz")
        assert code == 200
        assert state["nats_connected"] is True
        assert (await http_get(port, "/metrics"))[0] == 404

        nats_server.stop()

        async def unready() -> bool:
            return (await http_get(port, "/readyz"))[0] == 503

        await wait_until(unready, timeout=15)
        assert (await http_get(port, "/healthz"))[0] == 200
        nats_server.start()

        async def ready() -> bool:
            return (await http_get(port, "/readyz"))[0] == 200

        await wait_until(ready, timeout=30, step=0.2)
    finally:
        await gateway.stop()
    try:
        await http_get(port, "/healthz")
    except OSError:
        pass
    else:
        raise AssertionError("the health port is still open after the service stopped")


async def test_ready_is_503_while_draining(
    tmp_path: Path, nats_server: NatsServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    entered, release = asyncio.Event(), asyncio.Event()

    async def held(self: PolicyHandlers, event: MailReceived, attempt: Attempt) -> None:
        entered.set()
        await release.wait()

    monkeypatch.setattr(PolicyHandlers, "on_received", held)
    port = free_port()
    settings = gateway_settings(tmp_path, health={"listen": f"127.0.0.1:{port}"})
    gateway = Gateway(settings, nats_server.url)
    await gateway.start(["policy"])
    nc = await nats.connect(nats_server.url)
    try:
        event = received_without_body(new_queue_id(), b"held\r\n")
        await nc.jetstream().publish(
            "mail.received", event.encode(), headers={"Nats-Msg-Id": event.event_id}
        )
        await asyncio.wait_for(entered.wait(), timeout=15)
        gateway.stops["policy"].set()

        async def draining() -> bool:
            code, state = await http_get(port, "/readyz")
            return code == 503 and state["draining"] is True

        await wait_until(draining, timeout=15)
        assert (await http_get(port, "/healthz"))[0] == 200
        release.set()
        await asyncio.wait_for(gateway.tasks.pop("policy"), timeout=30)
    finally:
        release.set()
        await nc.close()
        await gateway.stop()


async def test_sigterm_stops_a_service_that_waits_for_nats(tmp_path: Path) -> None:
    """A service started while NATS is unreachable exits on SIGTERM, at once.

    nats-py's first connect retries forever when reconnects are unlimited; a
    container platform would otherwise have to kill the process.
    """
    port = free_port()
    settings = gateway_settings(tmp_path, health={"listen": f"127.0.0.1:{port}"})
    config = tmp_path / "gw.toml"
    config.write_text(
        f'data_dir = "{settings.data_dir}"\n[health]\nlisten = "127.0.0.1:{port}"\n'
    )
    # Nothing listens on this port: the server never starts.
    process = service_process("policy", config, f"nats://127.0.0.1:{free_port()}")
    try:

        async def live() -> bool:
            try:
                status, _ = await http_get(port, "/healthz")
            except OSError:
                return False
            return status == 200

        await wait_until(live, timeout=30)
        status, _ = await http_get(port, "/readyz")
        assert status == 503
        process.send_signal(signal.SIGTERM)
        code = await asyncio.to_thread(process.wait, 15)
        assert code == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()

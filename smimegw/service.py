"""Running one service: connect, start, wait for a stop signal, drain, exit."""

from __future__ import annotations

import asyncio
import importlib
import logging
import signal
from collections.abc import Callable
from typing import Protocol

import nats.errors

from smimegw.health import HealthServer
from smimegw.runtime import Runtime
from smimegw.settings import Settings

log = logging.getLogger("smimegw.service")

# sysexits.h EX_CONFIG: the service exited because of its configuration.
EXIT_CONFIG = 78

SERVICE_NAMES = ("ingress", "policy", "crypto", "delivery", "audit")
# Services that `smimegw run` starts only when configured (admin.listen).
OPTIONAL_SERVICE_NAMES = ("admin",)


class Service(Protocol):
    async def start(self) -> None: ...

    async def stop(self) -> None: ...


def nats_url(settings: Settings) -> str:
    """`nats.url`, or the embedded server's address when it is empty."""
    return settings.nats.url or f"nats://127.0.0.1:{settings.nats.embedded_port}"


def build_service(name: str, runtime: Runtime) -> Service:
    known = SERVICE_NAMES + OPTIONAL_SERVICE_NAMES
    if name not in known:
        raise ValueError(f"unknown service {name!r}; choose one of {', '.join(known)}")
    module = importlib.import_module(f"services.{name}.service")
    service: Service = module.build(runtime)
    return service


async def serve(
    name: str,
    settings: Settings,
    stop: asyncio.Event,
    *,
    url: str | None = None,
    on_ready: Callable[[Runtime, Service], None] | None = None,
) -> None:
    """Run service `name` until `stop` is set, then shut down gracefully.

    Shutdown order: stop taking new work (the SMTP listener, the consumers),
    let handlers in flight finish and ack, then close the connection.
    """
    runtime = Runtime(name, settings, url or nats_url(settings))
    service = build_service(name, runtime)
    health = None
    if settings.health.listen:
        health = HealthServer(name, settings.health.listen, lambda: runtime.connected)
        await health.start()
    try:
        runtime.start_metrics()
        if not await runtime.connect(stop):
            log.info("%s stopped before NATS at %s was ready", name, runtime.nats_url)
            if runtime.connected:
                await runtime.nc.close()
            return
        await runtime.broker.start()
        await service.start()
        log.info("%s started", name)
        if health is not None:
            health.started = True
        if on_ready is not None:
            on_ready(runtime, service)
        await stop.wait()
        log.info("%s stopping", name)
        if health is not None:
            health.draining = True
        await service.stop()
        # FastStream's stop waits up to graceful_timeout for handlers in flight.
        try:
            await runtime.broker.stop()
        except nats.errors.ConnectionReconnectingError:
            # Draining needs a connection; without one there is nothing to drain.
            await runtime.nc.close()
        log.info("%s stopped", name)
    finally:
        runtime.close()
        if health is not None:
            await health.stop()


def run_until_signal(name: str, settings: Settings) -> None:
    """Entry point of `smimegw serve NAME`: SIGTERM and SIGINT stop gracefully."""

    from services.crypto.keyvault import KeyVaultError

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await serve(name, settings, stop)

    try:
        asyncio.run(main())
    except (KeyVaultError, ValueError, OSError) as err:
        # A configuration the service cannot run with: log one line and
        # exit with EX_CONFIG, which `smimegw run` does not restart.
        log.error("%s cannot start: %s", name, err)
        raise SystemExit(EXIT_CONFIG) from None

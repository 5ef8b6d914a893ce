"""Admin API entry point: an HTTP server on `admin.listen` beside the bus."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Iterator

import uvicorn
from fastapi import FastAPI

from services.admin.api import create_app
from services.admin.bus import AdminBus
from services.admin.tokens import token_store
from smimegw.runtime import Runtime
from smimegw.settings import parse_host_port

log = logging.getLogger("smimegw.admin")


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        # The service's own SIGTERM handler stops it; uvicorn must not take over.
        yield


class AdminService:
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.app: FastAPI | None = None
        self.server: _Server | None = None
        self._task: asyncio.Task[None] | None = None
        self.address: tuple[str, int] | None = None

    async def start(self) -> None:
        settings = self.runtime.settings.admin
        self.app = create_app(
            AdminBus(self.runtime.nc),
            token_store(self.runtime.settings),
            max_upload=settings.max_upload,
            max_request=settings.max_request,
        )
        if not settings.listen:
            log.info("admin.listen is empty: the admin API does not listen")
            return
        host, port = parse_host_port(settings.listen, "admin.listen")
        listener = _bind(host, port)
        config = uvicorn.Config(
            self.app, host=host, port=port, log_config=None, lifespan="off"
        )
        self.server = _Server(config)
        self._task = asyncio.create_task(self.server.serve(sockets=[listener]))
        # The socket is bound and listening already: connections wait in its
        # backlog until uvicorn accepts them.
        port = listener.getsockname()[1]
        self.address = (host, port)
        log.info("admin API listening on %s:%d", host, port)

    async def stop(self) -> None:
        if self.server is not None and self._task is not None:
            self.server.should_exit = True
            await self._task


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    listener = socket.socket(family, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        listener.bind((host, port))
    except OSError as err:
        listener.close()
        raise AdminListenError(
            f"admin.listen = {host}:{port} cannot be bound ({err.strerror}); "
            "choose a free port"
        ) from err
    listener.listen(128)
    listener.setblocking(False)
    return listener


class AdminListenError(RuntimeError):
    """The admin API's address cannot be bound."""


def build(runtime: Runtime) -> AdminService:
    return AdminService(runtime)

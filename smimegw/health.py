"""HTTP liveness and readiness of one service process.

`GET /healthz` answers 200 while the event loop runs: a process that stops
answering is stuck and should be restarted. `GET /readyz` answers 200 once the
service has started and while its NATS connection is up, and 503 before, while
reconnecting and while draining after SIGTERM, so an orchestrator sends no new
SMTP sessions to it. Both return a small JSON document. The server reads one
request line per connection and ignores the headers; it serves probes, not
browsers.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from typing import Final

from smimegw.settings import parse_host_port

log = logging.getLogger("smimegw.health")

_READ_TIMEOUT: Final = 5.0
_MAX_REQUEST: Final = 8192
_REASONS: Final = {
    200: "OK",
    404: "Not Found",
    405: "Method Not Allowed",
    503: "Service Unavailable",
}


class HealthServer:
    """Serves /healthz and /readyz for service `service` on `listen` (HOST:PORT)."""

    def __init__(
        self, service: str, listen: str, connected: Callable[[], bool]
    ) -> None:
        self.service = service
        self.host, self.port = parse_host_port(listen, "health.listen")
        self.connected = connected
        self.started = False
        self.draining = False
        self._server: asyncio.Server | None = None

    @property
    def ready(self) -> bool:
        return self.started and not self.draining and self.connected()

    @property
    def address(self) -> tuple[str, int]:
        assert self._server is not None
        host, port = self._server.sockets[0].getsockname()[:2]
        return host, port

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, self.host, self.port)
        host, port = self.address
        log.info("health endpoints on http://%s:%d/healthz and /readyz", host, port)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    def _status(self, path: str) -> tuple[int, dict[str, object]]:
        if path == "/healthz":
            return 200, {"service": self.service, "status": "alive"}
        if path == "/readyz":
            state = {
                "service": self.service,
                "started": self.started,
                "draining": self.draining,
                "nats_connected": self.connected(),
            }
            return (200 if self.ready else 503), state
        return 404, {"error": f"no endpoint {path}; use /healthz or /readyz"}

    async def _serve(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        try:
            async with asyncio.timeout(_READ_TIMEOUT):
                line = await reader.readline()
            parts = line[:_MAX_REQUEST].decode("latin-1").split()
            body: dict[str, object]
            if len(parts) != 3 or parts[0] not in ("GET", "HEAD"):
                code, body = 405, {"error": "only GET and HEAD are served"}
            else:
                code, body = self._status(parts[1].split("?", 1)[0])
            payload = json.dumps(body).encode()
            head = (
                f"HTTP/1.1 {code} {_REASONS[code]}\r\n"
                "Content-Type: application/json\r\n"
                f"Content-Length: {len(payload)}\r\n"
                "Connection: close\r\n\r\n"
            ).encode()
            writer.write(head if parts[:1] == ["HEAD"] else head + payload)
            await writer.drain()
        except (TimeoutError, ConnectionError):
            pass
        finally:
            writer.close()

"""The admin API's side of the bus: the CLI's requests over one NATS connection.

Configuration commands go to the owning service as `schemas.commands` models on
`smimegw.cmd.<service>`, audit queries to `smimegw.audit.query`, and parked
messages are read and moved with `smimegw.parking`, exactly as the CLI does.
"""

from __future__ import annotations

import json
from typing import Any

import nats.errors
from nats.aio.client import Client

from schemas.base import Model
from schemas.commands import CommandReply
from smimegw import natsauth, parking


class BusUnavailableError(Exception):
    """No service responded to a request, or NATS is not connected."""


class AdminBus:
    def __init__(self, nc: Client, timeout: float = 30.0) -> None:
        self.nc = nc
        self.timeout = timeout

    async def command(self, subject: str, command: Model) -> CommandReply:
        """Send a command to the service that owns it, as `smimegw.client` does."""
        # The one place a password is serialised in clear: the request to crypto.
        payload = command.model_dump_json(context={"reveal": True}).encode()
        data = await self._request(subject, payload)
        return CommandReply.model_validate_json(data)

    async def audit(self, query: dict[str, Any]) -> dict[str, Any]:
        data = await self._request(natsauth.AUDIT_QUERY, json.dumps(query).encode())
        result: dict[str, Any] = json.loads(data)
        return result

    async def parked(self, stage: str | None, limit: int) -> list[dict[str, Any]]:
        messages = await parking.list_parked(
            self.nc.jetstream(), stage=stage, limit=limit
        )
        return [message.as_dict() for message in messages]

    async def retry_parked(self, sequence: int) -> dict[str, Any]:
        return (await parking.retry(self.nc.jetstream(), sequence)).as_dict()

    async def drop_parked(self, sequence: int) -> dict[str, Any]:
        return (await parking.drop(self.nc.jetstream(), sequence)).as_dict()

    async def _request(self, subject: str, payload: bytes) -> bytes:
        try:
            reply = await self.nc.request(subject, payload, timeout=self.timeout)
        except nats.errors.NoRespondersError as err:
            raise BusUnavailableError(
                f"no service responds to {subject}; start the gateway's services"
            ) from err
        except nats.errors.TimeoutError as err:
            raise BusUnavailableError(
                f"{subject} did not respond within {self.timeout:.0f} s"
            ) from err
        except nats.errors.ConnectionClosedError as err:
            raise BusUnavailableError("the admin API lost its NATS connection") from err
        return bytes(reply.data)

"""Requests from the command line to a running gateway over NATS."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import nats
import nats.errors
from nats.aio.client import Client

from schemas.base import Model
from schemas.commands import CommandReply
from smimegw import natsauth
from smimegw.service import nats_url
from smimegw.settings import Settings


class GatewayUnreachableError(RuntimeError):
    """The CLI could not reach the NATS server or the service behind a subject."""


async def send_command(
    settings: Settings, subject: str, command: Model, timeout: float = 30.0
) -> CommandReply:
    """Send a configuration command or query to the service that owns it."""
    # The one place a password is serialised in clear: the request to crypto.
    payload = command.model_dump_json(context={"reveal": True}).encode()
    data = await _request_bytes(settings, subject, payload, timeout)
    return CommandReply.model_validate_json(data)


async def request(
    settings: Settings, subject: str, payload: dict[str, Any], timeout: float = 10.0
) -> dict[str, Any]:
    data = await _request_bytes(
        settings, subject, json.dumps(payload).encode(), timeout
    )
    result: dict[str, Any] = json.loads(data)
    return result


async def connect(settings: Settings, options: dict[str, Any] | None = None) -> Client:
    """Connect the CLI to the gateway's NATS server, or raise GatewayUnreachableError.

    `options` replaces the credentials taken from the settings.
    """
    url = nats_url(settings)
    # nats.url may list the servers of a cluster, comma-separated.
    servers = [u.strip() for u in url.split(",") if u.strip()]
    try:
        async with asyncio.timeout(3):
            return await nats.connect(
                servers,
                connect_timeout=2,
                allow_reconnect=False,
                max_reconnect_attempts=0,
                **(natsauth.connect_options(settings) if options is None else options),
            )
    except (nats.errors.Error, OSError, TimeoutError) as err:
        raise GatewayUnreachableError(
            f"cannot connect to NATS at {url}: is the gateway running? "
            "Start it with `smimegw run` or set nats.url"
        ) from err


async def _request_bytes(
    settings: Settings, subject: str, payload: bytes, timeout: float
) -> bytes:
    url = nats_url(settings)
    nc = await connect(settings)
    try:
        reply = await nc.request(subject, payload, timeout=timeout)
    except nats.errors.NoRespondersError as err:
        raise GatewayUnreachableError(
            f"no service responds to {subject} at {url}; start the gateway's services"
        ) from err
    except nats.errors.TimeoutError as err:
        raise GatewayUnreachableError(
            f"{subject} at {url} did not respond within {timeout:.0f} s"
        ) from err
    finally:
        await nc.close()
    return bytes(reply.data)

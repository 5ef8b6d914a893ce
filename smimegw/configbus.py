"""Serving configuration commands: validate against the projection, then publish.

Commands arrive by NATS request/reply. The owning service checks a command
against its ConfigState and publishes the resulting events to CONFIG with
`Nats-Expected-Last-Sequence` set to the sequence that state was built from. If
another replica published in between, JetStream rejects the write. The service
then catches up and decides again, so no command is applied to a stale view.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Literal

from cryptography import x509
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js.errors import BadRequestError
from pydantic import ValidationError

from schemas.base import Event
from schemas.commands import CommandFailure, CommandReply, command_adapter
from schemas.config import BindingCreated, ConfigWarning
from smimegw import streams
from smimegw import x509 as certs
from smimegw.configstate import ConfigFollower, binding_id, pem_of
from smimegw.runtime import Runtime

log = logging.getLogger("smimegw.config")

# JetStream error code for a publish whose expected last sequence is stale.
_WRONG_LAST_SEQUENCE = 10071
_ATTEMPTS = 5


class ConfigConflict(Exception):
    """CONFIG moved on after the state the command was checked against."""


class CommandRejected(Exception):
    """A command that cannot be carried out; the message goes back to the CLI."""

    def __init__(self, category: str, message: str) -> None:
        super().__init__(message)
        self.category = category
        self.message = message


Handler = Callable[[Any], Awaitable[CommandReply]]


async def publish_config(
    runtime: Runtime, events: Sequence[Event], expected_sequence: int
) -> None:
    """Publish `events` in order; the first only if CONFIG is at `expected_sequence`."""
    for index, event in enumerate(events):
        headers = {"Nats-Msg-Id": event.event_id}
        if index == 0:
            headers["Nats-Expected-Last-Sequence"] = str(expected_sequence)
        try:
            await runtime.js.publish(
                event.type, event.encode(), stream=streams.CONFIG, headers=headers
            )
        except BadRequestError as err:
            if err.err_code == _WRONG_LAST_SEQUENCE:
                raise ConfigConflict from err
            raise


async def publish_unchecked(runtime: Runtime, event: Event) -> None:
    """Publish an event that changes no state, such as an import failure."""
    await runtime.publish(event)


class CommandServer:
    def __init__(
        self,
        runtime: Runtime,
        follower: ConfigFollower,
        subject: str,
        handlers: dict[str, Handler],
    ) -> None:
        self.runtime = runtime
        self.follower = follower
        self.subject = subject
        self.handlers = handlers
        self._subscription: Subscription | None = None

    async def start(self) -> None:
        # One queue group per service: each command goes to one replica, and one
        # subscription handles its requests one at a time.
        self._subscription = await self.runtime.nc.subscribe(
            self.subject, queue=self.subject, cb=self._on_request
        )

    async def stop(self) -> None:
        if self._subscription is not None:
            await self._subscription.unsubscribe()

    async def _on_request(self, msg: Msg) -> None:
        reply = await self._handle(msg.data)
        if msg.reply:
            await msg.respond(reply.model_dump_json().encode())

    async def _handle(self, data: bytes) -> CommandReply:
        try:
            command = command_adapter.validate_json(data)
        except ValidationError as err:
            fields = ", ".join(".".join(map(str, e["loc"])) for e in err.errors()[:5])
            return _failure("invalid-command", f"invalid command ({fields})")
        handler = self.handlers.get(command.command)
        if handler is None:
            return _failure(
                "invalid-command",
                f"{command.command} is not served on {self.subject}",
            )
        for _ in range(_ATTEMPTS):
            try:
                await self.follower.sync()
                return await handler(command)
            except ConfigConflict:
                log.info("%s raced another change; deciding again", command.command)
            except CommandRejected as err:
                return _failure(err.category, err.message)
        return _failure(
            "conflict",
            f"{command.command} kept conflicting with concurrent changes; try again",
        )


def file_type(name: str) -> str:
    suffix = name.rpartition(".")[2].lower() if "." in name else ""
    return suffix or "unknown"


def binding_warnings(
    follower: ConfigFollower, entry_id: str, pattern: str, certificate: x509.Certificate
) -> list[ConfigWarning]:
    """Warnings for a new binding: address mismatch, missing issuer CA."""
    facts = certs.facts_of(certificate)
    warnings: list[ConfigWarning] = []
    if not pattern.startswith("@") and not certs.holds_address(facts, pattern):
        held = ", ".join(facts.addresses) or "no address"
        warnings.append(
            ConfigWarning.create(
                entry_kind="binding",
                entry_id=entry_id,
                code="address-not-in-certificate",
                message=(
                    f"certificate {facts.identity!r} does not contain {pattern} "
                    f"(it holds {held}); recipients may reject signatures from it"
                ),
            )
        )
    if follower.state.chain_of(certificate) is None:
        warnings.append(
            ConfigWarning.create(
                entry_kind="binding",
                entry_id=entry_id,
                code="issuer-ca-not-imported",
                message=(
                    f"the CA that issued {facts.identity!r} ({facts.issuer}) is not "
                    "imported, so the binding is unusable until it is: run "
                    "`smimegw ca import` with that CA certificate"
                ),
            )
        )
    return warnings


async def create_binding(
    runtime: Runtime,
    follower: ConfigFollower,
    *,
    kind: Literal["internal", "external"],
    pattern: str,
    certificate: x509.Certificate,
    chain: Sequence[x509.Certificate],
    key_id: str | None,
    local_cert: str | None,
    file_name: str,
    key_warnings: Sequence[tuple[str, str]] = (),
) -> CommandReply:
    """Publish a new binding with its warnings; `key_warnings` are (code, message).

    Raises CommandRejected when the same binding exists already.
    """
    facts = certs.facts_of(certificate)
    new_id = binding_id(kind, pattern, facts.sha256_fingerprint)
    if new_id in follower.state.bindings:
        raise CommandRejected(
            "exists", f"binding {new_id} already ties {pattern} to this certificate"
        )
    created = BindingCreated.create(
        binding_id=new_id,
        kind=kind,
        pattern=pattern,
        certificate=pem_of(certificate),
        chain=tuple(pem_of(c) for c in chain),
        key_id=key_id,
        local_cert=local_cert,
        file_name=file_name,
    )
    warnings = [
        ConfigWarning.create(
            entry_kind="binding", entry_id=new_id, code=code, message=message
        )
        for code, message in key_warnings
    ]
    warnings += binding_warnings(follower, new_id, pattern, certificate)
    await publish_config(runtime, [created, *warnings], follower.state.last_sequence)
    return CommandReply(
        ok=True,
        result={"id": new_id, "pattern": pattern, "identity": facts.identity},
        warnings=tuple(w.message for w in warnings),
    )


def _failure(category: str, message: str) -> CommandReply:
    return CommandReply(
        ok=False, error=CommandFailure(category=category, message=message)
    )

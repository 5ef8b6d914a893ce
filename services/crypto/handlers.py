"""S/MIME processing of each plan, dispatched by the plan's action."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field

from schemas import (
    CryptoOperation,
    Event,
    MailDecrypted,
    MailProcessed,
    MailRouted,
    MailVerified,
    SignerReport,
)
from smimegw import metrics
from smimegw.runtime import Attempt, Runtime
from smimegw.telemetry import crypto_span, stage_span

log = logging.getLogger("smimegw.crypto")


@dataclass(frozen=True)
class StreamedBody:
    """A body that is produced chunk by chunk while it is stored.

    Producing a chunk can be CPU-bound work (encryption), so chunks are read in a
    worker thread.
    """

    size: int
    chunks: Iterator[bytes | memoryview] = field(repr=False)


@dataclass(frozen=True)
class Transformed:
    """A new body for a plan, what was done to make it, and events to publish."""

    # A bytearray when it was written in place (see outgoing.protect_message). Not
    # in the repr, which must never show a message body (asyncio reprs the results
    # of tasks, and a 30 MB body made a repr of over 100 MB).
    body: bytes | bytearray | StreamedBody = field(repr=False)
    operations: tuple[CryptoOperation, ...]
    events: tuple[Event, ...] = field(default=())


# Turns a plan and the received message into the message to deliver.
Transform = Callable[[MailRouted, bytes], Awaitable[Transformed]]


class CryptoHandlers:
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        # Set by the service once the configuration and keys are loaded.
        self.protect: Transform | None = None
        self.open: Transform | None = None

    async def on_routed(self, event: MailRouted, attempt: Attempt) -> None:
        if event.action in ("protect", "open"):
            processed = await self._transform(event, attempt)
        else:
            # No S/MIME operation; the span still shows the plan in the trace.
            with crypto_span(event.action, None, None):
                processed = self._unchanged(event)
        await self.runtime.publish(processed)
        log.info("processed plan %s: %s", event.plan_id, event.action)

    def _unchanged(self, event: MailRouted) -> MailProcessed:
        """Relay and bounce plans deliver (or return) the received body itself."""
        return MailProcessed.create(
            cause=event,
            sender=event.sender,
            recipients=event.recipients,
            operations=(),
            body=event.body,
            profile=event.profile.name if event.profile else None,
            bounce_status=event.status if event.action == "bounce" else None,
            bounce_reason=event.reason if event.action == "bounce" else None,
            original_body=event.body.key,
            plans=event.groups,
        )

    async def _transform(self, event: MailRouted, attempt: Attempt) -> MailProcessed:
        transform = self.protect if event.action == "protect" else self.open
        if transform is None:
            raise RuntimeError("crypto service is not started: no keys loaded yet")
        message = await self.runtime.bodies.get(event.body)
        # The stage span; each S/MIME operation inside adds its own crypto_span.
        attributes = {"smimegw.plan_id": event.plan_id}
        with stage_span(f"crypto.{event.action}", attributes) as span:
            result = await transform(event, message)
            done = ",".join(op.operation for op in result.operations)
            span.set_attribute("smimegw.crypto.operations", done)
        # Freed here, unless a streamed result still reads from it, so that a large
        # message is not held while its result is stored.
        del message
        for extra in result.events:
            await self.runtime.publish(extra)
        count_results(result)
        key = _body_key(event.plan_id, attempt)
        streamed = isinstance(result.body, StreamedBody)
        # A result over 1 MiB is encrypted and encoded while it is stored, so
        # this span, not the stage span, shows that work for a large message.
        store_attributes = {
            "smimegw.plan_id": event.plan_id,
            "smimegw.crypto.streamed": streamed,
        }
        with stage_span("crypto.store", store_attributes):
            if isinstance(result.body, StreamedBody):
                chunks = read_in_thread(result.body.chunks)
                ref = await self.runtime.bodies.put_chunks(key, chunks)
            else:
                ref = await self.runtime.bodies.put(key, result.body)
        return MailProcessed.create(
            cause=event,
            sender=event.sender,
            recipients=event.recipients,
            operations=result.operations,
            body=ref,
            profile=event.profile.name if event.profile else None,
            release_bodies=(key,),
            original_body=event.body.key,
            plans=event.groups,
        )


def _body_key(plan_id: str, attempt: Attempt) -> str:
    """Return the key that this attempt stores its result under.

    Each attempt encrypts with a new key and IV, so its bytes differ from an
    earlier attempt's. The body store deduplicates chunks by key and index: under
    one key, the chunks of an attempt that stored its result but failed to publish
    it would stay, and the retry's reference would not match them. The stream
    sequence separates a redelivery from a parked message sent back with
    `parked retry`.
    NOTE: the body of the attempt whose mail.processed was not used stays in
    BODIES, since no event refers to it.
    """
    return f"{plan_id}-{attempt.stream_sequence}-{attempt.number}"


async def read_in_thread(
    chunks: Iterator[bytes | memoryview],
) -> AsyncIterator[bytes | memoryview]:
    """Yield `chunks`, reading about 1 MiB of them per hop to a worker thread."""
    while batch := await asyncio.to_thread(_take, chunks, _BATCH_BYTES):
        for chunk in batch:
            yield chunk


_BATCH_BYTES = 1024 * 1024


def _take(chunks: Iterator[bytes | memoryview], size: int) -> list[bytes | memoryview]:
    """Read chunks until they add up to `size` bytes or run out."""
    batch: list[bytes | memoryview] = []
    total = 0
    for chunk in chunks:
        batch.append(chunk)
        total += len(chunk)
        if total >= size:
            break
    return batch


def count_results(result: Transformed) -> None:
    """Count each S/MIME operation by its result for the metrics endpoint."""
    for operation in result.operations:
        if operation.operation in ("sign", "encrypt", "decrypt"):
            metrics.record_crypto(operation.operation, "ok")
    for extra in result.events:
        if isinstance(extra, MailDecrypted) and extra.status != "decrypted":
            metrics.record_crypto("decrypt", extra.status)
        if isinstance(extra, MailVerified):
            for layer in extra.layers:
                for signer in layer:
                    metrics.record_crypto("verify", verify_result(signer))


def verify_result(signer: SignerReport) -> str:
    """Summarise a signer in one word: invalid, weak, untrusted, ... or valid."""
    if signer.signature == "invalid":
        return "invalid"
    if signer.weak:
        return "weak"
    if signer.certificate_status != "trusted":
        return signer.certificate_status
    return "valid"

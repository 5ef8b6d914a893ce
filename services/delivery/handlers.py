"""Delivery of processed mail: per-recipient outcomes, retries, bounces.

The outcome of each recipient is stored in the `delivery_state` bucket before
the events about it are published and before the bus message is acked. A
redelivered message therefore skips the recipients already finished and only
publishes their events again (with the same ids).

The window that cannot be closed is the time from the next hop's 250 to the
stored state. A crash inside it, or a state write that keeps failing for half
of bus.ack_wait, makes the redelivery send that copy again. benchmarks/soak
measured it on 10,000 messages in a three-node cluster on two shared cores:
median 21 ms, 99th percentile 0.23 s, max 0.89 s.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta

import nats.errors
from nats.js.errors import (
    BadRequestError,
    KeyNotFoundError,
    KeyWrongLastSequenceError,
    ServiceUnavailableError,
)
from nats.js.kv import KeyValue

from schemas import BodyRef, MailBounced, MailDeferred, MailDelivered, MailProcessed
from services.delivery import outbox, relay
from services.delivery.dsn import FailedRecipient, build_dsn
from smimegw import metrics, streams
from smimegw.bodies import BodyNotFoundError
from smimegw.runtime import Attempt, RetryLater, Runtime
from smimegw.settings import parse_host_port
from smimegw.telemetry import stage_span

log = logging.getLogger("smimegw.delivery")


@dataclass
class Outcome:
    recipients: list[str]
    result: str  # "delivered" or "bounced"
    reply: str
    status: str
    attempt: int
    dsn_queued: bool = False


@dataclass
class DeliveryState:
    """The per-recipient outcomes stored in the bucket for one mail.processed event."""

    outcomes: list[Outcome] = field(default_factory=list)
    deferrals: int = 0

    @property
    def finished(self) -> set[str]:
        return {r for o in self.outcomes for r in o.recipients}

    def encode(self) -> bytes:
        return json.dumps(asdict(self)).encode()

    @classmethod
    def decode(cls, data: bytes) -> DeliveryState:
        raw = json.loads(data)
        return cls(
            outcomes=[Outcome(**o) for o in raw["outcomes"]],
            deferrals=raw["deferrals"],
        )


class DeliveryHandlers:
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        settings = runtime.settings.delivery
        self.settings = settings
        self.relay = (
            parse_host_port(settings.relay_host, "delivery.relay_host")
            if settings.relay_host
            else None
        )
        self.next_hop = (
            f"smtp:{settings.relay_host}"
            if self.relay
            else f"outbox:{settings.outbox_dir}"
        )
        self._kv: KeyValue | None = None
        self.connections = relay.ConnectionCache(
            idle_limit=settings.connection_cache_time.total_seconds(),
            reuse_limit=settings.connection_reuse_time.total_seconds(),
        )

    async def kv(self) -> KeyValue:
        if self._kv is None:
            self._kv = await self.runtime.js.key_value(streams.DELIVERY_BUCKET)
        return self._kv

    async def _record(self, key: str, state: DeliveryState) -> None:
        """Store the next hop's replies, retrying while JetStream is unavailable.

        The next hop has already accepted the message: a record that fails
        makes the redelivery send it again. The put is idempotent, so it is
        retried for up to half of bus.ack_wait, which covers a cluster electing
        a new stream leader after losing a node, and ends before JetStream
        hands the message to another replica.
        """
        budget = self.runtime.settings.bus.ack_wait.total_seconds() / 2
        deadline = time.monotonic() + budget
        delay = 0.1
        while True:
            try:
                await (await self.kv()).put(key, state.encode())
                return
            except (
                nats.errors.TimeoutError,
                nats.errors.NoRespondersError,
                nats.errors.ConnectionReconnectingError,
                ServiceUnavailableError,
            ) as err:
                if time.monotonic() + delay > deadline:
                    raise
                log.warning(
                    "recording the delivery failed (%s); retrying in %.1f s",
                    type(err).__name__,
                    delay,
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)

    async def _release(self, body_keys: list[str]) -> None:
        """Mark the bodies released (see streams.released_key), then delete them.

        The requests of each step go to the server together.
        """
        kv = await self.kv()
        await asyncio.gather(
            *(kv.put(streams.released_key(body_key), b"") for body_key in body_keys)
        )
        await asyncio.gather(
            *(self.runtime.bodies.delete(body_key) for body_key in body_keys)
        )

    async def _body_if_stored(self, ref: BodyRef) -> bytes | None:
        try:
            return await self.runtime.bodies.get(ref)
        except BodyNotFoundError:
            return None

    async def load_state(self, key: str) -> DeliveryState:
        try:
            entry = await (await self.kv()).get(key)
        except KeyNotFoundError:
            return DeliveryState()
        return DeliveryState.decode(entry.value or b"{}")

    async def on_processed(self, event: MailProcessed, attempt: Attempt) -> None:
        key = event.event_id
        message: bytes | None = None
        if attempt.number == 1:
            # A first attempt almost always finds no state and needs the body,
            # so both requests go to the server together. If the event was
            # published twice and its first copy finished, the body is released
            # and the state records every recipient as done. A redelivery reads
            # the state first.
            state, message = await asyncio.gather(
                self.load_state(key), self._body_if_stored(event.body)
            )
        else:
            state = await self.load_state(key)
        pending = [r for r in event.recipients if r not in state.finished]
        # A DSN whose queuing failed after its bounce was recorded is queued by
        # the redelivery, although every recipient is finished by then.
        if pending or _dsns_missing(event, state):
            if message is None:
                message = await self.runtime.bodies.get(event.body)
            if pending and event.bounce_status is not None:
                await self._bounce_unsent(event, attempt, state, pending)
            elif pending:
                await self._attempt(event, attempt, state, pending, message)
            await self._queue_dsns(event, attempt, state, message)
        del message
        # Publish (again, after a redelivery) the events of every outcome.
        await asyncio.gather(
            *(self._publish_outcome(event, outcome) for outcome in state.outcomes)
        )
        deferred = [r for r in event.recipients if r not in state.finished]
        if deferred:
            raise RetryLater(self._backoff(state.deferrals), "recipients deferred")
        released = list(event.release_bodies)
        original = event.original_body
        if original is not None and (
            event.plans <= 1 or await self._last_plan(event, original)
        ):
            released.append(original)
        await self._release(released)

    async def _bounce_unsent(
        self,
        event: MailProcessed,
        attempt: Attempt,
        state: DeliveryState,
        pending: list[str],
    ) -> None:
        """Record a bounce that policy decided, such as a missing certificate."""
        state.outcomes.append(
            Outcome(
                pending,
                "bounced",
                event.bounce_reason or "rejected by policy",
                event.bounce_status or "5.7.1",
                attempt.number,
            )
        )
        await (await self.kv()).put(event.event_id, state.encode())
        metrics.record_delivery("bounced", len(pending))

    async def _last_plan(self, event: MailProcessed, original: str) -> bool:
        """Count this plan as finished; return whether every plan of the message is.

        The last one releases the received body. The count lives in the bucket
        and is updated by compare-and-set with a retry on conflict, so replicas
        that finish plans of one message at once do not lose an update.
        """
        kv = await self.kv()
        key = f"plans-{original}"
        while True:
            try:
                entry = await kv.get(key)
                done = set(json.loads(entry.value or b"[]"))
                revision = entry.revision
            except KeyNotFoundError:
                done, revision = set(), None
            if event.event_id in done:
                break
            done.add(event.event_id)
            value = json.dumps(sorted(done)).encode()
            try:
                if revision is None:
                    await kv.create(key, value)
                else:
                    await kv.update(key, value, last=revision)
                break
            except (KeyWrongLastSequenceError, BadRequestError):
                continue
        return len(done) >= event.plans

    async def _attempt(
        self,
        event: MailProcessed,
        attempt: Attempt,
        state: DeliveryState,
        pending: list[str],
        message: bytes,
    ) -> None:
        attributes = {
            "smimegw.next_hop": self.next_hop,
            "smimegw.delivery.attempt": attempt.number,
            "smimegw.delivery.recipients": len(pending),
        }
        with stage_span("delivery.attempt", attributes) as span:
            replies = await self._hand_off(event, pending, message)
            # The highest reply code is the one that decides what happens next.
            span.set_attribute(
                "smimegw.smtp.reply_code", max(r.code for r in replies.values())
            )
        expired = datetime.now(UTC) - event.time > self.settings.max_age
        by_result: dict[tuple[str, str, str], list[str]] = {}
        temporary: dict[str, relay.Reply] = {}
        for recipient, reply in replies.items():
            if reply.accepted:
                by_result.setdefault(("delivered", str(reply), "2.0.0"), []).append(
                    recipient
                )
            elif reply.permanent or expired:
                status = reply.enhanced_status() if reply.permanent else "4.4.7"
                text = (
                    str(reply)
                    if reply.permanent
                    else f"message expired after {self.settings.max_age}; last "
                    f"reply: {reply}"
                )
                by_result.setdefault(("bounced", text, status), []).append(recipient)
            else:
                temporary[recipient] = reply
        for (result, text, status), recipients in by_result.items():
            state.outcomes.append(
                Outcome(recipients, result, text, status, attempt.number)
            )
        if temporary:
            state.deferrals += 1
        await self._record(event.event_id, state)
        _count_outcomes(by_result, temporary)

        if temporary:
            delay = self._backoff(state.deferrals)
            first = next(iter(temporary.values()))
            await self.runtime.publish(
                MailDeferred.create(
                    cause=event,
                    key=str(state.deferrals),
                    recipients=tuple(temporary),
                    next_hop=self.next_hop,
                    reason=str(first),
                    attempt=state.deferrals,
                    retry_at=datetime.now(UTC) + timedelta(seconds=delay),
                )
            )
            log.warning(
                "deferred %d recipient(s) (%s); retry in %.0f s",
                len(temporary),
                first,
                delay,
            )

    async def _hand_off(
        self, event: MailProcessed, recipients: list[str], message: bytes
    ) -> dict[str, relay.Reply]:
        if self.relay is None:
            name = f"{event.queue_id}.{event.event_id[:8]}"
            path = await asyncio.to_thread(
                outbox.write_message,
                self.settings.outbox_dir,
                name,
                event.sender,
                recipients,
                message,
            )
            return dict.fromkeys(
                recipients, relay.Reply(250, f"2.0.0 written to {path}")
            )
        host, port = self.relay
        options = ["BODY=8BITMIME"] if not message.isascii() else []
        return await relay.send(
            host=host,
            port=port,
            helo=self.runtime.settings.smtp.hostname,
            sender=event.sender,
            recipients=recipients,
            message=message,
            mail_options=options,
            timeout=self.settings.connect_timeout.total_seconds(),
            cache=self.connections,
        )

    async def _queue_dsns(
        self,
        event: MailProcessed,
        attempt: Attempt,
        state: DeliveryState,
        message: bytes,
    ) -> None:
        """Queue a DSN for each bounce that has none yet, unless the sender is null.

        Each build of a DSN has its own Date and Message-ID, so each attempt
        stores it under a key of its own. Under one key, the body store keeps
        the chunks stored first, which would not match a later attempt's body.
        """
        for outcome in state.outcomes:
            queue_id = _dsn_queue_id(event, outcome)
            if outcome.result != "bounced" or outcome.dsn_queued or queue_id is None:
                continue
            remote = self.relay[0] if self.relay else None
            dsn = build_dsn(
                reporting_mta=self.runtime.settings.smtp.hostname,
                original_sender=event.sender,
                queue_id=event.queue_id or "",
                arrival=event.time,
                recipients=[
                    FailedRecipient(r, outcome.status, outcome.reply, remote)
                    for r in outcome.recipients
                ],
                message=message,
            )
            body_key = f"{queue_id}-{attempt.stream_sequence}-{attempt.number}"
            ref = await self.runtime.bodies.put(body_key, dsn)
            await self.runtime.publish(
                MailProcessed.create(
                    cause=event,
                    key=f"dsn/{queue_id}",
                    queue_id=queue_id,
                    kind="dsn",
                    sender="",
                    recipients=(event.sender,),
                    operations=(),
                    body=ref,
                    release_bodies=(body_key,),
                )
            )
            outcome.dsn_queued = True
            await (await self.kv()).put(event.event_id, state.encode())

    async def _publish_outcome(self, event: MailProcessed, outcome: Outcome) -> None:
        if outcome.result == "delivered":
            delivered = MailDelivered.create(
                cause=event,
                key=_outcome_key(outcome),
                recipients=tuple(outcome.recipients),
                next_hop=self.next_hop,
                reply=outcome.reply,
                attempt=outcome.attempt,
            )
            await self.runtime.publish(delivered)
            log.info("delivered to %d recipient(s)", len(outcome.recipients))
        else:
            bounced = MailBounced.create(
                cause=event,
                key=_outcome_key(outcome),
                recipients=tuple(outcome.recipients),
                next_hop=self.next_hop,
                status=outcome.status,
                reason=outcome.reply,
                dsn_queue_id=_dsn_queue_id(event, outcome),
            )
            await self.runtime.publish(bounced)
            log.info(
                "bounced %d recipient(s): %s", len(outcome.recipients), outcome.reply
            )

    def _backoff(self, deferrals: int) -> float:
        initial = self.settings.retry_initial.total_seconds()
        cap = self.settings.retry_max.total_seconds()
        return float(min(initial * 2 ** max(deferrals - 1, 0), cap))


def _count_outcomes(
    by_result: dict[tuple[str, str, str], list[str]],
    temporary: dict[str, relay.Reply],
) -> None:
    for (result, _, _), recipients in by_result.items():
        kind: metrics.DeliveryResult = (
            "delivered" if result == "delivered" else "bounced"
        )
        metrics.record_delivery(kind, len(recipients))
    if temporary:
        metrics.record_delivery("deferred", len(temporary))


def _dsns_missing(event: MailProcessed, state: DeliveryState) -> bool:
    """Return whether a bounce recorded in `state` still needs its DSN queued."""
    return any(
        not outcome.dsn_queued and _dsn_queue_id(event, outcome) is not None
        for outcome in state.outcomes
    )


def _outcome_key(outcome: Outcome) -> str:
    return f"{outcome.result}/{outcome.attempt}/{','.join(outcome.recipients)}"


def _dsn_queue_id(event: MailProcessed, outcome: Outcome) -> str | None:
    """Derive the DSN's queue id, so that a retry builds the same DSN.

    None for a message from the null sender: RFC 5321 section 4.5.5 forbids a
    DSN about a DSN.
    """
    if outcome.result != "bounced" or not event.sender:
        return None
    digest = hashlib.sha256(f"{event.event_id}/{_outcome_key(outcome)}".encode())
    return "D" + digest.hexdigest()[:17].upper()

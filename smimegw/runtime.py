"""What every service shares: the NATS connection, publishing and consuming events.

A consumer here acks a bus message only after its handler returned, which means
after the handler published its own output. Handlers are therefore called at
least once per message and must be idempotent. A handler that raises is retried
with back-off up to `bus.max_deliver` times. An error that retrying cannot fix
(`PermanentError`, or bytes that are not a valid event) parks the message at once
on `parked.<stage>` with a `mail.parked` event, so it never blocks the ones
behind it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import nats.errors
from faststream import AckPolicy
from faststream.exceptions import IncorrectState
from faststream.nats import JStream, NatsBroker, NatsMessage, PullSub
from faststream.nats.opentelemetry import NatsTelemetryMiddleware
from faststream.nats.prometheus import NatsPrometheusMiddleware
from nats.aio.client import Client
from nats.errors import NoRespondersError, NoServersError
from nats.js import JetStreamContext
from nats.js.api import AckPolicy as JsAckPolicy
from nats.js.api import ConsumerConfig, DeliverPolicy
from nats.js.errors import KeyNotFoundError, ServiceUnavailableError

from schemas import Event, EventDecodeError, MailParked
from smimegw import metrics, natsauth, streams, telemetry
from smimegw.bodies import BodyNotFoundError, BodyStore
from smimegw.logs import message_context
from smimegw.settings import Settings

log = logging.getLogger("smimegw.runtime")

E = TypeVar("E", bound=Event)


class PermanentError(Exception):
    """An error that retrying cannot fix: the message is parked at once."""


class RetryLater(Exception):
    """Ask for the message again after `delay` seconds, without counting as an error."""

    def __init__(self, delay: float, reason: str) -> None:
        super().__init__(reason)
        self.delay = delay


@dataclass(frozen=True)
class Attempt:
    """The delivery count and stream position of a bus message."""

    number: int
    stream_sequence: int
    subject: str


Handler = Callable[[E, Attempt], Awaitable[None]]


def _stream_of(subject: str) -> str:
    if subject.startswith("config."):
        return streams.CONFIG
    if subject.startswith("mail."):
        return streams.MAIL
    raise ValueError(f"no stream contains subject {subject!r}")


class Runtime:
    """One service's connection to the bus."""

    def __init__(
        self,
        service: str,
        settings: Settings,
        nats_url: str,
        broker: NatsBroker | None = None,
    ) -> None:
        self.service = service
        self.settings = settings
        self.nats_url = nats_url
        self.tracer_provider = telemetry.build_tracer_provider(
            service, settings.telemetry
        )
        self.tracer = self.tracer_provider.get_tracer(telemetry.INSTRUMENTATION_NAME)
        self.metrics_server: metrics.MetricsServer | None = None
        self.broker = broker or NatsBroker(
            # A cluster's client URLs, comma-separated; the client also learns
            # the other members from the server it reaches.
            [url.strip() for url in nats_url.split(",") if url.strip()],
            security=natsauth.broker_security(settings),
            inbox_prefix=natsauth.inbox_of(settings),
            max_reconnect_attempts=-1,
            reconnect_time_wait=1,
            connect_timeout=max(1, int(settings.nats.connect_timeout.total_seconds())),
            graceful_timeout=30.0,
            logger=logging.getLogger(f"smimegw.{service}.faststream"),
            # The level of FastStream's "Received" and "Processed" lines, one
            # pair per bus message. Each service logs its own outcome, with
            # the ids that matter.
            log_level=logging.DEBUG,
            # Handlers take the bus message as it is (see consume). With
            # FastStream's dependency injection on, resolving the message
            # argument ran in a worker thread for every message.
            apply_types=False,
            middlewares=(
                NatsTelemetryMiddleware(tracer_provider=self.tracer_provider),
                NatsPrometheusMiddleware(
                    registry=metrics.REGISTRY,
                    app_name=f"smimegw-{service}",
                    metrics_prefix="smimegw_bus",
                ),
            ),
        )
        self._bodies: BodyStore | None = None

    @property
    def nc(self) -> Client:
        return self.broker.connection

    @property
    def connected(self) -> bool:
        """Whether the NATS connection is up (false before connecting)."""
        try:
            return self.nc.is_connected
        except IncorrectState:
            return False

    @property
    def js(self) -> JetStreamContext:
        return self.nc.jetstream()

    @property
    def bodies(self) -> BodyStore:
        if self._bodies is None:
            self._bodies = BodyStore(self.nc, self.js)
        return self._bodies

    def start_metrics(self) -> None:
        """Serve GET /metrics on `telemetry.metrics_listen`, if it is set.

        A port already in use is logged and the service runs on without
        metrics: losing the endpoint must not stop mail.
        """
        listen = self.settings.telemetry.metrics_listen
        if not listen or self.metrics_server is not None:
            return
        server = metrics.MetricsServer(listen)
        try:
            server.start()
        except OSError as err:
            log.error(
                "%s serves no metrics: cannot listen on %s (%s); give each "
                "process its own telemetry.metrics_listen port",
                self.service,
                listen,
                err,
            )
            return
        self.metrics_server = server
        host, port = server.address
        log.info("metrics on http://%s:%d/metrics", host, port)

    def close(self) -> None:
        """Stop the metrics endpoint and export the spans still buffered."""
        if self.metrics_server is not None:
            self.metrics_server.stop()
            self.metrics_server = None
        self.tracer_provider.shutdown()

    async def connect(self, stop: asyncio.Event | None = None) -> bool:
        """Connect and provision, retrying while the broker is not ready yet.

        In a cluster, JetStream serves no API request while a restarted node
        rejoins and a meta leader is elected, so provisioning is retried as
        well; readiness stays 503 meanwhile. Returns False, connected or not,
        when `stop` is set first: a service asked to stop while NATS is
        unreachable must exit rather than wait for it.
        """
        stopping = asyncio.Event() if stop is None else stop
        delay = 0.2
        connected = False
        while True:
            try:
                if not connected:
                    if not await self._open_connection(stopping):
                        return False
                    connected = True
                await streams.provision(self.js, self.settings)
                return True
            except (
                NoServersError,
                NoRespondersError,
                ServiceUnavailableError,
                OSError,
                TimeoutError,
            ) as err:
                log.warning(
                    "NATS at %s not %s (%s); retrying in %.1f s",
                    self.nats_url,
                    "ready for JetStream" if connected else "reachable",
                    type(err).__name__,
                    delay,
                )
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stopping.wait(), delay)
                if stopping.is_set():
                    return False
                delay = min(delay * 2, 5.0)

    async def _open_connection(self, stop: asyncio.Event) -> bool:
        """Connect the broker, logging while it waits; False when `stop` comes first.

        With unlimited reconnect attempts, nats-py's first connect retries an
        unreachable server forever without raising, so the wait is bounded
        here by `stop` alone, and each period without a connection is logged.
        """
        connecting = asyncio.ensure_future(self.broker.connect())
        stopped = asyncio.ensure_future(stop.wait())
        waited = 0.0
        period = 5.0
        try:
            while not connecting.done():
                done, _ = await asyncio.wait(
                    {connecting, stopped},
                    timeout=period,
                    return_when=asyncio.FIRST_COMPLETED,
                )
                if stopped in done and not connecting.done():
                    return False
                if not done:
                    waited += period
                    log.warning(
                        "NATS at %s not reachable after %.0f s; still trying",
                        self.nats_url,
                        waited,
                    )
            connecting.result()
            return True
        finally:
            stopped.cancel()
            if not connecting.done():
                connecting.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await connecting

    async def publish(self, event: Event, timeout: float = 10.0) -> None:
        """Publish to the event's stream and wait for JetStream's ack.

        Nats-Msg-Id is the event id, so publishing the same event twice within
        the duplicate window stores it once.
        """
        await self.broker.publish(
            event.encode(),
            event.type,
            stream=_stream_of(event.type),
            headers={"Nats-Msg-Id": event.event_id},
            timeout=timeout,
        )
        metrics.record_published(event)

    def consume(
        self,
        subject: str,
        event_type: type[E],
        handler: Handler[E],
        *,
        durable: str | None = None,
        concurrency: int = 16,
        max_deliver: int | None = None,
    ) -> None:
        """Register a durable pull consumer shared by every replica of the service."""
        bus = self.settings.bus
        durable = durable or self.service
        config = ConsumerConfig(
            durable_name=durable,
            deliver_policy=DeliverPolicy.ALL,
            ack_policy=JsAckPolicy.EXPLICIT,
            ack_wait=bus.ack_wait.total_seconds(),
            # The wrapper parks a message at bus.max_deliver attempts. The
            # server's bound is a little higher, so a lost ack cannot make
            # JetStream drop a message the wrapper has not parked yet. Handlers
            # that defer on purpose (RetryLater) pass a larger bound.
            max_deliver=max_deliver or bus.max_deliver + 2,
            max_ack_pending=concurrency * 64,
            filter_subject=subject,
        )
        wrapper = _ConsumerWrapper(self, durable, event_type, handler)
        subscriber = self.broker.subscriber(
            subject,
            stream=JStream(_stream_of(subject), declare=False),
            durable=durable,
            config=config,
            pull_sub=PullSub(batch_size=concurrency, timeout=1.0),
            max_workers=concurrency,
            ack_policy=AckPolicy.MANUAL,
            # Pull requests' replies under this user's own inbox prefix.
            inbox_prefix=f"{natsauth.inbox_of(self.settings)}.".encode(),
            title=f"{self.service}:{subject}",
            description=f"{event_type.__doc__ or ''} Consumed by {self.service}.",
            # The wrapper decodes the event itself, strictly; FastStream's
            # decoder would parse the JSON once more for nothing.
            decoder=_undecoded,
        )
        context = self.broker.context

        async def on_message(_: bytes) -> None:
            await wrapper(context.get_local("message"))

        subscriber(on_message)


async def _undecoded(msg: NatsMessage) -> bytes:
    return msg.body


class _ConsumerWrapper:
    def __init__(
        self, runtime: Runtime, stage: str, event_type: type[E], handler: Handler[E]
    ) -> None:
        self.runtime = runtime
        self.stage = stage
        self.event_type = event_type
        self.handler: Handler[Any] = handler

    async def __call__(self, msg: NatsMessage) -> None:
        raw = msg.raw_message
        meta = raw.metadata
        attempt = Attempt(
            number=meta.num_delivered,
            stream_sequence=meta.sequence.stream,
            subject=raw.subject,
        )
        try:
            event = self.event_type.decode(raw.data)
        except EventDecodeError as err:
            await self._park(raw.data, raw.headers, attempt, None, str(err))
            await msg.ack()
            return
        with (
            message_context(event.queue_id, event.event_id),
            telemetry.use_tracer(self.runtime.tracer),
            metrics.time_stage(self.stage),
        ):
            await self._handle(msg, event, attempt)

    async def _handle(self, msg: NatsMessage, event: Event, attempt: Attempt) -> None:
        raw = msg.raw_message
        try:
            await self.handler(event, attempt)
        except RetryLater as err:
            await msg.nack(delay=err.delay)
            return
        except PermanentError as err:
            await self._park(raw.data, raw.headers, attempt, event, str(err))
        # A service boundary: any other error is logged, retried with back-off,
        # and parked once the budget is spent, so no message is dropped.
        except Exception as err:
            if isinstance(err, BodyNotFoundError) and await self._released(err.key):
                # A redelivery after the message finished: its ack was lost
                # while later stages completed and released the body.
                log.info(
                    "%s acked a stale redelivery: body %s was released",
                    self.stage,
                    err.key,
                )
                await msg.ack()
                return
            budget = self.runtime.settings.bus.max_deliver
            if attempt.number < budget:
                delay = min(2.0 ** (attempt.number - 1), 60.0)
                log.warning(
                    "%s failed on attempt %d of %d (%s: %s); retrying in %.0f s",
                    self.stage,
                    attempt.number,
                    budget,
                    type(err).__name__,
                    err,
                    delay,
                    exc_info=log.isEnabledFor(logging.DEBUG),
                )
                await msg.nack(delay=delay)
                return
            log.error("%s gave up after %d attempts", self.stage, attempt.number)
            reason = f"{type(err).__name__}: {err}"
            await self._park(raw.data, raw.headers, attempt, event, reason)
        await msg.ack()

    async def _released(self, body_key: str) -> bool:
        try:
            kv = await self.runtime.js.key_value(streams.DELIVERY_BUCKET)
            await kv.get(streams.released_key(body_key))
        except KeyNotFoundError:
            return False
        except nats.errors.Error as err:
            log.warning("cannot tell whether body %s was released: %s", body_key, err)
            return False
        return True

    async def _park(
        self,
        data: bytes,
        headers: dict[str, str] | None,
        attempt: Attempt,
        event: Event | None,
        reason: str,
    ) -> None:
        """Copy the bus message to `parked.<stage>` and publish `mail.parked`."""
        runtime = self.runtime
        parked_id = f"parked/{self.stage}/{attempt.subject}/{attempt.stream_sequence}"
        park_headers = {
            "Nats-Msg-Id": parked_id,
            "Smimegw-Parked-Subject": attempt.subject,
            "Smimegw-Parked-Reason": reason[:500],
        }
        await runtime.js.publish(
            f"parked.{self.stage}",
            data,
            stream=streams.PARKED,
            headers=park_headers,
        )
        fields: dict[str, Any] = {
            "stage": self.stage,
            "subject": attempt.subject,
            "stream_sequence": attempt.stream_sequence,
            "reason": reason[:2000],
            "attempts": attempt.number,
        }
        if event is not None:
            parked = MailParked.create(cause=event, key=self.stage, **fields)
        else:
            parked = MailParked.create(**fields)
        await runtime.publish(parked)
        metrics.record_parked(self.stage)
        log.error(
            "parked %s message %d from %s: %s",
            attempt.subject,
            attempt.stream_sequence,
            self.stage,
            reason,
        )

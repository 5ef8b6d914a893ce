"""Consumers of the MAIL and CONFIG streams in order, and the query responder."""

from __future__ import annotations

import asyncio
import json
import logging
from datetime import datetime
from typing import Any

import nats.errors
from nats.aio.msg import Msg
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from services.audit.store import AuditStore, AuditStoreError, record_of
from smimegw import streams
from smimegw.runtime import Runtime
from smimegw.settings import parse_duration
from smimegw.telemetry import trace_id_of

log = logging.getLogger("smimegw.audit")

QUERY_SUBJECT = "smimegw.audit.query"
_BATCH = 256
_MAX_LIMIT = 10_000


class AuditConsumer:
    """Stores one stream's events in stream order, a batch per transaction."""

    def __init__(self, runtime: Runtime, store: AuditStore, stream: str) -> None:
        self.runtime = runtime
        self.store = store
        self.stream = stream
        self.durable = f"audit_{stream.lower()}"

    async def run(self, stop: asyncio.Event) -> None:
        js = self.runtime.js
        config = ConsumerConfig(
            durable_name=self.durable,
            deliver_policy=DeliverPolicy.ALL,
            ack_policy=AckPolicy.EXPLICIT,
            ack_wait=self.runtime.settings.bus.ack_wait.total_seconds(),
            max_ack_pending=_BATCH * 4,
        )
        subscription = await js.pull_subscribe(
            "", durable=self.durable, stream=self.stream, config=config
        )
        try:
            await self._fetch_loop(subscription, stop)
        finally:
            await subscription.unsubscribe()

    async def _fetch_loop(
        self, subscription: JetStreamContext.PullSubscription, stop: asyncio.Event
    ) -> None:
        while not stop.is_set():
            try:
                messages = await subscription.fetch(_BATCH, timeout=1.0)
            except (TimeoutError, NatsTimeoutError):
                continue
            except nats.errors.Error as err:
                # Disconnected or the server restarting: the client reconnects.
                log.warning("fetching %s events failed: %s", self.stream, err)
                await asyncio.sleep(1.0)
                continue
            try:
                await self.store_batch(messages)
            except AuditStoreError as err:
                # Unacked messages come back after ack_wait, in stream order
                # because the consumer delivers them again from the first.
                log.error("storing %s events failed: %s", self.stream, err)
                await asyncio.sleep(1.0)

    async def store_batch(self, messages: list[Msg]) -> None:
        records = [
            record_of(
                self.stream,
                m.metadata.sequence.stream,
                m.data,
                trace_id_of((m.headers or {}).get("traceparent")),
            )
            for m in messages
        ]
        added = await asyncio.to_thread(self.store.add, records)
        for message in messages:
            await message.ack()
        log.debug("stored %d of %d %s events", added, len(records), self.stream)


def parse_since(value: str) -> datetime:
    """Parse an ISO 8601 time, or a duration back from now such as "2h"."""
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return datetime.now().astimezone() - parse_duration(value)
    return moment if moment.tzinfo else moment.astimezone()


class AuditQueries:
    def __init__(self, runtime: Runtime, store: AuditStore) -> None:
        self.runtime = runtime
        self.store = store

    async def answer(self, message: Msg) -> None:
        try:
            request = json.loads(message.data or b"{}")
            since = parse_since(request["since"]) if request.get("since") else None
            limit = min(int(request.get("limit") or 1000), _MAX_LIMIT)
            records = await asyncio.to_thread(
                self.store.query_records,
                event_type=request.get("type"),
                queue_id=request.get("queue_id"),
                since=since,
                limit=limit + 1,
            )
            # One record more than requested shows whether older ones were left out.
            truncated = len(records) > limit
            records = records[1:] if truncated else records
            # "records": the stored rows with trace ids and hashes; otherwise
            # the events alone.
            key = "records" if request.get("records") else "events"
            items: list[Any] = [
                r.as_dict() if key == "records" else json.loads(r.data) for r in records
            ]
            reply: dict[str, Any] = {key: items, "truncated": truncated}
        except (ValueError, TypeError, KeyError) as err:
            reply = {"error": f"invalid audit query: {err}"}
        except AuditStoreError as err:
            log.error("audit query failed: %s", err)
            reply = {"error": "the audit store failed; see the audit service's log"}
        data = json.dumps(reply).encode()
        max_payload = self.runtime.nc.max_payload
        key = "records" if "records" in reply else "events"
        while len(data) > max_payload and reply.get(key):
            kept = reply[key][len(reply[key]) // 2 :]
            reply = {key: kept, "truncated": True}
            data = json.dumps(reply).encode()
        await message.respond(data)


def audit_streams() -> tuple[str, str]:
    return streams.MAIL, streams.CONFIG

"""Audit entry point: a consumer per stream and the query responder."""

from __future__ import annotations

import asyncio
import logging

from nats.aio.subscription import Subscription

from services.audit.handlers import (
    QUERY_SUBJECT,
    AuditConsumer,
    AuditQueries,
    audit_streams,
)
from services.audit.store import AuditStore, open_store
from smimegw.runtime import Runtime

log = logging.getLogger("smimegw.audit")


class AuditService:
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.store: AuditStore | None = None
        self.stop_event = asyncio.Event()
        self.tasks: list[asyncio.Task[None]] = []
        self.subscription: Subscription | None = None

    async def start(self) -> None:
        store = await asyncio.to_thread(open_store, self.runtime.settings)
        self.store = store
        for stream in audit_streams():
            consumer = AuditConsumer(self.runtime, store, stream)
            self.tasks.append(asyncio.create_task(consumer.run(self.stop_event)))
        queries = AuditQueries(self.runtime, store)
        self.subscription = await self.runtime.nc.subscribe(
            QUERY_SUBJECT, queue="audit", cb=queries.answer
        )

    async def stop(self) -> None:
        self.stop_event.set()
        if self.subscription is not None:
            await self.subscription.unsubscribe()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        if self.store is not None:
            self.store.close()


def build(runtime: Runtime) -> AuditService:
    return AuditService(runtime)

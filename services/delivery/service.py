"""Delivery entry point: consumes mail.processed."""

from __future__ import annotations

import math

from schemas import MailProcessed
from services.delivery.handlers import DeliveryHandlers
from smimegw.runtime import Runtime


class DeliveryService:
    def __init__(self, runtime: Runtime) -> None:
        self.handlers = DeliveryHandlers(runtime)
        delivery = runtime.settings.delivery
        # Deferrals redeliver the same bus message; bound them by the number of
        # attempts that fit in max_age at the shortest back-off, plus the error
        # budget.
        retries = math.ceil(delivery.max_age / delivery.retry_initial) + 1
        runtime.consume(
            "mail.processed",
            MailProcessed,
            self.handlers.on_processed,
            max_deliver=retries + runtime.settings.bus.max_deliver + 2,
        )

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        await self.handlers.connections.close()


def build(runtime: Runtime) -> DeliveryService:
    return DeliveryService(runtime)

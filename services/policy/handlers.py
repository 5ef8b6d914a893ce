"""Routing decisions."""

from __future__ import annotations

import logging

from schemas import MailReceived, MailRouted
from smimegw.runtime import Attempt, Runtime

log = logging.getLogger("smimegw.policy")


def plan(event: MailReceived) -> list[MailRouted]:
    """Split the recipients into groups with the same treatment.

    No delivery rules exist yet, so every message is one group relayed as is.
    """
    return [
        MailRouted.create(
            cause=event,
            key="0",
            plan_id=f"{event.queue_id}-0",
            group=0,
            groups=1,
            sender=event.sender,
            recipients=event.recipients,
            action="relay",
            reason="no delivery rule matched",
            body=event.body,
        )
    ]


class PolicyHandlers:
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime

    async def on_received(self, event: MailReceived, attempt: Attempt) -> None:
        plans = plan(event)
        for routed in plans:
            await self.runtime.publish(routed)
        log.info("routed into %d plan(s): %s", len(plans), plans[0].reason)

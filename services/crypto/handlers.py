"""S/MIME processing of each plan."""

from __future__ import annotations

import logging

from schemas import MailProcessed, MailRouted
from smimegw.runtime import Attempt, Runtime

log = logging.getLogger("smimegw.crypto")


def process(event: MailRouted) -> MailProcessed:
    """Apply the plan's action; "relay" passes the body through unchanged."""
    return MailProcessed.create(
        cause=event,
        sender=event.sender,
        recipients=event.recipients,
        operations=(),
        body=event.body,
        # NOTE: correct while a message has a single plan. With several plans
        # sharing one received body, it may be released only after the last.
        release_bodies=(event.body.key,),
    )


class CryptoHandlers:
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime

    async def on_routed(self, event: MailRouted, attempt: Attempt) -> None:
        processed = process(event)
        await self.runtime.publish(processed)
        log.info("processed plan %s: %s", event.plan_id, event.action)

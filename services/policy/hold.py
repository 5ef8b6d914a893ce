"""Copies held until a recipient's certificate arrives, or bounced after a timeout.

A held copy is an entry in the `held` bucket: the received event, the held
recipient and the plan's place among the message's plans. Every policy replica
checks the bucket periodically. A release publishes its events with ids derived
from the plan, before the entry is deleted, so two replicas releasing the same
copy publish it once (JetStream deduplication) and a crash in between releases it
again rather than losing it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta

import nats.errors
from nats.js.errors import KeyNotFoundError, NoKeysError
from nats.js.kv import KeyValue

from schemas import MailReceived, MailReleased, MailRouted
from smimegw import streams
from smimegw.runtime import Runtime

log = logging.getLogger("smimegw.policy")


@dataclass
class HeldCopy:
    plan_id: str
    group: int
    groups: int
    recipient: str
    profile: str
    reason: str
    release_by: str  # ISO 8601
    received: str  # the mail.received event, JSON

    def encode(self) -> bytes:
        return json.dumps(asdict(self)).encode()

    @classmethod
    def decode(cls, data: bytes) -> HeldCopy:
        return cls(**json.loads(data))


# Given the received event narrowed to one recipient, return the plan that can
# be made now, or None while the copy must still wait.
Replan = Callable[[MailReceived, HeldCopy], Awaitable[MailRouted | None]]


class HoldQueue:
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self._kv: KeyValue | None = None

    async def kv(self) -> KeyValue:
        if self._kv is None:
            self._kv = await self.runtime.js.key_value(streams.HELD_BUCKET)
        return self._kv

    async def hold(self, copy: HeldCopy) -> None:
        """Store the copy unless it is held already (a redelivered message)."""
        kv = await self.kv()
        try:
            await kv.get(copy.plan_id)
        except KeyNotFoundError:
            await kv.put(copy.plan_id, copy.encode())

    async def check(self, replan: Replan, now: datetime | None = None) -> int:
        """Release or time out each held copy that can be; return how many."""
        kv = await self.kv()
        try:
            keys = await kv.keys()
        except NoKeysError:
            return 0
        released = 0
        for key in keys:
            try:
                entry = await kv.get(key)
            except KeyNotFoundError:
                continue  # another replica released it meanwhile
            copy = HeldCopy.decode(entry.value or b"{}")
            if await self._check_one(copy, replan, now or datetime.now(UTC)):
                await kv.delete(key)
                released += 1
        return released

    async def _check_one(self, copy: HeldCopy, replan: Replan, now: datetime) -> bool:
        received = MailReceived.decode(copy.received.encode())
        release_by = datetime.fromisoformat(copy.release_by)
        if now >= release_by:
            routed = MailRouted.create(
                cause=received,
                key=f"{copy.plan_id}/release",
                plan_id=copy.plan_id,
                group=copy.group,
                groups=copy.groups,
                sender=received.sender,
                recipients=(copy.recipient,),
                action="bounce",
                reason=f"held until {copy.release_by} and still {copy.reason}",
                status="5.7.1",
                body=received.body,
            )
            outcome = "timed-out"
        else:
            narrowed = received.model_copy(update={"recipients": (copy.recipient,)})
            planned = await replan(narrowed, copy)
            if planned is None:
                return False
            routed = planned
            outcome = "certificate-imported"
        await self.runtime.publish(
            MailReleased.create(
                cause=received,
                key=copy.plan_id,
                plan_id=copy.plan_id,
                recipients=(copy.recipient,),
                outcome=outcome,
            )
        )
        await self.runtime.publish(routed)
        log.info("released held copy %s: %s", copy.plan_id, outcome)
        return True


async def run_checks(
    queue: HoldQueue, replan: Replan, interval: timedelta, stop: asyncio.Event
) -> None:
    """Check the held copies every `interval` until `stop` is set."""
    while not stop.is_set():
        try:
            await queue.check(replan)
        except (nats.errors.Error, OSError, TimeoutError, ValueError) as err:
            log.warning("checking held copies failed: %s", err)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), interval.total_seconds())

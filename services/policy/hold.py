"""Copies held until a recipient's certificate arrives, or bounced after a timeout.

A held copy is an entry in the `held` bucket: the received event, the held
recipient and the plan's place among the message's plans. Every policy replica
checks the bucket periodically. A release, a timeout or an operator's drop
first claims the entry: it writes the decision into it with compare-and-set on
its revision, so a release and a drop that race cannot both happen. The events,
with ids derived from the plan, are published after the claim and before the
entry is deleted. After a crash in between, the next check finds the claim and
carries out the same decision with the same event ids, which JetStream
deduplicates. An operator lists, releases and drops held copies with
`smimegw held`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Final, Literal

import nats.errors
from nats.js.errors import (
    KeyNotFoundError,
    KeyWrongLastSequenceError,
    NoKeysError,
)
from nats.js.kv import KeyValue

from schemas import MailReceived, MailReleased, MailRouted
from smimegw import streams
from smimegw.runtime import Runtime

log = logging.getLogger("smimegw.policy")


ReleaseOutcome = Literal["certificate-imported", "timed-out", "dropped"]
# The result of release when another replica or request decided first.
TAKEN: Final = "released-meanwhile"


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
    # The address whose certificate would release the copy: the recipient's
    # for encryption, the From address's for signing. None when no certificate
    # can help (no From, or an envelope sender other than From) and for copies
    # held before the field existed.
    waits_for: str | None = None
    # The decision claimed for this copy, carried out but maybe not finished.
    # For a release or a timeout, also the mail.routed event it publishes
    # (JSON), so the replica that finishes it publishes that same event even
    # if a certificate was deleted since.
    claimed: ReleaseOutcome | None = None
    claimed_routed: str | None = None
    # The entry's revision in the bucket when it was read; not stored.
    revision: int = field(default=0, compare=False)

    def encode(self) -> bytes:
        data = asdict(self)
        del data["revision"]
        return json.dumps(data).encode()

    @classmethod
    def decode(cls, data: bytes, revision: int = 0) -> HeldCopy:
        return cls(**json.loads(data), revision=revision)


# RFC 3463 X.7.1, delivery not authorized: no usable certificate arrived in
# time, or the operator refused this copy.
TIMED_OUT_STATUS = "5.7.1"
DROPPED_STATUS = "5.7.1"

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

    async def entries(self) -> list[HeldCopy]:
        """Return every held copy, in no particular order."""
        kv = await self.kv()
        try:
            keys = await kv.keys()
        except NoKeysError:
            return []
        copies = []
        for key in keys:
            try:
                entry = await kv.get(key)
            except KeyNotFoundError:
                continue  # released meanwhile
            copies.append(HeldCopy.decode(entry.value or b"{}", entry.revision or 0))
        return copies

    async def check(self, replan: Replan, now: datetime | None = None) -> int:
        """Release or time out each held copy that can be; return how many."""
        released = 0
        for copy in await self.entries():
            outcome = await self.release(copy, replan, now or datetime.now(UTC))
            if outcome not in (None, TAKEN):
                released += 1
        return released

    async def release(
        self, copy: HeldCopy, replan: Replan, now: datetime
    ) -> ReleaseOutcome | Literal["released-meanwhile"] | None:
        """Send the copy on if its certificate exists or its hold timed out.

        Returns the outcome; None while the copy must still wait; TAKEN when
        another replica or an operator decided its fate first. The periodic
        check and the operator's `held release` both come here. A decision
        claimed before a crash is carried out as it was prepared.
        """
        if copy.claimed == "dropped":
            return "dropped" if await self.drop(copy) else TAKEN
        received = MailReceived.decode(copy.received.encode())
        outcome: ReleaseOutcome
        if copy.claimed is not None and copy.claimed_routed is not None:
            outcome = copy.claimed
            routed = MailRouted.decode(copy.claimed_routed.encode())
        else:
            if now >= datetime.fromisoformat(copy.release_by):
                routed = _bounce(
                    received,
                    copy,
                    "release",
                    f"held until {copy.release_by} and still {copy.reason}",
                    TIMED_OUT_STATUS,
                )
                outcome = "timed-out"
            else:
                narrowed = received.model_copy(update={"recipients": (copy.recipient,)})
                planned = await replan(narrowed, copy)
                if planned is None:
                    return None
                routed = planned
                outcome = "certificate-imported"
            if not await self._claim(copy, outcome, routed):
                return TAKEN
        await self._publish_released(received, copy, outcome)
        await self.runtime.publish(routed)
        await self._forget(copy)
        log.info("released held copy %s: %s", copy.plan_id, outcome)
        return outcome

    async def drop(self, copy: HeldCopy) -> bool:
        """Bounce the copy to its sender at the operator's request.

        Returns False when the copy was released or dropped meanwhile.
        """
        if not await self._claim(copy, "dropped"):
            return False
        received = MailReceived.decode(copy.received.encode())
        await self._publish_released(received, copy, "dropped")
        await self.runtime.publish(
            _bounce(
                received,
                copy,
                "drop",
                f"dropped by operator while held: {copy.reason}",
                DROPPED_STATUS,
            )
        )
        await self._forget(copy)
        log.info("dropped held copy %s at the operator's request", copy.plan_id)
        return True

    async def _claim(
        self, copy: HeldCopy, outcome: ReleaseOutcome, routed: MailRouted | None = None
    ) -> bool:
        """Record `outcome` in the entry unless someone changed it since it was read.

        A drop claimed before a crash is finished again. A claim that prepared
        its events is someone else's decision. One that prepared none (written
        by an earlier version) published nothing of them yet and is taken over.
        """
        if copy.claimed == "dropped" or copy.claimed_routed is not None:
            return copy.claimed == outcome == "dropped"
        kv = await self.kv()
        claimed = replace(
            copy,
            claimed=outcome,
            claimed_routed=routed.encode().decode() if routed is not None else None,
        )
        try:
            await kv.update(copy.plan_id, claimed.encode(), last=copy.revision)
        except (KeyWrongLastSequenceError, KeyNotFoundError):
            log.info(
                "held copy %s was released or dropped meanwhile; %s skipped",
                copy.plan_id,
                outcome,
            )
            return False
        return True

    async def _publish_released(
        self, received: MailReceived, copy: HeldCopy, outcome: ReleaseOutcome
    ) -> None:
        await self.runtime.publish(
            MailReleased.create(
                cause=received,
                key=copy.plan_id,
                plan_id=copy.plan_id,
                recipients=(copy.recipient,),
                outcome=outcome,
            )
        )

    async def _forget(self, copy: HeldCopy) -> None:
        # Deleted only after its events are published. After a crash in between
        # the entry is still there, so the copy is handled again, and events
        # published again keep their ids, which JetStream deduplicates.
        kv = await self.kv()
        await kv.delete(copy.plan_id)


def _bounce(
    received: MailReceived, copy: HeldCopy, step: str, reason: str, status: str
) -> MailRouted:
    """Build the plan that bounces the held copy, with an id derived from `step`."""
    return MailRouted.create(
        cause=received,
        key=f"{copy.plan_id}/{step}",
        plan_id=copy.plan_id,
        group=copy.group,
        groups=copy.groups,
        sender=received.sender,
        recipients=(copy.recipient,),
        action="bounce",
        reason=reason,
        status=status,
        body=received.body,
    )


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

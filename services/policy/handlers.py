"""Routing decisions: a plan per recipient group for each received message."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from typing import Any

from schemas import MailHeld, MailReceived, MailRouted, MailUnprotected
from schemas.commands import CommandReply, HeldDrop, HeldList, HeldRelease
from services.policy.hold import HeldCopy, HoldQueue, Replan
from services.policy.partners import PartnerStore
from services.policy.planning import Group, Headers, Planner, profile_spec
from smimegw import metrics
from smimegw.configbus import CommandRejected, Handler
from smimegw.configstate import ConfigFollower
from smimegw.runtime import Attempt, Runtime
from smimegw.telemetry import stage_span
from smimegw.x509 import address_key

log = logging.getLogger("smimegw.policy")


class PolicyHandlers:
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.internal_domains = frozenset(runtime.settings.internal_domains)
        self.hold_queue = HoldQueue(runtime)
        self.partners = PartnerStore(runtime)
        # Set by the service once the configuration is loaded.
        self.follower: ConfigFollower | None = None

    def planner(self) -> Planner:
        if self.follower is None:
            raise RuntimeError("policy service is not started: no configuration yet")
        return Planner(self.follower.state, self.internal_domains)

    async def on_received(self, event: MailReceived, attempt: Attempt) -> None:
        headers = Headers.parse(await self.runtime.bodies.head(event.body))
        # NOTE: partner capabilities are state outside CONFIG, so a redelivered
        # message planned after a new announcement may get a stronger algorithm.
        # Its mail.routed id stays the same, and JetStream keeps the first
        # publish within the duplicate window.
        partners = await self.partners.capabilities_of(event.recipients)
        attributes = {"smimegw.recipients": len(event.recipients)}
        with stage_span("policy.decision", attributes) as span:
            groups = self.planner().plan(event, headers, datetime.now(UTC), partners)
            span.set_attribute("smimegw.policy.plans", len(groups))
            span.set_attribute("smimegw.policy.held", sum(g.held for g in groups))
            actions = ",".join(sorted({g.action for g in groups}))
            span.set_attribute("smimegw.policy.actions", actions)
        for index, group in enumerate(groups):
            plan_id = f"{event.queue_id}-{index}"
            if group.held:
                waits_for = self._waits_for(event, group, headers)
                await self._hold(event, group, plan_id, index, len(groups), waits_for)
                continue
            if group.unprotected is not None:
                await self.runtime.publish(
                    MailUnprotected.create(
                        cause=event,
                        key=plan_id,
                        recipients=tuple(group.recipients),
                        profile=group.profile.name if group.profile else "",
                        reason=group.unprotected,
                    )
                )
            routed = routed_event(event, group, plan_id, index, len(groups))
            await self.runtime.publish(routed)
        log.info(
            "routed into %d plan(s): %s",
            len(groups),
            ", ".join(g.action for g in groups),
        )

    def _waits_for(
        self, event: MailReceived, group: Group, headers: Headers
    ) -> str | None:
        """Return the address whose certificate would release a held group."""
        assert group.profile is not None
        if "sign" in group.profile.action:
            signer, _ = self.planner().signer_for(event, headers, datetime.now(UTC))
            if signer is None:
                # The planner signs only for a From address equal to the envelope
                # sender, so without that no certificate can release the copy.
                author = headers.from_address
                if author and address_key(author) == address_key(event.sender):
                    return author
                return None
        return group.recipients[0]

    async def _hold(
        self,
        event: MailReceived,
        group: Group,
        plan_id: str,
        index: int,
        count: int,
        waits_for: str | None,
    ) -> None:
        assert group.profile is not None
        timeout = timedelta(seconds=group.profile.hold_timeout)
        release_by = event.time + timeout
        await self.hold_queue.hold(
            HeldCopy(
                plan_id=plan_id,
                group=index,
                groups=count,
                recipient=group.recipients[0],
                profile=group.profile.name,
                reason=group.reason,
                release_by=release_by.isoformat(),
                received=event.model_dump_json(),
                waits_for=waits_for,
            )
        )
        metrics.record_held("no-certificate")
        await self.runtime.publish(
            MailHeld.create(
                cause=event,
                key=plan_id,
                plan_id=plan_id,
                recipients=tuple(group.recipients),
                reason=group.reason,
                release_by=release_by,
            )
        )

    async def replan(self, narrowed: MailReceived, copy: HeldCopy) -> MailRouted | None:
        """Return the plan for a held copy once its certificate exists, else None."""
        head = await self.runtime.bodies.head(narrowed.body)
        partners = await self.partners.capabilities_of(narrowed.recipients)
        groups = self.planner().plan(
            narrowed, Headers.parse(head), datetime.now(UTC), partners
        )
        if len(groups) != 1 or groups[0].action != "protect":
            return None
        return routed_event(
            narrowed, groups[0], copy.plan_id, copy.group, copy.groups, key="release"
        )


class HeldCommands:
    """The `smimegw held` commands: list, release and drop held copies."""

    def __init__(self, hold_queue: HoldQueue, replan: Replan) -> None:
        self.hold_queue = hold_queue
        self.replan = replan

    def handlers(self) -> dict[str, Handler]:
        return {
            "held.list": self.held_list,
            "held.release": self.held_release,
            "held.drop": self.held_drop,
        }

    async def held_list(self, command: HeldList) -> CommandReply:
        views = [held_view(copy) for copy in await self.hold_queue.entries()]
        views.sort(key=lambda view: (view["since"], view["plan_id"]))
        return CommandReply(ok=True, result=views)

    async def held_release(self, command: HeldRelease) -> CommandReply:
        results = []
        for copy in await self._select(command.queue_id, command.recipient):
            outcome = await self.hold_queue.release(
                copy, self.replan, datetime.now(UTC)
            )
            results.append({**held_view(copy), "outcome": outcome or "still-held"})
        return CommandReply(ok=True, result=results)

    async def held_drop(self, command: HeldDrop) -> CommandReply:
        results = []
        for copy in await self._select(command.queue_id, command.recipient):
            dropped = await self.hold_queue.drop(copy)
            outcome = "dropped" if dropped else "released-meanwhile"
            results.append({**held_view(copy), "outcome": outcome})
        return CommandReply(ok=True, result=results)

    async def _select(self, queue_id: str, recipient: str | None) -> list[HeldCopy]:
        """Return the held copies of one message, or of one of its recipients."""
        selected = [
            copy
            for copy in await self.hold_queue.entries()
            if _queue_id_of(copy) == queue_id
            and (
                recipient is None
                or address_key(copy.recipient) == address_key(recipient)
            )
        ]
        if not selected:
            for_recipient = f" for {recipient}" if recipient else ""
            raise CommandRejected(
                "not-found",
                f"no copy of message {queue_id}{for_recipient} is held; "
                "`smimegw held list` shows the held copies",
            )
        return sorted(selected, key=lambda copy: copy.plan_id)


def _queue_id_of(copy: HeldCopy) -> str | None:
    return MailReceived.decode(copy.received.encode()).queue_id


def held_view(copy: HeldCopy) -> dict[str, Any]:
    """Describe a held copy for `smimegw held list`."""
    received = MailReceived.decode(copy.received.encode())
    return {
        "queue_id": received.queue_id,
        "plan_id": copy.plan_id,
        "recipient": copy.recipient,
        "sender": received.sender,
        "since": received.time.isoformat(),
        "waits_for": copy.waits_for,
        "timeout": copy.release_by,
        "profile": copy.profile,
        "reason": copy.reason,
    }


def routed_event(
    event: MailReceived,
    group: Group,
    plan_id: str,
    index: int,
    count: int,
    key: str = "",
) -> MailRouted:
    return MailRouted.create(
        cause=event,
        key=f"{plan_id}/{key}" if key else str(index),
        plan_id=plan_id,
        group=index,
        groups=count,
        sender=event.sender,
        recipients=tuple(group.recipients),
        action=group.action,
        reason=group.reason,
        body=event.body,
        rule_id=group.rule.rule_id if group.rule else None,
        profile=profile_spec(group.profile) if group.profile else None,
        signer_binding=group.signer.binding_id if group.signer else None,
        encrypt_to=tuple(group.encrypt_to),
        status=group.status,
        content_algorithm=group.content_algorithm,
        algorithm_reason=group.algorithm_reason,
    )

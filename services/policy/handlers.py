"""Routing decisions: a plan per recipient group for each received message."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

from schemas import MailHeld, MailReceived, MailRouted, MailUnprotected
from services.policy.hold import HeldCopy, HoldQueue
from services.policy.partners import PartnerStore
from services.policy.planning import Group, Headers, Planner, profile_spec
from smimegw import metrics
from smimegw.configstate import ConfigFollower
from smimegw.runtime import Attempt, Runtime
from smimegw.telemetry import stage_span

log = logging.getLogger("smimegw.policy")


class PolicyHandlers:
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.internal_domains = frozenset(runtime.settings.internal_domains)
        self.holds = HoldQueue(runtime)
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
                await self._hold(event, group, plan_id, index, len(groups))
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

    async def _hold(
        self, event: MailReceived, group: Group, plan_id: str, index: int, count: int
    ) -> None:
        assert group.profile is not None
        timeout = timedelta(seconds=group.profile.hold_timeout)
        release_by = event.time + timeout
        await self.holds.hold(
            HeldCopy(
                plan_id=plan_id,
                group=index,
                groups=count,
                recipient=group.recipients[0],
                profile=group.profile.name,
                reason=group.reason,
                release_by=release_by.isoformat(),
                received=event.model_dump_json(),
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

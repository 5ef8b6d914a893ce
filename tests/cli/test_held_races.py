"""Releases, drops and timeouts of one held copy racing each other.

Each copy must be decided once: one DSN or one delivered message, never both,
and the operator's command must tell what actually happened to the copy.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from services.policy.hold import TAKEN, HeldCopy, HoldQueue
from tests.cli.conftest import Cli
from tests.cli.test_held import (  # noqa: F401 (the fixtures)
    TEXT,
    held_copies,
    outgoing,
    policy_of,
    smimegw,
)
from tests.harness import audit_events, wait_until
from tests.outgoing.conftest import Outgoing


async def released_outcomes(
    outgoing: Outgoing,  # noqa: F811
    queue_id: str,
) -> list[str]:
    events = await audit_events(outgoing.gateway.url, queue_id=queue_id)
    return [e["outcome"] for e in events if e["type"] == "mail.released"]


async def test_two_drops_of_one_copy_bounce_once(
    smimegw: Cli,  # noqa: F811
    outgoing: Outgoing,  # noqa: F811
) -> None:
    queue_id = await outgoing.send(["eve@example.com"], TEXT)
    await held_copies(smimegw, 1)

    first, second = await asyncio.gather(
        smimegw("held", "drop", queue_id), smimegw("held", "drop", queue_id)
    )
    statuses = sorted([first.status, second.status])
    assert statuses == [0, 1]
    loser = first if first.status else second
    # The loser read the copy before or after the winner deleted it.
    assert (
        "was released or dropped meanwhile" in loser.out
        or f"no copy of message {queue_id} is held" in loser.err
    )

    (dsn,) = await outgoing.sink.wait_for(1, timeout=30)
    assert dsn.recipients == ["alice@example.com"]
    await wait_until(lambda: released_outcomes(outgoing, queue_id), timeout=30)
    assert await released_outcomes(outgoing, queue_id) == ["dropped"]
    await asyncio.sleep(0.5)
    assert len(outgoing.sink.messages) == 1


async def test_drop_after_release_finds_nothing(
    smimegw: Cli,  # noqa: F811
    outgoing: Outgoing,  # noqa: F811
) -> None:
    queue_id = await outgoing.send(["eve@example.com"], TEXT)
    await held_copies(smimegw, 1)
    eve = await outgoing.admin.external("eve@example.com", outgoing.keys.cert("Eve"))
    assert eve.ok, eve.error

    released = await smimegw("held", "release", queue_id)
    assert released.status == 0, released.err
    dropped = await smimegw("held", "drop", queue_id)
    assert dropped.status == 1
    assert f"no copy of message {queue_id} is held" in dropped.err

    (arrived,) = await outgoing.sink.wait_for(1, timeout=30)
    assert arrived.recipients == ["eve@example.com"]
    await asyncio.sleep(0.5)
    assert len(outgoing.sink.messages) == 1


async def test_timeout_racing_certificate_import(
    smimegw: Cli,  # noqa: F811
    outgoing: Outgoing,  # noqa: F811
) -> None:
    """A check that read an expired copy and a release claim it; one decides."""
    await outgoing.send(["eve@example.com"], TEXT)
    await held_copies(smimegw, 1)
    policy = policy_of(outgoing)
    [copy] = await policy.hold_queue.entries()
    eve = await outgoing.admin.external("eve@example.com", outgoing.keys.cert("Eve"))
    assert eve.ok, eve.error

    late = datetime.fromisoformat(copy.release_by) + timedelta(seconds=1)
    expiring, releasing = await asyncio.gather(
        policy.hold_queue.release(copy, policy.replan, late),
        policy.hold_queue.release(copy, policy.replan, datetime.now(UTC)),
    )
    outcomes = [expiring, releasing]
    assert outcomes.count(TAKEN) == 1
    assert expiring in ("timed-out", TAKEN)
    assert releasing in ("certificate-imported", TAKEN)

    (arrived,) = await outgoing.sink.wait_for(1, timeout=30)
    if expiring == "timed-out":
        assert arrived.recipients == ["alice@example.com"]
    else:
        assert arrived.recipients == ["eve@example.com"]
    await asyncio.sleep(0.5)
    assert len(outgoing.sink.messages) == 1


async def test_release_racing_a_drop_reports_it(
    smimegw: Cli,  # noqa: F811
    outgoing: Outgoing,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    queue_id = await outgoing.send(["eve@example.com"], TEXT)
    await held_copies(smimegw, 1)
    policy = policy_of(outgoing)
    eve = await outgoing.admin.external("eve@example.com", outgoing.keys.cert("Eve"))
    assert eve.ok, eve.error
    release = HoldQueue.release

    async def dropped_first(queue: HoldQueue, copy: HeldCopy, *args: Any) -> str | None:
        # Another replica drops the copy after this one read it.
        [other] = await queue.entries()
        assert await queue.drop(other)
        return await release(queue, copy, *args)

    monkeypatch.setattr(
        policy.hold_queue, "release", dropped_first.__get__(policy.hold_queue)
    )
    result = await smimegw("held", "release", queue_id)
    assert "stays held" not in result.out
    assert "released or dropped meanwhile" in result.out


async def test_claimed_release_without_certificate_times_out(
    smimegw: Cli,  # noqa: F811
    outgoing: Outgoing,  # noqa: F811
) -> None:
    await outgoing.send(["eve@example.com"], TEXT)
    await held_copies(smimegw, 1)
    policy = policy_of(outgoing)
    [copy] = await policy.hold_queue.entries()
    # The claim is written, then the replica dies; Eve has no certificate now.
    assert await policy.hold_queue._claim(copy, "certificate-imported")
    [claimed] = await policy.hold_queue.entries()

    late = datetime.fromisoformat(copy.release_by) + timedelta(seconds=1)
    outcome = await policy.hold_queue.release(claimed, policy.replan, late)
    assert outcome == "timed-out"

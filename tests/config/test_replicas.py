"""Every replica rebuilds the same configuration from the CONFIG stream."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import nats
import pytest

from smimegw.configstate import ConfigFollower, ConfigState
from tests.config.conftest import RFC9216, THUNDERBIRD, Admin
from tests.harness import Gateway

NOW = datetime(2027, 6, 1, tzinfo=UTC)


def snapshot(state: ConfigState) -> dict[str, object]:
    return {
        "cas": sorted(
            (e.ca_id, e.facts.sha256_fingerprint) for e in state.cas.values()
        ),
        "bindings": sorted(
            (sorted(state.binding_view(b, NOW).items()))
            for b in state.bindings.values()
        ),
        "local": sorted(state.local_certs),
        "sequence": state.last_sequence,
    }


async def fresh_state(url: str) -> ConfigState:
    nc = await nats.connect(url)
    try:
        follower = ConfigFollower(nc.jetstream())
        await follower.start()
        await follower.stop()
        return follower.state
    finally:
        await nc.close()


async def populate(admin: Admin) -> None:
    assert (await admin.import_ca(THUNDERBIRD / "TestCA.pem")).ok
    assert (await admin.internal("bob@example.com", THUNDERBIRD / "Bob.p12")).ok
    assert (await admin.internal("alice@example.com", THUNDERBIRD / "Alice.p12")).ok
    assert (
        await admin.external("@smime.example", RFC9216 / "bob@smime.example.enc.pem")
    ).ok


async def test_replay_gives_same_state(admin: Admin) -> None:
    await populate(admin)
    first = await fresh_state(admin.gateway.url)
    second = await fresh_state(admin.gateway.url)
    assert snapshot(first) == snapshot(second)
    assert len(first.bindings) == 3
    served = await admin.query("binding.list")
    assert isinstance(served, list)
    assert sorted(b["id"] for b in served) == sorted(first.bindings)


async def test_two_policy_replicas_agree(admin: Admin, tmp_path: Path) -> None:
    await populate(admin)
    replica = Gateway(admin.gateway.settings, admin.gateway.url)
    await replica.start(["policy"])
    try:
        answers = set()
        # The queue group spreads requests over both replicas.
        for _ in range(12):
            result = await admin.query("binding.list")
            assert isinstance(result, list)
            answers.add(
                tuple(sorted((b["id"], b["status"], b["fingerprint"]) for b in result))
            )
        assert len(answers) == 1
    finally:
        await replica.stop()


@pytest.mark.parametrize(
    "now",
    [
        datetime(2020, 1, 1, tzinfo=UTC),
        datetime(2027, 1, 1, tzinfo=UTC),
        datetime(2032, 1, 1, tzinfo=UTC),
    ],
)
async def test_status_against_fixed_clock(admin: Admin, now: datetime) -> None:
    await populate(admin)
    state = await fresh_state(admin.gateway.url)
    # The Thunderbird certificates are valid from 2021 (or so) to January 2031.
    binding = next(b for b in state.bindings.values() if b.pattern == "bob@example.com")
    expected = {2020: "not-yet-valid", 2027: "valid", 2032: "expired"}[now.year]
    assert state.binding_view(binding, now)["status"] == expected
    selected = state.select("BOB@example.com", "internal", "encryption", now)
    assert (selected is not None) == (expected == "valid")


async def test_exact_address_wins_over_domain(admin: Admin) -> None:
    await populate(admin)
    assert (
        await admin.external("bob@smime.example", RFC9216 / "bob@smime.example.sig.pem")
    ).ok
    state = await fresh_state(admin.gateway.url)
    exact = state.candidates("Bob@Smime.Example", "external")
    assert [b.pattern for b in exact] == ["bob@smime.example"]
    domain = state.candidates("carol@smime.example", "external")
    assert [b.pattern for b in domain] == ["@smime.example"]

"""`smimegw held list|release|drop` on copies held for a missing certificate."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from services.policy.handlers import PolicyHandlers
from services.policy.hold import TAKEN
from services.policy.service import PolicyService
from smimegw.service import SERVICE_NAMES
from tests.cli.conftest import Cli
from tests.config.conftest import THUNDERBIRD, Admin
from tests.conftest import gateway_settings
from tests.harness import (
    Gateway,
    NatsServer,
    SinkServer,
    audit_events,
    free_port,
    wait_until,
)
from tests.outgoing.conftest import Outgoing, decrypt, export_pems, verify

TEXT = (
    b"From: Alice <alice@example.com>\r\n"
    b"To: Eve <eve@example.com>, Carol <carol@partner.example>\r\n"
    b"Subject: held until a certificate arrives\r\n"
    b"Message-ID: <held@example.com>\r\n"
    b"\r\n"
    b"Only for holders of a certificate.\r\n"
)


@pytest.fixture
async def outgoing(
    tmp_path: Path, nats_server: NatsServer, sink: SinkServer
) -> AsyncIterator[Outgoing]:
    """All services with Alice as a signer and no certificate for Eve or Carol."""
    settings = gateway_settings(
        tmp_path,
        internal_domains=("internal.test",),
        smtp={"listen": f"127.0.0.1:{free_port()}", "hostname": "gw.test"},
        delivery={"relay_host": f"127.0.0.1:{sink.port}"},
        # Only the commands under test release copies: the periodic check runs
        # once at start, before anything is held.
        policy={"hold_check_interval": "1h"},
        nats={"url": nats_server.url},
    )
    gateway = Gateway(settings, nats_server.url)
    await gateway.start(SERVICE_NAMES)
    keys = export_pems(tmp_path / "pem")
    admin = Admin(gateway)
    assert (await admin.import_ca(keys.ca)).ok
    alice = await admin.internal("alice@example.com", THUNDERBIRD / "Alice.p12")
    assert alice.ok, alice.error
    setup = Outgoing(gateway, sink, keys)
    await setup.use_profile("p", action="sign-and-encrypt", on_failure="hold")
    yield setup
    await gateway.stop()


@pytest.fixture
def smimegw(outgoing: Outgoing, capsys: pytest.CaptureFixture[str]) -> Cli:
    return Cli(capsys, outgoing.gateway.url)


async def held_copies(smimegw: Cli, count: int) -> list[dict[str, str]]:
    """Wait until `count` copies are held, and return `held list --json`."""
    copies: list[dict[str, str]] = []

    async def listed() -> bool:
        nonlocal copies
        result = await smimegw("held", "list", "--json")
        assert result.status == 0, result.err
        copies = json.loads(result.out)
        return len(copies) == count

    await wait_until(listed, timeout=30, step=0.3)
    return copies


async def test_held_list_shows_copies(smimegw: Cli, outgoing: Outgoing) -> None:
    assert (await smimegw("held", "list")).out == "no held copies\n"
    queue_id = await outgoing.send(["eve@example.com", "carol@partner.example"], TEXT)
    copies = await held_copies(smimegw, 2)
    assert sorted(c["recipient"] for c in copies) == [
        "carol@partner.example",
        "eve@example.com",
    ]
    for copy in copies:
        assert copy["queue_id"] == queue_id
        assert copy["sender"] == "alice@example.com"
        assert copy["waits_for"] == copy["recipient"]
        assert copy["since"] < copy["timeout"]

    table = await smimegw("held", "list")
    lines = table.out.rstrip("\n").split("\n")
    assert lines[0].split() == [
        "QUEUE",
        "ID",
        "RECIPIENT",
        "SENDER",
        "SINCE",
        "WAITS",
        "FOR",
        "TIMEOUT",
    ]
    assert len(lines) == 3
    assert all(line.startswith(queue_id) for line in lines[1:])


async def test_held_release_waits_then_sends(smimegw: Cli, outgoing: Outgoing) -> None:
    queue_id = await outgoing.send(["eve@example.com"], TEXT)
    await held_copies(smimegw, 1)

    waiting = await smimegw("held", "release", queue_id)
    assert waiting.status == 1
    assert f"{queue_id} for eve@example.com stays held" in waiting.out
    assert "import a certificate for eve@example.com" in waiting.out
    assert len(await held_copies(smimegw, 1)) == 1
    assert outgoing.sink.messages == []

    eve = await outgoing.admin.external("eve@example.com", outgoing.keys.cert("Eve"))
    assert eve.ok, eve.error
    released = await smimegw(
        "held", "release", queue_id, "--recipient", "EVE@example.com"
    )
    assert released.status == 0, released.err
    assert released.out.startswith(f"released {queue_id} for eve@example.com")
    (arrived,) = await outgoing.sink.wait_for(1, timeout=30)
    assert arrived.recipients == ["eve@example.com"]
    verify(outgoing.keys, decrypt(outgoing.keys, "Eve", arrived.content))
    assert await held_copies(smimegw, 0) == []


async def test_held_drop_bounces(smimegw: Cli, outgoing: Outgoing) -> None:
    queue_id = await outgoing.send(["eve@example.com", "carol@partner.example"], TEXT)
    await held_copies(smimegw, 2)

    dropped = await smimegw(
        "held", "drop", queue_id, "--recipient", "carol@partner.example"
    )
    assert dropped.status == 0, dropped.err
    assert (
        dropped.out
        == f"dropped {queue_id} for carol@partner.example: the sender gets a bounce\n"
    )
    (dsn,) = await outgoing.sink.wait_for(1, timeout=30)
    assert dsn.recipients == ["alice@example.com"]
    assert b"Final-Recipient: rfc822; carol@partner.example" in dsn.content
    assert b"dropped by operator" in dsn.content
    [left] = await held_copies(smimegw, 1)
    assert left["recipient"] == "eve@example.com"


async def test_held_unknown_queue_id(smimegw: Cli) -> None:
    for verb in ("release", "drop"):
        result = await smimegw("held", verb, "NOSUCHQUEUEID")
        assert result.status == 1
        assert "no copy of message NOSUCHQUEUEID is held" in result.err
        assert "[not-found]" in result.err


async def test_held_waits_for_signing_key(smimegw: Cli, outgoing: Outgoing) -> None:
    from_bob = TEXT.replace(b"Alice <alice@", b"Bob <bob@")
    await outgoing.send(["eve@example.com"], from_bob, sender="bob@example.com")
    # Another envelope sender than From: no certificate makes the gateway sign.
    await outgoing.send(["eve@example.com"], from_bob, sender="list@example.com")
    copies = await held_copies(smimegw, 2)
    waits_for = {copy["sender"]: copy["waits_for"] for copy in copies}
    assert waits_for == {"bob@example.com": "bob@example.com", "list@example.com": None}

    released = await smimegw("held", "release", copies[0]["queue_id"])
    assert released.status == 1
    assert "stays held" in released.out


def policy_of(outgoing: Outgoing) -> PolicyHandlers:
    _, service = outgoing.gateway.services["policy"]
    assert isinstance(service, PolicyService)
    return service.handlers


async def test_release_after_drop_is_taken(smimegw: Cli, outgoing: Outgoing) -> None:
    """The first claim decides the copy; a later release finds it taken."""
    queue_id = await outgoing.send(["eve@example.com"], TEXT)
    await held_copies(smimegw, 1)
    policy = policy_of(outgoing)
    [read_by_operator] = await policy.hold_queue.entries()
    [read_by_check] = await policy.hold_queue.entries()
    eve = await outgoing.admin.external("eve@example.com", outgoing.keys.cert("Eve"))
    assert eve.ok, eve.error

    assert await policy.hold_queue.drop(read_by_operator)
    now = datetime.now(UTC)
    assert await policy.hold_queue.release(read_by_check, policy.replan, now) == TAKEN

    (dsn,) = await outgoing.sink.wait_for(1, timeout=30)
    assert dsn.recipients == ["alice@example.com"]
    assert b"dropped by operator" in dsn.content
    assert await held_copies(smimegw, 0) == []

    async def released() -> list[dict[str, Any]]:
        events = await audit_events(outgoing.gateway.url, queue_id=queue_id)
        return [e for e in events if e["type"] == "mail.released"]

    await wait_until(released, timeout=30)
    assert [e["outcome"] for e in await released()] == ["dropped"]
    assert len(outgoing.sink.messages) == 1


async def test_claimed_drop_is_finished_by_the_next_check(
    smimegw: Cli, outgoing: Outgoing
) -> None:
    """A drop that crashed after its claim is carried out by the periodic check."""
    await outgoing.send(["eve@example.com"], TEXT)
    await held_copies(smimegw, 1)
    policy = policy_of(outgoing)
    [copy] = await policy.hold_queue.entries()
    # The claim is written, then the replica dies before publishing anything.
    assert await policy.hold_queue._claim(copy, "dropped")
    [claimed] = await held_copies(smimegw, 1)
    assert claimed["recipient"] == "eve@example.com"

    assert await policy.hold_queue.check(policy.replan) == 1
    (dsn,) = await outgoing.sink.wait_for(1, timeout=30)
    assert b"dropped by operator" in dsn.content
    assert await held_copies(smimegw, 0) == []

"""Outgoing S/MIME end to end: SMTP in, signed and encrypted out, read by OpenSSL."""

from __future__ import annotations

import asyncio
import email
import email.policy

import pytest
from asn1crypto import cms

from services.crypto.mime import canonicalize, split_message
from tests.config.conftest import THUNDERBIRD
from tests.harness import audit_events, wait_until
from tests.outgoing.conftest import Outgoing, decrypt, openssl, verify

TEXT = (
    "From: Alice <alice@example.com>\r\n"
    "To: Bob <bob@example.com>\r\n"
    "Subject: quarterly figures\r\n"
    "Date: Fri, 04 Dec 2026 10:00:00 +0000\r\n"
    "Message-ID: <figures@example.com>\r\n"
    "MIME-Version: 1.0\r\n"
    "Content-Type: text/plain; charset=utf-8\r\n"
    "Content-Transfer-Encoding: 8bit\r\n"
    "\r\n"
    "Grüße, the figures are attached in spirit.\r\n"
).encode()


def entity_sent(message: bytes) -> bytes:
    """What the recipient must read: the canonical form of the entity sent."""
    return canonicalize(split_message(message)[1])


def recipient_infos(message: bytes) -> int:
    parsed = email.message_from_bytes(message, policy=email.policy.default)
    der = parsed.get_payload(decode=True)
    assert isinstance(der, bytes)
    info = cms.ContentInfo.load(der)
    return len(info["content"]["recipient_infos"])


@pytest.mark.parametrize(
    ("action", "algorithm", "digest", "signature"),
    [
        ("sign-and-encrypt", "aes256-cbc", "sha256", "detached"),
        ("sign-and-encrypt", "aes128-cbc", "sha384", "opaque"),
        ("sign-and-encrypt", "aes192-cbc", "sha512", "detached"),
        ("sign-and-encrypt", "3des-cbc", "sha256", "opaque"),
        ("sign-and-encrypt", "aes256-gcm", "sha256", "detached"),
        ("encrypt", "aes256-cbc", "sha256", "detached"),
        ("sign", "aes256-cbc", "sha512", "detached"),
        ("sign", "aes256-cbc", "sha256", "opaque"),
    ],
)
async def test_openssl_reads_each_profile(
    outgoing: Outgoing, action: str, algorithm: str, digest: str, signature: str
) -> None:
    await outgoing.use_profile(
        "p", action=action, algorithm=algorithm, digest=digest, signature=signature
    )
    queue_id = await outgoing.send(["bob@example.com"], TEXT)
    (arrived,) = await outgoing.sink.wait_for(1)
    assert arrived.recipients == ["bob@example.com"]
    message = arrived.content
    head = message.split(b"\r\n\r\n", 1)[0]
    assert b"Subject: quarterly figures" in head
    assert b"From: Alice <alice@example.com>" in head

    if "encrypt" in action:
        smime_type = b"authEnveloped-data" if "gcm" in algorithm else b"enveloped-data"
        assert b"application/pkcs7-mime; smime-type=" + smime_type in head
        assert recipient_infos(message) == 1
        inner = decrypt(outgoing.keys, "Bob", message)
    else:
        inner = message
    if "sign" in action:
        if signature == "detached":
            assert b"multipart/signed" in inner.split(b"\r\n\r\n", 1)[0]
            assert f"micalg={digest[:3]}-{digest[3:]}".encode() in inner
        content = verify(outgoing.keys, inner)
    else:
        content = inner
    assert content == entity_sent(TEXT)

    events = await audit_events(outgoing.gateway.url, queue_id=queue_id)
    processed = next(e for e in events if e["type"] == "mail.processed")
    operations = {o["operation"]: o for o in processed["operations"]}
    assert processed["profile"] == "p"
    if "encrypt" in action:
        assert operations["encrypt"]["algorithm"] == algorithm
        assert operations["encrypt"]["weak"] == (algorithm == "3des-cbc")
    if "sign" in action:
        assert operations["sign"]["certificates"]


async def test_bcc_gets_its_own_copy(outgoing: Outgoing) -> None:
    await outgoing.use_profile("p", action="encrypt")
    eve = outgoing.keys.cert("Eve")
    assert (await outgoing.admin.external("eve@example.com", eve)).ok
    body = TEXT.replace(
        b"To: Bob <bob@example.com>\r\n",
        b"To: bob@example.com\r\nCc: dave@example.com\r\n",
    )
    await outgoing.send(
        ["bob@example.com", "dave@example.com", "eve@example.com"], body
    )
    messages = await outgoing.sink.wait_for(2)
    await asyncio.sleep(0.5)
    assert len(outgoing.sink.messages) == 2
    shared = next(m for m in messages if len(m.recipients) == 2)
    bcc = next(m for m in messages if len(m.recipients) == 1)
    assert sorted(shared.recipients) == ["bob@example.com", "dave@example.com"]
    assert bcc.recipients == ["eve@example.com"]
    assert recipient_infos(shared.content) == 2
    assert recipient_infos(bcc.content) == 1
    for name in ("Bob", "Dave"):
        assert decrypt(outgoing.keys, name, shared.content) == entity_sent(body)
    assert decrypt(outgoing.keys, "Eve", bcc.content) == entity_sent(body)
    # Eve's key does not open the copy for Bob and Dave.
    result = openssl(
        "cms", "-decrypt", "-inkey", outgoing.keys.key("Eve"), data=shared.content
    )
    assert result.returncode != 0


async def test_encrypt_to_self(outgoing: Outgoing) -> None:
    await outgoing.use_profile("p", action="sign-and-encrypt", encrypt_to_self=True)
    await outgoing.send(["bob@example.com"], TEXT)
    (arrived,) = await outgoing.sink.wait_for(1)
    assert recipient_infos(arrived.content) == 2
    verify(outgoing.keys, decrypt(outgoing.keys, "Alice", arrived.content))


async def test_send_plain_without_certificate(outgoing: Outgoing) -> None:
    await outgoing.use_profile("p", action="sign-and-encrypt", on_failure="send-plain")
    queue_id = await outgoing.send(["bob@example.com", "carol@example.org"], TEXT)
    messages = await outgoing.sink.wait_for(2)
    plain = next(m for m in messages if m.recipients == ["carol@example.org"])
    assert plain.content.endswith(TEXT)
    protected = next(m for m in messages if m.recipients == ["bob@example.com"])
    verify(outgoing.keys, decrypt(outgoing.keys, "Bob", protected.content))

    async def reported() -> bool:
        events = await audit_events(outgoing.gateway.url, queue_id=queue_id)
        return any(e["type"] == "mail.unprotected" for e in events)

    await wait_until(reported, timeout=60)
    events = await audit_events(outgoing.gateway.url, type="mail.unprotected")
    assert events[0]["recipients"] == ["carol@example.org"]
    assert "carol@example.org" in events[0]["reason"]


async def test_bounce_without_certificate(outgoing: Outgoing) -> None:
    await outgoing.use_profile("p", action="encrypt", on_failure="bounce")
    await outgoing.send(["carol@example.org"], TEXT)
    (dsn,) = await outgoing.sink.wait_for(1)
    assert dsn.sender == ""
    assert dsn.recipients == ["alice@example.com"]
    assert b"Final-Recipient: rfc822; carol@example.org" in dsn.content
    assert b"Status: 5.7.1" in dsn.content
    assert b"no usable encryption certificate for carol@example.org" in dsn.content


async def test_hold_released_when_certificate_imported(outgoing: Outgoing) -> None:
    await outgoing.use_profile("p", action="sign-and-encrypt", on_failure="hold")
    queue_id = await outgoing.send(["eve@example.com"], TEXT)

    async def held() -> bool:
        events = await audit_events(outgoing.gateway.url, queue_id=queue_id)
        return any(e["type"] == "mail.held" for e in events)

    await wait_until(held, timeout=60)
    await asyncio.sleep(1.0)
    assert outgoing.sink.messages == []
    eve = outgoing.keys.cert("Eve")
    assert (await outgoing.admin.external("eve@example.com", eve)).ok
    (arrived,) = await outgoing.sink.wait_for(1, timeout=20)
    assert arrived.recipients == ["eve@example.com"]
    verify(outgoing.keys, decrypt(outgoing.keys, "Eve", arrived.content))
    events = await audit_events(outgoing.gateway.url, queue_id=queue_id)
    released = next(e for e in events if e["type"] == "mail.released")
    assert released["outcome"] == "certificate-imported"


async def test_hold_bounces_after_timeout(outgoing: Outgoing) -> None:
    await outgoing.use_profile(
        "p", action="encrypt", on_failure="hold", hold_timeout="1s"
    )
    queue_id = await outgoing.send(["eve@example.com"], TEXT)
    (dsn,) = await outgoing.sink.wait_for(1, timeout=20)
    assert dsn.recipients == ["alice@example.com"]
    assert b"Final-Recipient: rfc822; eve@example.com" in dsn.content
    events = await audit_events(outgoing.gateway.url, queue_id=queue_id)
    released = next(e for e in events if e["type"] == "mail.released")
    assert released["outcome"] == "timed-out"


async def test_envelope_sender_must_match_from(outgoing: Outgoing) -> None:
    await outgoing.use_profile("p", action="sign", on_failure="bounce")
    await outgoing.send(["bob@example.com"], TEXT, sender="bounces@example.com")
    (dsn,) = await outgoing.sink.wait_for(1)
    assert dsn.recipients == ["bounces@example.com"]
    assert b"differs from the From address" in dsn.content


async def test_8bit_and_lf_input_signed_canonically(outgoing: Outgoing) -> None:
    await outgoing.use_profile("p", action="sign-and-encrypt")
    lf_text = TEXT.replace(b"\r\n", b"\n")
    await outgoing.send(["bob@example.com"], lf_text)
    (arrived,) = await outgoing.sink.wait_for(1)
    inner = decrypt(outgoing.keys, "Bob", arrived.content)
    assert inner.isascii()
    content = verify(outgoing.keys, inner)
    assert b"Content-Transfer-Encoding: quoted-printable" in content
    assert content == entity_sent(lf_text)


def test_alice_p12_is_in_corpus() -> None:
    assert (THUNDERBIRD / "Alice.p12").is_file()


async def test_rule_list_move_and_profile_in_use(outgoing: Outgoing) -> None:
    from schemas.commands import (
        POLICY_COMMANDS,
        ProfileCreate,
        ProfileDelete,
        RuleCreate,
        RuleMove,
    )

    admin = outgoing.admin
    for name in ("a", "b"):
        reply = await admin.send(
            POLICY_COMMANDS,
            ProfileCreate(command="profile.create", name=name, action="sign"),
        )
        assert reply.ok, reply.error
    ids = []
    for profile, recipient in (("a", "@one.example"), ("b", "@two.example")):
        reply = await admin.send(
            POLICY_COMMANDS,
            RuleCreate(command="rule.create", profile=profile, recipient=recipient),
        )
        assert reply.ok, reply.error
        ids.append(reply.result["id"])
    first = await admin.send(
        POLICY_COMMANDS,
        RuleCreate(
            command="rule.create", profile="b", client_ip="192.0.2.0/24", position=1
        ),
    )
    listed = await admin.query("rule.list")
    assert [r["id"] for r in listed] == [first.result["id"], *ids]  # type: ignore[union-attr]
    moved = await admin.send(
        POLICY_COMMANDS, RuleMove(command="rule.move", rule_id=ids[1], position=1)
    )
    assert moved.ok
    listed = await admin.query("rule.list")
    assert [r["id"] for r in listed] == [ids[1], first.result["id"], ids[0]]  # type: ignore[union-attr]
    refused = await admin.send(
        POLICY_COMMANDS, ProfileDelete(command="profile.delete", name="a")
    )
    assert refused.error is not None
    assert refused.error.category == "in-use"
    assert ids[0] in refused.error.message
    bad = await admin.send(
        POLICY_COMMANDS,
        ProfileCreate(
            command="profile.create", name="c", action="encrypt", algorithm="rc2-40"
        ),
    )
    assert bad.error is not None
    assert "rc2-40" in bad.error.message


def crypto_count(operation: str, result: str) -> float:
    from smimegw.metrics import REGISTRY

    value = REGISTRY.get_sample_value(
        "smimegw_crypto_operations_total",
        {"operation": operation, "result": result},
    )
    return value or 0.0


async def test_metrics_count_signed_and_encrypted(outgoing: Outgoing) -> None:
    await outgoing.use_profile("p", action="sign-and-encrypt", on_failure="hold")
    signed = crypto_count("sign", "ok")
    encrypted = crypto_count("encrypt", "ok")
    from smimegw.metrics import REGISTRY

    held = (
        REGISTRY.get_sample_value(
            "smimegw_messages_held_total", {"reason": "no-certificate"}
        )
        or 0.0
    )
    await outgoing.send(["bob@example.com"], TEXT)
    await outgoing.send(["eve@example.com"], TEXT)
    await outgoing.sink.wait_for(1)
    assert crypto_count("sign", "ok") == signed + 1
    assert crypto_count("encrypt", "ok") == encrypted + 1

    async def counted() -> bool:
        now = REGISTRY.get_sample_value(
            "smimegw_messages_held_total", {"reason": "no-certificate"}
        )
        return (now or 0.0) == held + 1

    await wait_until(counted, timeout=30)

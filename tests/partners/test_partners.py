"""Per-partner content encryption end to end: a partner's signed mail comes in,
its SMIMECapabilities are recorded, and the next outgoing message uses them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from services.crypto.cms import signed
from services.crypto.mime import build_pkcs7_mime, canonicalize
from services.policy.partners import CONSUMER, PartnerCapabilities
from smimegw import streams
from tests.harness import audit_events, wait_until
from tests.outgoing.conftest import Outgoing, decrypt
from tests.outgoing.test_outgoing import TEXT, entity_sent

GATEWAY_ANNOUNCES = signed.smime_capabilities.GATEWAY_CAPABILITIES


def partner_mail(sender: str, certificate: x509.Certificate, key: Any) -> bytes:
    """An opaque signed message to an internal user; SignedData announces GCM."""
    entity = canonicalize(b"Content-Type: text/plain\r\n\r\nHello from a partner.\r\n")
    der = signed.sign(entity, certificate, key, digest="sha256", detached=False)
    outer = (
        f"From: {sender}\r\nTo: carol@internal.test\r\nSubject: hello\r\n"
        "MIME-Version: 1.0\r\n"
    ).encode()
    return build_pkcs7_mime(outer, der, "signed-data")


def load_pem(outgoing: Outgoing, name: str) -> tuple[x509.Certificate, Any]:
    certificate = x509.load_pem_x509_certificate(outgoing.keys.cert(name).read_bytes())
    key = serialization.load_pem_private_key(outgoing.keys.key(name).read_bytes(), None)
    return certificate, key


def self_signed(address: str) -> tuple[x509.Certificate, rsa.RSAPrivateKey]:
    """A certificate that names a partner's address but chains to no imported CA."""
    key = rsa.generate_private_key(65537, 2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "forger")])
    now = datetime.now(UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=30))
        .add_extension(
            x509.SubjectAlternativeName([x509.RFC822Name(address)]), critical=False
        )
        .sign(key, hashes.SHA256())
    )
    return certificate, key


async def receive(outgoing: Outgoing, sender: str, message: bytes) -> dict[str, Any]:
    """Send a partner's message in and return its mail.verified event once recorded."""
    queue_id = await outgoing.send(["carol@internal.test"], message, sender=sender)

    async def verified() -> list[dict[str, Any]]:
        events = await audit_events(outgoing.gateway.url, queue_id=queue_id)
        return [e for e in events if e["type"] == "mail.verified"]

    await wait_until(verified)
    await wait_until(lambda: capabilities_consumer_idle(outgoing))
    (event,) = await verified()
    return event


async def capabilities_consumer_idle(outgoing: Outgoing) -> bool:
    runtime = outgoing.gateway.services["policy"][0]
    info = await runtime.js.consumer_info(streams.MAIL, CONSUMER)
    return info.num_pending == 0 and info.num_ack_pending == 0


async def stored(outgoing: Outgoing, address: str) -> PartnerCapabilities | None:
    service = outgoing.gateway.services["policy"][1]
    record: PartnerCapabilities | None = await service.capabilities.store.get(  # type: ignore[attr-defined]
        address
    )
    return record


async def send_out(outgoing: Outgoing, recipient: str, name: str) -> dict[str, Any]:
    """Send TEXT to `recipient`, decrypt it with OpenSSL, return the encrypt step."""
    body = TEXT.replace(b"bob@example.com", recipient.encode())
    before = len(outgoing.sink.messages)
    queue_id = await outgoing.send([recipient], body)
    messages = await outgoing.sink.wait_for(before + 1)
    message = messages[before].content
    assert decrypt(outgoing.keys, name, message) == entity_sent(body)

    events = await audit_events(outgoing.gateway.url, queue_id=queue_id)
    routed = next(e for e in events if e["type"] == "mail.routed")
    processed = next(e for e in events if e["type"] == "mail.processed")
    (encrypt,) = [o for o in processed["operations"] if o["operation"] == "encrypt"]
    assert encrypt["algorithm"] == routed["content_algorithm"]
    assert routed["algorithm_reason"] in encrypt["detail"]
    return dict(encrypt, head=message.split(b"\r\n\r\n", 1)[0])


async def test_trusted_partner_gets_gcm(outgoing: Outgoing) -> None:
    certificate, key = load_pem(outgoing, "Bob")
    event = await receive(
        outgoing, "bob@example.com", partner_mail("Bob@example.com", certificate, key)
    )
    (report,) = event["layers"][0]
    assert report["certificate_status"] == "trusted"
    assert tuple(report["capabilities"]) == GATEWAY_ANNOUNCES
    record = await stored(outgoing, "BOB@example.com")
    assert record is not None
    assert record.capabilities == GATEWAY_ANNOUNCES

    await outgoing.use_profile("p", action="encrypt", algorithm="aes128-cbc")
    encrypt = await send_out(outgoing, "bob@example.com", "Bob")
    assert encrypt["algorithm"] == "aes256-gcm"
    assert b"smime-type=authEnveloped-data" in encrypt["head"]
    assert "strongest algorithm that every recipient announced" in encrypt["detail"]
    assert "aes128-cbc from profile p is the floor" in encrypt["detail"]


async def test_unknown_partner_gets_profile_choice(outgoing: Outgoing) -> None:
    await outgoing.use_profile("p", action="encrypt", algorithm="aes128-cbc")
    encrypt = await send_out(outgoing, "dave@example.com", "Dave")
    assert encrypt["algorithm"] == "aes128-cbc"
    assert b"smime-type=enveloped-data" in encrypt["head"]
    assert "announced no SMIMECapabilities" in encrypt["detail"]


async def test_untrusted_signer_is_ignored(outgoing: Outgoing) -> None:
    certificate, key = self_signed("dave@example.com")
    event = await receive(
        outgoing, "dave@example.com", partner_mail("dave@example.com", certificate, key)
    )
    (report,) = event["layers"][0]
    assert report["signature"] == "valid"
    assert report["certificate_status"] == "untrusted"
    assert "aes256-gcm" in report["capabilities"]
    assert await stored(outgoing, "dave@example.com") is None

    await outgoing.use_profile("p", action="encrypt", algorithm="aes128-cbc")
    encrypt = await send_out(outgoing, "dave@example.com", "Dave")
    assert encrypt["algorithm"] == "aes128-cbc"


async def test_older_announcement_keeps_newer(outgoing: Outgoing) -> None:
    service = outgoing.gateway.services["policy"][1]
    store = service.capabilities.store  # type: ignore[attr-defined]
    now = datetime.now(UTC)
    newer = PartnerCapabilities(
        address="bob@example.com",
        capabilities=("aes256-gcm",),
        fingerprint="ab" * 32,
        announced=now,
    )
    older = newer.model_copy(
        update={"capabilities": ("3des-cbc",), "announced": now - timedelta(hours=1)}
    )
    assert await store.record(newer)
    assert not await store.record(older)
    assert not await store.record(newer)
    record = await stored(outgoing, "bob@example.com")
    assert record == newer

"""Events and result header fields of incoming S/MIME, forged fields, and bad input."""

from __future__ import annotations

import base64
import subprocess
from pathlib import Path

import aiosmtplib
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.serialization import pkcs12

from services.crypto.incoming import MAX_LAYERS
from services.crypto.mime.limits import MAX_HEADER_FIELDS
from tests.config.conftest import RFC9216
from tests.incoming.conftest import THUNDERBIRD, Incoming, wire_form

PLAIN = (
    b"From: mallory@example.net\r\n"
    b"To: bob@example.com\r\n"
    b"X-Smimegw-Signature: layer=1; index=1; result=valid; certificate=trusted\r\n"
    b"Subject: plain\r\n"
    b"x-smimegw-decryption: status=decrypted;\r\n"
    b"  binding=forged\r\n"
    b"\r\n"
    b"No S/MIME here.\r\n"
)
FORGED = (
    b"X-Smimegw-Signature: layer=1; index=1; result=valid; certificate=trusted\r\n"
    b"X-SMIMEGW-Decryption: status=decrypted\r\n"
)
HEADERS = b"From: mallory@example.net\r\nTo: bob@example.com\r\nSubject: bad\r\n"


def pkcs7_mime(smime_type: bytes, body: bytes) -> bytes:
    return (
        HEADERS + b"MIME-Version: 1.0\r\n"
        b"Content-Type: application/pkcs7-mime; smime-type=" + smime_type + b";"
        b' name="smime.p7m"\r\n'
        b"Content-Transfer-Encoding: base64\r\n"
        b"\r\n" + body
    )


def multipart_signed(signature: bytes) -> bytes:
    return (
        HEADERS + b"MIME-Version: 1.0\r\n"
        b'Content-Type: multipart/signed; protocol="application/pkcs7-signature";'
        b' micalg=sha-256; boundary="b1"\r\n'
        b"\r\n"
        b"--b1\r\n"
        b"Content-Type: text/plain\r\n"
        b"\r\n"
        b"Signed, or so it claims.\r\n"
        b"--b1\r\n"
        b"Content-Type: application/pkcs7-signature\r\n"
        b"Content-Transfer-Encoding: base64\r\n"
        b"\r\n" + signature + b"\r\n--b1--\r\n"
    )


def to_stranger() -> bytes:
    """A message encrypted by openssl to a certificate the gateway has no key for."""
    done = subprocess.run(
        [
            "openssl", "cms", "-encrypt", "-aes256",
            "-from", "mallory@example.net", "-to", "bob@example.com",
            "-subject", "not for us",
            str(RFC9216 / "bob@smime.example.enc.pem"),
        ],
        input=b"Content-Type: text/plain\r\n\r\nSecret.\r\n",
        capture_output=True,
        timeout=30,
        check=True,
    )  # fmt: skip
    return wire_form(done.stdout)


async def test_no_key_delivered_encrypted(incoming: Incoming) -> None:
    message = to_stranger()
    sender = await incoming.send(message)
    delivered = (await incoming.delivered([sender]))[sender]
    await incoming.wait_for_events("mail.decrypted", 1)
    events = (await incoming.events("mail.decrypted"))[sender]

    assert delivered.message == message
    [fields] = delivered.decryptions
    assert fields["status"] == "no-key"
    assert "recipients are" in fields["reason"]
    assert delivered.signatures == ()
    [event] = events
    assert event["status"] == "no-key"
    assert event["binding_id"] is None
    assert event["recipients"] == ["bob@example.com"]


async def test_decrypted_event_names_binding(incoming: Incoming) -> None:
    sender = await incoming.send((THUNDERBIRD / "alice.env.eml").read_bytes())
    delivered = (await incoming.delivered([sender]))[sender]
    await incoming.wait_for_events("mail.processed", 1)
    [event] = (await incoming.events("mail.decrypted"))[sender]
    [processed] = (await incoming.events("mail.processed"))[sender]
    _, bob, _ = pkcs12.load_key_and_certificates(
        (THUNDERBIRD / "Bob.p12").read_bytes(), b"nss"
    )
    assert isinstance(bob, x509.Certificate)
    fingerprint = bob.fingerprint(hashes.SHA256()).hex()

    assert event["status"] == "decrypted"
    assert event["binding_id"] == incoming.bob_binding
    assert event["fingerprint"] == fingerprint
    assert event["key_algorithm"] == "rsa-pkcs1v15"
    assert event["content_algorithm"].startswith("aes")
    [fields] = delivered.decryptions
    assert fields["binding"] == incoming.bob_binding
    assert fields["fingerprint"] == fingerprint
    [operation] = processed["operations"]
    assert operation["operation"] == "decrypt"
    assert operation["binding_ids"] == [incoming.bob_binding]


async def test_verified_event_summary(incoming: Incoming) -> None:
    summaries = {
        "alice.sig.SHA256.opaque.eml": "valid",
        "alice.sig.SHA1.opaque.eml": "weak",
        "alice.dsig.SHA256.multipart.bad.eml": "invalid",
    }
    senders = {
        await incoming.send((THUNDERBIRD / name).read_bytes()): name
        for name in summaries
    }
    await incoming.delivered(list(senders))
    await incoming.wait_for_events("mail.verified", len(senders))
    verified = await incoming.events("mail.verified")

    for sender, name in senders.items():
        [event] = verified[sender]
        assert event["summary"] == summaries[name], name
        [[report]] = event["layers"]
        assert report["subject"].startswith("CN=Alice,"), name
        assert report["from_matches"] is True, name
        assert report["signing_time"] is not None, name
    bad = next(s for s, n in senders.items() if n.endswith(".bad.eml"))
    assert verified[bad][0]["layers"][0][0]["signature_reason"] == "digest mismatch"


async def test_forged_fields_removed(incoming: Incoming) -> None:
    signed = (THUNDERBIRD / "alice.dsig.SHA256.multipart.eml").read_bytes()
    senders = [
        await incoming.send(PLAIN),
        await incoming.send(FORGED + signed),
    ]
    delivered = await incoming.delivered(senders)
    plain, signed_message = (delivered[s] for s in senders)

    assert plain.signatures == ()
    assert plain.decryptions == ()
    assert b"x-smimegw-" not in plain.content.lower()
    expected = (
        b"From: mallory@example.net\r\n"
        b"To: bob@example.com\r\n"
        b"Subject: plain\r\n"
        b"\r\n"
        b"No S/MIME here.\r\n"
    )
    assert plain.message == expected

    [fields] = signed_message.signatures
    assert fields["result"] == "valid"
    assert signed_message.decryptions == ()
    assert signed_message.content.lower().count(b"x-smimegw-") == 1
    assert signed_message.message == wire_form(signed)


async def test_bad_input_delivered_unchanged(incoming: Incoming) -> None:
    garbage_der = base64.encodebytes(b"\x30\x80not a ContentInfo" * 4)
    messages = {
        "invalid base64": pkcs7_mime(b"enveloped-data", b"!!!! not base64 ????\r\n"),
        "not CMS": pkcs7_mime(b"enveloped-data", garbage_der),
        "truncated signed-data": pkcs7_mime(b"signed-data", garbage_der),
        "bad signature part": multipart_signed(garbage_der),
        "empty signature part": multipart_signed(b""),
    }
    senders = {await incoming.send(m): name for name, m in messages.items()}
    delivered = await incoming.delivered(list(senders))
    await incoming.wait_for_events("mail.processed", len(senders))
    decrypted = await incoming.events("mail.decrypted")
    verified = await incoming.events("mail.verified")

    for sender, name in senders.items():
        message = delivered[sender]
        assert message.message == wire_form(messages[name]), name
        if "signed" in name or "signature" in name:
            [fields] = message.signatures
            assert fields["result"] == "invalid", name
            assert fields["reason"], name
            [event] = verified[sender]
            assert event["summary"] == "invalid", name
        else:
            [fields] = message.decryptions
            assert fields["status"] == "failed", name
            [event] = decrypted[sender]
            assert event["status"] == "failed", name
            assert event["reason"], name


async def test_nesting_stops_at_limit(incoming: Incoming) -> None:
    message = b"Content-Type: text/plain\r\n\r\nDeep inside.\r\n"
    for _ in range(MAX_LAYERS + 1):
        done = subprocess.run(
            [
                "openssl", "cms", "-sign", "-nodetach",
                "-signer", str(RFC9216 / "alice@smime.example.sig.pem"),
            ],
            input=message,
            capture_output=True,
            timeout=30,
            check=True,
        )  # fmt: skip
        message = wire_form(done.stdout)
    sender = await incoming.send(message)
    delivered = (await incoming.delivered([sender]))[sender]

    layers = [int(fields["layer"]) for fields in delivered.signatures]
    assert layers == list(range(1, MAX_LAYERS + 1))
    assert all(fields["result"] == "valid" for fields in delivered.signatures)
    assert delivered.message == message


async def test_header_past_field_limit_refused(incoming: Incoming) -> None:
    # More header fields than the MIME parser reads: ingress refuses the message
    # at SMTP time rather than pass on what crypto cannot open.
    filler = b"".join(
        b"X-Filler-%d: %d\r\n" % (number, number)
        for number in range(MAX_HEADER_FIELDS + 5)
    )
    message = filler + FORGED + b"Subject: many fields\r\n\r\nBody.\r\n"
    with pytest.raises(aiosmtplib.SMTPDataError) as refused:
        await incoming.send(message)

    assert refused.value.code == 552
    assert "5.3.4" in refused.value.message


async def test_certs_only_passes_through(incoming: Incoming) -> None:
    done = subprocess.run(
        [
            "openssl", "crl2pkcs7", "-nocrl", "-outform", "DER",
            "-certfile", str(THUNDERBIRD / "TestCA.pem"),
        ],
        capture_output=True,
        timeout=30,
        check=True,
    )  # fmt: skip
    message = pkcs7_mime(b"certs-only", base64.encodebytes(done.stdout))
    sender = await incoming.send(message)
    delivered = (await incoming.delivered([sender]))[sender]

    assert delivered.signatures == ()
    assert delivered.decryptions == ()
    assert delivered.message == wire_form(message)


async def test_decrypted_fields_past_limit(incoming: Incoming, tmp_path: Path) -> None:
    # The decrypted entity has exactly as many header fields as the limit allows
    # (the filler, two forged fields and Content-Type); with the outer fields it
    # has more.
    filler = b"".join(
        b"X-Inner-%d: %d\r\n" % (number, number)
        for number in range(MAX_HEADER_FIELDS - 3)
    )
    entity = filler + FORGED + b"Content-Type: text/plain\r\n\r\nInner text.\r\n"
    _, bob, _ = pkcs12.load_key_and_certificates(
        (THUNDERBIRD / "Bob.p12").read_bytes(), b"nss"
    )
    assert bob is not None
    bob_pem = tmp_path / "bob.pem"
    bob_pem.write_bytes(bob.public_bytes(serialization.Encoding.PEM))
    done = subprocess.run(
        [
            "openssl", "cms", "-encrypt", "-aes256",
            "-from", "mallory@example.net", "-to", "bob@example.com",
            "-subject", "many fields", str(bob_pem),
        ],
        input=entity,
        capture_output=True,
        timeout=30,
        check=True,
    )  # fmt: skip
    sender = await incoming.send(wire_form(done.stdout))
    delivered = (await incoming.delivered([sender]))[sender]

    [fields] = delivered.decryptions
    assert fields["status"] == "decrypted"
    head = delivered.message.split(b"\r\n\r\n")[0]
    assert head.count(b"\r\n") + 1 > MAX_HEADER_FIELDS
    assert delivered.content.lower().count(b"x-smimegw-") == 1
    assert delivered.message.endswith(
        filler + b"Content-Type: text/plain\r\n\r\nInner text.\r\n"
    )

"""Messages of other S/MIME implementations, opened end to end over SMTP.

The Thunderbird (NSS) messages follow the table of expected outcomes that ships with
them; each is checked in the result header fields, the events and the delivered bytes.
"""

from __future__ import annotations

import csv
import email
import email.policy
from dataclasses import dataclass
from email.message import Message
from typing import Any

from tests.incoming.conftest import RFC4134, THUNDERBIRD, Delivered, Incoming, wire_form

TEXT = b"This is a test message from Alice to Bob."
BROWSER = THUNDERBIRD.parent / "browser"


@dataclass(frozen=True)
class Case:
    name: str
    decrypts: bool
    signatures: tuple[str, ...]  # per layer, outermost first


def thunderbird_cases() -> list[Case]:
    with (THUNDERBIRD.parent / "expected.tsv").open(newline="") as table:
        rows = [row for row in csv.reader(table, delimiter="\t") if row[0][:1] != "#"]
    assert rows[0] == ["file", "decrypt", "signatures"]
    return [
        Case(name, decrypts == "yes", () if layers == "-" else tuple(layers.split(",")))
        for name, decrypts, layers in rows[1:]
    ]


def leaf_payloads(message: bytes) -> list[bytes]:
    """Decoded bodies of every leaf part; opaque SignedData stays DER."""
    parsed = email.message_from_bytes(message, policy=email.policy.compat32)
    payloads = []
    for part in parsed.walk():
        if isinstance(part, Message) and not part.is_multipart():
            payload = part.get_payload(decode=True)
            if isinstance(payload, bytes):
                payloads.append(payload)
    return payloads


def top_content_type(message: bytes) -> str:
    parsed = email.message_from_bytes(message, policy=email.policy.compat32)
    return parsed.get_content_type()


def layers_of(delivered: Delivered) -> list[list[dict[str, str]]]:
    layers: dict[str, list[dict[str, str]]] = {}
    for fields in delivered.signatures:
        layers.setdefault(fields["layer"], []).append(fields)
    return [layers[key] for key in sorted(layers, key=int)]


def check_signatures(
    case: Case, delivered: Delivered, verified: list[dict[str, Any]]
) -> None:
    layers = layers_of(delivered)
    assert len(layers) == len(case.signatures), (case.name, delivered.signatures)
    if case.signatures:
        assert len(verified) == 1, case.name
        assert len(verified[0]["layers"]) == len(case.signatures), case.name
    else:
        assert verified == [], case.name
    for number, expected in enumerate(case.signatures):
        [fields] = layers[number]
        [report] = verified[0]["layers"][number]
        if expected == "unasserted":
            continue
        assert fields["result"] == expected, (case.name, number, fields)
        if expected == "invalid":
            assert report["signature"] == "invalid", case.name
            continue
        assert report["signature"] == "valid", (case.name, report)
        assert report["weak"] is (expected == "weak"), case.name
        assert fields["certificate"] == "trusted", (case.name, fields)
        assert report["certificate_status"] == "trusted", case.name


def check_decryption(
    case: Case, delivered: Delivered, decrypted: list[dict[str, Any]]
) -> None:
    if not case.decrypts:
        assert delivered.decryptions == (), case.name
        assert decrypted == [], case.name
        return
    [fields] = delivered.decryptions
    assert fields["status"] == "decrypted", (case.name, fields)
    [event] = decrypted
    assert event["status"] == "decrypted", case.name
    assert event["binding_id"] == fields["binding"], case.name
    assert "enveloped" not in top_content_type(delivered.message), case.name
    assert any(TEXT in payload for payload in leaf_payloads(delivered.message)), (
        case.name
    )


async def test_thunderbird_corpus(incoming: Incoming) -> None:
    cases = thunderbird_cases()
    senders = [
        await incoming.send((THUNDERBIRD / case.name).read_bytes()) for case in cases
    ]
    delivered = await incoming.delivered(senders)
    await incoming.wait_for_events("mail.processed", len(cases))
    signed = sum(1 for case in cases if case.signatures)
    await incoming.wait_for_events("mail.verified", signed)
    verified = await incoming.events("mail.verified")
    decrypted = await incoming.events("mail.decrypted")

    assert len(cases) == 66
    for case, sender in zip(cases, senders, strict=True):
        message = delivered[sender]
        check_signatures(case, message, verified.get(sender, []))
        check_decryption(case, message, decrypted.get(sender, []))
        if not case.decrypts:
            # A signed message arrives byte for byte, result fields aside.
            original = (THUNDERBIRD / case.name).read_bytes()
            assert message.message == wire_form(original), case.name


async def test_outer_signer_holds_from(incoming: Incoming) -> None:
    names = ["alice.sig.SHA256.opaque.eml", "alice.dsig.SHA256.multipart.eml"]
    senders = [await incoming.send((THUNDERBIRD / name).read_bytes()) for name in names]
    delivered = await incoming.delivered(senders)

    for sender in senders:
        [fields] = delivered[sender].signatures
        # From: Alice@example.com, and the certificate's DN contains Alice@example.com.
        assert fields["from"] == "match"
        assert fields["signer"].startswith("CN=Alice,")
        assert len(fields["fingerprint"]) == 64


async def test_rfc4134_examples(incoming: Incoming) -> None:
    admin = incoming.admin
    carl = (RFC4134 / "CarlRSASelf.pem", RFC4134 / "CarlDSSSelf.pem")
    assert (await admin.import_ca(*carl)).ok
    reply = await admin.internal_pem(
        "bobrsa@example.com",
        RFC4134 / "BobRSASignByCarl.pem",
        RFC4134 / "BobPrivRSAEncrypt.pem",
    )
    assert reply.ok, reply.error
    names = ["4.8.eml", "4.9.eml", "5.3.eml"]
    senders = [await incoming.send((RFC4134 / name).read_bytes()) for name in names]
    delivered = await incoming.delivered(senders)
    signed_detached, signed_opaque, enveloped = (delivered[s] for s in senders)

    for message in (signed_detached, signed_opaque):
        [fields] = message.signatures
        # DSA with SHA-1: the arithmetic holds, the digest is weak, and the path
        # builder takes no DSA trust anchor.
        assert fields["result"] == "weak", fields
        assert fields["certificate"] == "untrusted", fields
        assert fields["signer"] == "CN=AliceDSS"
    original = (RFC4134 / "4.8.eml").read_bytes()
    assert signed_detached.message == wire_form(original)

    [fields] = enveloped.decryptions
    assert fields["status"] == "decrypted"
    assert fields["binding"] == reply.result["id"]
    assert b"This is some sample content." in enveloped.message


async def test_nested_parts_untouched(incoming: Incoming) -> None:
    names = [
        "multipart-alternative.eml",
        "alice.dsig.SHA256.multipart.in.mixed.eml",
        "alice.dsig.SHA256.multipart.in.mixed.with.header.eml",
    ]
    senders = [await incoming.send((BROWSER / name).read_bytes()) for name in names]
    delivered = await incoming.delivered(senders)

    for name, sender in zip(names, senders, strict=True):
        message = delivered[sender]
        assert message.signatures == (), name
        assert message.decryptions == (), name
        assert message.message == wire_form((BROWSER / name).read_bytes()), name


async def test_oaep_and_ecdh_decrypt(incoming: Incoming) -> None:
    interop = THUNDERBIRD.parent / "smime-interop"
    for address, name in (
        ("fran@example.com", "Fran"),
        ("fran-ec@example.com", "Fran-ec"),
    ):
        # Fran's issuing CA is not in the corpus, so the bindings are unusable for
        # outgoing mail, but their keys still decrypt.
        reply = await incoming.admin.internal(address, interop / f"{name}.p12")
        assert reply.ok, reply.error
    names = sorted(path.name for path in interop.glob("*.env"))
    senders = [await incoming.send((interop / name).read_bytes()) for name in names]
    delivered = await incoming.delivered(senders)

    assert len(names) == 6
    for name, sender in zip(names, senders, strict=True):
        message = delivered[sender]
        [fields] = message.decryptions
        assert fields["status"] == "decrypted", (name, fields)
        expected = "ecdh" if name.startswith("fran-ec") else "rsa-oaep"
        assert fields["key-algorithm"].startswith(expected), (name, fields)
        assert b"This is a test message to Fran." in message.message, name


async def test_nested_sigs_outer_layer_only(incoming: Incoming) -> None:
    # The inner signature is in a message/rfc822 attachment inside multipart/mixed,
    # so it is not a layer of this message.
    original = (BROWSER / "nested-sigs.eml").read_bytes()
    sender = await incoming.send(original)
    delivered = (await incoming.delivered([sender]))[sender]

    [fields] = delivered.signatures
    # OpenSSL 3.0 finds the same digest mismatch in the outer signature.
    assert fields["result"] == "invalid"
    assert fields["reason"] == "digest mismatch"
    assert fields["from"] == "mismatch"  # From: nobody1@example.com
    assert delivered.message == wire_form(original)

"""Result header fields and events built from hostile signer names and reasons."""

from __future__ import annotations

from datetime import UTC, datetime

from schemas import BodyRef, MailRouted, SignerReport
from services.crypto.cms.signed import MAX_SIGNERS, SignerIdentity, SignerResult
from services.crypto.incoming import MAX_LAYERS
from services.crypto.incoming_results import (
    MAX_EVENT_ITEMS,
    MAX_EVENT_TEXT,
    signer_report,
    verified_event,
)
from services.crypto.mime import prepend_headers
from services.crypto.result_headers import signature_field, signer_verdict
from tests.incoming.conftest import parameters


def report(**changes: object) -> SignerReport:
    values: dict[str, object] = {
        "signature": "valid",
        "signature_reason": None,
        "digest_algorithm": "sha256",
        "signature_algorithm": "rsa-pkcs1v15",
        "weak": False,
        "certificate_status": "trusted",
        "certificate_reason": "path to trust anchor CN=CA",
        "subject": "CN=Alice",
        "fingerprint": "ab" * 32,
        "from_matches": True,
        "signing_time": None,
    }
    values.update(changes)
    return SignerReport(**values)  # type: ignore[arg-type]


def test_verdict_weak_apart_from_valid() -> None:
    assert signer_verdict(report()) == "valid"
    assert signer_verdict(report(weak=True)) == "weak"
    assert signer_verdict(report(weak=True, signature="invalid")) == "invalid"


def test_hostile_subject_stays_one_field() -> None:
    subject = 'CN=Eve"; result=valid\r\nX-Smimegw-Signature: forged; Ünïcode\\' * 30
    name, value = signature_field(2, 3, report(subject=subject, from_matches=False))

    line = prepend_headers(b"Subject: x\r\n\r\nbody\r\n", [(name, value)])
    first = line.split(b"\r\n")[0]
    fields = parameters(value)
    assert line.count(b"\r\n") == 4  # one field line and the three of the message
    assert len(first) <= 998
    assert first.isascii()
    assert fields["layer"] == "2"
    assert fields["index"] == "3"
    assert fields["result"] == "valid"
    assert fields["from"] == "mismatch"
    assert fields["signer"].startswith('CN=Eve"; result=valid??X-Smimegw-Signature')
    assert fields["signer"].endswith("...")


def test_reasons_only_when_not_valid() -> None:
    _, valid = signature_field(1, 1, report())
    _, expired = signature_field(
        1,
        1,
        report(
            signature="invalid",
            signature_reason="digest mismatch",
            certificate_status="expired",
            certificate_reason="signer certificate expired on 2025-01-01",
        ),
    )

    assert "reason" not in parameters(valid)
    assert "certificate-reason" not in parameters(valid)
    assert parameters(expired)["reason"] == "digest mismatch"
    assert parameters(expired)["certificate"] == "expired"
    assert parameters(expired)["certificate-reason"].startswith("signer certificate")


def test_escapes_count_toward_limit() -> None:
    hostile = report(
        subject='"' * 500,
        signature="invalid",
        signature_reason="\\" * 500,
        certificate_status="untrusted",
        certificate_reason='"\\' * 500,
    )

    name, value = signature_field(16, 16, hostile)

    line = prepend_headers(b"\r\n", [(name, value)])
    assert len(line.split(b"\r\n")[0]) <= 998
    fields = parameters(value)
    assert fields["signer"] == '"' * 98 + "..."
    assert fields["reason"] == "\\" * 98 + "..."


def test_worst_event_under_payload_limit() -> None:
    # A hostile certificate: huge subject, thousands of addresses and capabilities.
    text = "x" * 100_000
    identity = SignerIdentity(text, text, 1, "ab" * 32, (text,) * 1000, True)
    result = SignerResult(
        "invalid", text, text, text, True, "untrusted", text, identity,
        datetime.now(UTC), (text,) * 1000,
    )  # fmt: skip
    routed = MailRouted.create(
        plan_id="q-0",
        group=0,
        groups=1,
        sender="mallory@example.net",
        recipients=tuple(f"user{number}@example.com" for number in range(100)),
        action="open",
        reason="internal recipient",
        body=BodyRef(key="q", size=1, sha256="0" * 64, chunks=1),
    )

    report = signer_report(result)
    event = verified_event(routed, [(report,) * MAX_SIGNERS] * MAX_LAYERS)

    assert len(report.subject) == MAX_EVENT_TEXT
    assert len(report.addresses) == MAX_EVENT_ITEMS
    assert len(event.encode()) < 1024 * 1024

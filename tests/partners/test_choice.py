"""Choosing the content algorithm from recorded partner capabilities."""

from __future__ import annotations

import pytest

from schemas import MailVerified, SignerReport
from schemas.config import ProfileCreated
from services.policy.partners import partner_key, trusted_announcements
from services.policy.planning import CONTENT_STRENGTH, choose_content_algorithm

GCM_AND_CBC = ("aes256-gcm", "aes128-gcm", "aes256-cbc", "aes128-cbc")
OPENSSL_DEFAULT = ("aes256-cbc", "aes192-cbc", "aes128-cbc", "3des-cbc")


def profile(algorithm: str) -> ProfileCreated:
    return ProfileCreated.create(
        name="p",
        action="encrypt",
        algorithm=algorithm,
        digest="sha256",
        signature="detached",
        on_failure="bounce",
        encrypt_to_self=False,
        hold_timeout=60.0,
    )


@pytest.mark.parametrize(
    ("floor", "partners", "expected"),
    [
        # No recipient announced anything, so the profile's choice applies.
        ("aes128-cbc", {}, "aes128-cbc"),
        ("aes128-cbc", {"bob@example.com": GCM_AND_CBC}, "aes256-gcm"),
        ("aes128-cbc", {"bob@example.com": OPENSSL_DEFAULT}, "aes256-cbc"),
        # A partner that reads only weaker algorithms still gets the floor.
        ("aes256-cbc", {"bob@example.com": ("3des-cbc", "rc2-40-cbc")}, "aes256-cbc"),
        # The floor is kept when the partner announced nothing stronger.
        ("aes256-gcm", {"bob@example.com": OPENSSL_DEFAULT}, "aes256-gcm"),
        ("3des-cbc", {"bob@example.com": ("aes192-cbc",)}, "aes192-cbc"),
        # Names other than content algorithms are ignored.
        ("aes128-cbc", {"bob@example.com": ("rsa-oaep", "1.2.3.4")}, "aes128-cbc"),
    ],
)
def test_choice_for_one_partner(
    floor: str, partners: dict[str, tuple[str, ...]], expected: str
) -> None:
    algorithm, reason = choose_content_algorithm(
        profile(floor), ["Bob@Example.com"], partners
    )
    assert algorithm == expected
    assert reason.startswith(f"{expected}: ")


def test_choice_needs_every_recipient() -> None:
    partners = {"bob@example.com": GCM_AND_CBC, "dave@example.com": OPENSSL_DEFAULT}
    both = ["bob@example.com", "dave@example.com"]
    algorithm, reason = choose_content_algorithm(profile("aes128-cbc"), both, partners)
    assert algorithm == "aes256-cbc"
    assert "every recipient" in reason


def test_choice_with_unknown_recipient() -> None:
    partners = {"bob@example.com": GCM_AND_CBC}
    both = ["bob@example.com", "eve@example.com"]
    algorithm, reason = choose_content_algorithm(profile("aes128-cbc"), both, partners)
    assert algorithm == "aes128-cbc"
    assert "<eve@example.com>" in reason
    assert "profile p" in reason


def test_strength_order_covers_every_algorithm() -> None:
    from services.crypto.cms.envelope import CONTENT_ALGORITHMS

    assert sorted(CONTENT_STRENGTH) == sorted(CONTENT_ALGORITHMS)


def report(**changes: object) -> SignerReport:
    fields: dict[str, object] = {
        "signature": "valid",
        "signature_reason": None,
        "digest_algorithm": "sha256",
        "signature_algorithm": "rsa-pkcs1v15",
        "weak": False,
        "certificate_status": "trusted",
        "certificate_reason": None,
        "subject": "CN=Bob",
        "fingerprint": "ab" * 32,
        "from_matches": True,
        "signing_time": None,
        "addresses": ("Bob@example.com", "bob@partner.example"),
        "capabilities": GCM_AND_CBC,
    }
    fields.update(changes)
    return SignerReport.model_validate(fields, strict=False)


def verified(*reports: SignerReport) -> MailVerified:
    return MailVerified.create(
        recipients=("carol@internal.test",), layers=(reports,), summary="valid"
    )


def test_trusted_signer_is_recorded() -> None:
    event = verified(report())
    records = trusted_announcements(event)
    assert [r.address for r in records] == ["bob@example.com", "bob@partner.example"]
    assert records[0].capabilities == GCM_AND_CBC
    assert records[0].announced == event.time


@pytest.mark.parametrize(
    "changes",
    [
        {"signature": "invalid", "signature_reason": "digest mismatch"},
        {"certificate_status": "untrusted", "certificate_reason": "no path"},
        {"certificate_status": "expired", "certificate_reason": "expired"},
        {"weak": True, "digest_algorithm": "sha1"},
        {"capabilities": ()},
    ],
    ids=["invalid", "untrusted", "expired", "weak", "no-capabilities"],
)
def test_untrusted_announcement_is_ignored(changes: dict[str, object]) -> None:
    assert trusted_announcements(verified(report(**changes))) == []


def test_partner_key_is_kv_safe() -> None:
    key = partner_key("Ünï+tag@Example.COM")
    assert key == partner_key("ünï+tag@example.com")
    assert len(key) == 64
    assert set(key) <= set("0123456789abcdef")

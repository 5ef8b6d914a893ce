"""Delivery rules: patterns, CIDR, order and the first match."""

from __future__ import annotations

import pytest

from schemas.config import RuleCreated
from services.policy.rules import (
    RulePatternError,
    address_matches,
    check_address_pattern,
    check_client_pattern,
    client_matches,
    first_match,
)


def rule(
    rule_id: str,
    profile: str,
    sender: str | None = None,
    recipient: str | None = None,
    client_ip: str | None = None,
) -> RuleCreated:
    return RuleCreated.create(
        rule_id=rule_id,
        position=1,
        profile=profile,
        sender=sender,
        recipient=recipient,
        client_ip=client_ip,
    )


@pytest.mark.parametrize(
    ("pattern", "address", "expected"),
    [
        ("bob@partner.example", "Bob@Partner.Example", True),
        ("bob@partner.example", "bobby@partner.example", False),
        ("@partner.example", "anyone@PARTNER.example", True),
        ("partner.example", "anyone@partner.example", True),
        ("@partner.example", "x@sub.partner.example", False),
        ("*@*.partner.example", "x@sub.partner.example", True),
        ("sales-*@partner.example", "sales-emea@partner.example", True),
        ("sales-*@partner.example", "support@partner.example", False),
        ("b?b@partner.example", "bob@partner.example", True),
        (r"re:^(alice|bob)@partner\.example$", "BOB@partner.example", True),
        (r"re:^(alice|bob)@partner\.example$", "carol@partner.example", False),
        (None, "whoever@anywhere.example", True),
    ],
)
def test_address_patterns(pattern: str | None, address: str, expected: bool) -> None:
    assert address_matches(pattern, address) is expected


@pytest.mark.parametrize(
    ("pattern", "client", "expected"),
    [
        ("192.0.2.0/24", "192.0.2.77", True),
        ("192.0.2.0/24", "192.0.3.1", False),
        ("198.51.100.7/32", "198.51.100.7", True),
        ("2001:db8::/32", "2001:db8::1", True),
        ("2001:db8::/32", "192.0.2.1", False),
        (None, "203.0.113.9", True),
    ],
)
def test_client_cidr(pattern: str | None, client: str, expected: bool) -> None:
    assert client_matches(pattern, client) is expected


def test_first_match_wins_top_down() -> None:
    rules = [
        rule("r1", "partner-strict", recipient="ceo@partner.example"),
        rule("r2", "partner", recipient="@partner.example"),
        rule("r3", "everyone", recipient="*"),
    ]
    assert (
        first_match(rules, "a@example.com", "ceo@partner.example", "127.0.0.1").profile
        == "partner-strict"
    )  # type: ignore[union-attr]
    assert (
        first_match(rules, "a@example.com", "cfo@partner.example", "127.0.0.1").profile
        == "partner"
    )  # type: ignore[union-attr]
    assert (
        first_match(rules, "a@example.com", "x@other.example", "127.0.0.1").profile
        == "everyone"
    )  # type: ignore[union-attr]


def test_order_decides() -> None:
    broad = rule("r1", "broad", recipient="*")
    narrow = rule("r2", "narrow", recipient="ceo@partner.example")
    found = first_match([broad, narrow], "a@example.com", "ceo@partner.example", "::1")
    assert found is not None
    assert found.profile == "broad"


def test_every_pattern_must_match() -> None:
    rules = [
        rule("r1", "lab", sender="@lab.example.com", client_ip="10.0.0.0/8"),
    ]
    assert first_match(rules, "x@lab.example.com", "y@z.example", "10.1.1.1")
    assert first_match(rules, "x@lab.example.com", "y@z.example", "192.0.2.1") is None
    assert first_match(rules, "x@example.com", "y@z.example", "10.1.1.1") is None


def test_no_rule_no_smime() -> None:
    assert first_match([], "a@example.com", "b@example.org", "127.0.0.1") is None


def test_bad_patterns_rejected() -> None:
    with pytest.raises(RulePatternError, match="regular expression"):
        check_address_pattern("re:(unclosed")
    with pytest.raises(RulePatternError, match="CIDR"):
        check_client_pattern("10.0.0.0/33")
    with pytest.raises(RulePatternError, match="empty"):
        check_address_pattern("  ")

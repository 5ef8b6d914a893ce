"""Delivery rules: which encryption profile, if any, applies to a recipient.

A pattern is one of, checked in this order:
- `re:EXPRESSION`, a regular expression that must match the whole address;
- a pattern with `*` or `?`, shell-style wildcards over the whole address;
- `@example.com` or `example.com`, every address of that domain;
- `user@example.com`, that address.
Every comparison ignores case. An empty pattern matches everything.
"""

from __future__ import annotations

import fnmatch
import ipaddress
import re
from collections.abc import Sequence
from functools import lru_cache

from schemas.config import RuleCreated
from smimegw.x509 import address_key


class RulePatternError(ValueError):
    """A sender, recipient or client IP pattern that cannot be used."""


@lru_cache(maxsize=1024)
def _compiled(pattern: str) -> re.Pattern[str]:
    if pattern.startswith("re:"):
        try:
            return re.compile(pattern[3:], re.IGNORECASE)
        except re.error as err:
            raise RulePatternError(
                f"regular expression {pattern[3:]!r} is invalid: {err}"
            ) from err
    if "*" in pattern or "?" in pattern:
        return re.compile(fnmatch.translate(pattern.lower()), re.IGNORECASE)
    if pattern.startswith("@") or "@" not in pattern:
        domain = address_key("x@" + pattern.removeprefix("@")).partition("@")[2]
        return re.compile(r".+@" + re.escape(domain), re.IGNORECASE)
    return re.compile(re.escape(address_key(pattern)), re.IGNORECASE)


def check_address_pattern(pattern: str) -> str:
    """Validate a pattern for a rule, raising RulePatternError with the fix."""
    text = pattern.strip()
    if not text:
        raise RulePatternError("an empty pattern: leave the option out to match all")
    _compiled(text)
    return text


def check_client_pattern(pattern: str) -> str:
    try:
        return str(ipaddress.ip_network(pattern.strip(), strict=False))
    except ValueError as err:
        raise RulePatternError(
            f"client IP {pattern!r} is neither an address nor a CIDR network, "
            "e.g. 192.0.2.0/24"
        ) from err


def address_matches(pattern: str | None, address: str) -> bool:
    if not pattern:
        return True
    compiled = _compiled(pattern)
    return compiled.fullmatch(address_key(address)) is not None or (
        compiled.fullmatch(address) is not None
    )


def client_matches(pattern: str | None, client: str) -> bool:
    if not pattern:
        return True
    try:
        return ipaddress.ip_address(client) in ipaddress.ip_network(pattern)
    except ValueError:
        return False


def first_match(
    rules: Sequence[RuleCreated], sender: str, recipient: str, client: str
) -> RuleCreated | None:
    """The first rule, top down, whose every pattern matches; None means no S/MIME."""
    for rule in rules:
        if (
            address_matches(rule.sender, sender)
            and address_matches(rule.recipient, recipient)
            and client_matches(rule.client_ip, client)
        ):
            return rule
    return None

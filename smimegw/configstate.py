"""The configuration as a fold of the CONFIG stream, rebuilt by every replica.

`ConfigState.apply` is a pure function of the events in stream order, so two
replicas that have read up to the same sequence hold the same state and make the
same decisions. `ConfigFollower` reads the stream from its first message and
keeps following it.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from cryptography import x509
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js import JetStreamContext
from nats.js.api import DeliverPolicy
from pydantic import ValidationError

from schemas.config import (
    AnyConfigEvent,
    BindingCreated,
    BindingDeleted,
    CaDeleted,
    CaImported,
    ConfigWarning,
    LocalCertDeleted,
    LocalCertImported,
    ProfileCreated,
    ProfileDeleted,
    RuleCreated,
    RuleDeleted,
    RuleMoved,
    config_event_adapter,
)
from smimegw import streams
from smimegw import x509 as certs

log = logging.getLogger("smimegw.config")

Purpose = Literal["signing", "encryption"]

# local@domain, or @domain for a whole domain; no spaces or angle brackets.
_PATTERN = re.compile(r"^(?:[^@\s<>]+)?@[^@\s<>]+\.[^@\s<>]+$")


class PatternError(ValueError):
    """An address pattern that is neither an address nor `@domain`."""


def normalise_pattern(pattern: str) -> str:
    """Check an address pattern and return the form it is matched in."""
    text = pattern.strip()
    if not _PATTERN.match(text):
        raise PatternError(
            f"address pattern {pattern!r} is invalid: write an address "
            "(user@example.com) or a whole domain (@partner.example)"
        )
    if text.startswith("@"):
        return "@" + certs.address_key("x" + text).partition("@")[2]
    return certs.address_key(text)


def binding_id(kind: str, pattern: str, fingerprint: str) -> str:
    """Derived from what makes a binding unique, so importing it twice is detected."""
    digest = hashlib.sha256(f"{kind}|{pattern}|{fingerprint}".encode()).hexdigest()
    return digest[:12]


def load_pem(pem: str) -> x509.Certificate:
    return x509.load_pem_x509_certificate(pem.encode())


def pem_of(certificate: x509.Certificate) -> str:
    from cryptography.hazmat.primitives.serialization import Encoding

    return certificate.public_bytes(Encoding.PEM).decode()


@dataclass
class CaEntry:
    ca_id: str
    certificate: x509.Certificate
    facts: certs.CertificateFacts
    file_name: str
    imported_at: datetime


@dataclass
class LocalCertEntry:
    name: str
    certificate: x509.Certificate
    facts: certs.CertificateFacts
    chain: tuple[x509.Certificate, ...]
    key_id: str
    file_name: str
    imported_at: datetime


@dataclass
class BindingEntry:
    binding_id: str
    kind: Literal["internal", "external"]
    pattern: str
    certificate: x509.Certificate
    facts: certs.CertificateFacts
    chain: tuple[x509.Certificate, ...]
    key_id: str | None
    local_cert: str | None
    file_name: str
    created_at: datetime
    warnings: list[str] = field(default_factory=list)


@dataclass
class ConfigState:
    cas: dict[str, CaEntry] = field(default_factory=dict)
    local_certs: dict[str, LocalCertEntry] = field(default_factory=dict)
    bindings: dict[str, BindingEntry] = field(default_factory=dict)
    profiles: dict[str, ProfileCreated] = field(default_factory=dict)
    # Delivery rules in the order they are checked.
    rules: list[RuleCreated] = field(default_factory=list)
    last_sequence: int = 0

    def apply(self, event: AnyConfigEvent, sequence: int) -> None:
        self.last_sequence = sequence
        if isinstance(event, CaImported):
            certificate = load_pem(event.certificate)
            self.cas[event.ca_id] = CaEntry(
                event.ca_id,
                certificate,
                certs.facts_of(certificate),
                event.file_name,
                event.time,
            )
        elif isinstance(event, CaDeleted):
            self.cas.pop(event.ca_id, None)
        elif isinstance(event, LocalCertImported):
            certificate = load_pem(event.certificate)
            self.local_certs[event.name] = LocalCertEntry(
                event.name,
                certificate,
                certs.facts_of(certificate),
                tuple(load_pem(p) for p in event.chain),
                event.key_id,
                event.file_name,
                event.time,
            )
        elif isinstance(event, LocalCertDeleted):
            self.local_certs.pop(event.name, None)
        elif isinstance(event, BindingCreated):
            certificate = load_pem(event.certificate)
            self.bindings[event.binding_id] = BindingEntry(
                event.binding_id,
                event.kind,
                event.pattern,
                certificate,
                certs.facts_of(certificate),
                tuple(load_pem(p) for p in event.chain),
                event.key_id,
                event.local_cert,
                event.file_name,
                event.time,
            )
        elif isinstance(event, BindingDeleted):
            self.bindings.pop(event.binding_id, None)
        elif isinstance(event, ProfileCreated):
            self.profiles[event.name] = event
        elif isinstance(event, ProfileDeleted):
            self.profiles.pop(event.name, None)
        elif isinstance(event, RuleCreated):
            index = min(max(event.position - 1, 0), len(self.rules))
            self.rules.insert(index, event)
        elif isinstance(event, RuleMoved):
            rule = self.find_rule(event.rule_id)
            if rule is not None:
                self.rules.remove(rule)
                index = min(max(event.position - 1, 0), len(self.rules))
                self.rules.insert(index, rule)
        elif isinstance(event, RuleDeleted):
            self.rules = [r for r in self.rules if r.rule_id != event.rule_id]
        elif isinstance(event, ConfigWarning) and event.entry_kind == "binding":
            entry = self.bindings.get(event.entry_id)
            if entry is not None:
                entry.warnings.append(event.message)

    # Questions the services ask.

    def find_rule(self, rule_id: str) -> RuleCreated | None:
        return next((r for r in self.rules if r.rule_id == rule_id), None)

    def profile_users(self, name: str) -> list[str]:
        return [f"rule {r.rule_id}" for r in self.rules if r.profile == name]

    def ca_certificates(self) -> list[x509.Certificate]:
        return [entry.certificate for entry in self.cas.values()]

    def chain_of(self, certificate: x509.Certificate) -> list[x509.Certificate] | None:
        """Return the chain to an imported CA, or None if the issuing CA is missing."""
        return certs.find_issuer_chain(
            certificate, self.ca_certificates(), allow_sha1=True
        )

    def find_ca(self, ca_id: str) -> CaEntry | None:
        """Find the CA whose id or fingerprint starts with `ca_id` (8+ digits)."""
        wanted = ca_id.strip().lower().replace(":", "")
        if len(wanted) < 8:
            return None
        matches = [
            e
            for e in self.cas.values()
            if e.ca_id.startswith(wanted)
            or e.facts.sha256_fingerprint.startswith(wanted)
        ]
        return matches[0] if len(matches) == 1 else None

    def ca_users(self, ca_id: str) -> list[str]:
        """Entries whose chain goes through this CA: they stop working without it."""
        entry = self.cas[ca_id]
        others = [e.certificate for k, e in self.cas.items() if k != ca_id]
        users: list[str] = []
        candidates: list[tuple[str, x509.Certificate]] = [
            (f"binding {b.binding_id}", b.certificate) for b in self.bindings.values()
        ]
        candidates += [
            (f"local certificate {c.name}", c.certificate)
            for c in self.local_certs.values()
        ]
        candidates += [
            (f"CA {k}", e.certificate) for k, e in self.cas.items() if k != ca_id
        ]
        for label, certificate in candidates:
            chain = certs.find_issuer_chain(
                certificate, [*others, entry.certificate], allow_sha1=True
            )
            if chain is None or not any(c == entry.certificate for c in chain[1:]):
                continue
            if certs.find_issuer_chain(certificate, others, allow_sha1=True) is None:
                users.append(label)
        return users

    def local_cert_users(self, name: str) -> list[str]:
        return [
            f"binding {b.binding_id}"
            for b in self.bindings.values()
            if b.local_cert == name
        ]

    def binding_users(self, binding_id: str) -> list[str]:
        # Nothing refers to a binding yet; held messages and rules will.
        return []

    def status(self, entry: BindingEntry, now: datetime) -> tuple[str, str | None]:
        """Return the status and, when unusable, the reason, against the clock `now`."""
        if self.chain_of(entry.certificate) is None:
            return "unusable", "issuer CA not imported"
        return certs.status_at(entry.facts, now), None

    def candidates(
        self, address: str, kind: Literal["internal", "external"]
    ) -> list[BindingEntry]:
        """Bindings of `kind` for `address`: exact address ones, else its domain's."""
        key = certs.address_key(address)
        exact = [
            b for b in self.bindings.values() if b.kind == kind and b.pattern == key
        ]
        if exact:
            return exact
        domain = "@" + key.rpartition("@")[2]
        return [
            b for b in self.bindings.values() if b.kind == kind and b.pattern == domain
        ]

    def select(
        self,
        address: str,
        kind: Literal["internal", "external"],
        purpose: Purpose,
        now: datetime,
    ) -> BindingEntry | None:
        """Pick the valid binding with the latest notAfter that suits `purpose`."""
        usable = [
            b
            for b in self.candidates(address, kind)
            if self.status(b, now)[0] == "valid"
            and b.facts.key_usage in (purpose, "both")
        ]
        return max(usable, key=lambda b: b.facts.not_after, default=None)

    # Views for the CLI.

    def ca_view(self, entry: CaEntry, now: datetime) -> dict[str, Any]:
        return {
            "id": entry.ca_id,
            "subject": entry.facts.subject,
            "fingerprint": entry.facts.sha256_fingerprint,
            "valid_from": entry.facts.not_before.isoformat(),
            "valid_to": entry.facts.not_after.isoformat(),
            "status": certs.status_at(entry.facts, now),
            "in_use": bool(self.ca_users(entry.ca_id)),
            "file": entry.file_name,
        }

    def local_cert_view(self, entry: LocalCertEntry, now: datetime) -> dict[str, Any]:
        return {
            "name": entry.name,
            "identity": entry.facts.identity,
            "subject": entry.facts.subject,
            "addresses": list(entry.facts.addresses),
            "fingerprint": entry.facts.sha256_fingerprint,
            "valid_from": entry.facts.not_before.isoformat(),
            "valid_to": entry.facts.not_after.isoformat(),
            "status": certs.status_at(entry.facts, now),
            "key_usage": entry.facts.key_usage,
            "in_use": bool(self.local_cert_users(entry.name)),
            "file": entry.file_name,
        }

    def binding_view(self, entry: BindingEntry, now: datetime) -> dict[str, Any]:
        status, reason = self.status(entry, now)
        facts = entry.facts
        return {
            "id": entry.binding_id,
            "type": entry.kind,
            "pattern": entry.pattern,
            "identity": facts.identity,
            "addresses": list(facts.addresses),
            "issuer": facts.issuer,
            "serial": facts.serial,
            "fingerprint": facts.sha256_fingerprint,
            "valid_from": facts.not_before.isoformat(),
            "valid_to": facts.not_after.isoformat(),
            "status": status,
            "reason": reason,
            "key_usage": facts.key_usage,
            "in_use": bool(self.binding_users(entry.binding_id)),
            "local_cert": entry.local_cert,
            "file": entry.file_name,
            "warnings": list(entry.warnings),
        }


class ConfigFollower:
    """Applies every CONFIG event to a ConfigState, from the first one on."""

    def __init__(self, js: JetStreamContext, state: ConfigState | None = None) -> None:
        self.js = js
        self.state = state or ConfigState()
        self._changed = asyncio.Condition()
        self._subscription: Subscription | None = None

    async def start(self) -> None:
        # An ordered consumer: ephemeral, flow-controlled, and restarted by the
        # client from the last sequence it saw when it detects a gap.
        self._subscription = await self.js.subscribe(
            "config.>",
            stream=streams.CONFIG,
            ordered_consumer=True,
            deliver_policy=DeliverPolicy.ALL,
            cb=self._on_message,
        )
        await self.sync()

    async def stop(self) -> None:
        if self._subscription is not None:
            await self._subscription.unsubscribe()
            self._subscription = None

    async def _on_message(self, msg: Msg) -> None:
        sequence = msg.metadata.sequence.stream
        try:
            event = config_event_adapter.validate_json(msg.data)
        except ValidationError as err:
            # Skipping keeps every replica identical: they all skip the same one.
            log.error(
                "skipped invalid CONFIG event %d: %s", sequence, err.error_count()
            )
            event = None
        async with self._changed:
            if event is not None:
                try:
                    self.state.apply(event, sequence)
                except ValueError as err:
                    log.error("could not apply CONFIG event %d: %s", sequence, err)
            self.state.last_sequence = sequence
            self._changed.notify_all()

    async def sync(self, timeout: float = 10.0) -> int:
        """Wait until every event stored so far is applied; return the sequence."""
        info = await self.js.stream_info(streams.CONFIG)
        target = info.state.last_seq
        async with asyncio.timeout(timeout), self._changed:
            await self._changed.wait_for(lambda: self.state.last_sequence >= target)
        return target

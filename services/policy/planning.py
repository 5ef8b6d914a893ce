"""Splitting a received message into plans: one per group of recipients that get
the same treatment.

For each recipient, the first delivery rule that matches (sender, recipient,
client IP) names an encryption profile. Without one, recipients in
`internal_domains` get the incoming treatment (`open`: decrypt and verify) and
the others are relayed unchanged.

Signing uses the internal binding of the From header address, and only when the
envelope sender is that same address (ignoring case). Recipients check the
signer against From, and a trusted client must not get mail signed in another
user's name by writing that user's From. Otherwise the sender has no signing key
and the profile's failure action applies.

Recipients with certificates share one protected message with one RecipientInfo
each, except Bcc recipients (in the envelope but in no To or Cc field): each gets
a copy of its own, so no Bcc address is revealed to the others.

A group that is encrypted gets the strongest content algorithm that every
recipient announced in trusted signed mail (SMIMECapabilities, recorded by
`partners`), and never one weaker than its profile's algorithm, which is the
floor. A recipient that announced nothing gets the profile's algorithm, so
AES-GCM is chosen above the floor only when every recipient announced it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from email.parser import BytesHeaderParser
from email.policy import compat32
from email.utils import getaddresses, parseaddr

from schemas import MailReceived, ProfileSpec, RecipientCertificate
from schemas.config import ProfileCreated, RuleCreated
from services.policy.rules import first_match
from smimegw.configstate import BindingEntry, ConfigState
from smimegw.x509 import address_key

# Status for recipients bounced by policy: RFC 3463 "delivery not authorized".
NO_CERTIFICATE_STATUS = "5.7.1"

# Content encryption from strongest to weakest. AES-GCM comes first because it
# authenticates the content (AuthEnvelopedData, RFC 5083), then key length.
CONTENT_STRENGTH = (
    "aes256-gcm",
    "aes192-gcm",
    "aes128-gcm",
    "aes256-cbc",
    "aes192-cbc",
    "aes128-cbc",
    "3des-cbc",
)

# Announced algorithms per address_key, for the addresses that announced any.
PartnerCapabilities = Mapping[str, tuple[str, ...]]


@dataclass(frozen=True)
class Headers:
    """The header fields that planning reads: From, and the visible recipients."""

    from_address: str | None
    visible: frozenset[str]

    @classmethod
    def parse(cls, head: bytes) -> Headers:
        end = head.find(b"\r\n\r\n")
        if end < 0:
            end = head.find(b"\n\n")
        block = head if end < 0 else head[: end + 2]
        message = BytesHeaderParser(policy=compat32).parsebytes(block)
        _, from_address = parseaddr(str(message.get("From", "")))
        visible = [
            str(value)
            for name in ("To", "Cc", "Resent-To", "Resent-Cc")
            for value in message.get_all(name, [])
        ]
        addresses = {address_key(a) for _, a in getaddresses(visible) if "@" in a}
        return cls(from_address or None, frozenset(addresses))


@dataclass
class Group:
    """Recipients that one plan covers."""

    action: str
    reason: str
    recipients: list[str] = field(default_factory=list)
    rule: RuleCreated | None = None
    profile: ProfileCreated | None = None
    signer: BindingEntry | None = None
    encrypt_to: list[RecipientCertificate] = field(default_factory=list)
    status: str | None = None
    # Set for a send-plain group: why it leaves unprotected.
    unprotected: str | None = None
    held: bool = False
    # Set for a group that is encrypted, by choose_content_algorithm.
    content_algorithm: str | None = None
    algorithm_reason: str | None = None


def profile_spec(profile: ProfileCreated) -> ProfileSpec:
    return ProfileSpec(
        name=profile.name,
        action=profile.action,
        algorithm=profile.algorithm,
        digest=profile.digest,
        signature=profile.signature,
        on_failure=profile.on_failure,
        encrypt_to_self=profile.encrypt_to_self,
        rsa_padding=profile.rsa_padding,
    )


def recipient_certificate(address: str, binding: BindingEntry) -> RecipientCertificate:
    return RecipientCertificate(
        address=address,
        binding_id=binding.binding_id,
        fingerprint=binding.facts.sha256_fingerprint,
    )


class Planner:
    def __init__(self, state: ConfigState, internal_domains: frozenset[str]) -> None:
        self.state = state
        self.internal_domains = internal_domains

    def signer_for(
        self, event: MailReceived, headers: Headers, now: datetime
    ) -> tuple[BindingEntry | None, str]:
        """Find the sender's signing binding, or return None with the reason."""
        if headers.from_address is None:
            return None, "the message has no From address to sign for"
        if address_key(headers.from_address) != address_key(event.sender or ""):
            return None, (
                f"the envelope sender <{event.sender}> differs from the From address "
                f"<{headers.from_address}>, so the gateway does not sign for it"
            )
        binding = self.state.select(headers.from_address, "internal", "signing", now)
        if binding is None:
            return None, f"no usable signing certificate for {headers.from_address}"
        return binding, ""

    def plan(
        self,
        event: MailReceived,
        headers: Headers,
        now: datetime,
        partners: PartnerCapabilities | None = None,
    ) -> list[Group]:
        """Groups in a fixed order, so a redelivered message gets the same plan ids.

        `partners` contains the algorithms that recipients announced; a recipient
        missing from it gets the profile's algorithm.
        """
        groups: dict[tuple[str, ...], Group] = {}
        signer, signer_problem = self.signer_for(event, headers, now)
        for recipient in event.recipients:
            rule = first_match(
                self.state.rules, event.sender, recipient, event.client.address
            )
            profile = self.state.profiles.get(rule.profile) if rule else None
            if rule is None or profile is None:
                domain = address_key(recipient).rpartition("@")[2]
                if domain in self.internal_domains:
                    key: tuple[str, ...] = ("open",)
                    new = Group("open", "internal recipient: incoming S/MIME")
                else:
                    key = ("relay",)
                    new = Group("relay", "no delivery rule matched")
                groups.setdefault(key, new).recipients.append(recipient)
                continue
            self._place(
                groups, recipient, rule, profile, signer, signer_problem, headers, now
            )
        ordered = [groups[key] for key in sorted(groups)]
        for group in ordered:
            self._add_self(group, event.sender, now)
            profile = group.profile
            if group.action == "protect" and profile and "encrypt" in profile.action:
                group.content_algorithm, group.algorithm_reason = (
                    choose_content_algorithm(profile, group.recipients, partners or {})
                )
        return ordered

    def _place(
        self,
        groups: dict[tuple[str, ...], Group],
        recipient: str,
        rule: RuleCreated,
        profile: ProfileCreated,
        signer: BindingEntry | None,
        signer_problem: str,
        headers: Headers,
        now: datetime,
    ) -> None:
        problem = signer_problem if "sign" in profile.action and signer is None else ""
        certificate = None
        if "encrypt" in profile.action:
            certificate = self.state.select(recipient, "external", "encryption", now)
            if certificate is None and not problem:
                problem = f"no usable encryption certificate for {recipient}"
        if problem:
            self._fail(groups, recipient, rule, profile, problem)
            return

        bcc = address_key(recipient) not in headers.visible
        key = ("protect", rule.rule_id, *((recipient,) if bcc else ()))
        group = groups.setdefault(
            key,
            Group(
                "protect",
                f"rule {rule.rule_id} selected profile {profile.name}",
                rule=rule,
                profile=profile,
                signer=signer if "sign" in profile.action else None,
            ),
        )
        group.recipients.append(recipient)
        if certificate is not None:
            group.encrypt_to.append(recipient_certificate(recipient, certificate))

    def _fail(
        self,
        groups: dict[tuple[str, ...], Group],
        recipient: str,
        rule: RuleCreated,
        profile: ProfileCreated,
        problem: str,
    ) -> None:
        """Apply the profile's failure action to an unprotectable recipient."""
        if profile.on_failure == "send-plain":
            group = groups.setdefault(
                ("plain", profile.name),
                Group(
                    "relay", f"sent unprotected: {problem}", rule=rule, profile=profile
                ),
            )
            group.unprotected = problem
        elif profile.on_failure == "bounce":
            group = groups.setdefault(
                ("bounce", profile.name, problem),
                Group(
                    "bounce",
                    f"{problem} (profile {profile.name})",
                    rule=rule,
                    profile=profile,
                    status=NO_CERTIFICATE_STATUS,
                ),
            )
        else:
            # Each held recipient waits alone: certificates arrive one by one.
            group = groups.setdefault(
                ("hold", recipient),
                Group("hold", problem, rule=rule, profile=profile, held=True),
            )
        group.recipients.append(recipient)

    def _add_self(self, group: Group, sender: str, now: datetime) -> None:
        """Encrypt to the sender's own certificate too, so the sender can read it."""
        profile = group.profile
        if group.action != "protect" or profile is None or not profile.encrypt_to_self:
            return
        if "encrypt" not in profile.action or not sender:
            return
        binding = self.state.select(sender, "internal", "encryption", now)
        if binding is not None:
            group.encrypt_to.append(recipient_certificate(sender, binding))


def choose_content_algorithm(
    profile: ProfileCreated, recipients: list[str], partners: PartnerCapabilities
) -> tuple[str, str]:
    """Return the content algorithm for `recipients` and the reason for it.

    The encrypt-to-self certificate is left out: it is the sender's own, an
    internal binding whose mail the gateway decrypts with any algorithm.
    """
    floor = profile.algorithm
    source = f"the algorithm of profile {profile.name}"
    if floor not in CONTENT_STRENGTH:
        return floor, f"{floor}: {source}"
    unknown = [r for r in recipients if not partners.get(address_key(r))]
    if unknown:
        return floor, (
            f"{floor}: {source}, because {len(unknown)} recipient(s) such as "
            f"<{unknown[0]}> announced no SMIMECapabilities in trusted signed mail"
        )
    common = set(CONTENT_STRENGTH)
    for recipient in recipients:
        common &= set(partners[address_key(recipient)])
    stronger = CONTENT_STRENGTH[: CONTENT_STRENGTH.index(floor)]
    for candidate in stronger:
        if candidate in common:
            return candidate, (
                f"{candidate}: the strongest algorithm that every recipient "
                f"announced in SMIMECapabilities; {floor} from profile "
                f"{profile.name} is the floor"
            )
    return floor, (
        f"{floor}: {source}, because the recipients announced no stronger "
        "algorithm in common"
    )

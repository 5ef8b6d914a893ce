"""Results of opening incoming S/MIME: signer reports, events and result fields.

The open transform records each layer here as it goes, so that the events, the
operations of mail.processed and the header fields all state the same results.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Literal, overload

from schemas import (
    CryptoOperation,
    MailDecrypted,
    MailRouted,
    MailVerified,
    SignerReport,
)
from services.crypto.cms.envelope import Decrypted
from services.crypto.cms.signed import SignerResult
from services.crypto.result_headers import decryption_field, signature_field
from smimegw.configstate import BindingEntry

log = logging.getLogger("smimegw.crypto")

# Content encryption that decrypts but is reported as weak: Triple DES has 64-bit
# blocks, and outgoing mail reports it the same way.
WEAK_CONTENT = frozenset({"3des-cbc"})

# Bounds on the text that a sender's certificate or structure puts into an event.
# With them, a mail.verified event of 8 layers of 16 signers (the most verify
# reads) stays under 1 MiB, the default maximum payload of nats-server.
MAX_EVENT_TEXT = 256
MAX_EVENT_ITEMS = 8


@dataclass
class Outcome:
    """Results of opening one message, layer by layer."""

    plan_id: str
    delivered: bytes = field(repr=False)
    # The entity of the layer being opened, from entity_start to its end; the whole
    # message at first. A decrypted entity is read inside `delivered`, not copied.
    entity: bytes = field(repr=False)
    entity_start: int = 0
    config_synced: bool = False
    signature_layers: list[tuple[SignerReport, ...]] = field(default_factory=list)
    decryptions: list[MailDecrypted] = field(default_factory=list)
    operations: list[CryptoOperation] = field(default_factory=list)
    # Result header fields, in the order the layers were opened.
    fields: list[tuple[str, str]] = field(default_factory=list)


def signer_report(signer: SignerResult) -> SignerReport:
    """Convert one signer's verification result into its event form."""
    identity = signer.signer
    return SignerReport(
        signature=signer.signature,
        signature_reason=bounded(signer.signature_reason),
        digest_algorithm=bounded(signer.digest_algorithm),
        signature_algorithm=bounded(signer.signature_algorithm),
        weak=signer.weak,
        certificate_status=signer.certificate_status,
        certificate_reason=bounded(signer.certificate_reason),
        subject=bounded(identity.subject) if identity else "",
        fingerprint=identity.sha256_fingerprint if identity else "",
        from_matches=identity.from_matches if identity else None,
        signing_time=signer.signing_time,
        addresses=_bounded_items(identity.email_addresses) if identity else (),
        capabilities=_bounded_items(signer.capabilities),
    )


@overload
def bounded(text: str) -> str: ...
@overload
def bounded(text: None) -> None: ...
def bounded(text: str | None) -> str | None:
    """Cut text from outside to MAX_EVENT_TEXT characters for an event."""
    if text is None or len(text) <= MAX_EVENT_TEXT:
        return text
    return text[: MAX_EVENT_TEXT - 3] + "..."


def _bounded_items(items: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(bounded(item) for item in items[:MAX_EVENT_ITEMS])


def failed_report(reason: str) -> SignerReport:
    """Build the signer entry of a signature layer that could not be read at all."""
    return SignerReport(
        signature="invalid",
        signature_reason=bounded(reason),
        digest_algorithm="unknown",
        signature_algorithm="unknown",
        weak=False,
        certificate_status="untrusted",
        certificate_reason="signer certificate not found",
        subject="",
        fingerprint="",
        from_matches=None,
        signing_time=None,
    )


def record_signers(
    outcome: Outcome, layer: int, reports: tuple[SignerReport, ...]
) -> None:
    """Record the signers of one signature layer (from 1, the outermost)."""
    outcome.signature_layers.append(reports)
    for index, report in enumerate(reports, start=1):
        outcome.fields.append(signature_field(layer, index, report))
        outcome.operations.append(
            CryptoOperation(
                operation="verify",
                algorithm=f"{report.signature_algorithm}-{report.digest_algorithm}",
                certificates=(report.fingerprint,) if report.fingerprint else (),
                weak=report.weak,
                detail=(
                    f"layer {layer} signer {index}: signature {report.signature}, "
                    f"certificate {report.certificate_status}"
                ),
            )
        )


def record_decryption(
    outcome: Outcome,
    event: MailRouted,
    index: int,
    status: Literal["no-key", "failed"],
    reason: str,
) -> None:
    """Record an enveloped layer that stays closed: no key, or it failed."""
    log.warning(
        "plan %s: enveloped layer %d not decrypted (%s): %s",
        outcome.plan_id,
        index + 1,
        status,
        reason,
    )
    decrypted = MailDecrypted.create(
        cause=event,
        key=str(index),
        recipients=event.recipients,
        status=status,
        reason=bounded(reason),
        content_algorithm=None,
        key_algorithm=None,
        binding_id=None,
        fingerprint=None,
    )
    outcome.decryptions.append(decrypted)
    outcome.fields.append(decryption_field(decrypted))


def record_decrypted(
    outcome: Outcome,
    event: MailRouted,
    index: int,
    result: Decrypted,
    binding: BindingEntry,
) -> None:
    """Record an enveloped layer that the key of `binding` decrypted."""
    decrypted = MailDecrypted.create(
        cause=event,
        key=str(index),
        recipients=event.recipients,
        status="decrypted",
        reason=None,
        content_algorithm=result.content_algorithm,
        key_algorithm=result.key_algorithm,
        binding_id=binding.binding_id,
        fingerprint=result.recipient_fingerprint,
    )
    outcome.decryptions.append(decrypted)
    outcome.fields.append(decryption_field(decrypted))
    outcome.operations.append(
        CryptoOperation(
            operation="decrypt",
            algorithm=result.content_algorithm,
            certificates=(result.recipient_fingerprint,),
            binding_ids=(binding.binding_id,),
            weak=result.content_algorithm in WEAK_CONTENT,
            detail=f"key algorithm {result.key_algorithm}",
        )
    )


def verified_event(
    event: MailRouted, layers: list[tuple[SignerReport, ...]]
) -> MailVerified:
    """Build the mail.verified event; its summary is the worst result of any signer.

    Results rank from worst: invalid, weak, untrusted (any status but trusted), valid.
    """
    signers = [report for layer in layers for report in layer]
    if any(report.signature == "invalid" for report in signers):
        summary = "invalid"
    elif any(report.weak for report in signers):
        summary = "weak"
    elif any(report.certificate_status != "trusted" for report in signers):
        summary = "untrusted"
    else:
        summary = "valid"
    return MailVerified.create(
        cause=event,
        recipients=event.recipients,
        layers=tuple(layers),
        summary=summary,
    )

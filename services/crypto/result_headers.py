"""Header fields that tell the internal mail server what the gateway found.

One `X-Smimegw-Signature` field per signer and one `X-Smimegw-Decryption` field per
enveloped layer, in the order the layers were opened. Values are ASCII parameter
lists (`name=value; name="quoted value"`), built so that no field line exceeds the
998 octets of RFC 5322 section 2.1.1.
"""

from __future__ import annotations

import re

from schemas import MailDecrypted, SignerReport

SIGNATURE_HEADER = "X-Smimegw-Signature"
DECRYPTION_HEADER = "X-Smimegw-Decryption"
# Fields of these names that arrive from outside are removed before the gateway adds
# its own, so a sender cannot forge a result.
RESULT_HEADERS = (SIGNATURE_HEADER, DECRYPTION_HEADER)

# Quoted reasons and names are cut to this many characters, which keeps every field
# line under 998 octets: a signature field has at most three of them.
_MAX_TEXT = 200
_UNPRINTABLE = re.compile(r"[^\x20-\x7e]")


def signer_verdict(report: SignerReport) -> str:
    """Return "invalid", "weak" or "valid": the signature alone, certificate aside.

    A signature over MD5 or SHA-1 is weak even when its arithmetic holds.
    """
    if report.signature == "invalid":
        return "invalid"
    return "weak" if report.weak else "valid"


def signature_field(layer: int, index: int, report: SignerReport) -> tuple[str, str]:
    """Build the X-Smimegw-Signature field of signer `index` in `layer` (from 1)."""
    if report.from_matches is None:
        from_match = "none"
    else:
        from_match = "match" if report.from_matches else "mismatch"
    parameters = [
        f"layer={layer}",
        f"index={index}",
        f"result={signer_verdict(report)}",
        f"certificate={report.certificate_status}",
        f"weak={'yes' if report.weak else 'no'}",
        f"from={from_match}",
        f"signer={_quote(report.subject)}",
        f"fingerprint={report.fingerprint or 'none'}",
    ]
    if report.signature_reason:
        parameters.append(f"reason={_quote(report.signature_reason)}")
    if report.certificate_status != "trusted" and report.certificate_reason:
        parameters.append(f"certificate-reason={_quote(report.certificate_reason)}")
    return SIGNATURE_HEADER, "; ".join(parameters)


def decryption_field(event: MailDecrypted) -> tuple[str, str]:
    """Build the X-Smimegw-Decryption field from a mail.decrypted event."""
    parameters = [f"status={event.status}"]
    if event.content_algorithm:
        parameters.append(f"content-algorithm={event.content_algorithm}")
    if event.key_algorithm:
        parameters.append(f"key-algorithm={event.key_algorithm}")
    if event.binding_id:
        parameters.append(f"binding={event.binding_id}")
    if event.fingerprint:
        parameters.append(f"fingerprint={event.fingerprint}")
    if event.reason:
        parameters.append(f"reason={_quote(event.reason)}")
    return DECRYPTION_HEADER, "; ".join(parameters)


def _quote(text: str) -> str:
    """Quote `text` as an RFC 2045 quoted-string; unprintable characters become "?".

    The quoted content, escapes included, is cut to _MAX_TEXT characters.
    """
    pieces: list[str] = []
    length = 0
    for char in text:
        if char in '"\\':
            piece = "\\" + char
        elif _UNPRINTABLE.match(char):
            piece = "?"
        else:
            piece = char
        if length + len(piece) > _MAX_TEXT - 3:
            pieces.append("...")
            break
        pieces.append(piece)
        length += len(piece)
    return '"' + "".join(pieces) + '"'

"""Recipient identifiers of RecipientInfos (RFC 5652 sections 6.2.1 and 6.2.2).

A recipient is named by the issuer and serial number of its certificate, or by the
subject key identifier of that certificate.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from asn1crypto import cms, core
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from services.crypto.cms.der import translate_errors

RecipientIdKind = Literal["issuer-serial", "subject-key-identifier"]
RECIPIENT_ID_KINDS: tuple[RecipientIdKind, ...] = (
    "issuer-serial",
    "subject-key-identifier",
)

# Short names that RFC 4514 section 3 and cryptography's rfc4514_string() use.
_ATTRIBUTE_SHORT_NAMES = {
    "2.5.4.3": "CN",
    "2.5.4.7": "L",
    "2.5.4.8": "ST",
    "2.5.4.10": "O",
    "2.5.4.11": "OU",
    "2.5.4.6": "C",
    "2.5.4.9": "STREET",
    "0.9.2342.19200300.100.1.25": "DC",
    "0.9.2342.19200300.100.1.1": "UID",
}


@dataclass(frozen=True)
class RecipientId:
    """The identifier of one recipient, as a RecipientInfo states it.

    `issuer` is an RFC 4514 string for display and logs. Matching compares the DER
    issuer name with the rules of RFC 5280 section 7.1 when the identifier was read
    from a message, and the RFC 4514 strings otherwise.
    """

    kind: RecipientIdKind
    issuer: str | None = None
    serial: int | None = None
    subject_key_identifier: bytes | None = None
    issuer_der: bytes | None = field(default=None, repr=False, compare=False)

    def matches(self, certificate: x509.Certificate) -> bool:
        """Return True when this identifier names `certificate`."""
        if self.kind == "subject-key-identifier":
            return self.subject_key_identifier in _subject_key_identifiers(certificate)
        if self.serial != certificate.serial_number:
            return False
        if self.issuer_der is None:
            return self.issuer == certificate.issuer.rfc4514_string()
        return _same_name(self.issuer_der, certificate)

    def __str__(self) -> str:
        if self.kind == "subject-key-identifier":
            ski = (self.subject_key_identifier or b"").hex(":")
            return f"subject key identifier {ski}"
        serial = "none" if self.serial is None else f"{self.serial:#x}"
        return f'issuer "{self.issuer}" serial {serial}'


def _subject_key_identifiers(certificate: x509.Certificate) -> tuple[bytes, ...]:
    try:
        extension = certificate.extensions.get_extension_for_class(
            x509.SubjectKeyIdentifier
        )
    except x509.ExtensionNotFound:
        # A certificate without the extension is still named by the RFC 5280
        # section 4.2.1.2 method 1 value (SHA-1 of the public key), which some
        # senders compute.
        computed = x509.SubjectKeyIdentifier.from_public_key(certificate.public_key())
        return (computed.digest,)
    return (extension.value.digest,)


def _same_name(issuer_der: bytes, certificate: x509.Certificate) -> bool:
    certificate_der = certificate.public_bytes(serialization.Encoding.DER)
    try:
        issuer = asn1_x509.Name.load(issuer_der)
        parsed = asn1_x509.Certificate.load(certificate_der)
        same: bool = issuer == parsed["tbs_certificate"]["issuer"]
    except (ValueError, TypeError, KeyError, IndexError):
        # A name that asn1crypto cannot prepare for comparison (RFC 4518) matches
        # only byte for byte.
        return issuer_der == certificate.issuer.public_bytes()
    return same


def read_rid(rid: core.Choice) -> RecipientId:
    """Read a RecipientIdentifier or KeyAgreementRecipientIdentifier."""
    with translate_errors("recipient identifier"):
        if rid.name == "issuer_and_serial_number":
            issuer = rid.chosen["issuer"]
            return RecipientId(
                "issuer-serial",
                issuer=format_name(issuer),
                serial=rid.chosen["serial_number"].native,
                issuer_der=issuer.dump(),
            )
        if rid.name == "subject_key_identifier":
            return RecipientId(
                "subject-key-identifier", subject_key_identifier=rid.chosen.native
            )
        # KeyAgreeRecipientInfo names the key in a RecipientKeyIdentifier.
        ski: bytes = rid.chosen["subject_key_identifier"].native
        return RecipientId("subject-key-identifier", subject_key_identifier=ski)


def format_name(name: asn1_x509.Name) -> str:
    """Format a distinguished name as RFC 4514, as cryptography's rfc4514_string()."""
    rdns = []
    for rdn in reversed(list(name.chosen)):
        attributes = []
        for type_and_value in rdn:
            oid = type_and_value["type"].dotted
            attribute = _ATTRIBUTE_SHORT_NAMES.get(oid, oid)
            value = type_and_value["value"].native
            if isinstance(value, str):
                text = _escape(value)
            else:
                text = "#" + type_and_value["value"].dump().hex()
            attributes.append(f"{attribute}={text}")
        rdns.append("+".join(attributes))
    return ",".join(rdns)


def _escape(value: str) -> str:
    # RFC 4514 section 2.4.
    escaped = value.replace("\\", "\\\\")
    for special in '"+,;<>':
        escaped = escaped.replace(special, "\\" + special)
    escaped = escaped.replace("\0", "\\00")
    if escaped.startswith(("#", " ")):
        escaped = "\\" + escaped
    if escaped.endswith(" "):
        escaped = escaped[:-1] + "\\ "
    return escaped


def subject_key_identifier(certificate: x509.Certificate) -> bytes:
    """Return the certificate's subject key identifier extension value.

    Raises ValueError when the certificate has none, because a recipient can find
    its RecipientInfo by subject key identifier only through that extension.
    """
    try:
        extension = certificate.extensions.get_extension_for_class(
            x509.SubjectKeyIdentifier
        )
    except x509.ExtensionNotFound:
        raise ValueError(
            f"certificate {certificate.subject.rfc4514_string()!r} has no subject key "
            "identifier extension; encrypt to it with recipient_id='issuer-serial'"
        ) from None
    return extension.value.digest


def issuer_and_serial(certificate: x509.Certificate) -> cms.IssuerAndSerialNumber:
    """Build the IssuerAndSerialNumber of a certificate, issuer bytes unchanged."""
    der = certificate.public_bytes(serialization.Encoding.DER)
    tbs = asn1_x509.Certificate.load(der)["tbs_certificate"]
    return cms.IssuerAndSerialNumber(
        {"issuer": tbs["issuer"], "serial_number": tbs["serial_number"]}
    )

"""Certificate path and S/MIME usage checks for signer certificates (RFC 8550).

Path building uses cryptography's `x509.verification` (Rust). Its client verifier takes
custom extension policies, so S/MIME certificates without a subjectAltName and CA
certificates with a non-critical basicConstraints are accepted. It keeps the Web PKI
algorithm set of CA/Browser Forum Baseline Requirements 7.1.3 and offers no option to
widen it (cryptography 50.0.2): a path is built only over RSA keys of at least 2048 bits
and ECDSA P-256/P-384/P-521 keys, with certificates signed by RSA PKCS#1 v1.5, RSA-PSS
or ECDSA with SHA-256/384/512.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from cryptography import x509
from cryptography.x509 import verification
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CertificateStatus = Literal["trusted", "untrusted", "expired", "not-yet-valid"]

# RFC 5280 section 6.1 leaves the depth to the relying party. Mail chains seldom have
# more than two intermediates.
MAX_CHAIN_DEPTH = 6

_EKU_NAMES = {
    ExtendedKeyUsageOID.SERVER_AUTH: "serverAuth",
    ExtendedKeyUsageOID.CLIENT_AUTH: "clientAuth",
    ExtendedKeyUsageOID.CODE_SIGNING: "codeSigning",
    ExtendedKeyUsageOID.EMAIL_PROTECTION: "emailProtection",
    ExtendedKeyUsageOID.TIME_STAMPING: "timeStamping",
    ExtendedKeyUsageOID.OCSP_SIGNING: "OCSPSigning",
    ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE: "anyExtendedKeyUsage",
}
_SMIME_EKUS = frozenset(
    {ExtendedKeyUsageOID.EMAIL_PROTECTION, ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE}
)
_MAX_REASON_LENGTH = 300


@dataclass(frozen=True)
class CertificateCheck:
    """Outcome of checking a signer certificate against the trust anchors."""

    status: CertificateStatus
    reason: str
    # Leaf first, trust anchor last; empty when no path was found.
    chain: tuple[x509.Certificate, ...] = ()


def smime_signing_problem(certificate: x509.Certificate) -> str | None:
    """Return why `certificate` may not sign S/MIME messages, or None if it may.

    RFC 8550 section 4.4.4: an extendedKeyUsage, when present, must contain
    emailProtection or anyExtendedKeyUsage. Section 4.4.2: a keyUsage, when present,
    must assert digitalSignature or nonRepudiation for a signing certificate.
    """
    try:
        extensions = certificate.extensions
    except ValueError as err:
        return f"certificate extensions could not be parsed ({err})"

    try:
        usages = extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        pass
    else:
        if not _SMIME_EKUS.intersection(usages):
            listed = ", ".join(_EKU_NAMES.get(oid, oid.dotted_string) for oid in usages)
            return (
                f"certificate extendedKeyUsage lists {listed or 'nothing'} but not "
                "emailProtection or anyExtendedKeyUsage (RFC 8550 section 4.4.4)"
            )

    try:
        key_usage = extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        return None
    if not (key_usage.digital_signature or key_usage.content_commitment):
        return (
            "certificate keyUsage asserts neither digitalSignature nor "
            "nonRepudiation (RFC 8550 section 4.4.2)"
        )
    return None


def email_addresses(certificate: x509.Certificate) -> tuple[str, ...]:
    """Return the mail addresses of `certificate`, subjectAltName rfc822Name first.

    RFC 8550 section 3 also accepts the legacy emailAddress attribute of the subject
    DN, which many older certificates use alone. Duplicates that differ only in case
    are listed once.
    """
    found: list[str] = []
    try:
        san = certificate.extensions.get_extension_for_class(
            x509.SubjectAlternativeName
        ).value
    except (x509.ExtensionNotFound, ValueError):
        pass
    else:
        found.extend(san.get_values_for_type(x509.RFC822Name))
    for attribute in certificate.subject.get_attributes_for_oid(NameOID.EMAIL_ADDRESS):
        if isinstance(attribute.value, str):
            found.append(attribute.value)

    unique: dict[str, str] = {}
    for address in found:
        unique.setdefault(address.lower(), address)
    return tuple(unique.values())


def check_signer_certificate(
    certificate: x509.Certificate,
    *,
    trust_anchors: Sequence[x509.Certificate],
    intermediates: Sequence[x509.Certificate],
    now: datetime,
    signing_time: datetime | None,
) -> CertificateCheck:
    """Check that `certificate` may sign S/MIME and chains to one of `trust_anchors`.

    The path is validated at `now`. When that fails only because a certificate of the
    path is outside its validity period, the status is "expired" or "not-yet-valid"
    rather than "untrusted", and the reason states whether the signer certificate was
    valid at `signing_time` (the signer's own claim, from the signingTime attribute).
    """
    problem = smime_signing_problem(certificate)
    if problem is not None:
        return CertificateCheck("untrusted", problem)
    if not trust_anchors:
        return CertificateCheck("untrusted", "no trust anchors were given")

    try:
        chain = _build_path(certificate, trust_anchors, intermediates, now)
    except verification.VerificationError as err:
        failure_now = _describe_failure(err)
    else:
        anchor = chain[-1].subject.rfc4514_string()
        return CertificateCheck("trusted", f"path to trust anchor {anchor}", chain)

    # Retry inside the signer certificate's validity period, to tell an expired or
    # not yet valid certificate apart from one that has no path at all.
    for moment in _validity_moments(certificate, now, signing_time):
        try:
            chain = _build_path(certificate, trust_anchors, intermediates, moment)
        except verification.VerificationError:
            continue
        return _out_of_validity(chain, now, signing_time, failure_now)
    return CertificateCheck("untrusted", f"no path to a trust anchor: {failure_now}")


def _build_path(
    certificate: x509.Certificate,
    trust_anchors: Sequence[x509.Certificate],
    intermediates: Sequence[x509.Certificate],
    moment: datetime,
) -> tuple[x509.Certificate, ...]:
    verifier = (
        verification.PolicyBuilder()
        .store(verification.Store(list(trust_anchors)))
        .time(moment)
        .max_chain_depth(MAX_CHAIN_DEPTH)
        .extension_policies(ca_policy=_CA_POLICY, ee_policy=_EE_POLICY)
        .build_client_verifier()
    )
    return tuple(verifier.verify(certificate, list(intermediates)).chain)


def _require_ca(
    policy: verification.Policy,
    certificate: x509.Certificate,
    constraints: x509.BasicConstraints,
) -> None:
    # RFC 5280 section 4.2.1.9: only a certificate that asserts cA may issue others.
    if not constraints.ca:
        raise ValueError("basicConstraints does not assert cA")


def _require_key_cert_sign(
    policy: verification.Policy,
    certificate: x509.Certificate,
    key_usage: x509.KeyUsage | None,
) -> None:
    # RFC 5280 section 4.2.1.3: a CA keyUsage must assert keyCertSign.
    if key_usage is not None and not key_usage.key_cert_sign:
        raise ValueError("keyUsage does not assert keyCertSign")


# CA certificates: basicConstraints with cA is required, at any criticality (NSS and
# other private CAs often leave it non-critical). Path length and name constraints
# are enforced by the chain builder itself.
_CA_POLICY = (
    verification.ExtensionPolicy.permit_all()
    .require_present(
        x509.BasicConstraints, verification.Criticality.AGNOSTIC, _require_ca
    )
    .may_be_present(
        x509.KeyUsage, verification.Criticality.AGNOSTIC, _require_key_cert_sign
    )
)
# End-entity certificates: S/MIME usage is checked by smime_signing_problem, so that
# its reason reaches the caller. The Web PKI default would demand a subjectAltName,
# which certificates with the address only in the subject DN lack.
_EE_POLICY = verification.ExtensionPolicy.permit_all()


def _validity_moments(
    certificate: x509.Certificate, now: datetime, signing_time: datetime | None
) -> list[datetime]:
    not_before = certificate.not_valid_before_utc
    not_after = certificate.not_valid_after_utc
    moments = []
    if signing_time is not None and not_before <= signing_time <= not_after:
        moments.append(signing_time)
    if now > not_after:
        moments.append(not_after)
    elif now < not_before:
        moments.append(not_before)
    return moments


def _out_of_validity(
    chain: tuple[x509.Certificate, ...],
    now: datetime,
    signing_time: datetime | None,
    failure_now: str,
) -> CertificateCheck:
    leaf = chain[0]
    for certificate in chain:
        subject = certificate.subject.rfc4514_string()
        role = (
            "signer certificate" if certificate is leaf else f"CA certificate {subject}"
        )
        if now > certificate.not_valid_after_utc:
            expiry = certificate.not_valid_after_utc.isoformat()
            reason = f"{role} expired on {expiry}"
            return CertificateCheck(
                "expired", reason + _signing_time_note(leaf, signing_time), chain
            )
        if now < certificate.not_valid_before_utc:
            start = certificate.not_valid_before_utc.isoformat()
            reason = f"{role} is not valid before {start}"
            return CertificateCheck(
                "not-yet-valid", reason + _signing_time_note(leaf, signing_time), chain
            )
    # Every certificate is inside its validity period at `now`, so the failure at `now`
    # had another cause than time.
    return CertificateCheck("untrusted", f"no path to a trust anchor: {failure_now}")


def _signing_time_note(leaf: x509.Certificate, signing_time: datetime | None) -> str:
    if signing_time is None:
        return "; the signature carries no signing time"
    stamp = signing_time.isoformat()
    if leaf.not_valid_before_utc <= signing_time <= leaf.not_valid_after_utc:
        return f"; it was valid at the claimed signing time {stamp}"
    return f"; it was not valid at the claimed signing time {stamp} either"


def _describe_failure(err: verification.VerificationError) -> str:
    """Shorten the verifier's message, which embeds Rust debug output of algorithms."""
    message = str(err)
    for prefix in ("validation failed: ", "candidates exhausted: "):
        message = message.removeprefix(prefix)
    if message == "all candidates exhausted with no interior errors":
        return "no issuer of the chain is among the trust anchors and intermediates"
    algorithm = re.match(
        r"Forbidden (public key|signature) algorithm: .*?params: (\w+)", message
    )
    if algorithm is not None:
        kind, name = algorithm.groups()
        message = (
            f"{kind} algorithm {name} in the path is outside the accepted set "
            "(RSA of 2048 bits or more, ECDSA P-256/P-384/P-521, signed with "
            "SHA-256/384/512)"
        )
    return message[:_MAX_REASON_LENGTH]

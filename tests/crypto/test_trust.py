"""Signer certificate checks: path to the anchors, S/MIME usage, validity periods.

`issue_ca` and `issue_signer` are shared with the SignedData tests.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from services.crypto.cms.trust import (
    check_signer_certificate,
    email_addresses,
    smime_signing_problem,
)

NOW = datetime.now(UTC).replace(microsecond=0)
DAY = timedelta(days=1)
RFC9216 = Path(__file__).resolve().parents[2] / "../shared/interop/rfc9216"

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey


@dataclass(frozen=True)
class Issued:
    certificate: x509.Certificate
    key: PrivateKey


@functools.cache
def rsa_key(slot: int = 0) -> rsa.RSAPrivateKey:
    """Return one of a few cached RSA-2048 keys; generating them is the slow part."""
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _name(common_name: str, email: str | None = None) -> x509.Name:
    attributes = [x509.NameAttribute(NameOID.COMMON_NAME, common_name)]
    if email is not None:
        attributes.append(x509.NameAttribute(NameOID.EMAIL_ADDRESS, email))
    return x509.Name(attributes)


def _hash_for(key: PrivateKey) -> hashes.HashAlgorithm | None:
    return None if isinstance(key, ed25519.Ed25519PrivateKey) else hashes.SHA256()


_serials = iter(range(1000, 10**6))


def issue_ca(
    common_name: str,
    *,
    key: PrivateKey | None = None,
    parent: Issued | None = None,
    path_length: int | None = None,
    critical_constraints: bool = True,
    key_cert_sign: bool = True,
    not_before: datetime = NOW - 30 * DAY,
    not_after: datetime = NOW + 365 * DAY,
) -> Issued:
    key = key or rsa_key(1)
    subject = _name(common_name)
    issuer = parent.certificate.subject if parent else subject
    signing_key = parent.key if parent else key
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(next(_serials))
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(
            x509.BasicConstraints(ca=True, path_length=path_length),
            critical=critical_constraints,
        )
        .add_extension(
            x509.KeyUsage(
                digital_signature=not key_cert_sign,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=key_cert_sign,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False
        )
    )
    certificate = builder.sign(signing_key, _hash_for(signing_key))
    return Issued(certificate, key)


def issue_signer(
    common_name: str,
    issuer: Issued,
    *,
    key: PrivateKey | None = None,
    san_email: str | None = None,
    dn_email: str | None = None,
    ekus: tuple[x509.ObjectIdentifier, ...] | None = (
        ExtendedKeyUsageOID.EMAIL_PROTECTION,
    ),
    key_usage: str | None = "digitalSignature",
    ca: bool | None = None,
    not_before: datetime = NOW - 10 * DAY,
    not_after: datetime = NOW + 100 * DAY,
) -> Issued:
    """Issue an end-entity certificate; `key_usage` names the one bit to assert."""
    key = key or rsa_key(2)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name, dn_email))
        .issuer_name(issuer.certificate.subject)
        .public_key(key.public_key())
        .serial_number(next(_serials))
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(
                issuer.key.public_key()  # type: ignore[arg-type]
            ),
            critical=False,
        )
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False
        )
    )
    if san_email is not None:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.RFC822Name(san_email)]), critical=False
        )
    if ekus is not None:
        builder = builder.add_extension(
            x509.ExtendedKeyUsage(list(ekus)), critical=False
        )
    if key_usage is not None:
        bits = dict.fromkeys(
            (
                "digital_signature",
                "content_commitment",
                "key_encipherment",
                "data_encipherment",
                "key_agreement",
                "key_cert_sign",
                "crl_sign",
                "encipher_only",
                "decipher_only",
            ),
            False,
        )
        bits[
            {
                "digitalSignature": "digital_signature",
                "nonRepudiation": "content_commitment",
                "keyEncipherment": "key_encipherment",
            }[key_usage]
        ] = True
        builder = builder.add_extension(x509.KeyUsage(**bits), critical=True)
    if ca is not None:
        builder = builder.add_extension(
            x509.BasicConstraints(ca=ca, path_length=None), critical=True
        )
    certificate = builder.sign(issuer.key, _hash_for(issuer.key))
    return Issued(certificate, key)


@pytest.fixture(scope="module")
def root() -> Issued:
    return issue_ca("Trust Test Root")


@pytest.fixture(scope="module")
def intermediate(root: Issued) -> Issued:
    return issue_ca("Trust Test Intermediate", key=rsa_key(3), parent=root)


def check(
    leaf: Issued,
    anchors: list[Issued],
    intermediates: list[Issued] = [],  # noqa: B006 - never mutated
    *,
    now: datetime = NOW,
    signing_time: datetime | None = None,
):
    return check_signer_certificate(
        leaf.certificate,
        trust_anchors=[anchor.certificate for anchor in anchors],
        intermediates=[item.certificate for item in intermediates],
        now=now,
        signing_time=signing_time,
    )


def test_chain_through_intermediate_trusted(root: Issued, intermediate: Issued) -> None:
    leaf = issue_signer("alice", intermediate, san_email="alice@example.com")

    result = check(leaf, [root], [intermediate])

    assert result.status == "trusted"
    assert "Trust Test Root" in result.reason
    assert [c.subject for c in result.chain] == [
        leaf.certificate.subject,
        intermediate.certificate.subject,
        root.certificate.subject,
    ]


def test_missing_intermediate_untrusted(root: Issued, intermediate: Issued) -> None:
    leaf = issue_signer("alice", intermediate)

    result = check(leaf, [root])

    assert result.status == "untrusted"
    assert result.reason.startswith("no path to a trust anchor")


def test_other_anchor_untrusted(root: Issued) -> None:
    leaf = issue_signer("alice", root)
    stranger = issue_ca("Some Other Root", key=rsa_key(4))

    result = check(leaf, [stranger])

    assert result.status == "untrusted"
    assert result.reason == (
        "no path to a trust anchor: no issuer of the chain is among the trust "
        "anchors and intermediates"
    )
    assert result.chain == ()


def test_no_anchors_untrusted(root: Issued) -> None:
    result = check(issue_signer("alice", root), [])

    assert result.status == "untrusted"
    assert result.reason == "no trust anchors were given"


@pytest.mark.parametrize(
    ("ekus", "status"),
    [
        ((ExtendedKeyUsageOID.EMAIL_PROTECTION,), "trusted"),
        ((ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE,), "trusted"),
        (None, "trusted"),
        ((ExtendedKeyUsageOID.SERVER_AUTH,), "untrusted"),
        (
            (ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH),
            "untrusted",
        ),
    ],
)
def test_extended_key_usage(
    root: Issued, ekus: tuple[x509.ObjectIdentifier, ...] | None, status: str
) -> None:
    leaf = issue_signer("alice", root, ekus=ekus)

    result = check(leaf, [root])

    assert result.status == status
    if status == "untrusted":
        assert "extendedKeyUsage lists serverAuth" in result.reason
        assert "emailProtection" in result.reason


@pytest.mark.parametrize(
    ("key_usage", "status"),
    [
        ("digitalSignature", "trusted"),
        ("nonRepudiation", "trusted"),
        (None, "trusted"),
        ("keyEncipherment", "untrusted"),
    ],
)
def test_key_usage(root: Issued, key_usage: str | None, status: str) -> None:
    leaf = issue_signer("alice", root, key_usage=key_usage)

    result = check(leaf, [root])

    assert result.status == status
    if status == "untrusted":
        assert "neither digitalSignature nor nonRepudiation" in result.reason


def test_smime_signing_problem_none_for_plain_signer(root: Issued) -> None:
    assert smime_signing_problem(issue_signer("alice", root).certificate) is None


def test_expired_signer_valid_at_signing_time(root: Issued) -> None:
    leaf = issue_signer("alice", root, not_before=NOW - 20 * DAY, not_after=NOW - DAY)

    result = check(leaf, [root], signing_time=NOW - 5 * DAY)

    assert result.status == "expired"
    assert result.reason.startswith("signer certificate expired on")
    assert "it was valid at the claimed signing time" in result.reason
    assert len(result.chain) == 2


def test_expired_signer_signed_after_expiry(root: Issued) -> None:
    leaf = issue_signer("alice", root, not_before=NOW - 20 * DAY, not_after=NOW - DAY)

    result = check(leaf, [root], signing_time=NOW)

    assert result.status == "expired"
    assert "not valid at the claimed signing time" in result.reason


def test_expired_signer_without_signing_time(root: Issued) -> None:
    leaf = issue_signer("alice", root, not_before=NOW - 20 * DAY, not_after=NOW - DAY)

    result = check(leaf, [root])

    assert result.status == "expired"
    assert "carries no signing time" in result.reason


def test_not_yet_valid_signer(root: Issued) -> None:
    leaf = issue_signer("alice", root, not_before=NOW + DAY, not_after=NOW + 9 * DAY)

    result = check(leaf, [root])

    assert result.status == "not-yet-valid"
    assert result.reason.startswith("signer certificate is not valid before")


def test_expired_intermediate_reported(root: Issued) -> None:
    old = issue_ca(
        "Old Intermediate",
        key=rsa_key(3),
        parent=root,
        not_before=NOW - 20 * DAY,
        not_after=NOW - 2 * DAY,
    )
    leaf = issue_signer("alice", old, not_before=NOW - 10 * DAY)

    result = check(leaf, [root], [old], signing_time=NOW - 5 * DAY)

    assert result.status == "expired"
    assert "CA certificate CN=Old Intermediate expired" in result.reason


def test_expired_but_unchained_is_untrusted(root: Issued) -> None:
    stranger = issue_ca("Some Other Root", key=rsa_key(4))
    leaf = issue_signer("alice", root, not_before=NOW - 20 * DAY, not_after=NOW - DAY)

    result = check(leaf, [stranger], signing_time=NOW - 5 * DAY)

    assert result.status == "untrusted"


def test_end_entity_cannot_issue(root: Issued) -> None:
    fake_ca = issue_signer("not a CA", root, key=rsa_key(3), ca=False)
    leaf = issue_signer("alice", fake_ca)

    result = check(leaf, [root], [fake_ca])

    assert result.status == "untrusted"
    assert "cA" in result.reason


def test_issuer_without_basic_constraints_cannot_issue(root: Issued) -> None:
    plain = issue_signer("no constraints", root, key=rsa_key(3))
    leaf = issue_signer("alice", plain)

    result = check(leaf, [root], [plain])

    assert result.status == "untrusted"


def test_ca_without_key_cert_sign_cannot_issue(root: Issued) -> None:
    weak_ca = issue_ca(
        "No keyCertSign", key=rsa_key(3), parent=root, key_cert_sign=False
    )
    leaf = issue_signer("alice", weak_ca)

    result = check(leaf, [root], [weak_ca])

    assert result.status == "untrusted"
    assert "keyCertSign" in result.reason


def test_non_critical_basic_constraints_accepted() -> None:
    # NSS's test CA, like many private CAs, marks basicConstraints non-critical.
    lax_root = issue_ca("Lax Root", key=rsa_key(4), critical_constraints=False)
    leaf = issue_signer("alice", lax_root)

    assert check(leaf, [lax_root]).status == "trusted"


def test_path_length_constraint_enforced(root: Issued) -> None:
    limited = issue_ca("Limited", key=rsa_key(3), parent=root, path_length=0)
    below = issue_ca("Below Limited", key=rsa_key(4), parent=limited)
    leaf = issue_signer("alice", below)

    result = check(leaf, [root], [limited, below])

    assert result.status == "untrusted"
    assert "path length" in result.reason


def test_ed25519_path_reported_untrusted() -> None:
    # cryptography 50's path builder accepts only RSA and ECDSA P-256/384/521 keys.
    ed_root = issue_ca("Ed25519 Root", key=ed25519.Ed25519PrivateKey.generate())
    leaf = issue_signer("carlos", ed_root, key=ed25519.Ed25519PrivateKey.generate())

    result = check(leaf, [ed_root])

    assert result.status == "untrusted"
    assert "algorithm Ed25519 in the path is outside the accepted set" in result.reason


def test_rfc9216_rsa_signer_trusted() -> None:
    anchor = x509.load_pem_x509_certificate(
        (
            RFC9216 / "Sample_LAMPS_RSA_Certification_Authority.selfsigned.pem"
        ).read_bytes()
    )
    alice = x509.load_pem_x509_certificates(
        (RFC9216 / "alice@smime.example.sig.pem").read_bytes()
    )[0]

    result = check_signer_certificate(
        alice, trust_anchors=[anchor], intermediates=[], now=NOW, signing_time=None
    )

    assert result.status == "trusted"


def test_rfc9216_encryption_certificate_cannot_sign() -> None:
    bob = x509.load_pem_x509_certificate(
        (RFC9216 / "bob@smime.example.enc.pem").read_bytes()
    )

    problem = smime_signing_problem(bob)

    assert problem is not None
    assert "keyUsage" in problem


def test_email_addresses_from_san_and_dn(root: Issued) -> None:
    leaf = issue_signer(
        "alice", root, san_email="alice@example.com", dn_email="Alice@Example.com"
    )

    assert email_addresses(leaf.certificate) == ("alice@example.com",)


def test_email_addresses_dn_only(root: Issued) -> None:
    leaf = issue_signer("alice", root, dn_email="Alice@example.com")

    assert email_addresses(leaf.certificate) == ("Alice@example.com",)


def test_email_addresses_none(root: Issued) -> None:
    assert email_addresses(issue_signer("alice", root).certificate) == ()


def test_name_constraints_enforced(root: Issued) -> None:
    constrained = issue_ca("Constrained", key=rsa_key(3), parent=root)
    constraint = x509.NameConstraints(
        permitted_subtrees=[x509.RFC822Name("example.com")], excluded_subtrees=None
    )
    # Re-sign the intermediate with a nameConstraints extension for example.com.
    builder = x509.CertificateBuilder(
        issuer_name=constrained.certificate.issuer,
        subject_name=constrained.certificate.subject,
        public_key=constrained.certificate.public_key(),
        serial_number=constrained.certificate.serial_number,
        not_valid_before=constrained.certificate.not_valid_before_utc,
        not_valid_after=constrained.certificate.not_valid_after_utc,
        extensions=list(constrained.certificate.extensions),
    ).add_extension(constraint, critical=True)
    constrained = Issued(builder.sign(root.key, hashes.SHA256()), constrained.key)
    inside = issue_signer("alice", constrained, san_email="alice@example.com")
    outside = issue_signer("mallory", constrained, san_email="mallory@example.org")

    assert check(inside, [root], [constrained]).status == "trusted"
    result = check(outside, [root], [constrained])
    assert result.status == "untrusted"
    assert "name constraint" in result.reason

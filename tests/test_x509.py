"""Certificate loading, facts and issuer chains, on the corpus and OpenSSL output."""

from __future__ import annotations

import base64
import datetime
import hashlib
import subprocess
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest
from asn1crypto import core as asn1_core
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from smimegw.x509 import (
    SMTP_UTF8_MAILBOX_OID,
    CertificateImportError,
    ImportErrorCategory,
    facts_of,
    find_issuer_chain,
    holds_address,
    load_certificates,
    require_issuer_chain,
    status_at,
)

REPO = Path(__file__).resolve().parents[1]
INTEROP = REPO.parent / "shared" / "interop"
SMIME = INTEROP / "thunderbird" / "smime"
RFC4134 = INTEROP / "rfc4134"
RFC9216 = INTEROP / "rfc9216"
UTC = datetime.UTC

requires_corpus = pytest.mark.skipif(
    not INTEROP.is_dir(), reason="the S/MIME interop corpus is not next to the repo"
)


def openssl(*args: str | Path, cwd: Path) -> bytes:
    result = subprocess.run(
        ["openssl", *map(str, args)], cwd=cwd, capture_output=True, check=False
    )
    assert result.returncode == 0, result.stderr.decode(errors="replace")
    return result.stdout


def p12_certificate(path: Path) -> x509.Certificate:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # NSS writes BER
        loaded = pkcs12.load_pkcs12(path.read_bytes(), b"nss")
    assert loaded.cert is not None
    return loaded.cert.certificate


def pem_certificate(path: Path) -> x509.Certificate:
    certificates = load_certificates(path.read_bytes(), path.name)
    assert len(certificates) == 1
    return certificates[0]


def category_of(error: pytest.ExceptionInfo[CertificateImportError]) -> str:
    return str(error.value.category)


# Corpus: every certificate loads as its kind allows


RFC4134_CERTIFICATES = [
    "AliceDSSSignByCarlNoInherit.pem",
    "AliceRSASignByCarl.pem",
    "BobRSASignByCarl.pem",
    "CarlDSSSelf.pem",
    "CarlRSASelf.pem",
    "DianeRSASignByCarl.pem",
]


@requires_corpus
@pytest.mark.parametrize(
    "path",
    [RFC4134 / name for name in RFC4134_CERTIFICATES]
    + sorted(RFC9216.glob("*.pem"))
    + [SMIME / "TestCA.pem", INTEROP / "thunderbird" / "browser" / "TestCA.pem"],
    ids=lambda path: f"{path.parent.name}/{path.name}",
)
def test_corpus_certificate_loads(path: Path) -> None:
    certificate = pem_certificate(path)
    facts = facts_of(certificate)
    assert facts.identity
    assert facts.not_before < facts.not_after
    assert facts.sha256_fingerprint == certificate.fingerprint(hashes.SHA256()).hex()
    # The RFC 4134 certificates run to 2039, the RFC 9216 ones to 2052 and NSS's
    # test CA to 2076. The oldest, from RFC 4134, start in August 1999.
    assert status_at(facts, datetime.datetime(2038, 1, 1, tzinfo=UTC)) == "valid"
    assert status_at(facts, datetime.datetime(1999, 1, 1, tzinfo=UTC)) == (
        "not-yet-valid"
    )
    assert status_at(facts, datetime.datetime(2077, 1, 1, tzinfo=UTC)) == "expired"


@requires_corpus
def test_dsa_with_inherited_parameters_is_unsupported() -> None:
    path = RFC4134 / "DianeDSSSignByCarlInherit.pem"
    with pytest.raises(CertificateImportError) as error:
        load_certificates(path.read_bytes(), path.name)
    assert category_of(error) == "unsupported-algorithm"
    assert error.value.algorithm is not None
    assert "inherited" in error.value.algorithm
    assert path.name in str(error.value)


@requires_corpus
def test_rfc9216_key_file_loads_certificate() -> None:
    path = RFC9216 / "alice@smime.example.sig.pem"
    assert b"PRIVATE KEY" in path.read_bytes()
    certificates = load_certificates(path.read_bytes(), path.name)
    assert len(certificates) == 1


# Addresses


@requires_corpus
def test_address_only_in_dn() -> None:
    facts = facts_of(p12_certificate(SMIME / "Alice.p12"))
    assert facts.addresses == ("Alice@example.com",)
    assert holds_address(facts, "alice@example.com")
    assert holds_address(facts, "ALICE@EXAMPLE.COM")
    assert not holds_address(facts, "bob@example.com")


@requires_corpus
def test_disagreeing_dn_and_san_union() -> None:
    facts = facts_of(p12_certificate(SMIME / "Eve.p12"))
    assert facts.addresses == (
        "eve@example.net",
        "eve@example.org",
        "beve@example.com",
        "Eve@example.com",
    )
    assert holds_address(facts, "eve@example.com")
    assert holds_address(facts, "Eve@Example.Org")
    assert not holds_address(facts, "eve@example.invalid")


@requires_corpus
def test_address_only_in_san() -> None:
    certificate = pem_certificate(RFC9216 / "alice@smime.example.sig.pem")
    assert not certificate.subject.get_attributes_for_oid(NameOID.EMAIL_ADDRESS)
    facts = facts_of(certificate)
    assert facts.addresses == ("alice@smime.example",)
    assert facts.identity == "Alice Lovelace"
    assert holds_address(facts, "Alice@SMIME.example")


def make_certificate(
    *,
    subject: x509.Name,
    extensions: list[x509.ExtensionType] | None = None,
    key: ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey | None = None,
) -> x509.Certificate:
    signer = ec.generate_private_key(ec.SECP256R1())
    public_key = (key or signer).public_key()
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Test CA")]))
        .public_key(public_key)
        .serial_number(0x1234ABCD)
        .not_valid_before(datetime.datetime(2026, 1, 1, tzinfo=UTC))
        .not_valid_after(datetime.datetime(2027, 1, 1, tzinfo=UTC))
    )
    for extension in extensions or []:
        builder = builder.add_extension(extension, critical=False)
    return builder.sign(signer, hashes.SHA256())


def name(common_name: str, email: str | None = None) -> x509.Name:
    attributes = [x509.NameAttribute(NameOID.COMMON_NAME, common_name)]
    if email is not None:
        attributes.append(x509.NameAttribute(NameOID.EMAIL_ADDRESS, email))
    return x509.Name(attributes)


def smtp_utf8_mailbox(address: str) -> x509.OtherName:
    value = asn1_core.UTF8String(address).dump()
    return x509.OtherName(SMTP_UTF8_MAILBOX_OID, value)


def test_smtp_utf8_mailbox_address() -> None:
    certificate = make_certificate(
        subject=name("Pelé"),
        extensions=[
            x509.SubjectAlternativeName(
                [
                    x509.RFC822Name("pele@example.com"),
                    smtp_utf8_mailbox("Pelé@Bücher.example"),
                ]
            )
        ],
    )
    facts = facts_of(certificate)
    assert facts.addresses == ("pele@example.com", "Pelé@Bücher.example")
    assert holds_address(facts, "pelé@bücher.example")
    # The same domain as an IDNA A-label, as an rfc822Name would write it.
    assert holds_address(facts, "PELÉ@xn--bcher-kva.example")
    assert not holds_address(facts, "pele@bücher.example")


def test_same_address_in_dn_and_san_listed_once() -> None:
    certificate = make_certificate(
        subject=name("Alice", "Alice@Example.com"),
        extensions=[
            x509.SubjectAlternativeName([x509.RFC822Name("alice@example.com")])
        ],
    )
    assert facts_of(certificate).addresses == ("alice@example.com",)


def test_identity_falls_back_to_address() -> None:
    subject = x509.Name([x509.NameAttribute(NameOID.EMAIL_ADDRESS, "nocn@example.com")])
    assert facts_of(make_certificate(subject=subject)).identity == "nocn@example.com"


# Key usage


@requires_corpus
@pytest.mark.parametrize(
    ("path", "expected"),
    [
        (RFC9216 / "alice@smime.example.sig.pem", "signing"),
        (RFC9216 / "alice@smime.example.enc.pem", "encryption"),
        (RFC9216 / "carlos@smime.example.sig.pem", "signing"),
        (RFC9216 / "carlos@smime.example.enc.pem", "encryption"),
        (RFC4134 / "AliceRSASignByCarl.pem", "signing"),
        (RFC4134 / "BobRSASignByCarl.pem", "encryption"),
        (RFC4134 / "DianeRSASignByCarl.pem", "both"),
        (SMIME / "TestCA.pem", "none"),
        (RFC9216 / "Sample_LAMPS_RSA_Certification_Authority.selfsigned.pem", "none"),
    ],
    ids=lambda value: value.name if isinstance(value, Path) else value,
)
def test_key_usage_of_corpus(path: Path, expected: str) -> None:
    assert facts_of(pem_certificate(path)).key_usage == expected


@requires_corpus
def test_no_key_usage_extension_means_both() -> None:
    certificate = p12_certificate(SMIME / "Bob.p12")
    assert not list(certificate.extensions)
    assert facts_of(certificate).key_usage == "both"


def test_eku_without_email_protection_none() -> None:
    certificate = make_certificate(
        subject=name("server"),
        extensions=[x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH])],
    )
    assert facts_of(certificate).key_usage == "none"


def test_eku_email_protection_keeps_usage() -> None:
    certificate = make_certificate(
        subject=name("mail"),
        extensions=[x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION])],
    )
    assert facts_of(certificate).key_usage == "both"


def test_ed25519_key_without_key_usage_only_signs() -> None:
    certificate = make_certificate(
        subject=name("ed"), key=ed25519.Ed25519PrivateKey.generate()
    )
    facts = facts_of(certificate)
    assert facts.key_usage == "signing"
    assert facts.key_algorithm == "Ed25519"


# Other facts, checked against OpenSSL


@requires_corpus
def test_facts_match_openssl(tmp_path: Path) -> None:
    path = RFC9216 / "alice@smime.example.sig.pem"
    facts = facts_of(pem_certificate(path))
    output = openssl(
        "x509",
        "-in",
        path,
        "-noout",
        "-serial",
        "-fingerprint",
        "-sha256",
        "-ext",
        "subjectKeyIdentifier,authorityKeyIdentifier",
        cwd=tmp_path,
    ).decode()
    serial = output.split("serial=")[1].split()[0]
    assert int(serial, 16) == int(facts.serial, 16)
    fingerprint = output.split("Fingerprint=")[1].split()[0]
    assert fingerprint.replace(":", "").lower() == facts.sha256_fingerprint
    assert facts.subject_key_identifier is not None
    assert facts.authority_key_identifier is not None
    compact = output.replace(":", "").replace(" ", "").lower()
    assert facts.subject_key_identifier in compact
    assert facts.authority_key_identifier in compact
    assert facts.subject == "CN=Alice Lovelace,OU=LAMPS WG,O=IETF"
    assert facts.issuer.startswith("CN=Sample LAMPS RSA Certification Authority")
    assert facts.key_algorithm == "RSA"
    assert facts.key_size == 2048
    assert facts.is_ca is False


@requires_corpus
def test_facts_of_ec_and_ca() -> None:
    ec_facts = facts_of(p12_certificate(SMIME / "Alice-ec.p12"))
    assert ec_facts.key_algorithm == "EC"
    assert ec_facts.key_size == 384
    assert ec_facts.key_curve == "secp384r1"
    assert facts_of(pem_certificate(SMIME / "TestCA.pem")).is_ca is True


def test_serial_is_hex() -> None:
    assert facts_of(make_certificate(subject=name("s"))).serial == "1234abcd"


# Validity status against a fixed clock


@requires_corpus
def test_status_against_fixed_clock() -> None:
    facts = facts_of(p12_certificate(SMIME / "Alice.p12"))
    # The corpus states the expiry of its certificates in expiration.txt.
    stated = datetime.datetime.strptime(
        (SMIME / "expiration.txt").read_text().strip(), "%a %b %d %H:%M:%S %Y"
    ).replace(tzinfo=UTC)
    assert facts.not_after == stated
    assert status_at(facts, datetime.datetime(2026, 1, 1, tzinfo=UTC)) == (
        "not-yet-valid"
    )
    assert status_at(facts, datetime.datetime(2028, 6, 1, tzinfo=UTC)) == "valid"
    assert status_at(facts, datetime.datetime(2031, 2, 1, tzinfo=UTC)) == "expired"
    assert status_at(facts, facts.not_after) == "valid"
    assert status_at(facts, facts.not_before) == "valid"
    one_second = datetime.timedelta(seconds=1)
    assert status_at(facts, facts.not_after + one_second) == "expired"
    assert status_at(facts, facts.not_before - one_second) == "not-yet-valid"


@requires_corpus
def test_status_of_far_future_certificate() -> None:
    facts = facts_of(p12_certificate(SMIME / "Fran.p12"))
    assert facts.not_after.year == 9999
    assert status_at(facts, datetime.datetime(2500, 1, 1, tzinfo=UTC)) == "valid"


def test_status_rejects_naive_time() -> None:
    facts = facts_of(make_certificate(subject=name("n")))
    with pytest.raises(ValueError, match="timezone-aware"):
        status_at(facts, datetime.datetime(2026, 6, 1))


def test_status_accepts_other_time_zone() -> None:
    facts = facts_of(make_certificate(subject=name("z")))
    plus_two = datetime.timezone(datetime.timedelta(hours=2))
    # 2026-01-01 01:00 at UTC+2 is 2025-12-31 23:00 UTC, before not_before.
    early = datetime.datetime(2026, 1, 1, 1, 0, tzinfo=plus_two)
    assert status_at(facts, early) == "not-yet-valid"


# File formats and failures


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """An OpenSSL root CA, intermediate CA and end entity (EC P-256) in PEM."""
    directory = tmp_path_factory.mktemp("pki")
    (directory / "ca.ext").write_text(
        "basicConstraints=critical,CA:TRUE\n"
        "keyUsage=critical,keyCertSign,cRLSign\n"
        "subjectKeyIdentifier=hash\n"
        "authorityKeyIdentifier=keyid\n"
    )
    (directory / "ee.ext").write_text(
        "basicConstraints=critical,CA:FALSE\n"
        "keyUsage=critical,digitalSignature,keyEncipherment\n"
        "subjectAltName=email:user@example.com\n"
        "authorityKeyIdentifier=keyid\n"
    )

    def key(stem: str) -> None:
        openssl("ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out",
                f"{stem}.key", cwd=directory)  # fmt: skip

    for stem in ("root", "other-root", "inter", "ee"):
        key(stem)
    for stem in ("root", "other-root"):
        openssl("req", "-x509", "-new", "-key", f"{stem}.key", "-subj",
                "/CN=Test Root CA", "-days", "30", "-sha256", "-addext",
                "basicConstraints=critical,CA:TRUE", "-addext",
                "keyUsage=critical,keyCertSign,cRLSign", "-out", f"{stem}.pem",
                cwd=directory)  # fmt: skip
    for stem, issuer, subject, extensions in (
        ("inter", "root", "/CN=Test Intermediate CA", "ca.ext"),
        ("ee", "inter", "/CN=Test User", "ee.ext"),
    ):
        openssl("req", "-new", "-key", f"{stem}.key", "-subj", subject, "-out",
                f"{stem}.csr", cwd=directory)  # fmt: skip
        openssl("x509", "-req", "-in", f"{stem}.csr", "-CA", f"{issuer}.pem",
                "-CAkey", f"{issuer}.key", "-set_serial", "7", "-days", "30",
                "-sha256", "-extfile", extensions, "-out", f"{stem}.pem",
                cwd=directory)  # fmt: skip
    yield directory


def test_pem_bundle_loads_in_order(pki: Path) -> None:
    bundle = b"".join((pki / f"{stem}.pem").read_bytes() for stem in ("ee", "inter"))
    certificates = load_certificates(bundle, "bundle.pem")
    assert [facts_of(c).identity for c in certificates] == [
        "Test User",
        "Test Intermediate CA",
    ]


def test_bad_block_in_bundle_is_named(pki: Path) -> None:
    bundle = (
        b"Bag Attributes: text before a block is ignored\n"
        + (pki / "ee.pem").read_bytes()
        + pem_block(b"PRIVATE KEY", b"MAMCAQE=")
        + pem_block(b"CERTIFICATE", b"MAMCAQE=")
    )
    with pytest.raises(CertificateImportError) as error:
        load_certificates(bundle, "bundle.pem")
    assert category_of(error) == "corrupted"
    assert "PEM block 3 of 'bundle.pem'" in str(error.value)


def test_der_certificate_loads(pki: Path) -> None:
    der = openssl("x509", "-in", "ee.pem", "-outform", "DER", cwd=pki)
    certificates = load_certificates(der, "ee.der")
    assert facts_of(certificates[0]).addresses == ("user@example.com",)


@pytest.mark.parametrize("form", ["PEM", "DER"])
def test_p7b_bundle_loads(pki: Path, form: str) -> None:
    data = openssl("crl2pkcs7", "-nocrl", "-certfile", "ee.pem", "-certfile",
                   "inter.pem", "-outform", form, cwd=pki)  # fmt: skip
    certificates = load_certificates(data, f"chain.{form.lower()}.p7b")
    identities = sorted(facts_of(c).identity for c in certificates)
    assert identities == ["Test Intermediate CA", "Test User"]


def test_p7b_without_certificates(pki: Path) -> None:
    data = openssl("crl2pkcs7", "-nocrl", "-outform", "DER", cwd=pki)
    with pytest.raises(CertificateImportError) as error:
        load_certificates(data, "empty.p7b")
    assert category_of(error) == "no-certificate"
    assert "empty.p7b" in str(error.value)


def pem_block(label: bytes, body: bytes) -> bytes:
    return b"-----BEGIN %s-----\n%s\n-----END %s-----\n" % (label, body, label)


@pytest.mark.parametrize(
    ("data", "category"),
    [
        (b"", "not-certificate"),
        (b"   \n", "not-certificate"),
        (b"just some text, no certificate\n", "not-certificate"),
        (b"\x04\x03abc", "not-certificate"),
        (b"-----BEGIN CERTIFICATE-----\nMIIB\n", "corrupted"),
        (pem_block(b"CERTIFICATE", b"!!!not base64!!!"), "corrupted"),
        (pem_block(b"CERTIFICATE", b"BAMCAQE="), "not-certificate"),
        (pem_block(b"CERTIFICATE", b"MAMCAQE="), "corrupted"),
        (pem_block(b"CERTIFICATE REQUEST", b"MIIB"), "no-certificate"),
    ],
    ids=[
        "empty",
        "blank",
        "text",
        "octet-string",
        "no-end-line",
        "bad-base64",
        "pem-not-der",
        "pem-bad-der",
        "csr",
    ],
)
def test_bad_certificate_input(data: bytes, category: str) -> None:
    with pytest.raises(CertificateImportError) as error:
        load_certificates(data, "upload.pem")
    assert category_of(error) == category
    assert "upload.pem" in str(error.value)


def test_trusted_certificate_form_gets_hint(pki: Path) -> None:
    data = openssl("x509", "-in", "ee.pem", "-trustout", "-addtrust",
                   "emailProtection", cwd=pki)  # fmt: skip
    assert b"BEGIN TRUSTED CERTIFICATE" in data
    with pytest.raises(CertificateImportError) as error:
        load_certificates(data, "trusted.pem")
    assert category_of(error) == "no-certificate"
    assert "openssl x509" in str(error.value)


def test_truncated_der_is_corrupted(pki: Path) -> None:
    der = openssl("x509", "-in", "ee.pem", "-outform", "DER", cwd=pki)
    with pytest.raises(CertificateImportError) as error:
        load_certificates(der[: len(der) // 2], "ee.der")
    assert category_of(error) == "corrupted"


def test_private_key_as_certificate(pki: Path) -> None:
    with pytest.raises(CertificateImportError) as error:
        load_certificates((pki / "ee.key").read_bytes(), "ee.key")
    assert category_of(error) == "no-certificate"
    assert "--cert and --key" in str(error.value)
    # The message names the block, never its contents.
    assert "BEGIN" not in str(error.value)


def test_pkcs12_as_certificate(pki: Path) -> None:
    data = openssl("pkcs12", "-export", "-in", "ee.pem", "-inkey", "ee.key",
                   "-passout", "pass:pw", cwd=pki)  # fmt: skip
    with pytest.raises(CertificateImportError) as error:
        load_certificates(data, "ee.p12")
    assert category_of(error) == "not-certificate"
    assert "PKCS#12" in str(error.value)


# Malformed certificates: cryptography and asn1crypto raise exceptions other than
# ValueError for these, and each must become a CertificateImportError.

ED25519_OID = bytes.fromhex("06032b6570")  # 1.3.101.112
# 1.3.101.127: an OID beside the RFC 8410 curve OIDs, which neither asn1crypto
# nor cryptography recognizes.
UNKNOWN_KEY_OID = bytes.fromhex("06032b657f")
# The AlgorithmIdentifier of ecdsa-with-SHA256, which has no parameters.
ECDSA_SHA256 = bytes.fromhex("300a06082a8648ce3d040302")
VERSION_3 = bytes.fromhex("a003020102")


def der_of(certificate: x509.Certificate) -> bytes:
    return certificate.public_bytes(serialization.Encoding.DER)


def replace_once(der: bytes, old: bytes, new: bytes) -> bytes:
    """Replace the only occurrence of `old` with `new`, which has the same length."""
    assert len(old) == len(new)
    assert der.count(old) == 1, f"{old.hex()} occurs {der.count(old)} times"
    return der.replace(old, new)


def pem_of(der: bytes) -> bytes:
    return pem_block(b"CERTIFICATE", base64.encodebytes(der).rstrip(b"\n"))


def unknown_key_certificate() -> bytes:
    key = ed25519.Ed25519PrivateKey.generate()
    der = der_of(make_certificate(subject=name("Unknown Key"), key=key))
    return replace_once(der, ED25519_OID, UNKNOWN_KEY_OID)


def test_unknown_key_algorithm_is_named() -> None:
    with pytest.raises(CertificateImportError) as error:
        load_certificates(unknown_key_certificate(), "unknown-key.der")
    assert category_of(error) == "unsupported-algorithm"
    assert error.value.algorithm == "1.3.101.127"
    assert "'CN=Unknown Key'" in str(error.value)


def test_unknown_key_algorithm_in_damaged_certificate() -> None:
    # The outer signatureAlgorithm is the last ecdsa-with-SHA256 identifier.
    # A primitive tag there makes cryptography reject the DER, so the loader
    # parses it with asn1crypto to name the key algorithm, and asn1crypto raises
    # KeyError for an OID it does not recognize.
    der = unknown_key_certificate()
    outer = der.rindex(ECDSA_SHA256)
    damaged = der[:outer] + b"\x08" + der[outer + 1 :]
    with pytest.raises(CertificateImportError) as error:
        load_certificates(damaged, "damaged.der")
    assert category_of(error) == "corrupted"
    assert error.value.algorithm is None
    assert "'damaged.der' is DER but not a readable X.509" in str(error.value)


def test_duplicate_extension_is_corrupted() -> None:
    first = x509.ObjectIdentifier("1.3.6.1.4.1.55555.1")
    second = x509.ObjectIdentifier("1.3.6.1.4.1.55555.2")
    certificate = make_certificate(
        subject=name("Twice"),
        extensions=[
            x509.UnrecognizedExtension(first, b"\x05\x00"),
            x509.UnrecognizedExtension(second, b"\x05\x00"),
        ],
    )
    der = replace_once(
        der_of(certificate),
        asn1_core.ObjectIdentifier(second.dotted_string).dump(),
        asn1_core.ObjectIdentifier(first.dotted_string).dump(),
    )
    with pytest.raises(CertificateImportError) as error:
        load_certificates(pem_of(der), "twice.pem")
    assert category_of(error) == "corrupted"
    message = str(error.value)
    assert "Certificate 'CN=Twice' in 'twice.pem'" in message
    assert "extension 1.3.6.1.4.1.55555.1 more than once" in message


def test_issuer_attribute_of_wrong_type() -> None:
    # cryptography allows a BIT STRING only for x500UniqueIdentifier, and raises
    # TypeError for a commonName of that type.
    der = der_of(make_certificate(subject=name("Test User")))
    der = replace_once(der, b"\x0c\x07Test CA", b"\x03\x07Test CA")
    with pytest.raises(CertificateImportError) as error:
        load_certificates(der, "issuer.der")
    assert category_of(error) == "corrupted"
    message = str(error.value)
    assert "The issuer name of certificate 'CN=Test User'" in message
    assert "'issuer.der' cannot be decoded" in message


def test_undecodable_subject_named_by_fingerprint() -> None:
    der = der_of(make_certificate(subject=name("Test User", "user@example.com")))
    # emailAddress is an IA5String, which allows only ASCII.
    der = replace_once(der, b"user@example.com", b"us\xffr@example.com")
    with pytest.raises(CertificateImportError) as error:
        load_certificates(der, "subject.der")
    assert category_of(error) == "corrupted"
    message = str(error.value)
    fingerprint = hashlib.sha256(der).hexdigest()
    assert f"certificate with SHA-256 fingerprint {fingerprint}" in message
    assert message.startswith("The subject name of")


def version_18_certificate() -> bytes:
    der = der_of(make_certificate(subject=name("Version 18")))
    return replace_once(der, VERSION_3, bytes.fromhex("a003020112"))


@pytest.mark.parametrize("form", ["pem", "der", "p7b"])
def test_invalid_version_is_corrupted(tmp_path: Path, form: str) -> None:
    der = version_18_certificate()
    if form == "pem":
        data, where = pem_of(der), "PEM block 1 of 'cert.pem'"
    elif form == "der":
        data, where = der, "'cert.der'"
    else:
        (tmp_path / "cert.pem").write_bytes(pem_of(der))
        data = openssl("crl2pkcs7", "-nocrl", "-certfile", "cert.pem", "-outform",
                       "DER", cwd=tmp_path)  # fmt: skip
        where = "A certificate in PKCS#7 file 'cert.p7b'"
    with pytest.raises(CertificateImportError) as error:
        load_certificates(data, f"cert.{form}")
    assert category_of(error) == "corrupted"
    assert str(error.value).startswith(f"{where} has X.509 version number 18")


# Issuer chains


def test_chain_needs_issuing_ca(pki: Path) -> None:
    ee, inter, root = (
        pem_certificate(pki / f"{s}.pem") for s in ("ee", "inter", "root")
    )
    assert find_issuer_chain(ee, []) is None
    assert find_issuer_chain(ee, [root]) is None
    assert find_issuer_chain(ee, [inter]) == [ee, inter]
    assert find_issuer_chain(ee, [root, inter]) == [ee, inter, root]


def test_chain_rejects_same_name_other_key(pki: Path) -> None:
    inter = pem_certificate(pki / "inter.pem")
    other_root = pem_certificate(pki / "other-root.pem")
    root = pem_certificate(pki / "root.pem")
    assert other_root.subject == root.subject
    assert find_issuer_chain(inter, [other_root]) is None
    assert find_issuer_chain(inter, [other_root, root]) == [inter, root]


def test_chain_of_imported_root_is_itself(pki: Path) -> None:
    root = pem_certificate(pki / "root.pem")
    assert find_issuer_chain(root, [root]) == [root]
    assert find_issuer_chain(root, []) is None


def test_end_entity_cannot_act_as_ca(pki: Path) -> None:
    ee = pem_certificate(pki / "ee.pem")
    ee_key = serialization.load_pem_private_key((pki / "ee.key").read_bytes(), None)
    assert isinstance(ee_key, ec.EllipticCurvePrivateKey)
    forged = (
        x509.CertificateBuilder()
        .subject_name(name("victim"))
        .issuer_name(ee.subject)
        .public_key(ec.generate_private_key(ec.SECP256R1()).public_key())
        .serial_number(1)
        .not_valid_before(datetime.datetime(2026, 1, 1, tzinfo=UTC))
        .not_valid_after(datetime.datetime(2027, 1, 1, tzinfo=UTC))
        .sign(ee_key, hashes.SHA256())
    )
    assert find_issuer_chain(forged, [ee]) is None


def test_require_issuer_chain_raises_then_finds(pki: Path) -> None:
    ee, inter = (pem_certificate(pki / f"{s}.pem") for s in ("ee", "inter"))
    with pytest.raises(CertificateImportError) as error:
        require_issuer_chain(ee, [], "ee.pem")
    assert error.value.category is ImportErrorCategory.ISSUER_CA_NOT_IMPORTED
    assert "Test Intermediate CA" in str(error.value)
    assert "ee.pem" in str(error.value)
    assert require_issuer_chain(ee, [inter], "ee.pem") == [ee, inter]


@requires_corpus
def test_thunderbird_chain_to_test_ca() -> None:
    alice = p12_certificate(SMIME / "Alice.p12")
    test_ca = pem_certificate(SMIME / "TestCA.pem")
    assert find_issuer_chain(alice, []) is None
    assert find_issuer_chain(alice, [test_ca]) == [alice, test_ca]
    # Fran is issued by another NSS CA, which the corpus does not hold.
    assert find_issuer_chain(p12_certificate(SMIME / "Fran.p12"), [test_ca]) is None


@requires_corpus
def test_rfc9216_chain_prefers_self_signed_root() -> None:
    lamps = {
        path.name.split(".")[0].split("_")[2] + "." + path.name.split(".")[1]: (
            pem_certificate(path)
        )
        for path in RFC9216.glob("Sample_LAMPS_*.pem")
    }
    carlos = pem_certificate(RFC9216 / "carlos@smime.example.sig.pem")
    everything = list(lamps.values())
    assert find_issuer_chain(carlos, everything) == [
        carlos,
        lamps["Ed25519.selfsigned"],
    ]
    # With only the cross-signed Ed25519 CA, the chain continues to the RSA root.
    cross = [lamps["Ed25519.crosssigned"], lamps["RSA.selfsigned"]]
    assert find_issuer_chain(carlos, cross) == [
        carlos,
        lamps["Ed25519.crosssigned"],
        lamps["RSA.selfsigned"],
    ]


@requires_corpus
def test_rfc4134_sha1_chain_needs_allow_sha1() -> None:
    carl_rsa = pem_certificate(RFC4134 / "CarlRSASelf.pem")
    carl_dss = pem_certificate(RFC4134 / "CarlDSSSelf.pem")
    alice_rsa = pem_certificate(RFC4134 / "AliceRSASignByCarl.pem")
    alice_dss = pem_certificate(RFC4134 / "AliceDSSSignByCarlNoInherit.pem")
    cas = [carl_rsa, carl_dss]
    assert find_issuer_chain(alice_rsa, cas) is None
    assert find_issuer_chain(alice_rsa, cas, allow_sha1=True) == [alice_rsa, carl_rsa]
    assert find_issuer_chain(alice_dss, cas, allow_sha1=True) == [alice_dss, carl_dss]
    # Alice's RSA certificate names CarlRSA as its issuer, not CarlDSS.
    assert find_issuer_chain(alice_rsa, [carl_dss], allow_sha1=True) is None

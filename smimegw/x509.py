"""Public facts about X.509 certificates, for services that must never see private keys.

Loading: `load_certificates` reads PEM (one certificate or a bundle), DER, and PKCS#7
certificate bundles (`.p7b`, PEM or DER). It skips PEM blocks of other kinds, such as a
private key stored beside its certificate. Every failure raises `CertificateImportError`
whose `category` is one of `ImportErrorCategory`, the categories key import shares.

Addresses of a certificate, in this order:

1. the subjectAltName entries, in the order written: rfc822Name and the
   SmtpUTF8Mailbox otherName (RFC 9598, OID 1.3.6.1.5.5.7.8.9, a UTF8String that
   allows a non-ASCII local part);
2. the PKCS#9 emailAddress attributes of the subject DN.

RFC 5280 section 4.2.1.6 puts addresses in subjectAltName, but its section 4.1.2.6
still permits the emailAddress attribute in the DN for legacy implementations, and
older CAs (NSS's test CA among them) write the address only in the DN. So the
addresses of a certificate are the union of both lists, and a DN that disagrees with
its subjectAltName adds its address rather than being ignored. Duplicates are dropped
by their matching key (see `address_key`), keeping the first spelling. Addresses are
reported as written, and `holds_address` compares them without regard to case.
"""

from __future__ import annotations

import base64
import binascii
import encodings.idna
import enum
import re
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from asn1crypto import cms as asn1_cms
from asn1crypto import core as asn1_core
from asn1crypto import pkcs12 as asn1_pkcs12
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import (
    dsa,
    ec,
    ed448,
    ed25519,
    padding,
    rsa,
    x448,
    x25519,
)
from cryptography.hazmat.primitives.serialization import pkcs7
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = [
    "CertificateFacts",
    "CertificateImportError",
    "ImportErrorCategory",
    "KeyUsage",
    "MaterialImportError",
    "ValidityStatus",
    "address_key",
    "check_readable",
    "describe_certificate",
    "facts_of",
    "find_issuer_chain",
    "holds_address",
    "load_certificates",
    "require_issuer_chain",
    "status_at",
]

KeyUsage = Literal["signing", "encryption", "both", "none"]
ValidityStatus = Literal["not-yet-valid", "valid", "expired"]

# RFC 9598 section 3: id-on-SmtpUTF8Mailbox.
SMTP_UTF8_MAILBOX_OID = x509.ObjectIdentifier("1.3.6.1.5.5.7.8.9")

# Bounds the issuer search, so a cycle of cross-signed CAs cannot loop forever.
MAX_CHAIN_LENGTH = 10

_PEM_BLOCK = re.compile(
    rb"-----BEGIN ([A-Z0-9 ]+)-----\r?\n(.*?)-----END \1-----", re.DOTALL
)
_CERTIFICATE_LABELS = frozenset({b"CERTIFICATE", b"X509 CERTIFICATE"})
_PKCS7_LABELS = frozenset({b"PKCS7", b"CMS"})
_PRIVATE_KEY_LABELS = frozenset(
    {
        b"PRIVATE KEY",
        b"ENCRYPTED PRIVATE KEY",
        b"RSA PRIVATE KEY",
        b"EC PRIVATE KEY",
        b"DSA PRIVATE KEY",
    }
)
_SIGNING_KEYS = (
    rsa.RSAPublicKey,
    ec.EllipticCurvePublicKey,
    dsa.DSAPublicKey,
    ed25519.Ed25519PublicKey,
    ed448.Ed448PublicKey,
)
_ENCRYPTION_KEYS = (
    rsa.RSAPublicKey,
    ec.EllipticCurvePublicKey,
    x25519.X25519PublicKey,
    x448.X448PublicKey,
)


class ImportErrorCategory(enum.StrEnum):
    """Cause of a failed certificate or key import, as recorded in the audit log."""

    # Category names, not passwords.
    WRONG_PASSWORD = "wrong-password"  # noqa: S105
    PASSWORD_REQUIRED = "password-required"  # noqa: S105
    CORRUPTED = "corrupted"
    NOT_PKCS12 = "not-pkcs12"
    NOT_PEM = "not-pem"
    NOT_CERTIFICATE = "not-certificate"
    UNSUPPORTED_ALGORITHM = "unsupported-algorithm"
    KEY_MISMATCH = "key-mismatch"
    NO_CERTIFICATE = "no-certificate"
    NO_PRIVATE_KEY = "no-private-key"
    MULTIPLE_PRIVATE_KEYS = "multiple-private-keys"
    LIMIT_EXCEEDED = "limit-exceeded"
    ISSUER_CA_NOT_IMPORTED = "issuer-ca-not-imported"


class MaterialImportError(Exception):
    """Base of certificate and key import failures.

    The message names the file, what is wrong with it and what to do. It never contains
    a password or private key bytes, so it can go into an event.
    """

    def __init__(
        self,
        category: ImportErrorCategory,
        message: str,
        *,
        filename: str | None = None,
        algorithm: str | None = None,
    ) -> None:
        super().__init__(message)
        self.category = category
        self.message = message
        self.filename = filename
        # The algorithm that could not be used, for `unsupported-algorithm`.
        self.algorithm = algorithm


class CertificateImportError(MaterialImportError):
    """A certificate file could not be imported."""


@dataclass(frozen=True, slots=True)
class CertificateFacts:
    """Public facts of one certificate, free of key material."""

    subject: str
    # The subject CN, or the first address, or the whole subject when it has neither.
    identity: str
    issuer: str
    serial: str
    sha256_fingerprint: str
    not_before: datetime
    not_after: datetime
    addresses: tuple[str, ...]
    key_usage: KeyUsage
    is_ca: bool
    # "RSA", "DSA", "EC", "Ed25519", "Ed448", "X25519", "X448", or the dotted OID
    # of another algorithm.
    key_algorithm: str
    # Size in bits, None when the algorithm is none of the named ones.
    key_size: int | None
    # Named curve of an EC key (for example "secp384r1"), None for other keys.
    key_curve: str | None
    subject_key_identifier: str | None
    authority_key_identifier: str | None


# Loading


def load_certificates(data: bytes, filename: str) -> list[x509.Certificate]:
    """Load every certificate of a PEM, DER or PKCS#7 file, in file order.

    Raises `CertificateImportError` when the file contains no readable certificate.
    """
    if not data.strip():
        raise CertificateImportError(
            ImportErrorCategory.NOT_CERTIFICATE,
            f"Certificate file {filename!r} is empty. Choose the file that holds the "
            "certificate (PEM, DER or .p7b).",
            filename=filename,
        )
    if b"-----BEGIN " in data:
        certificates = _load_pem_certificates(data, filename)
    else:
        certificates = _load_der_certificates(data, filename)
    for certificate in certificates:
        check_readable(certificate, filename)
    return certificates


def check_readable(certificate: x509.Certificate, filename: str) -> None:
    """Check that the names, extensions and public key of a certificate can be read.

    cryptography decodes these parts only when they are first used, so this check
    moves their failures to import time. Raises `CertificateImportError`.
    """
    _check_name(certificate, "subject", filename)
    _check_name(certificate, "issuer", filename)
    _check_extensions(certificate, filename)
    try:
        certificate.public_key()
    except (ValueError, UnsupportedAlgorithm) as err:
        algorithm = certificate.public_key_algorithm_oid.dotted_string
        raise CertificateImportError(
            ImportErrorCategory.UNSUPPORTED_ALGORITHM,
            f"Certificate {describe_certificate(certificate)} in {filename!r} has a "
            f"public key of algorithm {algorithm} that cannot be used ({err}). Ask "
            "for a certificate with an RSA, EC or Ed25519 key.",
            filename=filename,
            algorithm=algorithm,
        ) from err


def _check_name(
    certificate: x509.Certificate,
    field: Literal["subject", "issuer"],
    filename: str,
) -> None:
    try:
        name = certificate.subject if field == "subject" else certificate.issuer
        name.rfc4514_string()
    except (ValueError, TypeError) as err:
        # cryptography raises ValueError for a name it cannot parse, and TypeError
        # for an attribute whose ASN.1 string type its OID does not allow (a
        # commonName written as a BIT STRING).
        raise CertificateImportError(
            ImportErrorCategory.CORRUPTED,
            f"The {field} name of certificate {describe_certificate(certificate)} "
            f"in {filename!r} cannot be decoded ({err}). Ask its issuer for a "
            "certificate that follows RFC 5280.",
            filename=filename,
        ) from err


def _check_extensions(certificate: x509.Certificate, filename: str) -> None:
    try:
        _ = certificate.extensions
    except x509.DuplicateExtension as err:
        raise CertificateImportError(
            ImportErrorCategory.CORRUPTED,
            f"Certificate {describe_certificate(certificate)} in {filename!r} "
            f"contains extension {err.oid.dotted_string} more than once, which RFC "
            "5280 section 4.2 forbids. Ask its issuer for a certificate that "
            "follows RFC 5280.",
            filename=filename,
        ) from err
    except ValueError as err:
        raise CertificateImportError(
            ImportErrorCategory.CORRUPTED,
            f"Certificate {describe_certificate(certificate)} in {filename!r} has "
            f"an extension that cannot be decoded ({err}). Ask its issuer for a "
            "certificate that follows RFC 5280.",
            filename=filename,
        ) from err


def describe_certificate(certificate: x509.Certificate) -> str:
    """Name a certificate in a message by its quoted subject DN.

    A certificate whose subject cannot be decoded is named by its SHA-256
    fingerprint instead, so that a malformed subject does not make this raise.
    """
    try:
        return repr(certificate.subject.rfc4514_string())
    except (ValueError, TypeError):
        return f"with SHA-256 fingerprint {_fingerprint(certificate).hex()}"


def _load_pem_certificates(data: bytes, filename: str) -> list[x509.Certificate]:
    certificates: list[x509.Certificate] = []
    other_labels: list[str] = []
    for index, match in enumerate(_PEM_BLOCK.finditer(data), start=1):
        label, block = match.group(1), match.group(0)
        position = f"PEM block {index}"
        if label in _CERTIFICATE_LABELS:
            certificates.append(_load_pem_certificate(block, filename, position))
        elif label in _PKCS7_LABELS:
            certificates.extend(_load_pkcs7(block, filename, pem=True))
        else:
            other_labels.append(label.decode("ascii"))
    if certificates:
        return certificates
    if not other_labels:
        raise CertificateImportError(
            ImportErrorCategory.CORRUPTED,
            f"Certificate file {filename!r} has a '-----BEGIN' line but no complete "
            "PEM block (a missing or altered '-----END' line). Copy the file again "
            "from its source.",
            filename=filename,
        )
    raise CertificateImportError(
        ImportErrorCategory.NO_CERTIFICATE,
        f"Certificate file {filename!r} holds {', '.join(other_labels)} but no "
        f"certificate. {_hint_for_labels(other_labels)}",
        filename=filename,
    )


def _hint_for_labels(labels: list[str]) -> str:
    if any(label.encode("ascii") in _PRIVATE_KEY_LABELS for label in labels):
        return (
            "Import a private key together with its certificate as key material "
            "(--cert and --key), never as a certificate."
        )
    if "TRUSTED CERTIFICATE" in labels:
        return (
            "OpenSSL's TRUSTED CERTIFICATE form is not read: convert it with "
            "'openssl x509 -in FILE -out cert.pem'."
        )
    if "CERTIFICATE REQUEST" in labels or "NEW CERTIFICATE REQUEST" in labels:
        return (
            "A certificate request is not a certificate: import the certificate "
            "the CA issued for it."
        )
    return "Choose the file that holds the certificate (PEM, DER or .p7b)."


def _load_pem_certificate(
    block: bytes, filename: str, position: str
) -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificate(block)
    except x509.InvalidVersion as err:
        raise _invalid_version(err, filename, f"{position} of {filename!r}") from err
    except ValueError as err:
        der = _pem_body(block)
        if not der:
            raise CertificateImportError(
                ImportErrorCategory.CORRUPTED,
                f"{position} of {filename!r} is not valid base64. Copy the file "
                "again from its source.",
                filename=filename,
            ) from err
        raise _classify_undecodable_certificate(
            der, filename, f"{position} of {filename!r}"
        ) from err


def _invalid_version(
    err: x509.InvalidVersion, filename: str, where: str
) -> CertificateImportError:
    # cryptography raises InvalidVersion, which is no ValueError, for a version
    # number other than the 0, 1 and 2 (v1, v2, v3) of RFC 5280 section 4.1.2.1.
    return CertificateImportError(
        ImportErrorCategory.CORRUPTED,
        f"{where} has X.509 version number {err.parsed_version}, but RFC 5280 "
        "defines only 0, 1 and 2 (v1, v2 and v3), so the certificate is damaged. "
        "Copy or export the certificate again.",
        filename=filename,
    )


def _pem_body(block: bytes) -> bytes | None:
    """Return the decoded body of a PEM block, or None when it is not base64."""
    lines = block.splitlines()[1:-1]
    body = b"".join(line.strip() for line in lines if b":" not in line)
    try:
        return base64.b64decode(body, validate=True)
    except (binascii.Error, ValueError):
        return None


def _load_der_certificates(data: bytes, filename: str) -> list[x509.Certificate]:
    try:
        return [x509.load_der_x509_certificate(data)]
    except x509.InvalidVersion as err:
        raise _invalid_version(err, filename, repr(filename)) from err
    except ValueError as err:
        certificate_error = err
    if _is_content_info(data):
        return _load_pkcs7(data, filename, pem=False)
    raise _classify_undecodable_certificate(
        data, filename, repr(filename)
    ) from certificate_error


def _is_content_info(data: bytes) -> bool:
    try:
        content_info = asn1_cms.ContentInfo.load(data)
        return bool(content_info["content_type"].dotted == "1.2.840.113549.1.7.2")
    except ValueError:
        return False


def _load_pkcs7(data: bytes, filename: str, *, pem: bool) -> list[x509.Certificate]:
    der = _pem_body(data) if pem else data
    if der is not None and _pkcs7_certificate_count(der) == 0:
        raise CertificateImportError(
            ImportErrorCategory.NO_CERTIFICATE,
            f"PKCS#7 file {filename!r} holds no certificate. Export the "
            "certificate itself (PEM or DER), or a .p7b with certificates.",
            filename=filename,
        )
    try:
        # cryptography 50 warns when it falls back to BER, which OpenSSL writes
        # (crl2pkcs7 leaves the certificate SET unsorted). NOTE: catch_warnings
        # changes process-wide state and is not thread-safe before Python 3.14.
        with warnings.catch_warnings():
            warnings.filterwarnings(
                "ignore",
                message="PKCS#7 certificates could not be parsed as DER",
                category=UserWarning,
            )
            if pem:
                return list(pkcs7.load_pem_pkcs7_certificates(data))
            return list(pkcs7.load_der_pkcs7_certificates(data))
    except x509.InvalidVersion as err:
        where = f"A certificate in PKCS#7 file {filename!r}"
        raise _invalid_version(err, filename, where) from err
    except ValueError as err:
        raise CertificateImportError(
            ImportErrorCategory.CORRUPTED,
            f"PKCS#7 file {filename!r} cannot be decoded ({err}). Export the "
            "certificates again, as PEM if possible.",
            filename=filename,
        ) from err


def _pkcs7_certificate_count(der: bytes) -> int | None:
    """Count the certificates of a PKCS#7 SignedData, or None when it does not parse."""
    try:
        content_info = asn1_cms.ContentInfo.load(der)
        certificates = content_info["content"]["certificates"]
        return 0 if isinstance(certificates, asn1_core.Void) else len(certificates)
    except (ValueError, KeyError, TypeError):
        return None


def _classify_undecodable_certificate(
    der: bytes | None, filename: str, where: str
) -> CertificateImportError:
    """Explain why cryptography could not read `der` as a certificate."""
    if der is None or not der.startswith(b"\x30"):
        return CertificateImportError(
            ImportErrorCategory.NOT_CERTIFICATE,
            f"{where} is neither a PEM nor a DER certificate. Choose the file that "
            "holds the certificate (PEM, DER or .p7b).",
            filename=filename,
        )
    if _is_pkcs12(der):
        return CertificateImportError(
            ImportErrorCategory.NOT_CERTIFICATE,
            f"{where} is a PKCS#12 file, not a certificate. Import it with its "
            "password as key material, or export the certificate alone.",
            filename=filename,
        )
    algorithm = _public_key_algorithm(der)
    if algorithm is None:
        return CertificateImportError(
            ImportErrorCategory.CORRUPTED,
            f"{where} is DER but not a readable X.509 certificate: it is truncated "
            "or damaged. Copy or export the certificate again.",
            filename=filename,
        )
    return CertificateImportError(
        ImportErrorCategory.UNSUPPORTED_ALGORITHM,
        f"{where} is a certificate whose public key ({algorithm}) cannot be read. "
        "Ask its issuer for a certificate with an RSA, EC or Ed25519 key.",
        filename=filename,
        algorithm=algorithm,
    )


def _is_pkcs12(der: bytes) -> bool:
    try:
        pfx = asn1_pkcs12.Pfx.load(der)
        return bool(pfx["version"].native == "v3")
    except ValueError:
        return False


def _public_key_algorithm(der: bytes) -> str | None:
    """Name the public key algorithm of a certificate cryptography could not load.

    Returns None when the bytes are not a well-formed certificate at all.
    """
    try:
        certificate = asn1_x509.Certificate.load(der, strict=True)
        info = certificate["tbs_certificate"]["subject_public_key_info"]
        algorithm = info["algorithm"]
        name = str(algorithm["algorithm"].native)
        parameters = algorithm["parameters"]
    except ValueError:
        return None
    except KeyError:
        # asn1crypto raises KeyError for a public key algorithm OID it does not
        # know. cryptography 50 loads a certificate with such a key and fails only
        # in public_key(), so this certificate failed to load for another reason.
        return None
    if name == "dsa" and isinstance(parameters, asn1_core.Void):
        # RFC 3279 section 2.3.2 lets a DSA key inherit its domain parameters from
        # the issuer's certificate; cryptography requires them in the certificate.
        return "DSA with parameters inherited from the issuer"
    return name


# Facts


def facts_of(certificate: x509.Certificate) -> CertificateFacts:
    """Collect the public facts of a certificate that passed `check_readable`."""
    public_key = certificate.public_key()
    addresses = addresses_of(certificate)
    algorithm, size, curve = _key_description(certificate, public_key)
    return CertificateFacts(
        subject=certificate.subject.rfc4514_string(),
        identity=_identity(certificate, addresses),
        issuer=certificate.issuer.rfc4514_string(),
        serial=_hex_serial(certificate.serial_number),
        sha256_fingerprint=certificate.fingerprint(hashes.SHA256()).hex(),
        not_before=certificate.not_valid_before_utc,
        not_after=certificate.not_valid_after_utc,
        addresses=addresses,
        key_usage=_key_usage(certificate, public_key),
        is_ca=_is_ca(certificate),
        key_algorithm=algorithm,
        key_size=size,
        key_curve=curve,
        subject_key_identifier=_subject_key_identifier(certificate),
        authority_key_identifier=_authority_key_identifier(certificate),
    )


def _hex_serial(serial: int) -> str:
    # RFC 5280 requires a positive serial, but some old CAs wrote negative ones.
    return f"-{-serial:x}" if serial < 0 else f"{serial:x}"


def _identity(certificate: x509.Certificate, addresses: tuple[str, ...]) -> str:
    names = certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if names:
        # The last CN is the most specific one in a DN with several.
        return _attribute_text(names[-1].value)
    if addresses:
        return addresses[0]
    return certificate.subject.rfc4514_string()


def _attribute_text(value: str | bytes) -> str:
    return value if isinstance(value, str) else value.decode("utf-8", "replace")


def addresses_of(certificate: x509.Certificate) -> tuple[str, ...]:
    """List the addresses of a certificate by the rule in the module docstring."""
    found: list[str] = []
    try:
        san = certificate.extensions.get_extension_for_class(
            x509.SubjectAlternativeName
        ).value
    except x509.ExtensionNotFound:
        san = None
    if san is not None:
        for name in san:
            if isinstance(name, x509.RFC822Name):
                found.append(name.value)
            elif (
                isinstance(name, x509.OtherName)
                and name.type_id == SMTP_UTF8_MAILBOX_OID
            ):
                mailbox = _smtp_utf8_mailbox(name.value)
                if mailbox is not None:
                    found.append(mailbox)
    for attribute in certificate.subject.get_attributes_for_oid(NameOID.EMAIL_ADDRESS):
        found.append(_attribute_text(attribute.value))

    unique: dict[str, str] = {}
    for address in found:
        unique.setdefault(address_key(address), address)
    return tuple(unique.values())


def _smtp_utf8_mailbox(value: bytes) -> str | None:
    """Decode the UTF8String of a SmtpUTF8Mailbox, or None when it is malformed."""
    try:
        return str(asn1_core.UTF8String.load(value, strict=True).native)
    except ValueError:
        return None


def address_key(address: str) -> str:
    """Return the form of an address used to compare it, ignoring case.

    The local part is case-folded. The domain is lower-cased and converted to its
    IDNA A-label, so an SmtpUTF8Mailbox domain written in Unicode matches the same
    domain written as an rfc822Name.
    """
    local, at, domain = address.strip().rpartition("@")
    if not at:
        return address.strip().casefold()
    return f"{local.casefold()}@{_domain_key(domain)}"


def _domain_key(domain: str) -> str:
    if domain.isascii():
        return domain.lower()
    try:
        labels = [
            encodings.idna.ToASCII(label).decode("ascii") for label in domain.split(".")
        ]
    except UnicodeError:
        return domain.casefold()
    return ".".join(labels).lower()


def holds_address(facts: CertificateFacts, address: str) -> bool:
    """Return whether `address` is one of the certificate's addresses, ignoring case."""
    wanted = address_key(address)
    return any(address_key(held) == wanted for held in facts.addresses)


def _key_usage(certificate: x509.Certificate, public_key: object) -> KeyUsage:
    """Derive what S/MIME may use a certificate's key for.

    keyUsage digitalSignature or nonRepudiation allows signing, and keyEncipherment
    or keyAgreement allows encryption. A certificate without keyUsage allows both.
    An extendedKeyUsage without emailProtection or anyExtendedKeyUsage allows
    neither. The key type limits the result further: an Ed25519 or DSA key cannot
    encrypt and an X25519 key cannot sign, whatever the extensions allow.
    """
    extensions = certificate.extensions
    can_sign = isinstance(public_key, _SIGNING_KEYS)
    can_encrypt = isinstance(public_key, _ENCRYPTION_KEYS)
    try:
        usage = extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        pass
    else:
        can_sign = can_sign and (usage.digital_signature or usage.content_commitment)
        can_encrypt = can_encrypt and (usage.key_encipherment or usage.key_agreement)
    try:
        purposes = extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        pass
    else:
        if not (
            ExtendedKeyUsageOID.EMAIL_PROTECTION in purposes
            or ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE in purposes
        ):
            can_sign = can_encrypt = False

    if can_sign and can_encrypt:
        return "both"
    if can_sign:
        return "signing"
    if can_encrypt:
        return "encryption"
    return "none"


def _is_ca(certificate: x509.Certificate) -> bool:
    try:
        constraints = certificate.extensions.get_extension_for_class(
            x509.BasicConstraints
        ).value
    except x509.ExtensionNotFound:
        return False
    return constraints.ca


def _key_description(
    certificate: x509.Certificate, public_key: object
) -> tuple[str, int | None, str | None]:
    """Return the algorithm name, size in bits and EC curve name of a public key."""
    if isinstance(public_key, rsa.RSAPublicKey):
        return "RSA", public_key.key_size, None
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        return "EC", public_key.curve.key_size, public_key.curve.name
    if isinstance(public_key, dsa.DSAPublicKey):
        return "DSA", public_key.key_size, None
    # The sizes of the Edwards and Montgomery curves are the RFC 8032 and RFC 7748
    # key lengths in bits.
    fixed_sizes: list[tuple[type, str, int]] = [
        (ed25519.Ed25519PublicKey, "Ed25519", 256),
        (ed448.Ed448PublicKey, "Ed448", 456),
        (x25519.X25519PublicKey, "X25519", 256),
        (x448.X448PublicKey, "X448", 448),
    ]
    for key_type, name, size in fixed_sizes:
        if isinstance(public_key, key_type):
            return name, size, None
    return certificate.public_key_algorithm_oid.dotted_string, None, None


def _subject_key_identifier(certificate: x509.Certificate) -> str | None:
    try:
        extension = certificate.extensions.get_extension_for_class(
            x509.SubjectKeyIdentifier
        )
    except x509.ExtensionNotFound:
        return None
    return extension.value.digest.hex()


def _authority_key_identifier(certificate: x509.Certificate) -> str | None:
    try:
        extension = certificate.extensions.get_extension_for_class(
            x509.AuthorityKeyIdentifier
        )
    except x509.ExtensionNotFound:
        return None
    identifier = extension.value.key_identifier
    return identifier.hex() if identifier is not None else None


def status_at(facts: CertificateFacts, now: datetime) -> ValidityStatus:
    """Place `now` in the validity window, whose both ends are inclusive (RFC 5280).

    Raises ValueError for a naive `now`, which cannot be compared with UTC times.
    """
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError(
            f"status_at needs a timezone-aware time, got naive {now.isoformat()}. "
            "Pass datetime.now(timezone.utc)."
        )
    if now < facts.not_before:
        return "not-yet-valid"
    if now > facts.not_after:
        return "expired"
    return "valid"


# Issuer chains


def find_issuer_chain(
    certificate: x509.Certificate,
    cas: Sequence[x509.Certificate],
    *,
    allow_sha1: bool = False,
) -> list[x509.Certificate] | None:
    """Find the chain from `certificate` up to the imported CAs in `cas`.

    The chain starts with `certificate` and follows issuers found in `cas`, by issuer
    name and a verified signature, until a self-signed CA or an issuer that is not
    in `cas`. A CA certificate that is itself in `cas` is a chain of one. Returns None
    when the certificate's issuer is not in `cas`.

    The result shows whether the issuing CA has been imported. It is not path
    validation, because it checks neither validity periods nor name constraints.
    cryptography 50 rejects SHA-1 certificate signatures, so `allow_sha1` verifies
    those with the issuer's public key instead, for old CAs such as the RFC 4134
    examples.
    """
    chain = [certificate]
    seen = {_fingerprint(certificate)}
    current = certificate
    while len(chain) < MAX_CHAIN_LENGTH and not (
        len(chain) > 1 and _is_self_issued(current)
    ):
        issuer = _find_issuer(current, cas, seen, allow_sha1=allow_sha1)
        if issuer is None:
            break
        chain.append(issuer)
        seen.add(_fingerprint(issuer))
        current = issuer
    if len(chain) > 1:
        return chain
    in_cas = any(_fingerprint(ca) == _fingerprint(certificate) for ca in cas)
    if in_cas and _may_issue(certificate):
        return chain
    return None


def require_issuer_chain(
    certificate: x509.Certificate,
    cas: Sequence[x509.Certificate],
    filename: str,
    *,
    allow_sha1: bool = False,
) -> list[x509.Certificate]:
    """Return `find_issuer_chain`, or raise `issuer-ca-not-imported` without one."""
    chain = find_issuer_chain(certificate, cas, allow_sha1=allow_sha1)
    if chain is None:
        raise CertificateImportError(
            ImportErrorCategory.ISSUER_CA_NOT_IMPORTED,
            f"The CA that issued certificate {describe_certificate(certificate)} in "
            f"{filename!r} is not imported (issuer "
            f"{certificate.issuer.rfc4514_string()!r}). Import that CA certificate "
            "first, then import this file again.",
            filename=filename,
        )
    return chain


def _fingerprint(certificate: x509.Certificate) -> bytes:
    return certificate.fingerprint(hashes.SHA256())


def _is_self_issued(certificate: x509.Certificate) -> bool:
    return certificate.issuer == certificate.subject


def _find_issuer(
    certificate: x509.Certificate,
    cas: Sequence[x509.Certificate],
    seen: set[bytes],
    *,
    allow_sha1: bool,
) -> x509.Certificate | None:
    candidates = [
        ca
        for ca in cas
        if ca.subject == certificate.issuer
        and _fingerprint(ca) not in seen
        and _may_issue(ca)
    ]
    # A self-signed candidate ends the chain at a root, so it goes first when a
    # cross-signed copy of the same CA is imported too.
    candidates.sort(key=lambda ca: not _is_self_issued(ca))
    for candidate in candidates:
        if _verify_issued_by(certificate, candidate, allow_sha1=allow_sha1):
            return candidate
    return None


def _may_issue(ca: x509.Certificate) -> bool:
    """Apply RFC 5280 section 6.1.4 (k) and (n) to a candidate issuer.

    A version 3 certificate must assert basicConstraints cA, and a keyUsage
    extension, when present, must allow keyCertSign. Version 1 certificates carry no
    extensions and are accepted as CAs, as path validation does.
    """
    try:
        constraints = ca.extensions.get_extension_for_class(x509.BasicConstraints)
    except x509.ExtensionNotFound:
        if ca.version != x509.Version.v1:
            return False
    else:
        if not constraints.value.ca:
            return False
    try:
        usage = ca.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        return True
    return usage.key_cert_sign


def _verify_issued_by(
    certificate: x509.Certificate, issuer: x509.Certificate, *, allow_sha1: bool
) -> bool:
    try:
        certificate.verify_directly_issued_by(issuer)
        return True
    except InvalidSignature:
        return False
    except (ValueError, TypeError, UnsupportedAlgorithm):
        # cryptography raises ValueError for a signature algorithm it does not
        # verify, SHA-1 among them.
        if not allow_sha1:
            return False
    return _verify_sha1_signature(certificate, issuer)


def _verify_sha1_signature(
    certificate: x509.Certificate, issuer: x509.Certificate
) -> bool:
    try:
        digest = certificate.signature_hash_algorithm
    except UnsupportedAlgorithm:
        return False
    if not isinstance(digest, hashes.SHA1):
        return False
    public_key = issuer.public_key()
    signature = certificate.signature
    data = certificate.tbs_certificate_bytes
    try:
        if isinstance(public_key, rsa.RSAPublicKey):
            public_key.verify(signature, data, padding.PKCS1v15(), digest)
        elif isinstance(public_key, dsa.DSAPublicKey):
            public_key.verify(signature, data, digest)
        elif isinstance(public_key, ec.EllipticCurvePublicKey):
            public_key.verify(signature, data, ec.ECDSA(digest))
        else:
            return False
    except (InvalidSignature, ValueError):
        return False
    return True

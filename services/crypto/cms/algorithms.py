"""Object identifiers of the CMS enveloping algorithms and their names.

Names follow the gateway's configuration vocabulary ("aes256-cbc", "rsa-oaep-sha256").
Every OID that the gateway rejects on purpose is listed with the standard that defines
it, so that an error names what the sender used.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from cryptography.hazmat.primitives import hashes

from services.crypto.cms.errors import UnsupportedAlgorithmError

CipherMode = Literal["cbc", "gcm"]


@dataclass(frozen=True)
class ContentCipher:
    """A content-encryption algorithm (RFC 3370, RFC 3565, RFC 5084)."""

    name: str
    oid: str
    key_size: int  # bytes
    block_size: int  # bytes, and the CBC IV size
    mode: CipherMode


_CONTENT_CIPHERS = (
    ContentCipher("aes128-cbc", "2.16.840.1.101.3.4.1.2", 16, 16, "cbc"),
    ContentCipher("aes192-cbc", "2.16.840.1.101.3.4.1.22", 24, 16, "cbc"),
    ContentCipher("aes256-cbc", "2.16.840.1.101.3.4.1.42", 32, 16, "cbc"),
    ContentCipher("3des-cbc", "1.2.840.113549.3.7", 24, 8, "cbc"),
    ContentCipher("aes128-gcm", "2.16.840.1.101.3.4.1.6", 16, 16, "gcm"),
    ContentCipher("aes192-gcm", "2.16.840.1.101.3.4.1.26", 24, 16, "gcm"),
    ContentCipher("aes256-gcm", "2.16.840.1.101.3.4.1.46", 32, 16, "gcm"),
)
CONTENT_CIPHERS_BY_NAME = {cipher.name: cipher for cipher in _CONTENT_CIPHERS}
CONTENT_CIPHERS_BY_OID = {cipher.oid: cipher for cipher in _CONTENT_CIPHERS}

RSA_ENCRYPTION = "1.2.840.113549.1.1.1"  # RFC 3370 section 4.2.1, PKCS#1 v1.5
RSAES_OAEP = "1.2.840.113549.1.1.7"  # RFC 8017 appendix A.2.1, in CMS by RFC 3560
MGF1 = "1.2.840.113549.1.1.8"
P_SPECIFIED = "1.2.840.113549.1.1.9"
ID_EC_PUBLIC_KEY = "1.2.840.10045.2.1"

HASHES_BY_OID: dict[str, hashes.HashAlgorithm] = {
    "1.3.14.3.2.26": hashes.SHA1(),  # noqa: S303 - OAEP and X9.63 KDF, not signatures
    "2.16.840.1.101.3.4.2.4": hashes.SHA224(),
    "2.16.840.1.101.3.4.2.1": hashes.SHA256(),
    "2.16.840.1.101.3.4.2.2": hashes.SHA384(),
    "2.16.840.1.101.3.4.2.3": hashes.SHA512(),
}
HASH_OIDS_BY_NAME = {hash_.name: oid for oid, hash_ in HASHES_BY_OID.items()}


@dataclass(frozen=True)
class KeyAgreementScheme:
    """An RFC 5753 ECDH scheme: the X9.63 KDF hash and whether it is cofactor DH."""

    oid: str
    kdf_hash: hashes.HashAlgorithm
    cofactor: bool


_KEY_AGREEMENT_SCHEMES = (
    KeyAgreementScheme("1.3.133.16.840.63.0.2", hashes.SHA1(), cofactor=False),  # noqa: S303
    KeyAgreementScheme("1.3.132.1.11.0", hashes.SHA224(), cofactor=False),
    KeyAgreementScheme("1.3.132.1.11.1", hashes.SHA256(), cofactor=False),
    KeyAgreementScheme("1.3.132.1.11.2", hashes.SHA384(), cofactor=False),
    KeyAgreementScheme("1.3.132.1.11.3", hashes.SHA512(), cofactor=False),
    KeyAgreementScheme("1.3.133.16.840.63.0.3", hashes.SHA1(), cofactor=True),  # noqa: S303
    KeyAgreementScheme("1.3.132.1.14.0", hashes.SHA224(), cofactor=True),
    KeyAgreementScheme("1.3.132.1.14.1", hashes.SHA256(), cofactor=True),
    KeyAgreementScheme("1.3.132.1.14.2", hashes.SHA384(), cofactor=True),
    KeyAgreementScheme("1.3.132.1.14.3", hashes.SHA512(), cofactor=True),
)
KEY_AGREEMENT_SCHEMES_BY_OID = {scheme.oid: scheme for scheme in _KEY_AGREEMENT_SCHEMES}
STD_DH_SCHEME_OIDS_BY_HASH = {
    scheme.kdf_hash.name: scheme.oid
    for scheme in _KEY_AGREEMENT_SCHEMES
    if not scheme.cofactor
}


KeyWrapKind = Literal["aes", "aes-pad", "3des"]


@dataclass(frozen=True)
class KeyWrap:
    """A key wrap: AES (RFC 3394), AES with padding (RFC 5649) or 3DES (RFC 3217)."""

    name: str
    oid: str
    key_size: int  # bytes of the key-encryption key
    kind: KeyWrapKind


_KEY_WRAPS = (
    KeyWrap("aes128-wrap", "2.16.840.1.101.3.4.1.5", 16, "aes"),
    KeyWrap("aes192-wrap", "2.16.840.1.101.3.4.1.25", 24, "aes"),
    KeyWrap("aes256-wrap", "2.16.840.1.101.3.4.1.45", 32, "aes"),
    KeyWrap("aes128-wrap-pad", "2.16.840.1.101.3.4.1.8", 16, "aes-pad"),
    KeyWrap("aes192-wrap-pad", "2.16.840.1.101.3.4.1.28", 24, "aes-pad"),
    KeyWrap("aes256-wrap-pad", "2.16.840.1.101.3.4.1.48", 32, "aes-pad"),
    # OpenSSL 3.0 wraps a 3DES content key with it for ECDH recipients.
    KeyWrap("3des-wrap", "1.2.840.113549.1.9.16.3.6", 24, "3des"),
)
KEY_WRAPS_BY_OID = {wrap.oid: wrap for wrap in _KEY_WRAPS}
KEY_WRAPS_BY_SIZE = {wrap.key_size: wrap for wrap in _KEY_WRAPS if wrap.kind == "aes"}


@dataclass(frozen=True)
class Curve:
    """A NIST prime curve (RFC 5480) and the KDF hash that encrypt() pairs with it.

    The hash matches the security level of the curve: RFC 5008 pairs P-256 with
    SHA-256 and P-384 with SHA-384, and P-521 gets SHA-512 by the same rule.
    """

    name: str  # as it appears in key algorithm names
    oid: str
    kdf_hash: hashes.HashAlgorithm


CURVES_BY_KEY_CURVE_NAME = {
    "secp256r1": Curve("p256", "1.2.840.10045.3.1.7", hashes.SHA256()),
    "secp384r1": Curve("p384", "1.3.132.0.34", hashes.SHA384()),
    "secp521r1": Curve("p521", "1.3.132.0.35", hashes.SHA512()),
}

# Algorithms that the gateway rejects on purpose, with the standard that defines them.
_KNOWN_UNSUPPORTED: dict[str, tuple[str, str]] = {
    "1.2.840.113549.3.2": ("RC2-CBC", "RFC 3370 section 5.2"),
    "1.3.14.3.2.7": ("single DES-CBC", "FIPS 81; broken, not in RFC 3370"),
    "2.16.840.1.101.3.4.1.7": ("AES-128-CCM", "RFC 5084"),
    "2.16.840.1.101.3.4.1.27": ("AES-192-CCM", "RFC 5084"),
    "2.16.840.1.101.3.4.1.47": ("AES-256-CCM", "RFC 5084"),
    "1.2.840.113549.1.9.16.3.18": ("ChaCha20-Poly1305", "RFC 8103"),
    "1.2.392.200011.61.1.1.1.2": ("Camellia-128-CBC", "RFC 3657"),
    "1.2.392.200011.61.1.1.1.3": ("Camellia-192-CBC", "RFC 3657"),
    "1.2.392.200011.61.1.1.1.4": ("Camellia-256-CBC", "RFC 3657"),
    "1.2.840.113549.1.9.16.3.14": ("RSA-KEM", "RFC 5990"),
    "1.2.840.113549.1.9.16.3.5": ("ephemeral-static Diffie-Hellman", "RFC 2631"),
    "1.2.840.113549.1.9.16.3.7": ("RC2 key wrap", "RFC 3217"),
    "1.3.133.16.840.63.0.16": ("1-Pass ECMQV with the SHA-1 KDF", "RFC 5753"),
    "1.3.132.1.15.0": ("1-Pass ECMQV with the SHA-224 KDF", "RFC 5753"),
    "1.3.132.1.15.1": ("1-Pass ECMQV with the SHA-256 KDF", "RFC 5753"),
    "1.3.132.1.15.2": ("1-Pass ECMQV with the SHA-384 KDF", "RFC 5753"),
    "1.3.132.1.15.3": ("1-Pass ECMQV with the SHA-512 KDF", "RFC 5753"),
    "1.2.840.113549.1.9.16.3.19": ("X25519/X448 ECDH with HKDF-SHA256", "RFC 8418"),
    "1.2.840.113549.1.9.16.3.20": ("X25519/X448 ECDH with HKDF-SHA384", "RFC 8418"),
    "1.2.840.113549.1.9.16.3.21": ("X25519/X448 ECDH with HKDF-SHA512", "RFC 8418"),
    "1.2.840.113549.2.5": ("MD5", "RFC 1321; broken"),
}

_SUPPORTED_BY_ROLE = {
    "content-encryption": "AES-CBC (RFC 3565), DES-EDE3-CBC (RFC 3370), "
    "AES-GCM (RFC 5084)",
    "key transport": "rsaEncryption (RFC 3370) and RSAES-OAEP (RFC 3560, RFC 8017)",
    "key agreement": "dhSinglePass-stdDH and -cofactorDH with SHA-1/SHA-2 KDFs "
    "(RFC 5753)",
    "key wrap": "AES key wrap (RFC 3394, RFC 5649) and Triple-DES key wrap (RFC 3217)",
    "hash": "SHA-1 and SHA-2 (RFC 3370, RFC 5754)",
    "mask generation": "MGF1 (RFC 8017)",
    "OAEP label source": "pSpecified (RFC 8017)",
    "curve": "P-256, P-384 and P-521 (RFC 5480)",
}


def unsupported(role: str, oid: str) -> UnsupportedAlgorithmError:
    """Build the error for an algorithm OID the gateway does not implement."""
    known = _KNOWN_UNSUPPORTED.get(oid)
    if known is None:
        described = f"{oid} is unknown to the gateway"
    else:
        name, standard = known
        described = f"{name} ({oid}, {standard}) is not supported"
    return UnsupportedAlgorithmError(
        oid,
        f"{role} algorithm {described}; the gateway implements "
        f"{_SUPPORTED_BY_ROLE[role]}. Ask the sender to use one of those.",
    )

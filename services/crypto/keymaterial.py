"""Private key material from PKCS#12 files and PEM key pairs, with classified failures.

Only the crypto service imports key material. cryptography decodes and decrypts; a
failure there is one ValueError whatever the cause, so asn1crypto reads the structure
around it to tell the causes apart:

- an algorithm cryptography cannot read is `unsupported-algorithm`, naming it, and is
  never reported as a wrong password;
- a PKCS#12 MAC that does not verify with the password is `wrong-password` (or the file
  was altered, which a MAC cannot tell apart);
- a MAC that verifies while decryption fails is `corrupted`;
- without a MAC, a failed decryption is `wrong-password`, since nothing tells it apart
  from damage.

Passwords and private keys never appear in a `repr`, a message or an exception.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from asn1crypto import algos as asn1_algos
from asn1crypto import cms as asn1_cms
from asn1crypto import core as asn1_core
from asn1crypto import keys as asn1_keys
from asn1crypto import parser as asn1_parser
from asn1crypto import pkcs12 as asn1_pkcs12
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
from cryptography.hazmat.primitives.serialization import pkcs12

from smimegw.x509 import (
    CertificateImportError,
    ImportErrorCategory,
    MaterialImportError,
    check_readable,
    describe_certificate,
    load_certificates,
)

__all__ = [
    "MAX_ITERATIONS",
    "MAX_SCRYPT_MEMORY",
    "MIN_ITERATIONS",
    "KeyImportError",
    "KeyMaterial",
    "KeyWarning",
    "load_pem_key",
    "load_pem_pair",
    "load_pkcs12",
]

# Fewer key derivation iterations than this get a warning, because they make the
# password cheap to guess. OpenSSL 3.0 writes 2048 by default and NSS 10000.
MIN_ITERATIONS = 1000
# Above this limit one import would hold a worker for seconds to minutes.
MAX_ITERATIONS = 10_000_000
# scrypt needs 128 * N * r bytes (RFC 7914), and cryptography 50 allocates
# whatever the parameters ask for, so larger files are rejected before decryption.
MAX_SCRYPT_MEMORY = 1 << 30
# Nesting of safeContents bags allowed inside a PKCS#12 file.
_MAX_BAG_DEPTH = 4


class KeyImportError(MaterialImportError):
    """Key material could not be imported, for the reason in `category`."""


@dataclass(frozen=True, slots=True)
class KeyWarning:
    """A weakness of imported key material that does not stop the import."""

    code: str
    message: str


@dataclass(frozen=True, eq=False, repr=False)
class KeyMaterial:
    """A private key with its certificate, as imported from one file or pair.

    `repr` and `str` show the certificate and key type, never the key.
    """

    source: str
    certificate: x509.Certificate
    private_key: PrivateKeyTypes
    extra_certificates: tuple[x509.Certificate, ...] = ()
    warnings: tuple[KeyWarning, ...] = ()

    def __repr__(self) -> str:
        codes = ", ".join(warning.code for warning in self.warnings)
        return (
            f"KeyMaterial(source={self.source!r}, "
            f"certificate={self.certificate.subject.rfc4514_string()!r}, "
            f"private_key=<{type(self.private_key).__name__} hidden>, "
            f"extra_certificates={len(self.extra_certificates)}, "
            f"warnings=[{codes}])"
        )

    __str__ = __repr__


# Algorithm names.
#
# The names follow the ASN.1 identifiers of PKCS#12 (RFC 7292), PKCS#5 (RFC 8018) and
# scrypt (RFC 7914). Each entry records whether the algorithm protects a private key
# weakly: a key of 64 bits or less, RC4, or two-key triple DES.


@dataclass(frozen=True, slots=True)
class _Algorithm:
    name: str
    weak: bool = False


_PBES2 = "1.2.840.113549.1.5.13"
_PBKDF2 = "1.2.840.113549.1.5.12"
_SCRYPT = "1.3.6.1.4.1.11591.4.11"
_PBMAC1 = "1.2.840.113549.1.5.14"

_PBE_SCHEMES = {
    "1.2.840.113549.1.12.1.1": _Algorithm("pbeWithSHAAnd128BitRC4", weak=True),
    "1.2.840.113549.1.12.1.2": _Algorithm("pbeWithSHAAnd40BitRC4", weak=True),
    "1.2.840.113549.1.12.1.3": _Algorithm("pbeWithSHAAnd3-KeyTripleDES-CBC"),
    "1.2.840.113549.1.12.1.4": _Algorithm("pbeWithSHAAnd2-KeyTripleDES-CBC", weak=True),
    "1.2.840.113549.1.12.1.5": _Algorithm("pbeWithSHAAnd128BitRC2-CBC"),
    "1.2.840.113549.1.12.1.6": _Algorithm("pbeWithSHAAnd40BitRC2-CBC", weak=True),
    "1.2.840.113549.1.5.1": _Algorithm("pbeWithMD2AndDES-CBC", weak=True),
    "1.2.840.113549.1.5.4": _Algorithm("pbeWithMD2AndRC2-CBC", weak=True),
    "1.2.840.113549.1.5.3": _Algorithm("pbeWithMD5AndDES-CBC", weak=True),
    "1.2.840.113549.1.5.6": _Algorithm("pbeWithMD5AndRC2-CBC", weak=True),
    "1.2.840.113549.1.5.10": _Algorithm("pbeWithSHA1AndDES-CBC", weak=True),
    "1.2.840.113549.1.5.11": _Algorithm("pbeWithSHA1AndRC2-CBC", weak=True),
}
_KDFS = {_PBKDF2: "PBKDF2", _SCRYPT: "scrypt"}
_PRFS = {
    "1.2.840.113549.2.6": "hmacWithMD5",
    "1.2.840.113549.2.7": "hmacWithSHA1",
    "1.2.840.113549.2.8": "hmacWithSHA224",
    "1.2.840.113549.2.9": "hmacWithSHA256",
    "1.2.840.113549.2.10": "hmacWithSHA384",
    "1.2.840.113549.2.11": "hmacWithSHA512",
    "1.2.840.113549.2.12": "hmacWithSHA512-224",
    "1.2.840.113549.2.13": "hmacWithSHA512-256",
}
_CIPHERS = {
    "2.16.840.1.101.3.4.1.2": _Algorithm("aes128-CBC-PAD"),
    "2.16.840.1.101.3.4.1.22": _Algorithm("aes192-CBC-PAD"),
    "2.16.840.1.101.3.4.1.42": _Algorithm("aes256-CBC-PAD"),
    "1.2.840.113549.3.7": _Algorithm("des-EDE3-CBC"),
    "1.3.14.3.2.7": _Algorithm("desCBC", weak=True),
    "1.2.840.113549.3.2": _Algorithm("rc2CBC"),
    "1.2.392.200011.61.1.1.1.2": _Algorithm("camellia128-cbc"),
    "1.2.392.200011.61.1.1.1.3": _Algorithm("camellia192-cbc"),
    "1.2.392.200011.61.1.1.1.4": _Algorithm("camellia256-cbc"),
    "1.2.410.200046.1.1.2": _Algorithm("aria128-cbc"),
    "1.2.410.200046.1.1.12": _Algorithm("aria256-cbc"),
    "1.2.156.10197.1.104.2": _Algorithm("sm4-cbc"),
    "1.3.6.1.4.1.3029.1.2": _Algorithm("bf-cbc"),
    "1.2.410.200004.1.4": _Algorithm("seed-cbc"),
}


@dataclass(frozen=True, slots=True)
class _Readable:
    """The algorithm OIDs cryptography 50 reads in one container format."""

    pbe_schemes: frozenset[str]
    kdfs: frozenset[str]
    prfs: frozenset[str]
    ciphers: frozenset[str]


# cryptography 50 decrypts PKCS#12 through its bundled OpenSSL 4.0 with the legacy
# provider, which reads every algorithm above except those built on MD2. Checked with
# files made by `openssl pkcs12 -export -keypbe/-certpbe` (OpenSSL 3.0), and with key
# bags from `openssl pkcs8 -v2prf/-scrypt`, in the tests.
_PKCS12_READABLE = _Readable(
    pbe_schemes=frozenset(_PBE_SCHEMES)
    - {"1.2.840.113549.1.5.1", "1.2.840.113549.1.5.4"},
    kdfs=frozenset({_PBKDF2, _SCRYPT}),
    prfs=frozenset(_PRFS),
    ciphers=frozenset(_CIPHERS),
)
# cryptography 50 decrypts PKCS#8 PEM keys in its own Rust code, which reads fewer
# algorithms. Checked with `openssl pkcs8 -topk8 -v1/-v2/-v2prf/-scrypt` in the tests.
_PKCS8_READABLE = _Readable(
    pbe_schemes=frozenset(
        {
            "1.2.840.113549.1.12.1.1",
            "1.2.840.113549.1.12.1.3",
            "1.2.840.113549.1.12.1.6",
            "1.2.840.113549.1.5.3",
        }
    ),
    kdfs=frozenset({_PBKDF2, _SCRYPT}),
    prfs=frozenset(
        {
            "1.2.840.113549.2.7",
            "1.2.840.113549.2.8",
            "1.2.840.113549.2.9",
            "1.2.840.113549.2.10",
            "1.2.840.113549.2.11",
        }
    ),
    ciphers=frozenset(
        {
            "2.16.840.1.101.3.4.1.2",
            "2.16.840.1.101.3.4.1.22",
            "2.16.840.1.101.3.4.1.42",
            "1.2.840.113549.3.7",
            "1.2.840.113549.3.2",
        }
    ),
)
# DEK-Info ciphers of OpenSSL's traditional PEM encryption that cryptography 50 reads.
_TRADITIONAL_PEM_READABLE = frozenset({"AES-128-CBC", "AES-256-CBC", "DES-EDE3-CBC"})


@dataclass(frozen=True, slots=True)
class _Protection:
    """Password-based encryption of one part of a file."""

    name: str
    # The part of `name` that cryptography cannot read, None when it reads all.
    unreadable: str | None
    weak: bool
    iterations: int | None
    # Memory in bytes that the scrypt key derivation needs, None for other KDFs.
    scrypt_memory: int | None = None


class _ScryptParameters(asn1_core.Sequence):  # type: ignore[misc]
    """The scrypt-params of RFC 7914, which asn1crypto does not define."""

    _fields: ClassVar[list[tuple[Any, ...]]] = [
        ("salt", asn1_core.OctetString),
        ("cost_parameter", asn1_core.Integer),
        ("block_size", asn1_core.Integer),
        ("parallelization_parameter", asn1_core.Integer),
        ("key_length", asn1_core.Integer, {"optional": True}),
    ]


def _describe_encryption(
    algorithm: asn1_algos.EncryptionAlgorithm, readable: _Readable
) -> _Protection:
    """Name a password-based encryption algorithm and report whether it can be read."""
    oid = algorithm["algorithm"].dotted
    if oid == _PBES2:
        return _describe_pbes2(algorithm["parameters"], readable)
    scheme = _PBE_SCHEMES.get(oid)
    if scheme is None:
        return _Protection(oid, oid, weak=False, iterations=None)
    parameters = algorithm["parameters"]
    iterations = int(parameters["iterations"].native)
    unreadable = None if oid in readable.pbe_schemes else scheme.name
    return _Protection(scheme.name, unreadable, scheme.weak, iterations)


def _describe_pbes2(
    parameters: asn1_algos.Pbes2Params, readable: _Readable
) -> _Protection:
    kdf = parameters["key_derivation_func"]
    kdf_oid = kdf["algorithm"].dotted
    kdf_name = _KDFS.get(kdf_oid, kdf_oid)
    unreadable: list[str] = []
    if kdf_oid not in readable.kdfs:
        unreadable.append(kdf_name)
    iterations = scrypt_memory = None
    if kdf_oid == _SCRYPT:
        scrypt = _ScryptParameters.load(kdf["parameters"].dump())
        cost, block_size = scrypt["cost_parameter"].native, scrypt["block_size"].native
        scrypt_memory = 128 * int(cost) * int(block_size)
    elif kdf_oid == _PBKDF2:
        kdf_parameters = kdf["parameters"]
        iterations = int(kdf_parameters["iteration_count"].native)
        prf_oid = kdf_parameters["prf"]["algorithm"].dotted
        prf_name = _PRFS.get(prf_oid, prf_oid)
        kdf_name = f"PBKDF2 with {prf_name}"
        if prf_oid not in readable.prfs:
            unreadable.append(prf_name)
    cipher_oid = parameters["encryption_scheme"]["algorithm"].dotted
    cipher = _CIPHERS.get(cipher_oid, _Algorithm(cipher_oid))
    if cipher_oid not in readable.ciphers:
        unreadable.append(cipher.name)
    return _Protection(
        f"PBES2 ({kdf_name}, {cipher.name})",
        f"PBES2 with {' and '.join(unreadable)}" if unreadable else None,
        cipher.weak,
        iterations,
        scrypt_memory,
    )


# PKCS#12 structure


@dataclass(frozen=True, slots=True)
class _Mac:
    """The MacData of a PKCS#12 file (RFC 7292 section 4)."""

    digest_oid: str
    salt: bytes
    iterations: int
    expected: bytes


# The MAC digests the PKCS#12 key derivation of RFC 7292 appendix B works with, by
# OID: the hashlib name, the name in messages, and the hash block size in bytes.
_MAC_DIGESTS = {
    "1.2.840.113549.2.5": ("md5", "MD5", 64),
    "1.3.14.3.2.26": ("sha1", "SHA-1", 64),
    "2.16.840.1.101.3.4.2.4": ("sha224", "SHA-224", 64),
    "2.16.840.1.101.3.4.2.1": ("sha256", "SHA-256", 64),
    "2.16.840.1.101.3.4.2.2": ("sha384", "SHA-384", 128),
    "2.16.840.1.101.3.4.2.3": ("sha512", "SHA-512", 128),
    "2.16.840.1.101.3.4.2.5": ("sha512_224", "SHA-512/224", 128),
    "2.16.840.1.101.3.4.2.6": ("sha512_256", "SHA-512/256", 128),
}


@dataclass(slots=True)
class _PfxLayout:
    """Structure of a PKCS#12 file, as asn1crypto reads it without the password."""

    mac: _Mac | None
    # The bytes the MAC covers: the content of the authSafe ContentInfo.
    authenticated_content: bytes
    key_protections: list[_Protection] = field(default_factory=list)
    safe_protections: list[_Protection] = field(default_factory=list)
    plain_key_bags: int = 0
    # Parts cryptography cannot read: modes of RFC 7292 or MAC algorithms.
    unreadable_parts: list[str] = field(default_factory=list)

    def unreadable_algorithms(self) -> list[str]:
        names = list(self.unreadable_parts)
        for protection in self.key_protections + self.safe_protections:
            if protection.unreadable and protection.unreadable not in names:
                names.append(protection.unreadable)
        return names

    def algorithm_names(self) -> list[str]:
        names: list[str] = []
        for protection in self.key_protections + self.safe_protections:
            if protection.name not in names:
                names.append(protection.name)
        return names


def load_pkcs12(data: bytes, password: bytes | None, filename: str) -> KeyMaterial:
    """Import the private key, its certificate and the chain from a PKCS#12 file.

    Raises `KeyImportError` with a category and a message that names the fix.
    """
    _reject_non_der(data, filename)
    inspection = _inspect_pfx(data, filename)
    if isinstance(inspection, _PfxLayout):
        _check_pfx_iterations(inspection, filename)
    try:
        loaded = _load_with_cryptography(data, password)
    except UnsupportedAlgorithm as err:
        description = f"PKCS#12 file {filename!r}"
        raise _unsupported_key(description, str(err), filename) from err
    except x509.InvalidVersion as err:
        # cryptography raises InvalidVersion, which is no ValueError, for a
        # certificate whose version number is not the 0, 1 or 2 (v1, v2, v3) of
        # RFC 5280 section 4.1.2.1.
        raise KeyImportError(
            ImportErrorCategory.CORRUPTED,
            f"A certificate in PKCS#12 file {filename!r} has X.509 version number "
            f"{err.parsed_version}, but RFC 5280 defines only 0, 1 and 2 (v1, v2 "
            "and v3), so the certificate is damaged. Export the file again.",
            filename=filename,
        ) from err
    except ValueError as err:
        raise _classify_pkcs12_failure(inspection, password, filename) from err
    layout = inspection if isinstance(inspection, _PfxLayout) else None
    return _material_from_pkcs12(loaded, layout, filename)


def _load_with_cryptography(
    data: bytes, password: bytes | None
) -> pkcs12.PKCS12KeyAndCertificates:
    # cryptography 50 warns when it falls back to BER, which NSS (Thunderbird,
    # Firefox) writes. NOTE: catch_warnings changes process-wide state and is not
    # thread-safe before Python 3.14, so a warning raised at the same time in
    # another thread may be hidden or shown twice.
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore",
            message="PKCS#12 bundle could not be parsed as DER",
            category=UserWarning,
        )
        return pkcs12.load_pkcs12(data, password)


def _reject_non_der(data: bytes, filename: str) -> None:
    if not data.strip():
        raise KeyImportError(
            ImportErrorCategory.NOT_PKCS12,
            f"PKCS#12 file {filename!r} is empty. Choose the .p12 or .pfx file "
            "exported with the private key.",
            filename=filename,
        )
    if b"-----BEGIN " in data[:4096]:
        raise KeyImportError(
            ImportErrorCategory.NOT_PKCS12,
            f"{filename!r} is a PEM file, not PKCS#12. Import a PEM certificate and "
            "private key with --cert and --key instead.",
            filename=filename,
        )
    if not data.startswith(b"\x30"):
        if _is_base64_der(data):
            hint = "It is base64 text: decode it to binary first (base64 -d)."
        else:
            hint = "Choose the .p12 or .pfx file exported with the private key."
        raise KeyImportError(
            ImportErrorCategory.NOT_PKCS12,
            f"{filename!r} is not a PKCS#12 file (it does not start with a DER "
            f"SEQUENCE). {hint}",
            filename=filename,
        )


def _is_base64_der(data: bytes) -> bool:
    try:
        decoded = base64.b64decode(b"".join(data.split()), validate=True)
    except (binascii.Error, ValueError):
        return False
    return decoded.startswith(b"\x30")


def _inspect_pfx(data: bytes, filename: str) -> _PfxLayout | KeyImportError:
    """Read the PKCS#12 structure, or return the error that explains why it fails.

    The error is returned rather than raised: cryptography reads some encodings
    asn1crypto rejects, so it is raised only when cryptography fails too.
    """
    try:
        asn1_parser.parse(data)
    except ValueError:
        return KeyImportError(
            ImportErrorCategory.CORRUPTED,
            f"PKCS#12 file {filename!r} is truncated or damaged: its DER encoding "
            "ends early. Copy or export the file again.",
            filename=filename,
        )
    pfx = asn1_pkcs12.Pfx.load(data)
    try:
        version = pfx["version"].native
        content_type = pfx["auth_safe"]["content_type"].dotted
    except (ValueError, TypeError, KeyError):
        version = content_type = None
    if version != "v3":
        return _not_pkcs12(data, filename)
    try:
        return _read_layout(pfx, content_type, filename)
    except (ValueError, TypeError, KeyError) as err:
        error = KeyImportError(
            ImportErrorCategory.CORRUPTED,
            f"PKCS#12 file {filename!r} is damaged: its structure cannot be "
            "decoded. Copy or export the file again.",
            filename=filename,
        )
        error.__cause__ = err
        return error


def _not_pkcs12(data: bytes, filename: str) -> KeyImportError:
    try:
        asn1_x509.Certificate.load(data).native  # noqa: B018 decodes every field
    except (ValueError, TypeError, KeyError):
        hint = "Choose the .p12 or .pfx file exported with the private key."
    else:
        hint = (
            "It is a certificate: import it as a certificate, or export the "
            "certificate with its private key as PKCS#12."
        )
    return KeyImportError(
        ImportErrorCategory.NOT_PKCS12,
        f"{filename!r} is DER but not a PKCS#12 file. {hint}",
        filename=filename,
    )


def _read_layout(
    pfx: asn1_pkcs12.Pfx, content_type: str, filename: str
) -> _PfxLayout | KeyImportError:
    if content_type == "1.2.840.113549.1.7.2":
        # RFC 7292 section 3.1: public-key integrity mode signs the content.
        return KeyImportError(
            ImportErrorCategory.UNSUPPORTED_ALGORITHM,
            f"PKCS#12 file {filename!r} uses public-key integrity mode (a signature "
            "instead of a password MAC), which cannot be read. Export it again "
            "with password integrity.",
            filename=filename,
            algorithm="public-key integrity mode",
        )
    if content_type != "1.2.840.113549.1.7.1":
        return _not_pkcs12(pfx.dump(), filename)
    content = bytes(pfx["auth_safe"]["content"].native)
    layout = _PfxLayout(mac=_read_mac(pfx), authenticated_content=content)
    if layout.mac is not None and layout.mac.digest_oid not in _MAC_DIGESTS:
        layout.unreadable_parts.append(_mac_name(layout.mac.digest_oid))
    for content_info in asn1_pkcs12.AuthenticatedSafe.load(content):
        _read_content_info(content_info, layout)
    return layout


def _mac_name(digest_oid: str) -> str:
    # NOTE: PBMAC1 (RFC 9579) is neither verified here nor tested. A PBMAC1 file that
    # cryptography fails to load is reported as unsupported-algorithm, even when the
    # cause is a wrong password.
    if digest_oid == _PBMAC1:
        return "PBMAC1 MAC"
    return f"MAC digest {digest_oid}"


def _read_mac(pfx: asn1_pkcs12.Pfx) -> _Mac | None:
    mac_data = pfx["mac_data"]
    if isinstance(mac_data, asn1_core.Void):
        return None
    digest_info = mac_data["mac"]
    return _Mac(
        digest_oid=digest_info["digest_algorithm"]["algorithm"].dotted,
        salt=bytes(mac_data["mac_salt"].native),
        iterations=int(mac_data["iterations"].native),
        expected=bytes(digest_info["digest"].native),
    )


def _read_content_info(content_info: asn1_cms.ContentInfo, layout: _PfxLayout) -> None:
    content_type = content_info["content_type"].dotted
    if content_type == "1.2.840.113549.1.7.1":
        safe = asn1_pkcs12.SafeContents.load(bytes(content_info["content"].native))
        _read_safe_contents(safe, layout, depth=0)
    elif content_type == "1.2.840.113549.1.7.6":
        info = content_info["content"]["encrypted_content_info"]
        algorithm = info["content_encryption_algorithm"]
        layout.safe_protections.append(
            _describe_encryption(algorithm, _PKCS12_READABLE)
        )
    elif content_type == "1.2.840.113549.1.7.3":
        # RFC 7292 section 3.1: public-key privacy mode encrypts to a certificate.
        layout.unreadable_parts.append("public-key privacy mode (envelopedData)")
    else:
        layout.unreadable_parts.append(f"content type {content_type}")


def _read_safe_contents(
    safe: asn1_pkcs12.SafeContents, layout: _PfxLayout, depth: int
) -> None:
    if depth > _MAX_BAG_DEPTH:
        raise ValueError("safeContents nested too deeply")
    for bag in safe:
        bag_id = bag["bag_id"].native
        if bag_id == "pkcs8_shrouded_key_bag":
            algorithm = bag["bag_value"]["encryption_algorithm"]
            layout.key_protections.append(
                _describe_encryption(algorithm, _PKCS12_READABLE)
            )
        elif bag_id == "key_bag":
            layout.plain_key_bags += 1
        elif bag_id == "safe_contents":
            _read_safe_contents(bag["bag_value"], layout, depth + 1)


def _check_pfx_iterations(layout: _PfxLayout, filename: str) -> None:
    protections = layout.key_protections + layout.safe_protections
    if layout.mac is not None:
        protections.append(
            _Protection("MAC", None, weak=False, iterations=layout.mac.iterations)
        )
    _check_cost(protections, f"PKCS#12 file {filename!r}", filename)


def _check_cost(
    protections: Sequence[_Protection], description: str, filename: str
) -> None:
    """Reject key derivation that would take too long or use too much memory."""
    for protection in protections:
        if protection.iterations is not None and protection.iterations > MAX_ITERATIONS:
            raise KeyImportError(
                ImportErrorCategory.LIMIT_EXCEEDED,
                f"{description} asks for {protection.iterations} key derivation "
                f"iterations, more than the limit of {MAX_ITERATIONS}. Export it "
                "again with the default iteration count.",
                filename=filename,
            )
        memory = protection.scrypt_memory
        if memory is not None and memory > MAX_SCRYPT_MEMORY:
            raise KeyImportError(
                ImportErrorCategory.LIMIT_EXCEEDED,
                f"{description} asks for {memory} bytes of scrypt memory, more than "
                f"the limit of {MAX_SCRYPT_MEMORY}. Export it again with smaller "
                "scrypt parameters or with PBKDF2.",
                filename=filename,
            )


# Failure classification


def _classify_pkcs12_failure(
    inspection: _PfxLayout | KeyImportError, password: bytes | None, filename: str
) -> KeyImportError:
    if isinstance(inspection, KeyImportError):
        return inspection
    layout = inspection
    # An unreadable algorithm comes first: no password can make such a file load.
    unreadable = layout.unreadable_algorithms()
    if unreadable:
        names = ", ".join(unreadable)
        return KeyImportError(
            ImportErrorCategory.UNSUPPORTED_ALGORITHM,
            f"PKCS#12 file {filename!r} is protected with {names}, which cannot be "
            "read. Export it again with AES-256 (for OpenSSL: openssl pkcs12 "
            "-export -keypbe AES-256-CBC -certpbe AES-256-CBC -macalg sha256).",
            filename=filename,
            algorithm=names,
        )
    mac_verified = _verify_mac(layout, password)
    if mac_verified is False:
        if not password:
            return _password_required(filename)
        return KeyImportError(
            ImportErrorCategory.WRONG_PASSWORD,
            f"The password for PKCS#12 file {filename!r} is wrong, or the file was "
            "altered after export (its MAC does not verify). Enter the password "
            "again, or export the file again.",
            filename=filename,
        )
    if mac_verified:
        return KeyImportError(
            ImportErrorCategory.CORRUPTED,
            f"PKCS#12 file {filename!r} is damaged: the password is right (the MAC "
            "verifies) but its contents, protected with "
            f"{', '.join(layout.algorithm_names()) or 'no encryption'}, cannot be "
            "decrypted or decoded. Export the file again.",
            filename=filename,
        )
    if not password:
        return _password_required(filename)
    return KeyImportError(
        ImportErrorCategory.WRONG_PASSWORD,
        f"The password for PKCS#12 file {filename!r} is wrong, or the file is "
        "damaged. The file has no MAC that could tell the two apart. Enter the "
        "password again, or export the file again.",
        filename=filename,
    )


def _password_required(filename: str) -> KeyImportError:
    return KeyImportError(
        ImportErrorCategory.PASSWORD_REQUIRED,
        f"{filename!r} is protected with a password and none was given. Give the "
        "password the file was exported with.",
        filename=filename,
    )


def _verify_mac(layout: _PfxLayout, password: bytes | None) -> bool | None:
    """Check the PKCS#12 MAC with `password`, or return None without a MAC to check."""
    mac = layout.mac
    if mac is None or mac.digest_oid not in _MAC_DIGESTS:
        return None
    digest_name, _, block_size = _MAC_DIGESTS[mac.digest_oid]
    for bmp_password in _bmp_passwords(password):
        key = _pkcs12_kdf(
            digest_name,
            block_size,
            bmp_password,
            mac.salt,
            purpose=3,
            iterations=mac.iterations,
            length=hashlib.new(digest_name).digest_size,
        )
        actual = hmac.new(key, layout.authenticated_content, digest_name).digest()
        if hmac.compare_digest(actual, mac.expected):
            return True
    return False


def _bmp_passwords(password: bytes | None) -> list[bytes]:
    """List the encodings of a password that PKCS#12 writers have used.

    RFC 7292 appendix B.1 encodes the password as a BMPString with two trailing zero
    bytes. An empty password is also written with no bytes at all, and old OpenSSL
    releases widened each byte of a non-ASCII password on its own.
    """
    if not password:
        return [b"", b"\x00\x00"]
    encodings: list[bytes] = []
    try:
        text = password.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    if text is not None:
        encodings.append(text.encode("utf-16-be") + b"\x00\x00")
    if not password.isascii():
        widened = b"".join(b"\x00" + bytes([byte]) for byte in password)
        encodings.append(widened + b"\x00\x00")
    return encodings


def _pkcs12_kdf(
    digest_name: str,
    block_size: int,
    password: bytes,
    salt: bytes,
    *,
    purpose: int,
    iterations: int,
    length: int,
) -> bytes:
    """Derive `length` bytes as RFC 7292 appendix B.2 describes.

    `purpose` is the ID byte: 1 for a key, 2 for an IV, 3 for a MAC key.
    """
    v = block_size
    diversifier = bytes([purpose]) * v
    salt_block = _repeat_to_blocks(salt, v)
    password_block = _repeat_to_blocks(password, v)
    material = bytearray(salt_block + password_block)
    derived = b""
    while len(derived) < length:
        a = hashlib.new(digest_name, diversifier + material).digest()
        for _ in range(iterations - 1):
            a = hashlib.new(digest_name, a).digest()
        derived += a
        b = int.from_bytes(_repeat_to_blocks(a, v)[:v], "big")
        for start in range(0, len(material), v):
            chunk = int.from_bytes(material[start : start + v], "big")
            chunk = (chunk + b + 1) % (1 << (8 * v))
            material[start : start + v] = chunk.to_bytes(v, "big")
    return derived[:length]


def _repeat_to_blocks(value: bytes, block_size: int) -> bytes:
    """Repeat `value` to fill whole blocks, keeping empty input empty (RFC 7292 B.2)."""
    if not value:
        return b""
    total = block_size * -(-len(value) // block_size)
    return (value * (total // len(value) + 1))[:total]


# Building key material


def _material_from_pkcs12(
    loaded: pkcs12.PKCS12KeyAndCertificates,
    layout: _PfxLayout | None,
    filename: str,
) -> KeyMaterial:
    certificates = [] if loaded.cert is None else [loaded.cert.certificate]
    certificates += [bag.certificate for bag in loaded.additional_certs]
    if loaded.key is None:
        raise KeyImportError(
            ImportErrorCategory.NO_PRIVATE_KEY,
            f"PKCS#12 file {filename!r} holds {len(certificates)} certificate(s) but "
            "no private key. Export the certificate together with its private key, "
            "or import the certificate alone as an external binding.",
            filename=filename,
        )
    if not certificates:
        raise KeyImportError(
            ImportErrorCategory.NO_CERTIFICATE,
            f"PKCS#12 file {filename!r} holds a private key but no certificate. "
            "Export the key together with its certificate.",
            filename=filename,
        )
    warnings = _pkcs12_warnings(layout, filename) if layout else []
    return _pair_key(loaded.key, certificates, filename, filename, warnings)


def _pair_key(
    key: PrivateKeyTypes,
    certificates: Sequence[x509.Certificate],
    cert_filename: str,
    key_filename: str,
    warnings: list[KeyWarning],
) -> KeyMaterial:
    """Build KeyMaterial from the certificate that matches `key` and the others."""
    certificate = _matching_certificate(key, certificates)
    if certificate is None:
        # The candidates have not passed check_readable yet, so a subject that
        # cannot be decoded is named by the certificate's fingerprint instead.
        candidates = ", ".join(
            f"certificate {describe_certificate(candidate)}"
            for candidate in certificates
        )
        raise KeyImportError(
            ImportErrorCategory.KEY_MISMATCH,
            f"The private key from {key_filename!r} does not match the public key "
            f"of any certificate in {cert_filename!r} ({candidates}). Choose the "
            "certificate issued for this key, or the key of this certificate.",
            filename=key_filename,
        )
    filename = cert_filename
    try:
        check_readable(certificate, filename)
    except CertificateImportError as err:
        raise _as_key_import_error(err) from err
    extras: list[x509.Certificate] = []
    for extra in certificates:
        if extra is certificate:
            continue
        try:
            check_readable(extra, filename)
        except CertificateImportError as err:
            warnings.append(KeyWarning("certificate-skipped", err.message))
            continue
        extras.append(extra)
    source = filename if key_filename == filename else f"{filename}, {key_filename}"
    return KeyMaterial(
        source=source,
        certificate=certificate,
        private_key=key,
        extra_certificates=tuple(extras),
        warnings=tuple(warnings),
    )


def _matching_certificate(
    key: PrivateKeyTypes, certificates: Sequence[x509.Certificate]
) -> x509.Certificate | None:
    wanted = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    for certificate in certificates:
        try:
            public_key = certificate.public_key()
        except (ValueError, UnsupportedAlgorithm):
            continue
        found = public_key.public_bytes(
            serialization.Encoding.DER,
            serialization.PublicFormat.SubjectPublicKeyInfo,
        )
        if found == wanted:
            return certificate
    return None


def _as_key_import_error(err: MaterialImportError) -> KeyImportError:
    return KeyImportError(
        err.category, err.message, filename=err.filename, algorithm=err.algorithm
    )


def _pkcs12_warnings(layout: _PfxLayout, filename: str) -> list[KeyWarning]:
    found: list[KeyWarning] = []
    mac = layout.mac
    if mac is None:
        found.append(
            KeyWarning(
                "no-mac",
                f"PKCS#12 file {filename!r} has no MAC, so a change to the file "
                "cannot be detected. Export it again with a MAC.",
            )
        )
    else:
        if mac.digest_oid == "1.2.840.113549.2.5":
            found.append(
                KeyWarning(
                    "weak-mac-digest",
                    f"PKCS#12 file {filename!r} uses an MD5 MAC. Export it again "
                    "with a SHA-256 MAC.",
                )
            )
        if mac.iterations < MIN_ITERATIONS:
            found.append(
                KeyWarning(
                    "low-mac-iterations",
                    f"PKCS#12 file {filename!r} derives its MAC key with "
                    f"{mac.iterations} iterations, fewer than {MIN_ITERATIONS}. "
                    "Export it again with the default iteration count.",
                )
            )
    found += _key_protection_warnings(layout, filename)
    return found


def _key_protection_warnings(layout: _PfxLayout, filename: str) -> list[KeyWarning]:
    found: list[KeyWarning] = []
    if layout.plain_key_bags:
        found.append(
            KeyWarning(
                "unencrypted-key",
                f"PKCS#12 file {filename!r} stores its private key unencrypted. "
                "Delete the file once imported, or export it again with AES-256.",
            )
        )
    for protection in layout.key_protections:
        if protection.weak:
            found.append(
                KeyWarning(
                    "weak-key-encryption",
                    f"PKCS#12 file {filename!r} encrypts its private key with "
                    f"{protection.name}, which is weak. Export it again with "
                    "AES-256.",
                )
            )
        if protection.iterations is not None and protection.iterations < MIN_ITERATIONS:
            found.append(
                KeyWarning(
                    "low-key-iterations",
                    f"PKCS#12 file {filename!r} derives its key encryption key with "
                    f"{protection.iterations} iterations, fewer than "
                    f"{MIN_ITERATIONS}. Export it again with the default "
                    "iteration count.",
                )
            )
    return found


# PEM keys

_PEM_BLOCK = re.compile(
    rb"-----BEGIN ([A-Z0-9 ]+)-----\r?\n(.*?)-----END \1-----", re.DOTALL
)
_KEY_LABELS = frozenset(
    {
        b"PRIVATE KEY",
        b"ENCRYPTED PRIVATE KEY",
        b"RSA PRIVATE KEY",
        b"EC PRIVATE KEY",
        b"DSA PRIVATE KEY",
    }
)


def load_pem_pair(
    cert_pem: bytes,
    key_pem: bytes,
    password: bytes | None,
    cert_filename: str,
    key_filename: str,
) -> KeyMaterial:
    """Import a certificate file (PEM, DER or .p7b) and the PEM private key for it.

    Certificates in `cert_pem` other than the key's own become the extra
    certificates. The two may be the same file. Raises `KeyImportError`.
    """
    try:
        certificates = load_certificates(cert_pem, cert_filename)
    except CertificateImportError as err:
        raise _as_key_import_error(err) from err
    key, warnings = load_pem_key(key_pem, password, key_filename)
    return _pair_key(key, certificates, cert_filename, key_filename, warnings)


def load_pem_key(
    data: bytes, password: bytes | None, filename: str
) -> tuple[PrivateKeyTypes, list[KeyWarning]]:
    """Load the one private key of a PEM file, encrypted or not.

    Other PEM blocks, such as the certificate, are skipped. Returns the key and the
    weaknesses of its protection. Raises `KeyImportError`.
    """
    block, label = _find_key_block(data, filename)
    headers = _pem_headers(block)
    if label == b"ENCRYPTED PRIVATE KEY":
        protection = _pkcs8_protection(block, filename)
    elif "ENCRYPTED" in headers.get("Proc-Type", ""):
        protection = _traditional_protection(headers)
    else:
        protection = None

    if protection is None:
        return _load_plain_pem_key(block, filename), []
    if not password:
        raise _password_required(filename)
    _check_cost([protection], f"Key file {filename!r}", filename)
    try:
        key = serialization.load_pem_private_key(block, password)
    except UnsupportedAlgorithm as err:
        # Raised once the key is decrypted, so the password was right.
        raise _unsupported_key(f"Key file {filename!r}", str(err), filename) from err
    except (ValueError, TypeError) as err:
        raise _classify_pem_failure(protection, filename) from err
    return key, _pem_warnings(protection, filename)


def _find_key_block(data: bytes, filename: str) -> tuple[bytes, bytes]:
    blocks = [(m.group(0), m.group(1)) for m in _PEM_BLOCK.finditer(data)]
    keys = [(block, label) for block, label in blocks if label in _KEY_LABELS]
    if len(keys) == 1:
        return keys[0]
    if len(keys) > 1:
        raise KeyImportError(
            ImportErrorCategory.MULTIPLE_PRIVATE_KEYS,
            f"Key file {filename!r} holds {len(keys)} private keys. Give a file "
            "with only the key of the certificate.",
            filename=filename,
        )
    if blocks:
        labels = ", ".join(label.decode("ascii") for _, label in blocks)
        raise KeyImportError(
            ImportErrorCategory.NO_PRIVATE_KEY,
            f"Key file {filename!r} holds {labels} but no private key. Choose the "
            "file with the private key.",
            filename=filename,
        )
    if data.startswith(b"\x30"):
        hint = (
            "It looks like DER, perhaps a PKCS#12 file: import that with its "
            "password as PKCS#12, or convert the key to PEM."
        )
    else:
        hint = "Choose the PEM file with the private key."
    raise KeyImportError(
        ImportErrorCategory.NOT_PEM,
        f"Key file {filename!r} is not PEM (no '-----BEGIN ... PRIVATE KEY-----' "
        f"block). {hint}",
        filename=filename,
    )


def _pem_headers(block: bytes) -> dict[str, str]:
    """Return the RFC 1421 headers of a PEM block, such as Proc-Type and DEK-Info."""
    headers: dict[str, str] = {}
    for line in block.splitlines()[1:]:
        name, colon, value = line.decode("ascii", "replace").partition(":")
        if not colon:
            break
        headers[name.strip()] = value.strip()
    return headers


def _pem_der(block: bytes) -> bytes | None:
    lines = block.splitlines()[1:-1]
    body = b"".join(line for line in lines if b":" not in line)
    try:
        return base64.b64decode(body, validate=True)
    except (binascii.Error, ValueError):
        return None


def _pkcs8_protection(block: bytes, filename: str) -> _Protection:
    der = _pem_der(block)
    try:
        if der is None:
            raise ValueError("the PEM body is not base64")
        info = asn1_keys.EncryptedPrivateKeyInfo.load(der)
        return _describe_encryption(info["encryption_algorithm"], _PKCS8_READABLE)
    except (ValueError, TypeError, KeyError) as err:
        raise KeyImportError(
            ImportErrorCategory.CORRUPTED,
            f"Key file {filename!r} is damaged: its encrypted private key cannot be "
            "decoded. Copy or export the key again.",
            filename=filename,
        ) from err


def _traditional_protection(headers: dict[str, str]) -> _Protection:
    cipher = headers.get("DEK-Info", "").partition(",")[0].strip().upper()
    name = f"traditional PEM encryption with {cipher or 'no DEK-Info cipher'}"
    # OpenSSL's traditional encryption derives the key from one MD5 round
    # (EVP_BytesToKey), so its protection is weak whatever the cipher.
    return _Protection(
        f"{name} (key derived by one MD5 round)",
        None if cipher in _TRADITIONAL_PEM_READABLE else name,
        weak=True,
        iterations=1,
    )


def _load_plain_pem_key(block: bytes, filename: str) -> PrivateKeyTypes:
    description = f"Key file {filename!r}"
    try:
        return serialization.load_pem_private_key(block, None)
    except UnsupportedAlgorithm as err:
        raise _unsupported_key(description, str(err), filename) from err
    except (ValueError, TypeError) as err:
        algorithm = _plain_key_algorithm(block)
        if algorithm is None:
            raise KeyImportError(
                ImportErrorCategory.CORRUPTED,
                f"{description} is damaged: its private key cannot be decoded. Copy "
                "or export the key again.",
                filename=filename,
            ) from err
        raise _unsupported_key(description, f"algorithm {algorithm}", filename) from err


def _unsupported_key(description: str, reason: str, filename: str) -> KeyImportError:
    """Build the error for a key or certificate of an algorithm cryptography lacks.

    `reason` is cryptography's UnsupportedAlgorithm message (such as "Curve
    1.2.156.10197.1.301 is not supported") or the key's algorithm OID.
    """
    return KeyImportError(
        ImportErrorCategory.UNSUPPORTED_ALGORITHM,
        f"{description} holds a key or certificate that cannot be used ({reason}). "
        "Use an RSA key, an EC key on P-256, P-384 or P-521, or an Ed25519 key.",
        filename=filename,
        algorithm=reason,
    )


def _plain_key_algorithm(block: bytes) -> str | None:
    """Name the algorithm of a PKCS#8 key cryptography could not load, if it parses."""
    der = _pem_der(block)
    if der is None:
        return None
    try:
        info = asn1_keys.PrivateKeyInfo.load(der, strict=True)
        return str(info["private_key_algorithm"]["algorithm"].dotted)
    except (ValueError, TypeError, KeyError):
        return None


def _classify_pem_failure(protection: _Protection, filename: str) -> KeyImportError:
    if protection.unreadable is not None:
        return KeyImportError(
            ImportErrorCategory.UNSUPPORTED_ALGORITHM,
            f"Key file {filename!r} is encrypted with {protection.unreadable}, which "
            "cannot be read. Encrypt it again with AES-256 (for OpenSSL: openssl "
            "pkcs8 -topk8 -v2 aes-256-cbc).",
            filename=filename,
            algorithm=protection.unreadable,
        )
    return KeyImportError(
        ImportErrorCategory.WRONG_PASSWORD,
        f"The password for key file {filename!r} is wrong, or the file is damaged "
        "(a PEM key has no MAC that could tell the two apart). Enter the password "
        "again.",
        filename=filename,
    )


def _pem_warnings(protection: _Protection, filename: str) -> list[KeyWarning]:
    found: list[KeyWarning] = []
    if protection.weak:
        found.append(
            KeyWarning(
                "weak-key-encryption",
                f"Key file {filename!r} is encrypted with {protection.name}, which "
                "is weak. Delete the file once imported, or encrypt it again with "
                "AES-256.",
            )
        )
    elif protection.iterations is not None and protection.iterations < MIN_ITERATIONS:
        found.append(
            KeyWarning(
                "low-key-iterations",
                f"Key file {filename!r} derives its key encryption key with "
                f"{protection.iterations} iterations, fewer than {MIN_ITERATIONS}. "
                "Encrypt it again with the default iteration count.",
            )
        )
    return found

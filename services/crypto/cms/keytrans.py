"""RSA key transport for KeyTransRecipientInfo: PKCS#1 v1.5 and RSAES-OAEP.

PKCS#1 v1.5 is rsaEncryption as RFC 3370 section 4.2 uses it. RSAES-OAEP and its
parameters are defined in RFC 8017 appendix A.2.1 and profiled for CMS by RFC 3560.
"""

from __future__ import annotations

from dataclasses import dataclass

from asn1crypto import core
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from services.crypto.cms import algorithms
from services.crypto.cms.der import AlgorithmIdentifier, decode, translate_errors

RSA_KEY_TRANSPORTS = ("rsa-pkcs1v15", "rsa-oaep-sha1", "rsa-oaep-sha256")


class _OaepParameters(core.Sequence):  # type: ignore[misc]
    """RSAES-OAEP-params, where an absent field takes the SHA-1 / MGF1-SHA-1 default."""

    _fields = [  # noqa: RUF012 - asn1crypto's class-level schema
        ("hash_algorithm", AlgorithmIdentifier, {"explicit": 0, "optional": True}),
        ("mask_gen_algorithm", AlgorithmIdentifier, {"explicit": 1, "optional": True}),
        ("p_source_algorithm", AlgorithmIdentifier, {"explicit": 2, "optional": True}),
    ]


@dataclass(frozen=True)
class KeyTransport:
    """A parsed key transport algorithm, ready to decrypt an encrypted key."""

    name: str
    padding: padding.AsymmetricPadding


def parse_key_transport(oid: str, parameters: bytes | None) -> KeyTransport:
    """Read a KeyTransRecipientInfo keyEncryptionAlgorithm.

    Raises UnsupportedAlgorithmError for another algorithm, hash or MGF, and
    MalformedCmsError for undecodable OAEP parameters.
    """
    if oid == algorithms.RSA_ENCRYPTION:
        return KeyTransport("rsa-pkcs1v15", padding.PKCS1v15())
    if oid != algorithms.RSAES_OAEP:
        raise algorithms.unsupported("key transport", oid)
    return _parse_oaep(parameters)


def _parse_oaep(parameters: bytes | None) -> KeyTransport:
    hash_: hashes.HashAlgorithm = hashes.SHA1()  # noqa: S303 - RFC 8017 default
    mgf_hash: hashes.HashAlgorithm = hashes.SHA1()  # noqa: S303
    label = b""
    if parameters is not None:
        params = decode(_OaepParameters, parameters, "RSAES-OAEP parameters")
        with translate_errors("RSAES-OAEP parameters"):
            hash_oid = _field_oid(params["hash_algorithm"])
            mgf_oid = _field_oid(params["mask_gen_algorithm"])
            mgf_parameters = _field_parameters(params["mask_gen_algorithm"])
            source_oid = _field_oid(params["p_source_algorithm"])
            source_parameters = _field_parameters(params["p_source_algorithm"])
        if hash_oid is not None:
            hash_ = _hash(hash_oid)
        if mgf_oid is not None:
            mgf_hash = _parse_mgf1(mgf_oid, mgf_parameters)
        if source_oid is not None:
            label = _parse_label(source_oid, source_parameters)

    name = f"rsa-oaep-{hash_.name}"
    if mgf_hash.name != hash_.name:
        name += f"-mgf1-{mgf_hash.name}"
    oaep = padding.OAEP(
        mgf=padding.MGF1(mgf_hash), algorithm=hash_, label=label or None
    )
    return KeyTransport(name, oaep)


def _field_oid(field: core.Asn1Value) -> str | None:
    if isinstance(field, core.Void):
        return None
    oid: str = field["algorithm"].dotted
    return oid


def _field_parameters(field: core.Asn1Value) -> bytes | None:
    if isinstance(field, core.Void) or isinstance(field["parameters"], core.Void):
        return None
    encoded: bytes = field["parameters"].dump()
    return encoded


def _hash(oid: str) -> hashes.HashAlgorithm:
    try:
        return algorithms.HASHES_BY_OID[oid]
    except KeyError:
        raise algorithms.unsupported("hash", oid) from None


def _parse_mgf1(oid: str, parameters: bytes | None) -> hashes.HashAlgorithm:
    if oid != algorithms.MGF1:
        raise algorithms.unsupported("mask generation", oid)
    if parameters is None:
        return hashes.SHA1()  # noqa: S303 - the RFC 8017 default
    mgf_hash = decode(AlgorithmIdentifier, parameters, "MGF1 hash algorithm")
    with translate_errors("MGF1 hash algorithm"):
        hash_oid: str = mgf_hash["algorithm"].dotted
    return _hash(hash_oid)


def _parse_label(oid: str, parameters: bytes | None) -> bytes:
    if oid != algorithms.P_SPECIFIED:
        raise algorithms.unsupported("OAEP label source", oid)
    if parameters is None:
        return b""
    label = decode(core.OctetString, parameters, "OAEP label")
    with translate_errors("OAEP label"):
        value: bytes = label.native
    return value


def decrypt_key(
    private_key: rsa.RSAPrivateKey, encrypted_key: bytes, transport: KeyTransport
) -> bytes | None:
    """Decrypt a content-encryption key, or return None when decryption fails.

    With PKCS#1 v1.5 and OpenSSL 3.2 or later (cryptography 50 bundles 4.0), a wrong
    key does not fail. Implicit rejection returns pseudorandom bytes of a
    pseudorandom length instead. The caller checks
    the length and lets the content decryption fail.
    """
    try:
        return private_key.decrypt(encrypted_key, transport.padding)
    except ValueError:
        return None


def encryption_algorithm(
    name: str,
) -> tuple[AlgorithmIdentifier, padding.AsymmetricPadding]:
    """Return the keyEncryptionAlgorithm to write and the padding for `name`."""
    if name == "rsa-pkcs1v15":
        # RFC 3370 section 4.2.1: the parameters are NULL.
        identifier = AlgorithmIdentifier(
            {"algorithm": algorithms.RSA_ENCRYPTION, "parameters": core.Null()}
        )
        return identifier, padding.PKCS1v15()
    if name == "rsa-oaep-sha1":
        # Every field at its SHA-1 default: DER writes an empty SEQUENCE.
        defaults = _OaepParameters.load(b"\x30\x00")
        identifier = AlgorithmIdentifier(
            {"algorithm": algorithms.RSAES_OAEP, "parameters": defaults}
        )
        return identifier, padding.OAEP(
            mgf=padding.MGF1(hashes.SHA1()),  # noqa: S303 - RFC 8017 default
            algorithm=hashes.SHA1(),  # noqa: S303
            label=None,
        )
    if name == "rsa-oaep-sha256":
        return _oaep_sha256()
    raise ValueError(
        f"RSA key transport {name!r} is not one of {', '.join(RSA_KEY_TRANSPORTS)}"
    )


def _oaep_sha256() -> tuple[AlgorithmIdentifier, padding.AsymmetricPadding]:
    # RFC 5754 section 2: SHA-2 identifiers are written with absent parameters.
    sha256 = AlgorithmIdentifier({"algorithm": algorithms.HASH_OIDS_BY_NAME["sha256"]})
    parameters = _OaepParameters(
        {
            "hash_algorithm": sha256,
            "mask_gen_algorithm": {"algorithm": algorithms.MGF1, "parameters": sha256},
        }
    )
    identifier = AlgorithmIdentifier(
        {"algorithm": algorithms.RSAES_OAEP, "parameters": parameters}
    )
    oaep = padding.OAEP(
        mgf=padding.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(), label=None
    )
    return identifier, oaep

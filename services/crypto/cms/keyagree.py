"""ECDH key agreement for KeyAgreeRecipientInfo (RFC 5753, ephemeral-static).

The sender creates an ephemeral key on the recipient's curve. Both sides derive a
key-encryption key from the ECDH shared secret with the ANSI X9.63 KDF over the DER
ECC-CMS-SharedInfo (RFC 5753 section 7.2), and the content-encryption key travels
wrapped under it.
"""

from __future__ import annotations

from dataclasses import dataclass

from asn1crypto import cms, core, keys
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.kdf.x963kdf import X963KDF

from services.crypto.cms import algorithms, keywrap
from services.crypto.cms.algorithms import KeyAgreementScheme, KeyWrap
from services.crypto.cms.der import AlgorithmIdentifier, decode, translate_errors
from services.crypto.cms.errors import MalformedCmsError, UnsupportedAlgorithmError


class _EccCmsSharedInfo(core.Sequence):  # type: ignore[misc]
    """ECC-CMS-SharedInfo of RFC 5753 section 7.2, the X9.63 KDF SharedInfo."""

    _fields = [  # noqa: RUF012 - asn1crypto's class-level schema
        ("key_info", AlgorithmIdentifier),
        ("entity_u_info", core.OctetString, {"explicit": 0, "optional": True}),
        ("supp_pub_info", core.OctetString, {"explicit": 2}),
    ]


@dataclass(frozen=True)
class OriginatorKey:
    """The sender's ephemeral public key as a KeyAgreeRecipientInfo carries it."""

    kind: str  # the OriginatorIdentifierOrKey alternative
    algorithm: str | None  # OID of the public key algorithm
    curve: str | None  # OID of the named curve, when the parameters state one
    point: bytes


@dataclass(frozen=True)
class KeyAgreementInfo:
    """The fields of a KeyAgreeRecipientInfo that every recipient key shares."""

    originator: OriginatorKey
    ukm: bytes | None
    scheme_oid: str
    wrap_algorithm: bytes | None  # DER AlgorithmIdentifier from the parameters


def read_info(info: cms.KeyAgreeRecipientInfo) -> KeyAgreementInfo:
    """Copy the fields out of an already fully parsed KeyAgreeRecipientInfo."""
    with translate_errors("KeyAgreeRecipientInfo"):
        originator = info["originator"]
        algorithm = curve = None
        point = b""
        if originator.name == "originator_key":
            public_key_info = originator.chosen
            algorithm = public_key_info["algorithm"]["algorithm"].dotted
            curve = _named_curve(public_key_info["algorithm"]["parameters"])
            point = bytes(public_key_info["public_key"].contents[1:])
        ukm = info["ukm"].native
        algorithm_identifier = info["key_encryption_algorithm"]
        parameters = algorithm_identifier["parameters"]
        wrap = None if isinstance(parameters, core.Void) else parameters.dump()
        return KeyAgreementInfo(
            OriginatorKey(originator.name, algorithm, curve, point),
            ukm,
            algorithm_identifier["algorithm"].dotted,
            wrap,
        )


def _named_curve(parameters: core.Asn1Value) -> str | None:
    # Senders write the parameters absent (OpenSSL), NULL, or as the named curve.
    # When they name none, the curve is the recipient's.
    if isinstance(parameters, core.Void) or parameters.name == "implicit_ca":
        return None
    if parameters.name == "named":
        curve: str = parameters.chosen.dotted
        return curve
    return "specified"


@dataclass(frozen=True)
class KeyAgreement:
    """A checked key agreement: scheme, key wrap and the encoded wrap algorithm."""

    scheme: KeyAgreementScheme
    wrap: KeyWrap
    wrap_algorithm: bytes


def parse_algorithm(info: KeyAgreementInfo) -> KeyAgreement:
    """Check the scheme and key wrap, and reject static originator keys."""
    scheme = algorithms.KEY_AGREEMENT_SCHEMES_BY_OID.get(info.scheme_oid)
    if scheme is None:
        raise algorithms.unsupported("key agreement", info.scheme_oid)
    if info.originator.kind != "originator_key":
        raise UnsupportedAlgorithmError(
            info.scheme_oid,
            "key agreement with an originator named by certificate (static-static "
            "ECDH) is not supported; RFC 5753 ephemeral-static ECDH with an "
            "originatorKey is",
        )
    if info.originator.algorithm != algorithms.ID_EC_PUBLIC_KEY:
        raise algorithms.unsupported("key agreement", str(info.originator.algorithm))
    if info.wrap_algorithm is None:
        raise MalformedCmsError(
            "KeyAgreeRecipientInfo key-encryption algorithm has no key wrap parameter"
        )
    identifier = decode(AlgorithmIdentifier, info.wrap_algorithm, "key wrap algorithm")
    with translate_errors("key wrap algorithm"):
        wrap_oid: str = identifier["algorithm"].dotted
    wrap = algorithms.KEY_WRAPS_BY_OID.get(wrap_oid)
    if wrap is None:
        raise algorithms.unsupported("key wrap", wrap_oid)
    return KeyAgreement(scheme, wrap, info.wrap_algorithm)


def algorithm_name(agreement: KeyAgreement, curve: str) -> str:
    """Name the key agreement as `ecdh-p256-sha256-aes128-wrap`."""
    variant = "ecdh-cofactor" if agreement.scheme.cofactor else "ecdh"
    return f"{variant}-{curve}-{agreement.scheme.kdf_hash.name}-{agreement.wrap.name}"


def find_curve(curve: ec.EllipticCurve) -> algorithms.Curve | None:
    """Return P-256, P-384 or P-521, or None for a curve the gateway does not use."""
    return algorithms.CURVES_BY_KEY_CURVE_NAME.get(curve.name)


def _key_encryption_key(
    shared_secret: bytes, agreement: KeyAgreement, ukm: bytes | None
) -> bytes:
    shared_info = _EccCmsSharedInfo(
        {
            # The key wrap AlgorithmIdentifier exactly as the message encodes it.
            "key_info": AlgorithmIdentifier.load(agreement.wrap_algorithm),
            "entity_u_info": ukm,
            "supp_pub_info": (agreement.wrap.key_size * 8).to_bytes(4, "big"),
        }
    )
    kdf = X963KDF(
        algorithm=agreement.scheme.kdf_hash,
        length=agreement.wrap.key_size,
        sharedinfo=shared_info.dump(),
    )
    return kdf.derive(shared_secret)


def decrypt_key(
    private_key: ec.EllipticCurvePrivateKey,
    info: KeyAgreementInfo,
    agreement: KeyAgreement,
    encrypted_key: bytes,
) -> bytes | None:
    """Unwrap the content-encryption key, or return None when unwrapping fails.

    Raises MalformedCmsError when the originator key is not a point on the
    recipient's curve: the message is broken whatever key decrypts it.
    """
    curve = private_key.curve
    known = find_curve(curve)
    curve_oid = known.oid if known else curve.name
    if info.originator.curve is not None and info.originator.curve != curve_oid:
        raise MalformedCmsError(
            f"originator key is on curve {info.originator.curve}, but the recipient "
            f"key is on {curve.name} ({curve_oid})"
        )
    try:
        originator = ec.EllipticCurvePublicKey.from_encoded_point(
            curve, info.originator.point
        )
    except ValueError as err:
        raise MalformedCmsError(
            f"originator key is not a valid point on {curve.name}"
        ) from err

    # NIST prime curves have cofactor 1, so cofactor ECDH equals standard ECDH.
    shared_secret = private_key.exchange(ec.ECDH(), originator)
    kek = _key_encryption_key(shared_secret, agreement, info.ukm)
    return keywrap.unwrap(agreement.wrap, kek, encrypted_key)


def build_recipient_info(
    public_key: ec.EllipticCurvePublicKey,
    rid: cms.KeyAgreementRecipientIdentifier,
    content_key: bytes,
) -> tuple[cms.KeyAgreeRecipientInfo, str]:
    """Wrap `content_key` for one EC recipient under a fresh ephemeral key.

    Returns the RecipientInfo and its key algorithm name. The KDF hash follows the
    curve, and the AES key wrap has the size of the content key.
    """
    curve = find_curve(public_key.curve)
    if curve is None:
        raise UnsupportedAlgorithmError(
            public_key.curve.name,
            f"recipient key is on curve {public_key.curve.name}; the gateway encrypts "
            "to P-256, P-384 and P-521 keys (RFC 5753)",
        )
    kdf_hash = curve.kdf_hash
    wrap = algorithms.KEY_WRAPS_BY_SIZE[len(content_key)]
    wrap_algorithm = AlgorithmIdentifier({"algorithm": wrap.oid}).dump()
    scheme = algorithms.KEY_AGREEMENT_SCHEMES_BY_OID[
        algorithms.STD_DH_SCHEME_OIDS_BY_HASH[kdf_hash.name]
    ]
    agreement = KeyAgreement(scheme, wrap, wrap_algorithm)

    ephemeral = ec.generate_private_key(public_key.curve)
    kek = _key_encryption_key(
        ephemeral.exchange(ec.ECDH(), public_key), agreement, None
    )
    point = ephemeral.public_key().public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )
    originator = keys.PublicKeyInfo(
        # Parameters absent, as OpenSSL writes them: the curve is the recipient's.
        {"algorithm": {"algorithm": "ec"}, "public_key": point}
    )
    info = cms.KeyAgreeRecipientInfo(
        {
            "version": "v3",
            "originator": cms.OriginatorIdentifierOrKey(
                name="originator_key", value=originator
            ),
            "key_encryption_algorithm": {
                "algorithm": scheme.oid,
                "parameters": AlgorithmIdentifier.load(wrap_algorithm),
            },
            "recipient_encrypted_keys": [
                {"rid": rid, "encrypted_key": keywrap.wrap_aes(kek, content_key)}
            ],
        }
    )
    return info, algorithm_name(agreement, curve.name)

"""CMS EnvelopedData (RFC 5652 section 6) and AuthEnvelopedData (RFC 5083).

`decrypt` reads what other S/MIME implementations write: RSA PKCS#1 v1.5 and
RSAES-OAEP key transport, ECDH key agreement on P-256/P-384/P-521, and AES-CBC,
DES-EDE3-CBC or AES-GCM content. `encrypt` writes EnvelopedData, or AuthEnvelopedData
for AES-GCM, with one RecipientInfo per certificate.

Input is untrusted: every decoding error becomes a MalformedCmsError, and sizes and
counts are bounded before any work that grows with them.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field

from asn1crypto import cms
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from services.crypto.cms import (
    algorithms,
    content_encryption,
    envelope_reader,
    keyagree,
    keytrans,
)
from services.crypto.cms.algorithms import ContentCipher
from services.crypto.cms.der import der_header
from services.crypto.cms.envelope_reader import (
    DEFAULT_MAX_SIZE,
    MAX_RECIPIENTS,
    Envelope,
    KeyTransRecipient,
    Recipient,
)
from services.crypto.cms.errors import (
    DecryptionFailedError,
    MalformedCmsError,
    NoMatchingRecipientError,
    UnsupportedAlgorithmError,
)
from services.crypto.cms.recipients import (
    RECIPIENT_ID_KINDS,
    RecipientId,
    RecipientIdKind,
    issuer_and_serial,
    subject_key_identifier,
)

__all__ = [
    "CONTENT_ALGORITHMS",
    "DEFAULT_MAX_SIZE",
    "MAX_RECIPIENTS",
    "RSA_KEY_TRANSPORTS",
    "Decrypted",
    "EncryptedChunks",
    "RecipientId",
    "RecipientKey",
    "decrypt",
    "encrypt",
    "encrypt_chunks",
    "recipient_ids",
]

CONTENT_ALGORITHMS = tuple(algorithms.CONTENT_CIPHERS_BY_NAME)
RSA_KEY_TRANSPORTS = keytrans.RSA_KEY_TRANSPORTS

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey


@dataclass(frozen=True)
class RecipientKey:
    """The certificate and private key of one internal binding."""

    certificate: x509.Certificate
    private_key: PrivateKey = field(repr=False)


@dataclass(frozen=True)
class Decrypted:
    """The decrypted content and how it was protected."""

    # For CBC content, a view of the padded plaintext without its padding, so that
    # a large message is not copied to cut the padding off. bytes(content) copies.
    content: bytes | memoryview = field(repr=False)
    content_algorithm: str  # a CONTENT_ALGORITHMS name
    # "rsa-pkcs1v15", "rsa-oaep-sha256", "ecdh-p256-sha256-aes128-wrap", ...
    key_algorithm: str
    recipient_fingerprint: str  # SHA-256 of the matched certificate, lowercase hex
    auth_enveloped: bool


def recipient_ids(der: bytes, *, max_size: int = DEFAULT_MAX_SIZE) -> list[RecipientId]:
    """List the key transport and key agreement recipients of an enveloped message."""
    envelope = envelope_reader.read_envelope(der, max_size)
    return [recipient.rid for recipient in envelope.recipients]


def decrypt(
    der: bytes, keys: Sequence[RecipientKey], *, max_size: int = DEFAULT_MAX_SIZE
) -> Decrypted:
    """Decrypt EnvelopedData or AuthEnvelopedData (BER or DER) with a key that fits.

    Each key is tried on the RecipientInfos that name its certificate; a key that
    matches none is skipped. Raises NoMatchingRecipientError when no key matches,
    DecryptionFailedError when matching keys fail, UnsupportedAlgorithmError,
    MalformedCmsError or CmsLimitError.
    """
    envelope = envelope_reader.read_envelope(der, max_size)
    cipher = _content_cipher(envelope)
    params = content_encryption.parse_parameters(cipher, envelope.content_parameters)
    if envelope.ciphertext is None:
        raise MalformedCmsError(
            "the enveloped message has no encryptedContent; detached encrypted "
            "content is not supported"
        )
    content_encryption.check_ciphertext(
        cipher, params, envelope.ciphertext, envelope.mac
    )

    failed_fingerprint: str | None = None
    unsupported: UnsupportedAlgorithmError | None = None
    for key in keys:
        fingerprint = key.certificate.fingerprint(hashes.SHA256()).hex()
        for recipient in envelope.recipients:
            if not recipient.rid.matches(key.certificate):
                continue
            try:
                unwrapped = _decrypt_key(recipient, key.private_key)
            except UnsupportedAlgorithmError as err:
                unsupported = unsupported or err
                continue
            if unwrapped is not None:
                content_key, key_algorithm = unwrapped
                plaintext = content_encryption.decrypt(
                    cipher,
                    content_key,
                    params,
                    envelope.ciphertext,
                    envelope.mac,
                    envelope.associated_data,
                )
                if plaintext is not None:
                    return Decrypted(
                        plaintext,
                        cipher.name,
                        key_algorithm,
                        fingerprint,
                        envelope.auth_enveloped,
                    )
            failed_fingerprint = failed_fingerprint or fingerprint

    if failed_fingerprint is not None:
        # One message for every failed step, so that no caller can tell a bad
        # key-transport padding from a bad content padding (RFC 3218).
        raise DecryptionFailedError(
            failed_fingerprint,
            f"decryption with the key of certificate sha256:{failed_fingerprint} "
            "failed: the key does not fit or the message is corrupt",
        )
    if unsupported is not None:
        raise unsupported
    raise _no_matching_recipient(envelope)


def _no_matching_recipient(envelope: Envelope) -> NoMatchingRecipientError:
    ids = tuple(recipient.rid for recipient in envelope.recipients)
    listed = "; ".join(str(rid) for rid in ids) or "none"
    others = ""
    if envelope.other_recipient_kinds:
        others = (
            f", and {len(envelope.other_recipient_kinds)} RecipientInfos of kinds "
            f"{', '.join(sorted(set(envelope.other_recipient_kinds)))} that use no "
            "certificate"
        )
    return NoMatchingRecipientError(
        ids,
        f"no given key belongs to a recipient of the message; its recipients are: "
        f"{listed}{others}. Import the certificate and key of one of them.",
    )


def _content_cipher(envelope: Envelope) -> ContentCipher:
    cipher = algorithms.CONTENT_CIPHERS_BY_OID.get(envelope.content_algorithm)
    if cipher is None:
        raise algorithms.unsupported("content-encryption", envelope.content_algorithm)
    if envelope.auth_enveloped != (cipher.mode == "gcm"):
        structure = "AuthEnvelopedData" if envelope.auth_enveloped else "EnvelopedData"
        raise MalformedCmsError(
            f"{structure} cannot use {cipher.name}: RFC 5083 requires an "
            "authenticated cipher in AuthEnvelopedData, and RFC 5084 keeps AES-GCM "
            "out of EnvelopedData"
        )
    return cipher


def _decrypt_key(
    recipient: Recipient, private_key: PrivateKey
) -> tuple[bytes, str] | None:
    """Recover the content-encryption key, or return None when the key fails."""
    if isinstance(recipient, KeyTransRecipient):
        transport = keytrans.parse_key_transport(
            recipient.algorithm, recipient.parameters
        )
        if not isinstance(private_key, rsa.RSAPrivateKey):
            return None
        key = keytrans.decrypt_key(private_key, recipient.encrypted_key, transport)
        return None if key is None else (key, transport.name)

    agreement = keyagree.parse_algorithm(recipient.info)
    if not isinstance(private_key, ec.EllipticCurvePrivateKey):
        return None
    curve = keyagree.find_curve(private_key.curve)
    if curve is None:
        raise UnsupportedAlgorithmError(
            private_key.curve.name,
            f"recipient key is on curve {private_key.curve.name}; the gateway "
            "decrypts with P-256, P-384 and P-521 keys (RFC 5753)",
        )
    key = keyagree.decrypt_key(
        private_key, recipient.info, agreement, recipient.encrypted_key
    )
    if key is None:
        return None
    return key, keyagree.algorithm_name(agreement, curve.name)


def encrypt(
    content: bytes,
    recipients: Sequence[x509.Certificate],
    *,
    content_algorithm: str = "aes256-cbc",
    rsa_key_transport: str = "rsa-pkcs1v15",
    recipient_id: RecipientIdKind = "issuer-serial",
) -> bytes:
    """Encrypt `content` to every certificate; return a DER ContentInfo.

    RSA recipients get a KeyTransRecipientInfo, EC recipients a KeyAgreeRecipientInfo
    with an ephemeral key. AES-GCM produces AuthEnvelopedData.
    """
    encrypted = encrypt_chunks(
        len(content),
        [content],
        recipients,
        content_algorithm=content_algorithm,
        rsa_key_transport=rsa_key_transport,
        recipient_id=recipient_id,
    )
    return b"".join(encrypted.chunks)


@dataclass(frozen=True)
class EncryptedChunks:
    """A DER ContentInfo of `size` bytes, produced chunk by chunk as it is read."""

    size: int
    chunks: Iterator[bytes] = field(repr=False)


def encrypt_chunks(
    size: int,
    content: Iterable[bytes | memoryview],
    recipients: Sequence[x509.Certificate],
    *,
    content_algorithm: str = "aes256-cbc",
    rsa_key_transport: str = "rsa-pkcs1v15",
    recipient_id: RecipientIdKind = "issuer-serial",
) -> EncryptedChunks:
    """Encrypt as `encrypt` does, reading `content` (of `size` bytes) chunk by chunk.

    The DER is definite-length, byte for byte what `encrypt` returns, and its
    ciphertext comes out in chunks as large as those of `content`, so a large message
    is never held whole in encrypted form. Reading the result raises ValueError when
    `content` does not hold `size` bytes.
    """
    cipher = _check_encrypt_options(
        recipients, content_algorithm, rsa_key_transport, recipient_id
    )
    content_key = _generate_key(cipher)
    recipient_infos = [
        _recipient_info(certificate, content_key, rsa_key_transport, recipient_id)
        for certificate in recipients
    ]
    encryptor = content_encryption.ContentEncryptor(cipher, content_key, size)
    encrypted_content = der_header(0x80, encryptor.ciphertext_size)  # [0] IMPLICIT
    encrypted_info_fields = (
        cms.ContentType("data").dump()
        + cms.EncryptionAlgorithm(
            {"algorithm": cipher.oid, "parameters": encryptor.parameters}
        ).dump()
        + encrypted_content
    )
    encrypted_info = der_header(
        0x30, len(encrypted_info_fields) + encryptor.ciphertext_size
    )

    if cipher.mode == "gcm":
        # RFC 5083 section 2.1: the version is always 0, and the mac follows the
        # encrypted content.
        version = cms.CMSVersion("v0").dump()
        content_type = cms.ContentType("authenticated_enveloped_data").dump()
        mac_size = len(der_header(0x04, content_encryption.GCM_TAG_SIZE))
        mac_size += content_encryption.GCM_TAG_SIZE
    else:
        # RFC 5652 section 6.1: version 2 when any RecipientInfo is not version 0.
        plain_versions = all(
            info.name == "ktri" and info.chosen["version"].native == "v0"
            for info in recipient_infos
        )
        version = cms.CMSVersion("v0" if plain_versions else "v2").dump()
        content_type = cms.ContentType("enveloped_data").dump()
        mac_size = 0

    fields = version + cms.RecipientInfos(recipient_infos).dump() + encrypted_info
    fields_size = (
        len(fields) + len(encrypted_info_fields) + encryptor.ciphertext_size + mac_size
    )
    enveloped = der_header(0x30, fields_size)
    explicit = der_header(0xA0, len(enveloped) + fields_size)
    content_info = der_header(
        0x30, len(content_type) + len(explicit) + len(enveloped) + fields_size
    )
    prefix = (
        content_info
        + content_type
        + explicit
        + enveloped
        + fields
        + encrypted_info_fields
    )

    def chunks() -> Iterator[bytes]:
        yield prefix
        for chunk in content:
            ciphertext = encryptor.update(chunk)
            if ciphertext:
                yield ciphertext
        yield encryptor.finalize()
        if encryptor.tag is not None:
            yield der_header(0x04, len(encryptor.tag)) + encryptor.tag

    total = len(prefix) + encryptor.ciphertext_size + mac_size
    return EncryptedChunks(total, chunks())


def _check_encrypt_options(
    recipients: Sequence[x509.Certificate],
    content_algorithm: str,
    rsa_key_transport: str,
    recipient_id: str,
) -> ContentCipher:
    cipher = algorithms.CONTENT_CIPHERS_BY_NAME.get(content_algorithm)
    if cipher is None:
        raise ValueError(
            f"content_algorithm {content_algorithm!r} is not one of "
            f"{', '.join(CONTENT_ALGORITHMS)}"
        )
    if rsa_key_transport not in RSA_KEY_TRANSPORTS:
        raise ValueError(
            f"rsa_key_transport {rsa_key_transport!r} is not one of "
            f"{', '.join(RSA_KEY_TRANSPORTS)}"
        )
    if recipient_id not in RECIPIENT_ID_KINDS:
        raise ValueError(
            f"recipient_id {recipient_id!r} is not one of "
            f"{', '.join(RECIPIENT_ID_KINDS)}"
        )
    if not recipients:
        raise ValueError("recipients is empty; encrypt needs at least one certificate")
    for certificate in recipients:
        if not isinstance(certificate, x509.Certificate):
            raise TypeError(
                f"recipients must be x509.Certificate, not {type(certificate).__name__}"
            )
    return cipher


def _generate_key(cipher: ContentCipher) -> bytes:
    key = os.urandom(cipher.key_size)
    if cipher.name != "3des-cbc":
        return key
    # DES keys carry odd parity in the low bit of each byte (FIPS 46-3).
    return bytes(byte & 0xFE | (bin(byte >> 1).count("1") + 1) % 2 for byte in key)


def _recipient_info(
    certificate: x509.Certificate,
    content_key: bytes,
    rsa_key_transport: str,
    recipient_id: RecipientIdKind,
) -> cms.RecipientInfo:
    public_key = certificate.public_key()
    if isinstance(public_key, rsa.RSAPublicKey):
        algorithm, padding = keytrans.encryption_algorithm(rsa_key_transport)
        if recipient_id == "subject-key-identifier":
            rid = cms.RecipientIdentifier(
                name="subject_key_identifier", value=subject_key_identifier(certificate)
            )
            version = "v2"
        else:
            rid = cms.RecipientIdentifier(
                name="issuer_and_serial_number", value=issuer_and_serial(certificate)
            )
            version = "v0"
        info = cms.KeyTransRecipientInfo(
            {
                "version": version,
                "rid": rid,
                "key_encryption_algorithm": cms.KeyEncryptionAlgorithm.load(
                    algorithm.dump()
                ),
                "encrypted_key": public_key.encrypt(content_key, padding),
            }
        )
        return cms.RecipientInfo(name="ktri", value=info)

    if isinstance(public_key, ec.EllipticCurvePublicKey):
        if recipient_id == "subject-key-identifier":
            agreement_rid = cms.KeyAgreementRecipientIdentifier(
                name="r_key_id",
                value={"subject_key_identifier": subject_key_identifier(certificate)},
            )
        else:
            agreement_rid = cms.KeyAgreementRecipientIdentifier(
                name="issuer_and_serial_number", value=issuer_and_serial(certificate)
            )
        agree_info, _ = keyagree.build_recipient_info(
            public_key, agreement_rid, content_key
        )
        return cms.RecipientInfo(name="kari", value=agree_info)

    raise UnsupportedAlgorithmError(
        type(public_key).__name__,
        f"certificate {certificate.subject.rfc4514_string()!r} has a "
        f"{type(public_key).__name__}; the gateway encrypts to RSA keys (RFC 3370, "
        "RFC 8017) and P-256/P-384/P-521 EC keys (RFC 5753)",
    )

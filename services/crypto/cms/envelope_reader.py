"""Reading of EnvelopedData and AuthEnvelopedData into plain, checked values.

All asn1crypto access to the untrusted message happens here, inside
translate_errors, so the decryption code works on bytes and strings only.
"""

from __future__ import annotations

from dataclasses import dataclass

from asn1crypto import cms

from services.crypto.cms import keyagree
from services.crypto.cms.der import decode, translate_errors
from services.crypto.cms.errors import CmsLimitError, MalformedCmsError
from services.crypto.cms.recipients import RecipientId, read_rid

# NOTE: a guess at the largest message the gateway handles (50 MB with MIME
# overhead); callers pass their configured limit.
DEFAULT_MAX_SIZE = 64 * 1024 * 1024
# Recipient identifiers per message, over all RecipientInfos. A mailing list
# message has at most a few hundred.
MAX_RECIPIENTS = 1024

_ENVELOPED_DATA = "1.2.840.113549.1.7.3"
_AUTH_ENVELOPED_DATA = "1.2.840.113549.1.9.16.1.23"


@dataclass(frozen=True)
class KeyTransRecipient:
    """One KeyTransRecipientInfo, its algorithm still unchecked."""

    rid: RecipientId
    algorithm: str
    parameters: bytes | None
    encrypted_key: bytes


@dataclass(frozen=True)
class KeyAgreeRecipient:
    """One recipientEncryptedKey of a KeyAgreeRecipientInfo."""

    rid: RecipientId
    info: keyagree.KeyAgreementInfo
    encrypted_key: bytes


Recipient = KeyTransRecipient | KeyAgreeRecipient


@dataclass(frozen=True)
class Envelope:
    """The fields of EnvelopedData or AuthEnvelopedData that decryption uses.

    Algorithms are OIDs and parameters are DER, checked only when used, so that an
    unsupported algorithm for another recipient does not stop decryption.
    """

    auth_enveloped: bool
    recipients: tuple[Recipient, ...]
    other_recipient_kinds: tuple[str, ...]  # kekri, pwri, ori: never ours
    content_algorithm: str
    content_parameters: bytes | None
    ciphertext: bytes | None
    mac: bytes | None
    associated_data: bytes | None


def read_envelope(der: bytes, max_size: int) -> Envelope:
    """Decode a DER/BER ContentInfo of EnvelopedData or AuthEnvelopedData."""
    if not isinstance(der, bytes | bytearray | memoryview):
        raise TypeError(f"der must be bytes, not {type(der).__name__}")
    if len(der) > max_size:
        raise CmsLimitError(
            f"CMS message of {len(der)} bytes exceeds the limit of {max_size} bytes; "
            "raise max_size if such messages are expected"
        )
    content_info = decode(cms.ContentInfo, bytes(der), "CMS ContentInfo")
    with translate_errors("CMS ContentInfo"):
        content_type: str = content_info["content_type"].dotted
        if content_type not in (_ENVELOPED_DATA, _AUTH_ENVELOPED_DATA):
            raise MalformedCmsError(
                f"CMS content type {content_type} is neither EnvelopedData "
                f"({_ENVELOPED_DATA}) nor AuthEnvelopedData ({_AUTH_ENVELOPED_DATA})"
            )
        auth_enveloped = content_type == _AUTH_ENVELOPED_DATA
        return _read_envelope(content_info["content"], auth_enveloped)


def _read_envelope(enveloped: cms.EnvelopedData, auth_enveloped: bool) -> Envelope:
    # Runs inside translate_errors; every field is already decoded.
    if not isinstance(enveloped, cms.EnvelopedData | cms.AuthEnvelopedData):
        raise MalformedCmsError("the enveloped message has no content")
    recipients: list[Recipient] = []
    others: list[str] = []
    for recipient_info in enveloped["recipient_infos"]:
        if recipient_info.name == "ktri":
            recipients.append(_read_key_trans(recipient_info.chosen))
        elif recipient_info.name == "kari":
            recipients.extend(_read_key_agree(recipient_info.chosen))
        else:
            others.append(recipient_info.name)
        if len(recipients) + len(others) > MAX_RECIPIENTS:
            raise CmsLimitError(
                f"the message has more than {MAX_RECIPIENTS} recipients, the limit"
            )

    field_name = (
        "auth_encrypted_content_info" if auth_enveloped else ("encrypted_content_info")
    )
    encrypted_content_info = enveloped[field_name]
    algorithm = encrypted_content_info["content_encryption_algorithm"]
    mac = enveloped["mac"].native if auth_enveloped else None
    associated_data = None
    if auth_enveloped and enveloped["auth_attrs"].native is not None:
        # RFC 5083 section 2.2: the authenticated attributes enter GCM as the DER
        # SET OF, with the [1] IMPLICIT tag replaced by the SET tag 0x31.
        associated_data = b"\x31" + enveloped["auth_attrs"].dump()[1:]
    return Envelope(
        auth_enveloped,
        tuple(recipients),
        tuple(others),
        algorithm["algorithm"].dotted,
        _parameters(algorithm),
        encrypted_content_info["encrypted_content"].native,
        mac,
        associated_data,
    )


def _parameters(
    algorithm: cms.EncryptionAlgorithm | cms.KeyEncryptionAlgorithm,
) -> bytes | None:
    parameters = algorithm["parameters"]
    if parameters.native is None:
        return None
    encoded: bytes = parameters.dump()
    return encoded


def _read_key_trans(info: cms.KeyTransRecipientInfo) -> KeyTransRecipient:
    algorithm = info["key_encryption_algorithm"]
    return KeyTransRecipient(
        read_rid(info["rid"]),
        algorithm["algorithm"].dotted,
        _parameters(algorithm),
        info["encrypted_key"].native,
    )


def _read_key_agree(info: cms.KeyAgreeRecipientInfo) -> list[KeyAgreeRecipient]:
    shared = keyagree.read_info(info)
    recipients = []
    for encrypted_key in info["recipient_encrypted_keys"]:
        recipients.append(
            KeyAgreeRecipient(
                read_rid(encrypted_key["rid"]),
                shared,
                encrypted_key["encrypted_key"].native,
            )
        )
        if len(recipients) > MAX_RECIPIENTS:
            raise CmsLimitError(
                f"the message has more than {MAX_RECIPIENTS} recipients, the limit"
            )
    return recipients

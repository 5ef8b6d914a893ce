"""Reading of EnvelopedData and AuthEnvelopedData into plain, checked values.

All asn1crypto access to the untrusted message happens here, inside
translate_errors, so the decryption code works on bytes and strings only.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from asn1crypto import cms

from services.crypto.cms import keyagree
from services.crypto.cms.der import Tlv, decode, der_header, read_tlv, translate_errors
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
    # A view of the DER that was read, when it could be left in place.
    ciphertext: bytes | memoryview | None
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
    located = _locate_ciphertext(der)
    if located is not None:
        # asn1crypto copies the contents of every enclosing value when it parses
        # them, so a 30 MB ciphertext cost several copies. It parses the structure
        # without the ciphertext instead, and the ciphertext stays in place.
        shell, start, end = located
        envelope = _read_content_info(shell)
        return replace(envelope, ciphertext=memoryview(der)[start:end])
    return _read_content_info(bytes(der))


def _read_content_info(der: bytes) -> Envelope:
    content_info = decode(cms.ContentInfo, der, "CMS ContentInfo")
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


def _read_children(
    der: bytes | bytearray | memoryview, parent: Tlv
) -> list[Tlv] | None:
    children = []
    position = parent.contents
    while position < parent.end:
        child = read_tlv(der, position, parent.end)
        if child is None:
            return None
        children.append(child)
        position = child.end
    return children


def _locate_ciphertext(
    der: bytes | bytearray | memoryview,
) -> tuple[bytes, int, int] | None:
    """Find a primitive encryptedContent in DER and cut it out of the structure.

    Returns the ContentInfo with an empty encryptedContent, every enclosing length
    reduced to match, and the offsets of the ciphertext in `der`. Returns None for
    any other layout (BER, constructed octet strings, trailing bytes), which
    asn1crypto then reads whole.
    """
    content_info = read_tlv(der, 0, len(der))
    if content_info is None or content_info.tag != 0x30 or content_info.end != len(der):
        return None
    outer = _read_children(der, content_info)
    if outer is None or [tlv.tag for tlv in outer] != [0x06, 0xA0]:
        return None
    inner = _read_children(der, outer[1])
    if inner is None or len(inner) != 1 or inner[0].tag != 0x30:
        return None
    enveloped = inner[0]
    fields = _read_children(der, enveloped)
    if fields is None:
        return None
    # EnvelopedData and AuthEnvelopedData: the first SEQUENCE after the SET OF
    # RecipientInfo is the (auth)EncryptedContentInfo.
    tags = [tlv.tag for tlv in fields]
    if 0x31 not in tags or 0x30 not in tags[tags.index(0x31) :]:
        return None
    info = fields[tags.index(0x30, tags.index(0x31))]
    info_fields = _read_children(der, info)
    if info_fields is None or [tlv.tag for tlv in info_fields] != [0x06, 0x30, 0x80]:
        return None
    ciphertext = info_fields[2]

    info_shell = bytes(der[info.contents : ciphertext.start]) + b"\x80\x00"
    enveloped_shell = (
        bytes(der[enveloped.contents : info.start])
        + der_header(0x30, len(info_shell))
        + info_shell
        + bytes(der[info.end : enveloped.end])
    )
    enveloped_shell = der_header(0x30, len(enveloped_shell)) + enveloped_shell
    outer_shell = (
        bytes(der[outer[0].start : outer[0].end])
        + der_header(0xA0, len(enveloped_shell))
        + enveloped_shell
    )
    shell = der_header(0x30, len(outer_shell)) + outer_shell
    return shell, ciphertext.contents, ciphertext.end

"""Recognise an incoming S/MIME message and extract what to verify or decrypt.

Only the top-level body counts: S/MIME parts nested in multipart/mixed or
multipart/alternative are attachments and pass through untouched. Senders differ from
RFC 8551 in letter case, x- types, missing parameters and octet-stream wrapping; all
of those are recognised.
"""

import enum
from dataclasses import dataclass, field

from asn1crypto import cms

from services.crypto.cms.der import read_tlv

from .encoding import decode_base64, decode_quoted_printable, looks_like_base64
from .errors import MalformedMimeError, UnsupportedMimeError
from .headers import MediaInfo, parse_header_block, parse_header_block_at
from .micalg import normalize_micalg
from .multipart import Delimiter, delimiters

_PKCS7_MIME_TYPES = frozenset({"application/pkcs7-mime", "application/x-pkcs7-mime"})
_SIGNATURE_TYPES = frozenset(
    {"application/pkcs7-signature", "application/x-pkcs7-signature"}
)


class SmimeKind(enum.StrEnum):
    """Kind of S/MIME layer at the top of a message."""

    ENVELOPED = "enveloped"
    OPAQUE_SIGNED = "opaque-signed"
    DETACHED_SIGNED = "detached-signed"
    # application/pkcs7-mime without a known smime-type: read the CMS content type.
    PKCS7_MIME = "pkcs7-mime"
    NONE = "none"


# RFC 8551 section 3.2.2 smime-type values, lower-cased.
_KIND_BY_SMIME_TYPE = {
    "enveloped-data": SmimeKind.ENVELOPED,
    "authenveloped-data": SmimeKind.ENVELOPED,
    "signed-data": SmimeKind.OPAQUE_SIGNED,
}

# asn1crypto names of the RFC 5652 and RFC 5083 content types.
_KIND_BY_CMS_TYPE = {
    "enveloped_data": SmimeKind.ENVELOPED,
    "authenticated_enveloped_data": SmimeKind.ENVELOPED,
    "signed_data": SmimeKind.OPAQUE_SIGNED,
}


@dataclass(frozen=True, slots=True)
class Smime:
    """The S/MIME layer found at the top of a message.

    Attributes:
        kind: what the top-level body is.
        smime_type: the lower-cased smime-type parameter, None when missing.
        der: the CMS object of an application/pkcs7-mime body, or the detached
            SignedData of a multipart/signed one, decoded from its transfer encoding.
        signed_content: for multipart/signed, the first body part exactly as received,
            from after its delimiter line to before the line end of the next one.
        signed_content_crlf: signed_content with bare LF turned into CRLF, when the
            message was stored with LF line ends; senders sign the CRLF form.
        micalg: the micalg parameter as a hashlib name ("sha256"), None when missing
            or unknown; the CMS SignerInfo names the digest that counts.
        micalg_parameter: the micalg parameter as sent.
    """

    kind: SmimeKind
    smime_type: str | None = None
    der: bytes | None = field(default=None, repr=False)
    signed_content: bytes | None = field(default=None, repr=False)
    signed_content_crlf: bytes | None = field(default=None, repr=False)
    micalg: str | None = None
    micalg_parameter: str | None = None


def detect(message: bytes, start: int = 0) -> Smime:
    """Recognise the S/MIME layer of a message from its top-level header fields.

    The entity starts at `start` in `message` and runs to its end. Raises
    MalformedMimeError when the message claims to be S/MIME but its structure is
    broken (no boundary, one body part, invalid base64), and MimeLimitError for
    hostile input.
    """
    block = parse_header_block_at(message, start)
    media = MediaInfo(block)
    # The body is read in place, from body_start: a copy of a large message is
    # made only for what is returned.
    body_start = start + block.body_start
    if media.media_type in _PKCS7_MIME_TYPES or _is_p7m_octet_stream(media):
        return _pkcs7_mime(media, message, body_start)
    if media.media_type == "multipart/signed":
        protocol = media.param("protocol")
        if protocol is None or protocol.strip().lower() in _SIGNATURE_TYPES:
            return _multipart_signed(media, message, body_start)
    return Smime(SmimeKind.NONE)


def _is_p7m_octet_stream(media: MediaInfo) -> bool:
    # RFC 8551 section 3.2.1: agents that cannot send application/pkcs7-mime use
    # application/octet-stream with a .p7m file name.
    if media.media_type != "application/octet-stream":
        return False
    filename = media.filename()
    return filename is not None and filename.strip().lower().endswith(".p7m")


def _pkcs7_mime(media: MediaInfo, message: bytes, body_start: int) -> Smime:
    smime_type = media.param("smime-type")
    if smime_type is not None:
        smime_type = smime_type.strip().lower()
    kind = _KIND_BY_SMIME_TYPE.get(smime_type or "", SmimeKind.PKCS7_MIME)
    der = decode_cms_body(
        message,
        media.transfer_encoding,
        "application/pkcs7-mime body",
        start=body_start,
    )
    return Smime(kind, smime_type=smime_type, der=der)


def _multipart_signed(media: MediaInfo, message: bytes, body_start: int) -> Smime:
    boundary = media.param("boundary")
    if not boundary:
        raise MalformedMimeError(
            "multipart/signed message has no boundary parameter, so its signed part "
            "cannot be found"
        )
    first, second, third = _signed_delimiters(
        message, boundary.encode("latin-1"), body_start
    )
    signed = message[first.next : max(first.next, second.start)]
    signature_end = len(message) if third is None else third.start
    signature_part = message[second.next : max(second.next, signature_end)]

    sig_block = parse_header_block(signature_part)
    sig_media = MediaInfo(sig_block)
    der = decode_cms_body(
        signature_part[sig_block.body_start :],
        sig_media.transfer_encoding,
        "multipart/signed signature part",
    )

    crlf_variant = None
    if signed.count(b"\n") != signed.count(b"\r\n"):
        crlf_variant = signed.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")

    parameter = media.param("micalg")
    micalg = None
    if parameter is not None:
        try:
            micalg = normalize_micalg(parameter)
        except UnsupportedMimeError:
            micalg = None
    return Smime(
        SmimeKind.DETACHED_SIGNED,
        der=der,
        signed_content=signed,
        signed_content_crlf=crlf_variant,
        micalg=micalg,
        micalg_parameter=parameter,
    )


def _signed_delimiters(
    message: bytes, boundary: bytes, body_start: int
) -> tuple[Delimiter, Delimiter, Delimiter | None]:
    """Return the delimiters before the content, the signature and the close.

    RFC 1847 section 2.1: multipart/signed has exactly two body parts. A missing close
    delimiter is accepted, as mail readers do; the signature part then runs to the end.
    """
    found: list[Delimiter] = []
    for delimiter in delimiters(message, boundary, body_start):
        found.append(delimiter)
        if len(found) == 3:
            break
    if len(found) < 2 or found[0].closing or found[1].closing:
        raise MalformedMimeError(
            "multipart/signed body has fewer than two body parts; it needs the signed "
            "content and the signature"
        )
    if len(found) == 3 and not found[2].closing:
        raise MalformedMimeError(
            "multipart/signed body has more than two body parts; RFC 1847 allows only "
            "the signed content and the signature"
        )
    return found[0], found[1], found[2] if len(found) == 3 else None


def decode_cms_body(
    body: bytes, transfer_encoding: str, body_name: str, *, start: int = 0
) -> bytes:
    """Return the DER of a body, `body[start:]`, that carries a CMS object.

    base64 is decoded leniently, binary and 8bit bodies are taken as they are, and a
    7bit or unlabelled body is decoded as base64 when it is base64 text, because
    senders often leave out Content-Transfer-Encoding.
    Raises MalformedMimeError for an empty body or invalid base64.
    """
    if transfer_encoding == "quoted-printable":
        der = decode_quoted_printable(body[start:])
    elif transfer_encoding == "base64" or (
        transfer_encoding not in ("binary", "8bit") and looks_like_base64(body, start)
    ):
        der = decode_base64(body, body_name, start)
    else:
        der = _without_trailing_bytes(body[start:])
    if not der:
        raise MalformedMimeError(
            f"{body_name} is empty, but it must contain a CMS object"
        )
    return der


def _without_trailing_bytes(body: bytes) -> bytes:
    """Cut a binary body to the length its outer DER SEQUENCE states.

    Mail transport appends line ends to a binary body, and strict DER parsers reject
    bytes after the object. A BER indefinite length (0x80) is left as it is.
    """
    if len(body) < 2 or body[0] != 0x30 or body[1] == 0x80:
        return body
    if body[1] < 0x80:
        total = 2 + body[1]
    else:
        count = body[1] & 0x7F
        if count > 4 or len(body) < 2 + count:
            return body
        total = 2 + count + int.from_bytes(body[2 : 2 + count], "big")
    return body[:total] if total <= len(body) else body


def cms_content_type(der: bytes) -> str:
    """Return the asn1crypto name of the content type of a CMS ContentInfo.

    For example "enveloped_data", "authenticated_enveloped_data" or "signed_data";
    an unknown type comes back as its dotted OID.
    Raises MalformedMimeError when `der` does not start with a ContentInfo.
    """
    try:
        content_type = _content_type_of_der(der)
        if content_type is None:
            content_type = cms.ContentInfo.load(der)["content_type"].native
    except (ValueError, TypeError, KeyError) as err:
        raise MalformedMimeError(
            "body is not a DER CMS ContentInfo (RFC 5652 section 3), so it cannot be "
            "decrypted or verified"
        ) from err
    return str(content_type)


def _content_type_of_der(der: bytes) -> str | None:
    """Read the content type of a DER ContentInfo without asn1crypto's copies.

    asn1crypto copies the content of a ContentInfo to reach its first field, which
    costs a copy of a large message. This reads the same headers that asn1crypto
    checks there and returns None for any other encoding (BER included).
    """
    outer = read_tlv(der, 0, len(der))
    if outer is None or outer.tag != 0x30:
        return None
    oid = read_tlv(der, outer.contents, outer.end)
    if oid is None or oid.tag != 0x06:
        return None
    content = read_tlv(der, oid.end, outer.end)
    if content is None or content.tag != 0xA0 or content.end != outer.end:
        return None
    return str(cms.ContentType.load(der[oid.start : oid.end]).native)


def kind_of_cms(der: bytes) -> SmimeKind:
    """Return the kind of a CMS object by its content type, NONE for other types."""
    return _KIND_BY_CMS_TYPE.get(cms_content_type(der), SmimeKind.NONE)


def replace_body(message: bytes, new_entity: bytes | memoryview) -> bytes:
    """Replace the top-level entity of `message`, such as a decrypted one.

    The result is the outer header fields without the old Content-* fields, then the
    header fields and body of `new_entity`, all bytes as given.
    NOTE: non-Content fields inside `new_entity` (RFC 7508 style protected headers)
    are kept as they are, so they may repeat an outer field such as Subject.
    """
    block = parse_header_block(message)
    pieces: list[bytes | memoryview] = []
    for header in block.fields:
        if header.key.startswith("content-"):
            continue
        raw = header.raw
        pieces.append(raw if raw.endswith((b"\n", b"\r")) else raw + b"\r\n")
    entity_block = parse_header_block_at(new_entity)
    if not entity_block.fields and entity_block.body_start == 0:
        # The entity has neither fields nor an empty line, so one is added to keep its
        # first line from being read as an outer header field.
        pieces.append(b"\r\n")
    pieces.append(new_entity)
    return b"".join(pieces)

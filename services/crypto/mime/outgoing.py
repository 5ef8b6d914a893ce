"""S/MIME messages built around DER CMS objects (RFC 8551 section 3).

The caller signs or encrypts the bytes that this module returns and passes the DER
back. Every function returns CRLF bytes, so the result can go to SMTP as it is. The
*_pieces, *_head and split_fields variants leave a large body where it is, for callers
that stream it (see services.crypto.pieces).
"""

import secrets

from services.crypto.pieces import Pieces

from .encoding import encode_base64_lines
from .errors import MalformedMimeError, MimeError, UnsupportedMimeError
from .headers import parse_header_block, to_crlf
from .micalg import micalg_parameter

_CRLF = b"\r\n"
_DEFAULT_CONTENT_TYPE = b"Content-Type: text/plain; charset=us-ascii\r\n"
_MIME_VERSION = b"MIME-Version: 1.0\r\n"

# RFC 8551 section 3.2.2: the smime-type values of application/pkcs7-mime that the
# gateway sends, with the Content-Description that mail clients show.
_SMIME_TYPES = {
    "enveloped-data": b"S/MIME Encrypted Message",
    "authEnveloped-data": b"S/MIME Encrypted Message",
    "signed-data": b"S/MIME Signed Message",
}

_SIGNATURE_PART_HEADERS = (
    b"Content-Type: application/pkcs7-signature; name=smime.p7s\r\n"
    b"Content-Transfer-Encoding: base64\r\n"
    b"Content-Disposition: attachment; filename=smime.p7s\r\n"
    b"Content-Description: S/MIME Cryptographic Signature\r\n"
    b"\r\n"
)
_SIGNED_PREAMBLE = b"This is an S/MIME signed message (RFC 8551).\r\n"

# "=_" cannot occur in quoted-printable or base64 text, and 24 random bytes make a
# collision with any other content negligible; the entity is still searched.
_BOUNDARY_PREFIX = b"----=_smime_"
_BOUNDARY_ATTEMPTS = 8


def split_message(message: bytes) -> tuple[bytes, bytes]:
    """Split a message into its outer header fields and the MIME entity to protect.

    The entity contains every Content-* field (RFC 8551 section 3.1: the fields that
    describe the content) and the body, byte for byte. The outer part contains all other
    fields, MIME-Version and Received included, with CRLF line ends. A message without
    Content-Type gets "text/plain; charset=us-ascii", the RFC 2045 default, on its
    entity.
    """
    outer, head, body_start = split_fields(message)
    return outer, head + message[body_start:]


def split_fields(message: bytes) -> tuple[bytes, bytes, int]:
    """Split the header block as split_message does, leaving the body in place.

    Returns the outer fields, the entity's header block (its Content-* fields and
    the empty line after them) and the offset of the body in `message`, so that
    the entity is `head + message[body_start:]` without that copy being made.
    """
    block = parse_header_block(message)
    outer: list[bytes] = []
    content: list[bytes] = []
    for field in block.fields:
        raw = field.raw if field.raw.endswith((b"\n", b"\r")) else field.raw + _CRLF
        if field.key.startswith("content-"):
            content.append(raw)
        else:
            outer.append(to_crlf(raw))
    if block.first("Content-Type") is None:
        content.insert(0, _DEFAULT_CONTENT_TYPE)
    separator = message[block.end : block.body_start] or _CRLF
    return b"".join(outer), b"".join(content) + separator, block.body_start


def signed_multipart_entity(entity: bytes, signature_der: bytes, micalg: str) -> bytes:
    """Build a multipart/signed entity (RFC 8551 section 3.5.3) without outer fields.

    `entity` is the canonical entity that `signature_der`, a detached CMS SignedData,
    signs; `micalg` names its digest ("sha256", "sha-256", ...). Encrypt the result to
    sign, then encrypt.
    """
    return signed_multipart_pieces(Pieces([entity]), signature_der, micalg).join()


def signed_multipart_pieces(
    entity: Pieces, signature_der: bytes, micalg: str
) -> Pieces:
    """Build what signed_multipart_entity returns, with `entity` kept in place."""
    _require_crlf(entity)
    parameter = micalg_parameter(micalg).encode("ascii")
    boundary = _new_boundary(entity)
    head = b"".join(
        [
            b'Content-Type: multipart/signed; protocol="application/pkcs7-signature";',
            b"\r\n micalg=",
            parameter,
            b'; boundary="',
            boundary,
            b'"\r\n\r\n',
            _SIGNED_PREAMBLE,
            b"\r\n--",
            boundary,
            _CRLF,
        ]
    )
    tail = b"".join(
        [
            b"\r\n--",
            boundary,
            _CRLF,
            _SIGNATURE_PART_HEADERS,
            encode_base64_lines(signature_der),
            b"--",
            boundary,
            b"--\r\n",
        ]
    )
    return Pieces([head, entity, tail])


def pkcs7_mime_entity(der: bytes, smime_type: str) -> bytes:
    """Build an application/pkcs7-mime entity (RFC 8551 section 3.2), no outer fields.

    `smime_type` is "enveloped-data", "authEnveloped-data" or "signed-data".
    """
    return pkcs7_mime_head(smime_type) + encode_base64_lines(der)


def pkcs7_mime_head(smime_type: str) -> bytes:
    """Return the header fields and empty line of pkcs7_mime_entity.

    The base64 lines of the DER follow them (see encode_base64_chunks).
    """
    description = _SMIME_TYPES.get(smime_type)
    if description is None:
        raise UnsupportedMimeError(
            f"smime-type {smime_type!r} is not supported; use one of "
            f"{', '.join(_SMIME_TYPES)}"
        )
    return b"".join(
        [
            b"Content-Type: application/pkcs7-mime; smime-type=",
            smime_type.encode("ascii"),
            b"; name=smime.p7m\r\n",
            b"Content-Transfer-Encoding: base64\r\n",
            b"Content-Disposition: attachment; filename=smime.p7m\r\n",
            b"Content-Description: ",
            description,
            b"\r\n\r\n",
        ]
    )


def join_message(outer_headers: bytes, entity: bytes) -> bytes:
    """Put outer header fields, MIME-Version: 1.0 and an entity together as a message.

    Any MIME-Version field in `outer_headers` is replaced. Raises MalformedMimeError
    when `outer_headers` contains a Content-* field or anything but header fields.
    """
    return message_head(outer_headers) + entity


def message_head(outer_headers: bytes) -> bytes:
    """Return the start of join_message's output: the outer fields and MIME-Version.

    The protected entity follows it. Raises MalformedMimeError as join_message does.
    """
    block = parse_header_block(outer_headers)
    if block.body_start != len(outer_headers):
        raise MalformedMimeError(
            "outer headers contain a line that is not a header field, or an empty "
            "line; pass the outer part returned by split_message"
        )
    lines: list[bytes] = []
    for field in block.fields:
        if field.key.startswith("content-"):
            raise MalformedMimeError(
                f"outer headers contain {field.name}, which belongs to the entity; "
                "pass the outer part returned by split_message"
            )
        if field.key != "mime-version":
            raw = to_crlf(field.raw)
            lines.append(raw if raw.endswith(_CRLF) else raw + _CRLF)
    lines.append(_MIME_VERSION)
    return b"".join(lines)


def build_signed_multipart(
    outer_headers: bytes, entity: bytes, signature_der: bytes, micalg: str
) -> bytes:
    """Build a whole multipart/signed message: see signed_multipart_entity."""
    return join_message(
        outer_headers, signed_multipart_entity(entity, signature_der, micalg)
    )


def build_pkcs7_mime(outer_headers: bytes, der: bytes, smime_type: str) -> bytes:
    """Build a whole application/pkcs7-mime message: see pkcs7_mime_entity."""
    return join_message(outer_headers, pkcs7_mime_entity(der, smime_type))


def _require_crlf(entity: Pieces) -> None:
    crlf = entity.count(b"\r\n")
    if entity.count(b"\n") != crlf or entity.count(b"\r") != crlf:
        raise MalformedMimeError(
            "entity to sign has bare LF or CR line ends, which mail transport changes "
            "and so breaks the signature; pass it through canonicalize() first"
        )


def _new_boundary(entity: Pieces) -> bytes:
    for _ in range(_BOUNDARY_ATTEMPTS):
        boundary = _BOUNDARY_PREFIX + secrets.token_hex(24).encode("ascii")
        if not entity.contains(boundary):
            return boundary
    # Unreachable unless the entity was built to contain every candidate.
    raise MimeError(
        f"no boundary absent from the entity after {_BOUNDARY_ATTEMPTS} random tries"
    )

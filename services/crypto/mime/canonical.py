"""Canonical form of a MIME entity for signing (RFC 8551 section 3.1).

A signature must survive any 7-bit mail path, so the signed entity has CRLF line ends
and only 7-bit transfer encodings:

- a text part with 8-bit bytes, NUL or lines over 998 octets becomes quoted-printable;
- any other such part, and every part with Content-Transfer-Encoding binary, becomes
  base64; a base64 or quoted-printable body that breaks those rules is re-encoded;
- multipart bodies keep their boundaries, preamble and epilogue, and every body part is
  canonicalised in turn. A preamble or epilogue that is not 7-bit is dropped, because
  no MIME reader shows it and it cannot be encoded;
- message/rfc822 bodies are canonicalised as messages in their own right, because
  RFC 2046 section 5.2.1 forbids base64 and quoted-printable for them. Other message/*
  types are leaves like application/*. The Content-Transfer-Encoding of a multipart or
  message/rfc822 entity becomes 7bit;
- header fields only get CRLF line ends, and a field line over 998 octets is not
  refolded. 8-bit bytes in a header field of any part raise UnsupportedMimeError,
  because raw UTF-8 there needs RFC 2047 or RFC 2231 encoding. That encoding changes
  how readers show the field, so the sending client must do it.

Parts that are already 7-bit keep every byte except their line ends, so canonicalize is
idempotent.
"""

from dataclasses import dataclass

from .encoding import (
    decode_base64,
    decode_quoted_printable,
    encode_base64_lines,
    encode_quoted_printable,
    is_7bit_lines,
)
from .errors import MalformedMimeError, MimeLimitError, UnsupportedMimeError
from .headers import HeaderBlock, MediaInfo, parse_header_block, to_crlf
from .limits import MAX_BODY_PARTS, MAX_NESTING_DEPTH
from .multipart import delimiters

_CRLF = b"\r\n"
_IDENTITY_ENCODINGS = frozenset({"7bit", "8bit", "binary"})


@dataclass(slots=True)
class _Walk:
    """Budget shared by every part of one canonicalize call."""

    parts: int = 0


def canonicalize(entity: bytes) -> bytes:
    """Return the canonical, 7-bit, CRLF form of a MIME entity for signing.

    Raises MalformedMimeError for a multipart without a boundary or delimiter,
    UnsupportedMimeError for 8-bit header fields and unknown transfer encodings, and
    MimeLimitError for input beyond the limits of the limits module.
    """
    return _entity(entity, 0, "text/plain", _Walk())


def _entity(data: bytes, depth: int, default_type: str, walk: _Walk) -> bytes:
    if depth > MAX_NESTING_DEPTH:
        raise MimeLimitError(
            "nesting depth",
            MAX_NESTING_DEPTH,
            f"MIME parts are nested more than {MAX_NESTING_DEPTH} levels deep; "
            "reject the message as hostile",
        )
    block = parse_header_block(data)
    _reject_8bit_fields(block)
    media = MediaInfo(block, default_type)
    body = data[block.body_start :]
    encoding = media.transfer_encoding
    new_encoding: str | None = None

    if media.media_type.startswith("multipart/"):
        body = _multipart_body(body, media, depth, walk)
        new_encoding = _container_encoding(encoding, media.media_type)
    elif media.media_type == "message/rfc822" and encoding in _IDENTITY_ENCODINGS:
        body = _entity(body, depth + 1, "text/plain", walk)
        new_encoding = None if encoding == "7bit" else "7bit"
    else:
        body, new_encoding = _leaf_body(body, media)

    headers = _header_lines(block, new_encoding)
    if not headers and not body:
        return b""
    return headers + _CRLF + body


def _reject_8bit_fields(block: HeaderBlock) -> None:
    for field in block.fields:
        if not field.raw.isascii():
            raise UnsupportedMimeError(
                f"header field {field.name} of a MIME part contains 8-bit bytes; the "
                "sending client must encode it with RFC 2047 or RFC 2231 before it "
                "can be signed"
            )


def _container_encoding(encoding: str, media_type: str) -> str | None:
    # RFC 2045 section 6.4: a multipart is never encoded, it only states what its
    # parts contain, and after canonicalisation they are all 7bit.
    if encoding == "7bit":
        return None
    if encoding in _IDENTITY_ENCODINGS:
        return "7bit"
    raise MalformedMimeError(
        f"{media_type} entity has Content-Transfer-Encoding {encoding}, which RFC 2045 "
        "section 6.4 forbids for multipart; the sending client must fix the message"
    )


def _multipart_body(body: bytes, media: MediaInfo, depth: int, walk: _Walk) -> bytes:
    boundary = media.param("boundary")
    if not boundary:
        raise MalformedMimeError(
            f"{media.media_type} entity has no boundary parameter; the sending client "
            "must fix the message"
        )
    boundary_bytes = boundary.encode("latin-1")
    found = list(delimiters(body, boundary_bytes))
    if not found:
        raise MalformedMimeError(
            f"{media.media_type} body has no delimiter line for its boundary; the "
            "sending client must fix the message"
        )
    walk.parts += len(found)
    if walk.parts > MAX_BODY_PARTS:
        raise MimeLimitError(
            "body parts",
            MAX_BODY_PARTS,
            f"message has more than {MAX_BODY_PARTS} body parts; reject the message "
            "as hostile",
        )
    # RFC 2046 section 5.1.7: parts of multipart/digest default to message/rfc822.
    default_type = (
        "message/rfc822" if media.media_type == "multipart/digest" else "text/plain"
    )

    out = [_text_or_nothing(body[: found[0].start])]
    for index, delimiter in enumerate(found):
        if delimiter.start < delimiter.line_start:
            out.append(_CRLF)
        out.append(body[delimiter.line_start : delimiter.line_end])
        if delimiter.closing:
            if delimiter.next > delimiter.line_end:
                out.append(_CRLF)
                out.append(_text_or_nothing(body[delimiter.next :]))
            break
        out.append(_CRLF)
        end = found[index + 1].start if index + 1 < len(found) else len(body)
        part = body[delimiter.next : end] if delimiter.next < end else b""
        out.append(_entity(part, depth + 1, default_type, walk))
    return b"".join(out)


def _text_or_nothing(text: bytes) -> bytes:
    crlf = to_crlf(text)
    return crlf if is_7bit_lines(crlf) else b""


def _leaf_body(body: bytes, media: MediaInfo) -> tuple[bytes, str | None]:
    """Return the 7-bit body and its new Content-Transfer-Encoding, or None."""
    encoding = media.transfer_encoding
    if encoding == "binary":
        return encode_base64_lines(body), "base64"

    crlf = to_crlf(body)
    if is_7bit_lines(crlf):
        return crlf, None

    if encoding == "base64":
        return encode_base64_lines(decode_base64(crlf, "base64 body part")), None
    if encoding == "quoted-printable":
        return encode_quoted_printable(decode_quoted_printable(crlf)), None
    if encoding not in _IDENTITY_ENCODINGS:
        raise UnsupportedMimeError(
            f"body part has Content-Transfer-Encoding {encoding}, which is not defined "
            "by RFC 2045; the sending client must use base64 or quoted-printable"
        )
    if media.media_type.startswith("text/"):
        return encode_quoted_printable(crlf), "quoted-printable"
    return encode_base64_lines(crlf), "base64"


def _header_lines(block: HeaderBlock, new_encoding: str | None) -> bytes:
    """Return the fields with CRLF line ends, Content-Transfer-Encoding replaced."""
    lines: list[bytes] = []
    replaced = new_encoding is None
    for field in block.fields:
        if new_encoding is not None and field.key == "content-transfer-encoding":
            if not replaced:
                lines.append(_encoding_field(new_encoding))
                replaced = True
            continue
        raw = to_crlf(field.raw)
        lines.append(raw if raw.endswith(_CRLF) else raw + _CRLF)
    if not replaced and new_encoding is not None:
        lines.append(_encoding_field(new_encoding))
    return b"".join(lines)


def _encoding_field(encoding: str) -> bytes:
    return b"Content-Transfer-Encoding: " + encoding.encode("ascii") + _CRLF

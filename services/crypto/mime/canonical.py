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

from services.crypto.pieces import Pieces, Span

from .encoding import (
    decode_base64,
    decode_quoted_printable,
    encode_base64_lines,
    encode_quoted_printable,
    is_7bit_lines,
)
from .errors import MalformedMimeError, MimeLimitError, UnsupportedMimeError
from .headers import HeaderBlock, MediaInfo, parse_header_block, to_crlf
from .limits import MAX_BODY_PARTS, MAX_HEADER_BLOCK_BYTES, MAX_NESTING_DEPTH
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
    return canonical_pieces(entity).join()


def canonical_pieces(entity: bytes) -> Pieces:
    """Return what canonicalize returns, as pieces that refer to `entity`.

    Every part whose bytes stay as they are is a span of `entity`, not a copy, so a
    large 7-bit message costs only the header lines and the re-encoded parts.
    """
    out = Pieces()
    _entity(entity, 0, len(entity), 0, "text/plain", _Walk(), out)
    return out


def canonical_split_pieces(head: bytes, data: bytes, body_start: int) -> Pieces:
    """Return the canonical form of the entity `head + data[body_start:]` as pieces.

    `head` is the entity's header block, with the empty line that ends it, as
    split_message builds it. The body is read in place in `data`.
    """
    block = parse_header_block(head)
    if block.end == block.body_start or block.body_start != len(head):
        # The empty line is missing, so the body's first lines could continue the
        # header block: read the joined entity as canonicalize does.
        return canonical_pieces(head + data[body_start:])
    out = Pieces()
    _entity_parts(block, data, body_start, len(data), 0, "text/plain", _Walk(), out)
    return out


def _entity(
    data: bytes,
    start: int,
    end: int,
    depth: int,
    default_type: str,
    walk: _Walk,
    out: Pieces,
) -> None:
    """Append the canonical form of the entity `data[start:end]` to `out`."""
    if depth > MAX_NESTING_DEPTH:
        raise MimeLimitError(
            "nesting depth",
            MAX_NESTING_DEPTH,
            f"MIME parts are nested more than {MAX_NESTING_DEPTH} levels deep; "
            "reject the message as hostile",
        )
    # parse_header_block reads no further than this, so a copy of the start of a
    # large part is enough.
    head = data[start : min(end, start + MAX_HEADER_BLOCK_BYTES + 2)]
    block = parse_header_block(head)
    _entity_parts(
        block, data, start + block.body_start, end, depth, default_type, walk, out
    )


def _entity_parts(
    block: HeaderBlock,
    data: bytes,
    body_start: int,
    end: int,
    depth: int,
    default_type: str,
    walk: _Walk,
    out: Pieces,
) -> None:
    """Append the canonical header fields of `block` and body `data[body_start:end]`."""
    _reject_8bit_fields(block)
    media = MediaInfo(block, default_type)
    encoding = media.transfer_encoding
    new_encoding: str | None = None
    body = Pieces()

    if media.media_type.startswith("multipart/"):
        _multipart_body(data, body_start, end, media, depth, walk, body)
        new_encoding = _container_encoding(encoding, media.media_type)
    elif media.media_type == "message/rfc822" and encoding in _IDENTITY_ENCODINGS:
        _entity(data, body_start, end, depth + 1, "text/plain", walk, body)
        new_encoding = None if encoding == "7bit" else "7bit"
    else:
        new_encoding = _leaf_body(data, body_start, end, media, body)

    headers = _header_lines(block, new_encoding)
    if not headers and not len(body):
        return
    out.append(headers)
    out.append(_CRLF)
    out.append(body)


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


def _multipart_body(
    data: bytes,
    start: int,
    end: int,
    media: MediaInfo,
    depth: int,
    walk: _Walk,
    out: Pieces,
) -> None:
    boundary = media.param("boundary")
    if not boundary:
        raise MalformedMimeError(
            f"{media.media_type} entity has no boundary parameter; the sending client "
            "must fix the message"
        )
    boundary_bytes = boundary.encode("latin-1")
    found = list(delimiters(data, boundary_bytes, start, end))
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

    out.append(_text_or_nothing(data[start : found[0].start]))
    for index, delimiter in enumerate(found):
        if delimiter.start < delimiter.line_start:
            out.append(_CRLF)
        out.append(Span(data, delimiter.line_start, delimiter.line_end))
        if delimiter.closing:
            if delimiter.next > delimiter.line_end:
                out.append(_CRLF)
                out.append(_text_or_nothing(data[delimiter.next : end]))
            break
        out.append(_CRLF)
        part_end = found[index + 1].start if index + 1 < len(found) else end
        part_end = max(part_end, delimiter.next)
        _entity(data, delimiter.next, part_end, depth + 1, default_type, walk, out)


def _text_or_nothing(text: bytes) -> bytes:
    crlf = to_crlf(text)
    return crlf if is_7bit_lines(crlf) else b""


def _leaf_body(
    data: bytes, start: int, end: int, media: MediaInfo, out: Pieces
) -> str | None:
    """Append the 7-bit body; return its new Content-Transfer-Encoding, or None."""
    encoding = media.transfer_encoding
    if encoding == "binary":
        out.append(encode_base64_lines(memoryview(data)[start:end]))
        return "base64"

    crlf_count = data.count(_CRLF, start, end)
    if data.count(b"\n", start, end) == crlf_count == data.count(b"\r", start, end):
        if is_7bit_lines(data, start, end):
            # The common case, a body that is already 7-bit: kept in place.
            out.append(Span(data, start, end))
            return None
        crlf = data[start:end]
    else:
        crlf = to_crlf(data[start:end])
        if is_7bit_lines(crlf):
            out.append(crlf)
            return None

    if encoding == "base64":
        out.append(encode_base64_lines(decode_base64(crlf, "base64 body part")))
        return None
    if encoding == "quoted-printable":
        out.append(encode_quoted_printable(decode_quoted_printable(crlf)))
        return None
    if encoding not in _IDENTITY_ENCODINGS:
        raise UnsupportedMimeError(
            f"body part has Content-Transfer-Encoding {encoding}, which is not defined "
            "by RFC 2045; the sending client must use base64 or quoted-printable"
        )
    if media.media_type.startswith("text/"):
        out.append(encode_quoted_printable(crlf))
        return "quoted-printable"
    out.append(encode_base64_lines(crlf))
    return "base64"


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

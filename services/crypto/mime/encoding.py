"""Content-Transfer-Encoding of bodies (RFC 2045 section 6): base64 and QP."""

import base64
import binascii
import re

from .errors import MalformedMimeError
from .headers import MAX_LINE_OCTETS, to_crlf

# RFC 2045 section 6.8: encoded lines are at most 76 characters.
_BASE64_LINE = 76
_BASE64_TEXT = re.compile(rb"[A-Za-z0-9+/]*={0,2}")
_WHITESPACE = b" \t\r\n\x0b\x0c"


def encode_base64_lines(data: bytes) -> bytes:
    """Encode `data` as base64 in lines of 76 characters, each ending with CRLF."""
    encoded = binascii.b2a_base64(data, newline=False)
    lines = [
        encoded[i : i + _BASE64_LINE] for i in range(0, len(encoded), _BASE64_LINE)
    ]
    lines.append(b"")
    return b"\r\n".join(lines)


def decode_base64(text: bytes, body_name: str) -> bytes:
    """Decode base64 text, ignoring whitespace and restoring missing padding.

    Raises MalformedMimeError, naming the body by `body_name`, when `text` contains
    anything but the base64 alphabet, whitespace and final padding.
    """
    compact = text.translate(None, _WHITESPACE)
    if not _BASE64_TEXT.fullmatch(compact):
        raise MalformedMimeError(
            f"{body_name} is not valid base64: it contains characters outside the "
            "base64 alphabet or padding before its end"
        )
    compact = compact.rstrip(b"=")
    if len(compact) % 4 == 1:
        raise MalformedMimeError(
            f"{body_name} is not valid base64: its length leaves one character over"
        )
    compact += b"=" * (-len(compact) % 4)
    return base64.b64decode(compact, validate=True)


def looks_like_base64(body: bytes) -> bool:
    """Return whether `body` is non-empty base64 text, whitespace aside."""
    compact = body.translate(None, _WHITESPACE)
    return bool(compact) and _BASE64_TEXT.fullmatch(compact) is not None


def encode_quoted_printable(text: bytes) -> bytes:
    """Encode CRLF text as quoted-printable, with CRLF hard and soft line breaks."""
    # binascii uses LF for soft line breaks when the text has no line end at all.
    return to_crlf(binascii.b2a_qp(text, quotetabs=False, istext=True, header=False))


def decode_quoted_printable(text: bytes) -> bytes:
    """Decode quoted-printable text, leaving invalid "=" sequences as they are."""
    return binascii.a2b_qp(text)


def is_7bit_lines(data: bytes) -> bool:
    """Return whether CRLF `data` is RFC 2045 7bit: ASCII, no NUL, short lines."""
    if not data.isascii() or b"\x00" in data:
        return False
    if len(data) <= MAX_LINE_OCTETS:
        return True
    return max(map(len, data.split(b"\r\n"))) <= MAX_LINE_OCTETS

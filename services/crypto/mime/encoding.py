"""Content-Transfer-Encoding of bodies (RFC 2045 section 6): base64 and QP."""

import base64
import binascii
import re
from collections.abc import Iterable, Iterator

from .errors import MalformedMimeError
from .headers import MAX_LINE_OCTETS, to_crlf

Buffer = bytes | bytearray | memoryview

# RFC 2045 section 6.8: encoded lines are at most 76 characters, 57 input bytes.
_BASE64_LINE = 76
_BASE64_LINE_INPUT = 57
# Bytes that is_7bit_lines copies and splits at a time.
_SCAN_WINDOW = 1024 * 1024
_BASE64_TEXT = re.compile(rb"[A-Za-z0-9+/]*={0,2}")
_WHITESPACE = b" \t\r\n\x0b\x0c"


def encode_base64_lines(data: Buffer) -> bytes:
    """Encode `data` as base64 in lines of 76 characters, each ending with CRLF."""
    view = memoryview(data)
    windows = (view[i : i + _SCAN_WINDOW] for i in range(0, len(view), _SCAN_WINDOW))
    return b"".join(encode_base64_chunks(windows))


def base64_lines_size(size: int) -> int:
    """Return the length of encode_base64_lines output for `size` input bytes."""
    encoded = -(-size // 3) * 4
    return encoded + 2 * -(-encoded // _BASE64_LINE)


def encode_base64_chunks(chunks: Iterable[Buffer]) -> Iterator[bytes]:
    """Encode the bytes of `chunks`, in order, as encode_base64_lines does.

    Each output piece holds whole CRLF lines for the input read so far, and at most
    56 input bytes wait for the next chunk, so memory stays near one chunk's size.
    """
    carry = b""
    for chunk in chunks:
        view = memoryview(chunk)
        if carry:
            # Complete the line that waits from the previous chunk first.
            needed = _BASE64_LINE_INPUT - len(carry)
            carry += bytes(view[:needed])
            view = view[needed:]
            if len(carry) < _BASE64_LINE_INPUT:
                continue
            yield _base64_lines(carry)
        whole = len(view) // _BASE64_LINE_INPUT * _BASE64_LINE_INPUT
        if whole:
            yield _base64_lines(view[:whole])
        carry = bytes(view[whole:])
    if carry:
        yield _base64_lines(carry)


def _base64_lines(data: Buffer) -> bytes:
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


def is_7bit_lines(data: bytes, start: int = 0, end: int | None = None) -> bool:
    """Return whether CRLF `data[start:end]` is 7bit: ASCII, no NUL, short lines.

    RFC 2045 section 2.7 defines 7bit data: lines of at most 998 octets.

    The range is checked in windows that end at a CRLF, so a large body is never
    copied or split into lines all at once.
    """
    end = len(data) if end is None else end
    if data.find(b"\x00", start, end) >= 0:
        return False
    position = start
    while position < end:
        stop = end
        if end - position > _SCAN_WINDOW:
            line_end = data.rfind(b"\r\n", position, position + _SCAN_WINDOW)
            if line_end < 0:
                return False  # a line longer than the window
            stop = line_end + 2
        window = data[position:stop]
        if not window.isascii():
            return False
        if (
            len(window) > MAX_LINE_OCTETS
            and max(map(len, window.split(b"\r\n"))) > MAX_LINE_OCTETS
        ):
            return False
        position = stop
    return True

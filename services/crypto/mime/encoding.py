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
_BASE64_WINDOW = re.compile(rb"([A-Za-z0-9+/]*)(=*)")
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

    Each output piece contains whole CRLF lines for the input read so far, and at
    most 56 input bytes wait for the next chunk, so memory stays near one chunk's
    size.
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


def decode_base64(
    text: bytes, body_name: str, start: int = 0, end: int | None = None
) -> bytes:
    """Decode base64 `text[start:end]`, ignoring whitespace and restoring padding.

    The text is decoded in windows, so a large body costs the decoded bytes twice
    (the windows' output, then its join) and no copy of the text. Raises
    MalformedMimeError, naming the body by `body_name`, when the text contains
    anything but the base64 alphabet, whitespace and final padding.
    """
    decoded: list[bytes] = []
    carry = b""
    for alphabet in _base64_windows(text, body_name, start, end):
        quad = carry + alphabet
        whole = len(quad) // 4 * 4
        decoded.append(binascii.a2b_base64(quad[:whole], strict_mode=True))
        carry = quad[whole:]
    if len(carry) == 1:
        raise MalformedMimeError(
            f"{body_name} is not valid base64: its length leaves one character over"
        )
    if carry:
        decoded.append(base64.b64decode(carry + b"=" * (-len(carry) % 4)))
    return b"".join(decoded)


def _base64_windows(
    text: bytes, body_name: str, start: int, end: int | None
) -> Iterator[bytes]:
    """Yield the base64 alphabet of each window of the text that is not all whitespace.

    Whitespace and the final padding are removed. At most two "=" may end the text
    (RFC 4648 section 4); anything else raises MalformedMimeError.
    """
    end = len(text) if end is None else end
    padding = 0
    for position in range(start, end, _SCAN_WINDOW):
        window = text[position : min(end, position + _SCAN_WINDOW)]
        compact = window.translate(None, _WHITESPACE)
        if not compact:
            continue
        match = _BASE64_WINDOW.fullmatch(compact)
        alphabet = b"" if match is None else match.group(1)
        valid = match is not None and not (padding and alphabet)
        padding += 0 if match is None else len(match.group(2))
        if not valid or padding > 2:
            raise MalformedMimeError(
                f"{body_name} is not valid base64: it contains characters outside the "
                "base64 alphabet or padding before its end"
            )
        yield alphabet


def looks_like_base64(body: bytes, start: int = 0, end: int | None = None) -> bool:
    """Return whether `body[start:end]` is non-empty base64 text, whitespace aside."""
    found = False
    try:
        for _ in _base64_windows(body, "body", start, end):
            found = True
    except MalformedMimeError:
        return False
    return found


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

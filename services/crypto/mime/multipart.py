"""RFC 2046 section 5.1.1 boundary delimiters in a multipart body, found in one pass."""

import re
from collections.abc import Iterator
from dataclasses import dataclass

from .errors import MimeLimitError
from .limits import MAX_BODY_PARTS


@dataclass(frozen=True, slots=True)
class Delimiter:
    """One delimiter line in a multipart body, as offsets into that body.

    RFC 2046 section 5.1.1: the line end before "--boundary" belongs to the delimiter,
    so `start` is the offset of that line end (equal to `line_start` at the start of the
    body). `line_end` is the offset past the boundary and its transport padding, and
    `next` the offset past the line end that follows (equal to `line_end` at the end of
    the body).
    """

    start: int
    line_start: int
    line_end: int
    next: int
    closing: bool


def delimiters(
    body: bytes, boundary: bytes, start: int = 0, end: int | None = None
) -> Iterator[Delimiter]:
    """Yield the delimiters of `body[start:end]` up to and including the close one.

    Offsets in each Delimiter are offsets into `body`, so a part of a large message
    is searched in place, without a copy. Raises MimeLimitError after
    MAX_BODY_PARTS delimiters, so a hostile body of a million boundary lines costs
    no more than one with MAX_BODY_PARTS.
    """
    end = len(body) if end is None else end
    # bytes.find runs in C, unlike a regular expression that must try every offset
    # for a line end, so 100 KB bodies are scanned in microseconds.
    needle = b"--" + boundary
    count = 0
    position = body.find(needle, start, end)
    while position >= 0:
        if position == start or body[position - 1] in b"\r\n":
            trailer = _TRAILER.match(body, position + len(needle), end)
            if trailer is not None:
                count += 1
                if count > MAX_BODY_PARTS:
                    raise MimeLimitError(
                        "body parts",
                        MAX_BODY_PARTS,
                        f"multipart body has more than {MAX_BODY_PARTS} boundary "
                        "delimiters; reject the message as hostile",
                    )
                delimiter = _delimiter(body, start, end, position, trailer)
                yield delimiter
                if delimiter.closing:
                    return
        position = body.find(needle, position + 1, end)


# After "--boundary": "--" on the close delimiter, then transport padding. The line
# end is looked ahead at, not consumed, because it may also be the line end that
# starts the next delimiter.
_TRAILER = re.compile(rb"(--)?[ \t]*(?=\r\n|\r|\n|\Z)")


def _delimiter(
    body: bytes, start: int, end: int, position: int, trailer: re.Match[bytes]
) -> Delimiter:
    if position >= start + 2 and body.startswith(b"\r\n", position - 2, end):
        delimiter_start = position - 2
    elif position > start:
        delimiter_start = position - 1
    else:
        delimiter_start = position
    line_end = trailer.end()
    if body.startswith(b"\r\n", line_end, end):
        next_pos = line_end + 2
    elif line_end < end:
        next_pos = line_end + 1
    else:
        next_pos = line_end
    closing = trailer.group(1) is not None
    return Delimiter(delimiter_start, position, line_end, next_pos, closing)

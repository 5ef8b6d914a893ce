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


def delimiters(body: bytes, boundary: bytes) -> Iterator[Delimiter]:
    """Yield the delimiters of `body` up to and including the close delimiter.

    Raises MimeLimitError after MAX_BODY_PARTS delimiters, so a hostile body of a
    million boundary lines costs no more than one with MAX_BODY_PARTS.
    """
    # The line end after the padding is looked ahead at, not consumed, because it may
    # also be the line end that starts the next delimiter.
    pattern = re.compile(
        rb"(?:\r\n|\r|\n|^)(--"
        + re.escape(boundary)
        + rb")(--)?[ \t]*(?=\r\n|\r|\n|\Z)"
    )
    for count, match in enumerate(pattern.finditer(body), start=1):
        if count > MAX_BODY_PARTS:
            raise MimeLimitError(
                "body parts",
                MAX_BODY_PARTS,
                f"multipart body has more than {MAX_BODY_PARTS} boundary delimiters; "
                "reject the message as hostile",
            )
        line_end = match.end()
        if body.startswith(b"\r\n", line_end):
            next_pos = line_end + 2
        elif line_end < len(body):
            next_pos = line_end + 1
        else:
            next_pos = line_end
        closing = match.group(2) is not None
        yield Delimiter(match.start(), match.start(1), line_end, next_pos, closing)
        if closing:
            return

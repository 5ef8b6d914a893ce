"""Raw RFC 5322 header blocks: parse, read parameters and edit without refolding.

Every function works on bytes and keeps each byte it does not change, because an
S/MIME signature covers the exact bytes of the entity. Line ends are CRLF, LF or a bare
CR, as in the stdlib email parser.
"""

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from email.message import Message
from email.utils import collapse_rfc2231_value

from .errors import MalformedMimeError, MimeLimitError
from .limits import MAX_HEADER_BLOCK_BYTES, MAX_HEADER_FIELDS

LINE_END = re.compile(rb"\r\n|\r|\n")

# RFC 5322 section 3.6.8: a field name is printable US-ASCII except the colon. Spaces
# before the colon are the obsolete syntax of section 4.5.
_FIELD_NAME = re.compile(rb"([!-9;-~]+)[ \t]*:")
_VALID_NAME = re.compile(r"[!-9;-~]+")
_TOKEN = re.compile(r"[^\s();]+")

# RFC 5322 section 2.1.1: a line is at most 998 octets without its CRLF.
MAX_LINE_OCTETS = 998


@dataclass(frozen=True, slots=True)
class HeaderField:
    """One header field: its name and its raw lines, folding and line ends included."""

    name: str
    raw: bytes
    start: int
    end: int

    @property
    def key(self) -> str:
        """Lower-case name, for comparisons."""
        return self.name.lower()

    @property
    def value(self) -> str:
        """Unfolded value without surrounding whitespace, decoded as Latin-1.

        Latin-1 maps every byte to one character, so 8-bit bytes survive a round trip.
        """
        colon = self.raw.index(b":")
        unfolded = LINE_END.sub(b"", self.raw[colon + 1 :])
        return unfolded.strip(b" \t").decode("latin-1")


@dataclass(frozen=True, slots=True)
class HeaderBlock:
    """The header fields at the start of a message or body part.

    `end` is the offset just past the last field; `body_start` is the offset of the
    body, past the empty line that separates it. Both are equal when that empty line
    is missing: at the end of the input, or where a line that is not a header field
    starts the body (the stdlib email parser reads such input the same way).
    """

    fields: tuple[HeaderField, ...]
    end: int
    body_start: int

    def first(self, name: str) -> HeaderField | None:
        """Return the first field with this name (any case), or None."""
        key = name.lower()
        for field in self.fields:
            if field.key == key:
                return field
        return None

    def value(self, name: str) -> str | None:
        """Return the value of the first field with this name, or None."""
        field = self.first(name)
        return None if field is None else field.value


def parse_header_block(data: bytes) -> HeaderBlock:
    """Parse the header fields at the start of `data` in one pass.

    Raises MimeLimitError when the block is longer than MAX_HEADER_BLOCK_BYTES or has
    more than MAX_HEADER_FIELDS fields.
    """
    fields: list[HeaderField] = []
    size = len(data)
    bound = min(size, MAX_HEADER_BLOCK_BYTES)
    pos = 0
    field_start = -1
    field_name = ""

    while pos < size:
        match = LINE_END.search(data, pos, bound + 2)
        line_end = bound if match is None else match.start()
        next_pos = size if match is None else match.end()

        if line_end == pos:
            if field_start >= 0:
                fields.append(_field(data, field_name, field_start, pos))
            return HeaderBlock(tuple(fields), pos, next_pos)

        if data[pos] in b" \t":
            if field_start < 0:
                break
        else:
            name_match = _FIELD_NAME.match(data, pos, line_end)
            if name_match is None:
                break
            if field_start >= 0:
                fields.append(_field(data, field_name, field_start, pos))
            if len(fields) >= MAX_HEADER_FIELDS:
                raise MimeLimitError(
                    "header fields",
                    MAX_HEADER_FIELDS,
                    f"header block has more than {MAX_HEADER_FIELDS} fields; "
                    "reject the message as hostile",
                )
            field_start = pos
            field_name = name_match.group(1).decode("ascii")

        if (match is None and size > bound) or next_pos > MAX_HEADER_BLOCK_BYTES:
            raise MimeLimitError(
                "header block bytes",
                MAX_HEADER_BLOCK_BYTES,
                f"header block is longer than {MAX_HEADER_BLOCK_BYTES} bytes; "
                "reject the message as hostile",
            )
        pos = next_pos

    if field_start >= 0:
        fields.append(_field(data, field_name, field_start, pos))
    return HeaderBlock(tuple(fields), pos, pos)


def parse_header_block_at(data: bytes | memoryview, start: int = 0) -> HeaderBlock:
    """Parse the header block at `data[start:]`, as parse_header_block does.

    Offsets in the result count from `start`. Only the bytes that
    parse_header_block can read are copied, so a large body is not.
    """
    if start == 0 and isinstance(data, bytes):
        return parse_header_block(data)
    return parse_header_block(bytes(data[start : start + MAX_HEADER_BLOCK_BYTES + 2]))


def _field(data: bytes, name: str, start: int, end: int) -> HeaderField:
    return HeaderField(name, data[start:end], start, end)


def to_crlf(data: bytes) -> bytes:
    """Return `data` with every CRLF, bare LF and bare CR replaced by CRLF."""
    crlf = data.count(b"\r\n")
    if data.count(b"\n") == crlf and data.count(b"\r") == crlf:
        return data
    return data.replace(b"\r\n", b"\n").replace(b"\r", b"\n").replace(b"\n", b"\r\n")


def field_line(name: str, value: str, line_end: bytes = b"\r\n") -> bytes:
    """Build one unfolded header field line, rejecting header injection.

    Raises MalformedMimeError when the name is not an RFC 5322 field name, or the value
    contains a line end, a control character or non-ASCII text (encode that with
    RFC 2047 first), or the line would exceed 998 octets.
    """
    if not _VALID_NAME.fullmatch(name):
        raise MalformedMimeError(
            f"header field name {name!r} is invalid: use printable US-ASCII without "
            "spaces or colon"
        )
    if not value.isascii() or any(ch < " " and ch != "\t" for ch in value):
        raise MalformedMimeError(
            f"value of header field {name} contains a line end, a control character "
            "or non-ASCII text; encode it with RFC 2047 first"
        )
    line = f"{name}: {value}".encode("ascii")
    if len(line) > MAX_LINE_OCTETS:
        raise MalformedMimeError(
            f"header field {name} is {len(line)} octets long, over the RFC 5322 "
            f"limit of {MAX_LINE_OCTETS}; shorten the value"
        )
    return line + line_end


def strip_headers(message: bytes, names: Iterable[str]) -> bytes:
    """Remove every top-level field with one of these names (any case).

    Continuation lines go with their field. Every other byte, body included, stays as
    it was.
    """
    keys = {name.lower() for name in names}
    block = parse_header_block(message)
    removed = [field for field in block.fields if field.key in keys]
    if not removed:
        return message
    # Views, so that a large body is copied once, into the result.
    view = memoryview(message)
    pieces: list[memoryview] = []
    pos = 0
    for field in removed:
        pieces.append(view[pos : field.start])
        pos = field.end
    pieces.append(view[pos:])
    return b"".join(pieces)


def prepend_headers(message: bytes, fields: Sequence[tuple[str, str]]) -> bytes:
    """Add header fields, in the given order, before the first line of `message`.

    The new lines end like the first line of the message (LF for mail stored with LF,
    CRLF otherwise); the message itself is not changed.
    """
    first_end = LINE_END.search(message)
    line_end = b"\r\n" if first_end is None else first_end.group()
    if line_end == b"\r":
        line_end = b"\r\n"
    lines = [field_line(name, value, line_end) for name, value in fields]
    return b"".join([*lines, message])


class MediaInfo:
    """The Content-Type and Content-Disposition of one entity, with their parameters.

    The stdlib email package only reads the two values here: RFC 2045 quoting and
    RFC 2231 parameter continuations are its job, and nothing is re-serialised.
    """

    __slots__ = ("_message", "media_type", "transfer_encoding")

    def __init__(self, block: HeaderBlock, default_type: str = "text/plain") -> None:
        self._message = Message()
        self._message.set_default_type(default_type)
        for name in ("Content-Type", "Content-Disposition"):
            value = block.value(name)
            if value is not None:
                self._message[name] = value
        # RFC 2045 section 5.2: a missing or invalid Content-Type means the default.
        self.media_type: str = self._message.get_content_type()
        self.transfer_encoding = _transfer_encoding(block)

    def param(self, name: str) -> str | None:
        """Return one Content-Type parameter, unquoted, or None when it is missing."""
        value = self._message.get_param(name)
        if value is None:
            return None
        return collapse_rfc2231_value(value)

    def filename(self) -> str | None:
        """Return the Content-Disposition filename, else the Content-Type name."""
        return self._message.get_filename()


def _transfer_encoding(block: HeaderBlock) -> str:
    # RFC 2045 section 6.1: the default is 7bit. A comment after the token is dropped.
    value = block.value("Content-Transfer-Encoding")
    if value is None:
        return "7bit"
    token = _TOKEN.match(value)
    return "7bit" if token is None else token.group().lower()

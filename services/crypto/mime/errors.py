"""Errors raised while reading or writing MIME structures for S/MIME."""


class MimeError(Exception):
    """Base class of every MIME error; the message names no header value or body."""


class MalformedMimeError(MimeError):
    """The input breaks a MIME or RFC 5322 rule that this package cannot repair."""


class UnsupportedMimeError(MimeError):
    """The input uses a MIME feature that this package does not implement."""


class MimeLimitError(MimeError):
    """The input exceeds a size, count or nesting limit.

    Attributes:
        limit: the name of the limit, such as "header block bytes".
        maximum: the largest value allowed for that limit.
    """

    def __init__(self, limit: str, maximum: int, message: str) -> None:
        super().__init__(message)
        self.limit = limit
        self.maximum = maximum

"""Errors raised while reading or writing CMS structures."""


class CmsError(Exception):
    """Base class of every CMS error; the message is safe to put in an event."""


class MalformedCmsError(CmsError):
    """The input is not a well-formed CMS structure of the expected kind."""


class UnsupportedAlgorithmError(CmsError):
    """The structure uses an algorithm the gateway does not implement."""

    def __init__(self, algorithm: str, message: str) -> None:
        super().__init__(message)
        self.algorithm = algorithm


class CmsLimitError(CmsError):
    """The structure exceeds a size or count limit."""

"""Errors raised while reading or writing CMS structures."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from services.crypto.cms.recipients import RecipientId


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


class NoMatchingRecipientError(CmsError):
    """None of the given keys belongs to a recipient of the enveloped message."""

    def __init__(self, recipient_ids: tuple[RecipientId, ...], message: str) -> None:
        super().__init__(message)
        self.recipient_ids = recipient_ids


class DecryptionFailedError(CmsError):
    """A recipient key matched, but the content could not be decrypted with it.

    The message does not name the step that failed (key transport, key unwrap,
    padding or authentication tag), so the error cannot serve as a padding oracle.
    """

    def __init__(self, certificate_fingerprint: str, message: str) -> None:
        super().__init__(message)
        self.certificate_fingerprint = certificate_fingerprint

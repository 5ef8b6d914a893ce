"""The MIME layer of S/MIME (RFC 8551) on raw bytes.

Outgoing: split_message, canonicalize, then build_signed_multipart or build_pkcs7_mime
around DER from the CMS layer. Incoming: detect, then replace_body after decryption,
and strip_headers/prepend_headers for result fields. Nothing here re-serialises a
message with the stdlib email package, because signatures cover exact bytes.
"""

from .canonical import canonicalize
from .errors import MalformedMimeError, MimeError, MimeLimitError, UnsupportedMimeError
from .headers import prepend_headers, strip_headers
from .incoming import (
    Smime,
    SmimeKind,
    cms_content_type,
    decode_cms_body,
    detect,
    kind_of_cms,
    replace_body,
)
from .micalg import micalg_parameter, normalize_micalg
from .outgoing import (
    build_pkcs7_mime,
    build_signed_multipart,
    join_message,
    pkcs7_mime_entity,
    signed_multipart_entity,
    split_message,
)

__all__ = [
    "MalformedMimeError",
    "MimeError",
    "MimeLimitError",
    "Smime",
    "SmimeKind",
    "UnsupportedMimeError",
    "build_pkcs7_mime",
    "build_signed_multipart",
    "canonicalize",
    "cms_content_type",
    "decode_cms_body",
    "detect",
    "join_message",
    "kind_of_cms",
    "micalg_parameter",
    "normalize_micalg",
    "pkcs7_mime_entity",
    "prepend_headers",
    "replace_body",
    "signed_multipart_entity",
    "split_message",
    "strip_headers",
]

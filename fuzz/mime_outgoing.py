"""Fuzz target: the MIME steps around CMS that `mime_detect` does not reach.

Outgoing: split a message, canonicalize its entity, wrap it as multipart/signed
and join it to the outer header fields. Incoming: strip the gateway's result
header fields and replace the body with a decrypted entity.
"""

from __future__ import annotations

import contextlib

from services.crypto.mime import (
    MimeError,
    canonicalize,
    join_message,
    replace_body,
    signed_multipart_entity,
    split_message,
    strip_headers,
)
from services.crypto.result_headers import RESULT_HEADERS

# A placeholder signature: the MIME steps only base64-encode it.
SIGNATURE = b"\x30\x03\x02\x01\x00"
DECRYPTED = b"Content-Type: text/plain\r\n\r\ndecrypted\r\n"


def test_one_input(data: bytes) -> None:
    with contextlib.suppress(MimeError):
        outer, entity = split_message(data)
        entity = canonicalize(entity)
        join_message(outer, signed_multipart_entity(entity, SIGNATURE, "sha-256"))
    with contextlib.suppress(MimeError):
        replace_body(strip_headers(data, RESULT_HEADERS), DECRYPTED)

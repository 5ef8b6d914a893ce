"""Fuzz target: CMS EnvelopedData and AuthEnvelopedData.

Each input is sniffed for its CMS content type, listed with `recipient_ids` and
decrypted with the corpus keys of Bob, Fran and Fran-ec, so that inputs mutated
from messages to them reach key transport, key agreement and content decryption.
"""

from __future__ import annotations

import contextlib

from fuzz.cms_corpus import recipient_keys
from services.crypto.cms.envelope import decrypt, recipient_ids
from services.crypto.cms.errors import CmsError
from services.crypto.mime import MimeError, kind_of_cms

KEYS = recipient_keys()


def test_one_input(data: bytes) -> None:
    with contextlib.suppress(MimeError):
        kind_of_cms(data)
    with contextlib.suppress(CmsError):
        recipient_ids(data)
    with contextlib.suppress(CmsError):
        decrypt(data, KEYS)

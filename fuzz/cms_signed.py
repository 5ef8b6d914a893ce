"""Fuzz target: CMS SignedData verification.

Each input is verified twice: as encapsulated (opaque) content and as a detached
signature over a fixed text, with the corpus CAs as trust anchors, so inputs
mutated from the corpus signatures reach certificate path building.
"""

from __future__ import annotations

import contextlib
from datetime import UTC, datetime

from fuzz.cms_corpus import trust_anchors
from services.crypto.cms.errors import CmsError
from services.crypto.cms.signed import verify

ANCHORS = trust_anchors()
# Inside the validity of the corpus certificates, so that chains can validate.
NOW = datetime(2026, 12, 4, tzinfo=UTC)
DETACHED = (
    b"Content-Type: text/plain\r\n\r\nThis is a test message from Alice to Bob.\r\n"
)


def test_one_input(data: bytes) -> None:
    for content in (None, DETACHED):
        with contextlib.suppress(CmsError):
            verify(
                data,
                detached_content=content,
                trust_anchors=ANCHORS,
                now=NOW,
                from_address="Alice@example.com",
            )

"""Fuzz target: S/MIME detection on a whole message (header block and body)."""

from __future__ import annotations

import contextlib

from services.crypto.mime.errors import MimeError
from services.crypto.mime.incoming import detect


def test_one_input(data: bytes) -> None:
    with contextlib.suppress(MimeError):
        detect(data)

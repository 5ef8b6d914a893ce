"""The size of a message's header section, which the body store keeps apart."""

from __future__ import annotations

import pytest

from services.ingress.handlers import _header_section_size


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"Subject: a\r\nTo: b@example.com\r\n\r\nbody\r\n", 33),
        (b"Subject: a\nTo: b@example.com\n\nbody\n\nmore\n", 30),
        # CRLF fields, then bare LF pairs in the body: the first end wins.
        (b"Subject: a\r\n\r\nx\n\ny\r\n", 14),
        # No empty line after fields: stored in the ordinary chunks.
        (b"\r\nbody without header fields\r\n", None),
        (b"Subject: no empty line at all\r\n", None),
    ],
)
def test_header_section_size(content: bytes, expected: int | None) -> None:
    assert _header_section_size(content, 0) == expected
    if expected is not None:
        assert _header_section_size(content, 25) == expected + 25
        assert content[:expected].endswith((b"\r\n\r\n", b"\n\n"))

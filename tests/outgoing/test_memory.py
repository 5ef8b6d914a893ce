"""Memory that outgoing sign-and-encrypt takes for a large message.

The output alone is about 1.37 times the body: base64 adds a third, and CRLF
after every 76 characters adds 2/76 more. protect_message writes it once, into a
buffer of its final size, and refers to the received body in place, so its peak
stays near that. Under tracemalloc, the code that copied the message at each step
peaked at 8.2 times the size of a 30 MB message (tests/outgoing/memory_probe.py)
and of the 8 MB messages below. Now the 30 MB message peaks at 1.44 times, and the
8 MB ones at 1.60 to 1.65 times, because the chunk buffers of a few MiB weigh more
against a smaller body.
"""

from __future__ import annotations

import tracemalloc
from pathlib import Path
from typing import Any, cast

import pytest

from schemas import ProfileSpec
from services.crypto.mime import canonicalize, split_message
from services.crypto.outgoing import Signer, protect_message
from tests.crypto.test_mime_support import Pki, make_pki, openssl_cms

BODY_SIZE = 8_000_000
# Measured peaks are 1.65 (text) and 1.60 (attachment) times the message. The
# bound leaves room for library changes, and stays far below the 8.2 times of the
# code that copied the message at each step.
MAX_PEAK_RATIO = 2.0

HEADERS = (
    b"From: Alice <alice@example.com>\r\n"
    b"To: Bob <bob@example.net>\r\n"
    b"Subject: large message\r\n"
    b"MIME-Version: 1.0\r\n"
)
PROFILE = ProfileSpec(
    name="large",
    action="sign-and-encrypt",
    algorithm="aes256-cbc",
    digest="sha256",
    signature="detached",
    on_failure="bounce",
    encrypt_to_self=False,
)


def text_message(size: int) -> bytes:
    """Build a 7-bit text/plain message of lines of 76 characters."""
    line = b"0123456789 " * 6 + b"abcdefghijklmnop\r\n"
    body = line * (size // len(line))
    return HEADERS + b"Content-Type: text/plain; charset=us-ascii\r\n\r\n" + body


def attachment_message(size: int) -> bytes:
    """Build a multipart/mixed message with a short text and a base64 attachment."""
    line = (
        b"QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVphYmNkZWZnaGlqa2xtbm9wcXJzdHV2d3h5ejAx\r\n"
    )
    return (
        HEADERS
        + b'Content-Type: multipart/mixed; boundary="part"\r\n\r\n'
        + b"--part\r\nContent-Type: text/plain\r\n\r\nSee the attachment.\r\n"
        + b"--part\r\nContent-Type: application/octet-stream\r\n"
        + b"Content-Transfer-Encoding: base64\r\n\r\n"
        + line * (size // len(line))
        + b"--part--\r\n"
    )


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


def protect(pki: Pki, message: bytes) -> bytearray:
    # protect_message does not read the signer's binding.
    signer = Signer(pki.signer_cert, pki.signer_key, (), cast(Any, None))
    return protect_message(message, PROFILE, signer, [pki.recipient_cert])


def peak_of_protect(pki: Pki, message: bytes) -> tuple[int, bytearray]:
    """Return tracemalloc's peak above the start during protect, and its result."""
    protect(pki, message[:1000])  # imports and caches are not counted below
    tracemalloc.start()
    try:
        start = tracemalloc.get_traced_memory()[0]
        result = protect(pki, message)
        peak = tracemalloc.get_traced_memory()[1] - start
    finally:
        tracemalloc.stop()
    return peak, result


@pytest.mark.parametrize("build", [text_message, attachment_message])
def test_peak_memory_is_bounded(pki: Pki, build: Any, tmp_path: Path) -> None:
    message = build(BODY_SIZE)

    peak, result = peak_of_protect(pki, message)

    ratio = peak / len(message)
    assert ratio <= MAX_PEAK_RATIO, (
        f"peak {peak / 1e6:.1f} MB is {ratio:.2f} times the {len(message) / 1e6:.1f} "
        f"MB message, more than {MAX_PEAK_RATIO}"
    )
    (tmp_path / "message.eml").write_bytes(result)
    decrypted = openssl_cms(
        "-decrypt", "-in", tmp_path / "message.eml",
        "-inkey", pki.recipient_key_pem, "-out", tmp_path / "signed.eml",
    )  # fmt: skip
    assert decrypted.returncode == 0, decrypted.stderr.decode()
    verified = openssl_cms(
        "-verify", "-CAfile", pki.ca_pem, "-in", tmp_path / "signed.eml",
        "-out", tmp_path / "content.bin",
    )  # fmt: skip
    assert verified.returncode == 0, verified.stderr.decode()
    assert (tmp_path / "content.bin").read_bytes() == canonicalize(
        split_message(message)[1]
    )

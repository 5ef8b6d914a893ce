"""encrypt_chunks at block edges and with odd chunkings, read by `openssl cms`.

The DER is definite-length, so its sizes are computed before the content is
read: padding that adds a whole block, an empty content, empty chunks and
chunks of one byte must still make a structure OpenSSL decrypts.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from services.crypto.cms import envelope
from tests.crypto.test_mime_support import Pki, make_pki, openssl_cms


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


def content_of(size: int) -> bytes:
    return bytes((index * 7 + 3) % 256 for index in range(size))


def odd_chunks(content: bytes) -> Iterator[bytes | memoryview]:
    """Chunks of 1, 0, 7 and 1000 bytes, then the rest as a memoryview."""
    view = memoryview(content)
    position = 0
    for length in (1, 0, 7, 1000):
        yield view[position : position + length]
        position = min(position + length, len(content))
    yield view[position:]


@pytest.mark.parametrize("algorithm", ["aes128-cbc", "3des-cbc", "aes256-gcm"])
@pytest.mark.parametrize("size", [0, 1, 7, 8, 15, 16, 17, 1008, 1024, 1025, 70_000])
def test_odd_chunks_decrypt_with_openssl(
    pki: Pki, tmp_path: Path, algorithm: str, size: int
) -> None:
    content = content_of(size)
    encrypted = envelope.encrypt_chunks(
        size, odd_chunks(content), [pki.recipient_cert], content_algorithm=algorithm
    )
    der = b"".join(encrypted.chunks)
    assert len(der) == encrypted.size
    (tmp_path / "message.der").write_bytes(der)

    result = openssl_cms(
        "-decrypt", "-inform", "DER", "-in", tmp_path / "message.der",
        "-inkey", pki.recipient_key_pem, "-binary", "-out", tmp_path / "plain.bin",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr.decode()
    assert (tmp_path / "plain.bin").read_bytes() == content


@pytest.mark.parametrize("actual", [99, 101])
def test_content_of_wrong_size_raises(pki: Pki, actual: int) -> None:
    encrypted = envelope.encrypt_chunks(
        100, [content_of(actual)], [pki.recipient_cert], content_algorithm="aes128-cbc"
    )
    with pytest.raises(ValueError):
        b"".join(encrypted.chunks)

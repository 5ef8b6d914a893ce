"""Large outgoing results, streamed or whole, read back by `openssl cms`.

Messages around the 1 MiB streaming threshold and of several MiB, with an 8-bit
text part and a binary attachment, signed opaque or detached, and encrypted
with AES-CBC or AES-GCM. OpenSSL must decrypt and verify every result, and each
part must decode to the bytes that were sent.
"""

from __future__ import annotations

import email
import email.policy
from email.message import Message
from pathlib import Path
from typing import Any, cast

import pytest

from schemas.mail import ProfileSpec
from services.crypto.handlers import StreamedBody
from services.crypto.outgoing import STREAM_ABOVE, Signer, protect_body
from tests.crypto.test_mime_support import Pki, make_pki, openssl_cms

TEXT_LINE = "Grüße, café, naïve: eight-bit text of the message body.\r\n".encode()


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


def binary_payload(size: int) -> bytes:
    """Every byte value, bare CR and LF and NUL included."""
    return (bytes(range(256)) * (size // 256 + 1))[:size]


def mixed_message(text_size: int, binary_size: int) -> tuple[bytes, bytes, bytes]:
    """Return a multipart/mixed message, its 8-bit text and its binary attachment."""
    text = TEXT_LINE * (text_size // len(TEXT_LINE))
    binary = binary_payload(binary_size)
    message = (
        b"From: signer@example.com\r\n"
        b"To: recipient@example.com\r\n"
        b"Subject: large with 8-bit and binary parts\r\n"
        b"MIME-Version: 1.0\r\n"
        b'Content-Type: multipart/mixed; boundary="b0undary"\r\n'
        b"\r\n"
        b"--b0undary\r\n"
        b"Content-Type: text/plain; charset=utf-8\r\n"
        b"Content-Transfer-Encoding: 8bit\r\n"
        b"\r\n" + text + b"\r\n--b0undary\r\n"
        b"Content-Type: application/octet-stream\r\n"
        b"Content-Transfer-Encoding: binary\r\n"
        b'Content-Disposition: attachment; filename="data.bin"\r\n'
        b"\r\n" + binary + b"\r\n--b0undary--\r\n"
    )
    return message, text, binary


def result_bytes(body: bytearray | StreamedBody) -> bytes:
    if isinstance(body, StreamedBody):
        joined = b"".join(bytes(chunk) for chunk in body.chunks)
        assert len(joined) == body.size
        return joined
    return bytes(body)


def parts_of(entity: bytes) -> list[Message]:
    parsed = email.message_from_bytes(entity, policy=email.policy.compat32)
    if parsed.get_content_type() == "multipart/signed":
        parsed = cast(Message, parsed.get_payload(0))
    return [part for part in parsed.walk() if not part.is_multipart()]


@pytest.mark.parametrize("text_size", [STREAM_ABOVE // 2 - 20_000, 3 * STREAM_ABOVE])
@pytest.mark.parametrize(
    ("action", "signature", "algorithm"),
    [
        ("sign-and-encrypt", "opaque", "aes256-cbc"),
        ("sign-and-encrypt", "detached", "aes256-gcm"),
        ("sign-and-encrypt", "detached", "aes128-cbc"),
        ("encrypt", "detached", "aes128-gcm"),
        ("encrypt", "detached", "aes192-gcm"),
        ("sign-and-encrypt", "opaque", "3des-cbc"),
        ("encrypt", "detached", "aes192-cbc"),
    ],
)
def test_large_result_opens_with_openssl(
    pki: Pki,
    tmp_path: Path,
    text_size: int,
    action: str,
    signature: str,
    algorithm: str,
) -> None:
    message, text, binary = mixed_message(text_size, STREAM_ABOVE // 2)
    profile = ProfileSpec(
        name="large",
        action=action,  # type: ignore[arg-type]
        algorithm=algorithm,
        digest="sha256",
        signature=signature,  # type: ignore[arg-type]
        on_failure="bounce",
        encrypt_to_self=False,
    )
    signer = None
    if action == "sign-and-encrypt":
        signer = Signer(pki.signer_cert, pki.signer_key, (), cast(Any, None))

    body = protect_body(message, profile, signer, [pki.recipient_cert], algorithm)
    assert isinstance(body, StreamedBody)
    (tmp_path / "message.eml").write_bytes(result_bytes(body))

    decrypted = openssl_cms(
        "-decrypt", "-in", tmp_path / "message.eml",
        "-inkey", pki.recipient_key_pem, "-out", tmp_path / "entity.eml",
    )  # fmt: skip
    assert decrypted.returncode == 0, decrypted.stderr.decode()
    entity = (tmp_path / "entity.eml").read_bytes()
    if signer is not None:
        verified = openssl_cms(
            "-verify", "-CAfile", pki.ca_pem, "-in", tmp_path / "entity.eml",
            "-out", tmp_path / "content.eml",
        )  # fmt: skip
        assert verified.returncode == 0, verified.stderr.decode()
        entity = (tmp_path / "content.eml").read_bytes()

    text_part, binary_part = parts_of(entity)
    assert text_part.get_payload(decode=True) == text
    assert binary_part.get_payload(decode=True) == binary

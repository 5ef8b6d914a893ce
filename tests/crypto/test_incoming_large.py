"""Large incoming messages made by `openssl cms`, decrypted and verified.

Signed opaque or detached, then encrypted with AES-CBC or AES-GCM, around the
1 MiB mark and at several MiB, with an 8-bit text part and a base64
attachment. Each opened message must carry the parts that were signed.
"""

from __future__ import annotations

import asyncio
import base64
import email
import email.policy
import subprocess
from datetime import UTC, datetime
from email.message import Message
from pathlib import Path
from typing import Any, cast

import pytest

from benchmarks.keys import TestCa as CertificateAuthority
from schemas import BodyRef, MailRouted
from services.crypto.handlers import StreamedBody, Transformed
from services.crypto.incoming import IncomingProcessor
from smimegw import x509 as certs
from smimegw.configstate import BindingEntry, CaEntry, ConfigState

TEXT_LINE = "Grüße aus Köln: eight-bit text of the message body.\r\n".encode()


class Pair:
    """The CA, Carol (the external signer) and Alice (an internal recipient)."""

    def __init__(self, folder: Path) -> None:
        self.ca = CertificateAuthority(folder)
        self.carol = self.ca.issue("carol@partner.example", "carol")
        self.alice = self.ca.issue("alice@example.com", "alice")
        self.folder = folder


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Pair:
    return Pair(tmp_path_factory.mktemp("incoming-large"))


def processor(pair: Pair) -> IncomingProcessor:
    now = datetime.now(UTC)
    state = ConfigState()
    ca = pair.ca.cert
    state.cas["ca"] = CaEntry("ca", ca, certs.facts_of(ca), "ca.pem", now)
    alice = pair.alice
    state.bindings["alice"] = BindingEntry(
        "alice", "internal", alice.email, alice.cert, certs.facts_of(alice.cert),
        (), "alice-key", None, "alice.pem", now,
    )  # fmt: skip

    class Follower:
        def __init__(self) -> None:
            self.state = state

        async def sync(self) -> None:
            return None

    class Keys:
        async def get(self, key_id: str) -> object:
            return alice.key

    return IncomingProcessor(cast(Any, Follower()), cast(Any, Keys()))


def content_entity(text_size: int) -> tuple[bytes, bytes, bytes]:
    text = TEXT_LINE * (text_size // len(TEXT_LINE))
    attachment = bytes(range(256)) * 2048
    encoded = base64.encodebytes(attachment).replace(b"\n", b"\r\n")
    entity = (
        b'Content-Type: multipart/mixed; boundary="p4rt"\r\n'
        b"\r\n"
        b"--p4rt\r\n"
        b"Content-Type: text/plain; charset=utf-8\r\n"
        b"Content-Transfer-Encoding: 8bit\r\n"
        b"\r\n" + text + b"\r\n--p4rt\r\n"
        b"Content-Type: application/octet-stream\r\n"
        b"Content-Transfer-Encoding: base64\r\n"
        b"\r\n" + encoded + b"--p4rt--\r\n"
    )
    return entity, text, attachment


def openssl(*args: str | Path, data: bytes) -> bytes:
    result = subprocess.run(
        ["openssl", "cms", *map(str, args)],
        input=data,
        capture_output=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr.decode()
    return result.stdout


def sign_then_encrypt(pair: Pair, entity: bytes, signature: str, cipher: str) -> bytes:
    signer: tuple[str | Path, ...] = (
        "-signer", pair.carol.cert_path, "-inkey", pair.carol.key_path,
    )  # fmt: skip
    detach = () if signature == "detached" else ("-nodetach",)
    signed = openssl("-sign", "-binary", "-crlfeol", *signer, *detach, data=entity)
    encrypted = openssl(
        "-encrypt", "-binary", "-crlfeol", f"-{cipher}", pair.alice.cert_path,
        data=signed,
    )  # fmt: skip
    return (
        b"From: Carol <carol@partner.example>\r\n"
        b"To: Alice <alice@example.com>\r\n"
        b"Subject: large incoming\r\n" + encrypted
    )


def parts_of(message: bytes) -> list[Message]:
    parsed = email.message_from_bytes(message, policy=email.policy.compat32)
    return [part for part in parsed.walk() if not part.is_multipart()]


def body_bytes(result: Transformed) -> bytes:
    body = result.body
    if isinstance(body, StreamedBody):
        return b"".join(bytes(chunk) for chunk in body.chunks)
    return bytes(body)


@pytest.mark.parametrize("text_size", [1024 * 1024 - 300_000, 5 * 1024 * 1024])
@pytest.mark.parametrize(
    ("signature", "cipher"),
    [("opaque", "aes-256-cbc"), ("detached", "aes-256-gcm"), ("detached", "aes128")],
)
def test_large_incoming_opens(
    pair: Pair, text_size: int, signature: str, cipher: str
) -> None:
    entity, text, attachment = content_entity(text_size)
    message = sign_then_encrypt(pair, entity, signature, cipher)
    plan = MailRouted.create(
        plan_id="large", group=0, groups=1, sender=pair.carol.email,
        recipients=(pair.alice.email,), action="open", reason="test",
        body=BodyRef(key="large", size=len(message), sha256="0" * 64, chunks=1),
    )  # fmt: skip

    result = asyncio.run(processor(pair).open(plan, message))

    done = [operation.operation for operation in result.operations]
    assert done == ["decrypt", "verify"], result.operations
    opened = body_bytes(result)
    assert b"X-Smimegw-Signature: layer=1; index=1; result=valid;" in opened
    assert b"Subject: large incoming\r\n" in opened
    # The signed layer is delivered as it came: OpenSSL must still verify it.
    content = openssl("-verify", "-CAfile", pair.ca.cert_path, data=opened)
    text_part, attachment_part = parts_of(content)
    assert text_part.get_payload(decode=True) == text
    assert attachment_part.get_payload(decode=True) == attachment

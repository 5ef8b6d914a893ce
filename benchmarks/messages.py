"""Test messages: plain 100 KB mail, and incoming mail signed and encrypted to us.

Each message carries its benchmark id in an `X-Bench-Id` header, so the sink
can match what arrives with what the load generator sent.
"""

from __future__ import annotations

import base64
import random
from datetime import UTC, datetime
from email.utils import format_datetime

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers import algorithms
from cryptography.hazmat.primitives.serialization import Encoding, pkcs7

from benchmarks.keys import Identity

_WORDS = (
    "gateway",
    "certificate",
    "envelope",
    "signature",
    "recipient",
    "message",
    "relay",
    "stream",
    "consumer",
    "handler",
    "delivery",
    "policy",
    "digest",
    "cipher",
    "header",
    "boundary",
)


def text_body(size: int, seed: int) -> bytes:
    """Printable text of about `size` bytes in CRLF lines of at most 76 characters."""
    rng = random.Random(seed)
    lines: list[str] = []
    total = 0
    while total < size:
        line = " ".join(rng.choice(_WORDS) for _ in range(9))[:76]
        lines.append(line)
        total += len(line) + 2
    return ("\r\n".join(lines) + "\r\n").encode("ascii")


def _headers(bench_id: str, sender: str, recipients: list[str], subject: str) -> str:
    # Every recipient in To, one per folded line: a recipient missing from the
    # header fields is a Bcc recipient, and the gateway encrypts a separate
    # copy for each of those.
    to_field = ",\r\n ".join(recipients)
    return (
        f"From: <{sender}>\r\n"
        f"To: {to_field}\r\n"
        f"Subject: {subject}\r\n"
        f"Date: {format_datetime(datetime.now(UTC))}\r\n"
        f"Message-ID: <{bench_id}@bench.smimegw.localhost>\r\n"
        f"X-Bench-Id: {bench_id}\r\n"
        "MIME-Version: 1.0\r\n"
    )


def plain_message(
    bench_id: str, sender: str, recipients: list[str], body: bytes
) -> bytes:
    """Build a text/plain message around `body`."""
    head = _headers(bench_id, sender, recipients, f"benchmark {bench_id}")
    head += "Content-Type: text/plain; charset=us-ascii\r\n"
    head += "Content-Transfer-Encoding: 7bit\r\n\r\n"
    return head.encode("ascii") + body


def _base64_lines(data: bytes) -> bytes:
    encoded = base64.b64encode(data)
    return (
        b"\r\n".join(encoded[i : i + 76] for i in range(0, len(encoded), 76)) + b"\r\n"
    )


def signed_and_encrypted(
    bench_id: str,
    signer: Identity,
    recipient: Identity,
    body: bytes,
) -> bytes:
    """Build an RFC 8551 message: multipart/signed (SHA-256), enveloped (AES-256-CBC).

    The signature is made over the CRLF entity as given (Binary), the way a
    client signs a canonical entity, and the result is wrapped by hand: this
    is the DER path, several times cheaper than cryptography's S/MIME output.
    """
    content = (
        b"Content-Type: text/plain; charset=us-ascii\r\n"
        b"Content-Transfer-Encoding: 7bit\r\n\r\n" + body
    )
    signature = (
        pkcs7.PKCS7SignatureBuilder()
        .set_data(content)
        .add_signer(signer.cert, signer.key, hashes.SHA256())
        .sign(
            Encoding.DER,
            [pkcs7.PKCS7Options.DetachedSignature, pkcs7.PKCS7Options.Binary],
        )
    )
    boundary = f"----=_bench_{bench_id}"
    signed_entity = (
        f'Content-Type: multipart/signed; protocol="application/pkcs7-signature"; '
        f'micalg=sha-256; boundary="{boundary}"\r\n\r\n'
        f"This is an S/MIME signed message\r\n\r\n--{boundary}\r\n"
    ).encode("ascii")
    signed_entity += content
    signed_entity += (
        f"\r\n--{boundary}\r\n"
        'Content-Type: application/pkcs7-signature; name="smime.p7s"\r\n'
        "Content-Transfer-Encoding: base64\r\n"
        'Content-Disposition: attachment; filename="smime.p7s"\r\n\r\n'
    ).encode("ascii")
    signed_entity += _base64_lines(signature) + f"\r\n--{boundary}--\r\n".encode()
    envelope = (
        pkcs7.PKCS7EnvelopeBuilder()
        .set_data(signed_entity)
        .add_recipient(recipient.cert)
        .set_content_encryption_algorithm(algorithms.AES256)
        .encrypt(Encoding.DER, [pkcs7.PKCS7Options.Binary])
    )
    head = _headers(bench_id, signer.email, [recipient.email], f"benchmark {bench_id}")
    head += (
        "Content-Type: application/pkcs7-mime; smime-type=enveloped-data; "
        'name="smime.p7m"\r\n'
        "Content-Transfer-Encoding: base64\r\n"
        'Content-Disposition: attachment; filename="smime.p7m"\r\n\r\n'
    )
    return head.encode("ascii") + _base64_lines(envelope)

"""Malformed SignedData: verify() returns a result or raises CmsError, nothing else."""

from __future__ import annotations

import base64
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.crypto.cms.errors import CmsError, MalformedCmsError
from services.crypto.cms.signed import sign, verify
from tests.crypto.test_trust import issue_ca, issue_signer

THUNDERBIRD = (
    Path(__file__).resolve().parents[2] / "../shared/interop/thunderbird/smime"
)
RFC4134 = Path(__file__).resolve().parents[2] / "../shared/interop/rfc4134"
CONTENT = b"Content-Type: text/plain\r\n\r\nfuzz\r\n"
NOW = datetime.now(UTC)


def _opaque_der(path: Path) -> bytes:
    message = path.read_bytes().replace(b"\r\n", b"\n")
    return base64.b64decode(message.split(b"\n\n", 1)[1])


def _seeds() -> tuple[list[bytes], x509.Certificate]:
    root = issue_ca("Fuzz Root")
    rsa_signer = issue_signer("Fuzz RSA", root, san_email="fuzz@example.com")
    ec_signer = issue_signer(
        "Fuzz EC", root, key=ec.generate_private_key(ec.SECP256R1())
    )
    seeds = [
        sign(CONTENT, rsa_signer.certificate, rsa_signer.key, rsa_padding="pss"),  # type: ignore[arg-type]
        sign(CONTENT, ec_signer.certificate, ec_signer.key, detached=False),  # type: ignore[arg-type]
        sign(CONTENT, rsa_signer.certificate, rsa_signer.key, capabilities=False),  # type: ignore[arg-type]
        # BER with indefinite lengths and chunked eContent, as NSS writes it.
        _opaque_der(THUNDERBIRD / "alice.sig.SHA256.opaque.eml"),
        # DSA with SHA-1.
        _opaque_der(RFC4134 / "4.9.eml"),
    ]
    return seeds, root.certificate


SEEDS, ANCHOR = _seeds()


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(min_value=1, max_value=4))):
        position = draw(st.integers(min_value=0, max_value=len(data) - 1))
        action = draw(st.sampled_from(["flip", "set", "delete", "insert", "truncate"]))
        if action == "flip":
            data[position] ^= 1 << draw(st.integers(min_value=0, max_value=7))
        elif action == "set":
            data[position] = draw(st.sampled_from([0x00, 0x80, 0x81, 0x84, 0xFF]))
        elif action == "delete":
            del data[position : position + draw(st.integers(min_value=1, max_value=16))]
        elif action == "insert":
            data[position:position] = draw(st.binary(min_size=1, max_size=8))
        else:
            del data[position:]
        if not data:
            break
    return bytes(data)


def _verify_or_cms_error(der: bytes, detached: bool) -> None:
    try:
        result = verify(
            der,
            detached_content=CONTENT if detached else None,
            trust_anchors=[ANCHOR],
            now=NOW,
        )
    except CmsError:
        return
    for signer in result.signers:
        assert signer.signature in ("valid", "invalid")


@settings(
    max_examples=2500,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(der=mutated(), detached=st.booleans())
def test_mutated_signed_data(der: bytes, detached: bool) -> None:
    _verify_or_cms_error(der, detached)


SIGNED_DATA_PREFIX = bytes.fromhex("3080 0609 2a864886f70d010702 a080".replace(" ", ""))


@settings(max_examples=1000, deadline=None, database=None)
@given(
    tail=st.binary(max_size=600),
    with_prefix=st.booleans(),
    detached=st.booleans(),
)
def test_random_bytes(tail: bytes, with_prefix: bool, detached: bool) -> None:
    _verify_or_cms_error(SIGNED_DATA_PREFIX + tail if with_prefix else tail, detached)


@pytest.mark.parametrize(
    "der",
    [
        b"\x30\x80" * 50_000,
        SIGNED_DATA_PREFIX + b"\x30\x80" * 50_000,
        b"\x30\x84\xff\xff\xff\xff" + b"\x00" * 16,
        b"\x30\x89" + b"\xff" * 9,
        b"",
    ],
    ids=["nested", "nested-in-signed-data", "huge-length", "overlong-length", "empty"],
)
def test_hostile_encodings_rejected_quickly(der: bytes) -> None:
    started = time.monotonic()

    with pytest.raises(MalformedCmsError):
        verify(der, detached_content=CONTENT, trust_anchors=[ANCHOR], now=NOW)

    assert time.monotonic() - started < 2.0

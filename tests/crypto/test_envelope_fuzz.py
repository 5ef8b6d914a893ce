"""Property test: broken enveloped messages raise only CmsError subclasses.

Valid messages of every recipient and content kind are mutated (bit flips, byte
changes, insertions, deletions, truncations) and fed to `decrypt` and
`recipient_ids`, next to random bytes. Either call may succeed, when a mutation
leaves the message valid, or raise a CmsError; any other exception is a bug.
"""

from __future__ import annotations

import contextlib
import datetime
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.crypto.cms import envelope
from services.crypto.cms.envelope import RecipientKey
from services.crypto.cms.errors import CmsError

RFC4134 = Path(__file__).resolve().parents[3] / "shared" / "interop" / "rfc4134"

pytestmark = pytest.mark.skipif(
    not RFC4134.is_dir(), reason="the S/MIME interop corpus is not next to the repo"
)

FUZZ_SETTINGS = settings(
    max_examples=2500,
    deadline=None,
    database=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)


def _ec_recipient() -> RecipientKey:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fuzz")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(7)
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False
        )
        .sign(key, hashes.SHA256())
    )
    return RecipientKey(certificate, key)


def _bob() -> RecipientKey:
    # RSA-1024 from RFC 4134: small keys keep thousands of decryptions fast.
    key = serialization.load_pem_private_key(
        (RFC4134 / "BobPrivRSAEncrypt.pem").read_bytes(), password=None
    )
    assert isinstance(key, rsa.RSAPrivateKey)
    certificate = x509.load_pem_x509_certificate(
        (RFC4134 / "BobRSASignByCarl.pem").read_bytes()
    )
    return RecipientKey(certificate, key)


def _seeds() -> tuple[list[RecipientKey], list[bytes]]:
    if not RFC4134.is_dir():
        return [], [b""]
    bob, ec_key = _bob(), _ec_recipient()
    both = [bob.certificate, ec_key.certificate]
    seeds = [
        (RFC4134 / "5.1.bin").read_bytes(),
        envelope.encrypt(b"fuzz seed", both, content_algorithm="aes128-gcm"),
        envelope.encrypt(
            b"fuzz seed",
            both,
            content_algorithm="3des-cbc",
            rsa_key_transport="rsa-oaep-sha256",
            recipient_id="subject-key-identifier",
        ),
        envelope.encrypt(
            b"x" * 40, [ec_key.certificate], content_algorithm="aes256-cbc"
        ),
    ]
    return [bob, ec_key], seeds


KEYS, SEEDS = _seeds()


@st.composite
def mutated_messages(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from(SEEDS)))
    edits = draw(st.integers(min_value=1, max_value=4))
    for _ in range(edits):
        if not data:
            break
        position = draw(st.integers(min_value=0, max_value=len(data) - 1))
        edit = draw(st.sampled_from(["flip", "set", "insert", "delete", "truncate"]))
        if edit == "flip":
            data[position] ^= 1 << draw(st.integers(min_value=0, max_value=7))
        elif edit == "set":
            data[position] = draw(st.sampled_from([0x00, 0x80, 0x81, 0x84, 0xFF, 0x30]))
        elif edit == "insert":
            data[position:position] = draw(st.binary(min_size=1, max_size=8))
        elif edit == "delete":
            del data[position : position + draw(st.integers(1, 8))]
        else:
            del data[position:]
    return bytes(data)


def _check_only_cms_errors(data: bytes) -> None:
    with contextlib.suppress(CmsError):
        envelope.recipient_ids(data)
    with contextlib.suppress(CmsError):
        envelope.decrypt(data, KEYS)


@FUZZ_SETTINGS
@given(mutated_messages())
def test_mutated_messages_raise_cms_errors(data: bytes) -> None:
    _check_only_cms_errors(data)


@settings(FUZZ_SETTINGS, max_examples=1000)
@given(
    st.one_of(
        st.binary(max_size=512),
        # A SEQUENCE header first gets random bytes past the outermost check.
        st.binary(max_size=512).map(
            lambda body: b"\x30\x82" + len(body).to_bytes(2, "big") + body
        ),
    )
)
def test_random_bytes_raise_cms_errors(data: bytes) -> None:
    _check_only_cms_errors(data)


def test_seeds_decrypt() -> None:
    # The properties above mean little unless the unmutated seeds are valid.
    for seed in SEEDS:
        assert envelope.decrypt(seed, KEYS).content

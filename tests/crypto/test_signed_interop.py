"""SignedData written by other implementations: NSS (Thunderbird), RFC 4134, RFC 9216.

The signed MIME part is cut out of each message as raw bytes: the stdlib email parser
would re-encode it, and a multipart/signed signature covers the part byte for byte.
"""

from __future__ import annotations

import base64
import csv
import re
import subprocess
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest
from cryptography import x509

from services.crypto.cms.signed import SignerResult, verify

INTEROP = Path(__file__).resolve().parents[2] / "../shared/interop"
THUNDERBIRD = INTEROP / "thunderbird/smime"
RFC4134 = INTEROP / "rfc4134"
RFC9216 = INTEROP / "rfc9216"


@dataclass(frozen=True)
class Layer:
    """One signature layer of a message, outermost first."""

    der: bytes
    detached_content: bytes | None


def canonical(entity: bytes) -> bytes:
    """Return `entity` with CRLF line ends (RFC 8551 section 3.1.1)."""
    return re.sub(rb"(?<!\r)\n", b"\r\n", entity)


def split_entity(entity: bytes) -> tuple[dict[str, str], bytes]:
    """Split a MIME entity into unfolded, lower-cased headers and its raw body."""
    head, _, body = entity.partition(b"\r\n\r\n")
    if entity.startswith(b"\r\n"):  # an entity without headers
        head, body = b"", entity[2:]
    headers: dict[str, str] = {}
    # One hand-edited Date header in the corpus ends with a bare LF.
    for line in re.split(rb"\r?\n(?![ \t])", head):
        name, _, value = line.decode("ascii").partition(":")
        if name:
            headers[name.strip().lower()] = " ".join(value.split())
    return headers, body


def split_multipart_signed(body: bytes, boundary: bytes) -> tuple[bytes, bytes]:
    """Return the signed part and the signature part body of multipart/signed.

    RFC 2046 section 5.1.1: the CRLF before a delimiter belongs to the delimiter, so
    it is not part of the signed bytes (RFC 1847 section 2.1).
    """
    delimiter = b"--" + boundary
    # The body starts with the first delimiter, or with a preamble before it.
    position = 0 if body.startswith(delimiter) else body.index(b"\r\n" + delimiter) + 2
    parts = []
    for _ in range(2):
        part_start = body.index(b"\r\n", position) + 2
        part_end = body.index(b"\r\n" + delimiter, part_start)
        parts.append(body[part_start:part_end])
        position = part_end + 2
    signed, signature_part = parts
    _, signature_body = split_entity(signature_part)
    return signed, base64.b64decode(signature_body)


def verify_layers(
    message: bytes, anchors: list[x509.Certificate], from_address: str | None = None
) -> list[SignerResult]:
    """Verify each signature layer from the outside in; return each first signer."""
    outcomes = []
    entity = message
    for _ in range(5):
        headers, body = split_entity(entity)
        content_type = headers.get("content-type", "")
        if content_type.startswith("multipart/signed"):
            match = re.search(r'boundary="([^"]+)"', content_type) or re.search(
                r"boundary=([^;\s]+)", content_type
            )
            assert match is not None
            signed, der = split_multipart_signed(body, match.group(1).encode())
            detached: bytes | None = signed
        elif "pkcs7-mime" in content_type and "signed-data" in content_type:
            der, detached = base64.b64decode(body), None
        else:
            break
        result = verify(
            der,
            detached_content=detached,
            trust_anchors=anchors,
            now=datetime.now(UTC),
            from_address=from_address if not outcomes else None,
        )
        outcomes.append(result.signers[0])
        # NSS writes the content of an opaque signature with bare LF line ends.
        entity = canonical(result.content)
    return outcomes


def thunderbird_cases() -> list[tuple[str, list[str]]]:
    """Rows of expected.tsv for unencrypted messages whose every layer is asserted."""
    with (THUNDERBIRD / "../expected.tsv").open(newline="") as table:
        rows = [row for row in csv.reader(table, delimiter="\t") if row[0][:1] != "#"]
    cases = []
    for name, decrypts, signatures in rows[1:]:
        expected = signatures.split(",")
        if decrypts == "no" and "unasserted" not in expected:
            cases.append((name, expected))
    return cases


@pytest.fixture(scope="module")
def nss_anchor() -> x509.Certificate:
    return x509.load_pem_x509_certificate((THUNDERBIRD / "TestCA.pem").read_bytes())


def test_thunderbird_corpus_selected() -> None:
    names = [name for name, _ in thunderbird_cases()]

    assert "alice.dsig.SHA256.multipart.eml" in names
    assert "alice.sig.SHA1.opaque.eml" in names
    assert "alice.dsig.SHA512.multipart.mismatch-econtent.eml" in names
    assert not [name for name in names if ".env" in name]


@pytest.mark.parametrize(
    ("name", "expected"), thunderbird_cases(), ids=[c[0] for c in thunderbird_cases()]
)
def test_thunderbird_message(
    nss_anchor: x509.Certificate, name: str, expected: list[str]
) -> None:
    message = (THUNDERBIRD / name).read_bytes()
    headers, _ = split_entity(message)

    outcomes = verify_layers(message, [nss_anchor], headers["from"])

    assert len(outcomes) == len(expected)
    for outcome, wanted in zip(outcomes, expected, strict=True):
        if wanted == "invalid":
            assert outcome.signature == "invalid"
            continue
        assert outcome.signature == "valid", outcome.signature_reason
        assert outcome.weak is (wanted == "weak")
        assert outcome.certificate_status == "trusted", outcome.certificate_reason
        assert outcome.signature_algorithm == "rsa-pkcs1v15"
    # The From header names the outermost signer, with other letter case.
    if outcomes[0].signer is not None:
        assert outcomes[0].signer.from_matches is True


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("alice.dsig.SHA256.multipart.bad.eml", "digest mismatch"),
        (
            "alice.dsig.SHA256.multipart.mismatch-econtent.eml",
            "detached signature also carries content",
        ),
    ],
)
def test_thunderbird_invalid_reason(
    nss_anchor: x509.Certificate, name: str, reason: str
) -> None:
    [outcome] = verify_layers((THUNDERBIRD / name).read_bytes(), [nss_anchor])

    assert outcome.signature_reason == reason


def test_thunderbird_signer_identity(nss_anchor: x509.Certificate) -> None:
    message = (THUNDERBIRD / "alice.sig.SHA256.opaque.eml").read_bytes()

    [outcome] = verify_layers(message, [nss_anchor], "alice@EXAMPLE.com")

    assert outcome.signer is not None
    assert outcome.signer.email_addresses == ("Alice@example.com",)
    assert outcome.signer.from_matches is True
    assert outcome.signer.subject.startswith("CN=Alice,")
    assert outcome.signing_time is not None
    assert outcome.signing_time.year == 2026


def test_thunderbird_untrusted_without_anchor() -> None:
    other = x509.load_pem_x509_certificate(
        (
            RFC9216 / "Sample_LAMPS_RSA_Certification_Authority.selfsigned.pem"
        ).read_bytes()
    )
    message = (THUNDERBIRD / "alice.sig.SHA256.opaque.eml").read_bytes()

    [outcome] = verify_layers(message, [other])

    assert outcome.signature == "valid"
    assert outcome.certificate_status == "untrusted"


def test_thunderbird_nested_sigs_outer_layer_invalid() -> None:
    # OpenSSL 3.0 finds the same digest failure in this message's outer signature.
    browser = INTEROP / "thunderbird/browser"
    anchor = x509.load_pem_x509_certificate((browser / "TestCA.pem").read_bytes())

    outcomes = verify_layers((browser / "nested-sigs.eml").read_bytes(), [anchor])

    assert outcomes[0].signature == "invalid"
    assert outcomes[0].signature_reason == "digest mismatch"
    assert outcomes[0].signer is not None
    assert "kaie@thunderbird.net" in outcomes[0].signer.email_addresses


@pytest.mark.parametrize("name", ["4.8.eml", "4.9.eml"])
def test_rfc4134_dsa_sha1(name: str) -> None:
    # The RFC's files use LF line ends; its signatures cover CRLF text.
    message = (RFC4134 / name).read_bytes().replace(b"\n", b"\r\n")
    carl = x509.load_pem_x509_certificate((RFC4134 / "CarlDSSSelf.pem").read_bytes())

    [outcome] = verify_layers(message, [carl])

    assert outcome.signature == "valid", outcome.signature_reason
    assert outcome.signature_algorithm == "dsa"
    assert outcome.digest_algorithm == "sha1"
    assert outcome.weak is True
    # The path builder accepts RSA and ECDSA keys only, so a DSA CA cannot anchor.
    assert outcome.certificate_status == "untrusted"
    assert outcome.signer is not None
    assert outcome.signer.subject == "CN=AliceDSS"


def test_rfc4134_tampered_invalid() -> None:
    message = (RFC4134 / "4.8.eml").read_bytes().replace(b"\n", b"\r\n")
    tampered = message.replace(b"sample content", b"simple content")
    carl = x509.load_pem_x509_certificate((RFC4134 / "CarlDSSSelf.pem").read_bytes())

    [outcome] = verify_layers(tampered, [carl])

    assert outcome.signature == "invalid"


def test_rfc9216_alice_signed_by_openssl(tmp_path: Path) -> None:
    content = b"Content-Type: text/plain\r\n\r\nHello from Alice Lovelace.\r\n"
    (tmp_path / "content.txt").write_bytes(content)
    key_and_certificate = RFC9216 / "alice@smime.example.sig.pem"
    signed = subprocess.run(
        [
            "openssl", "cms", "-sign", "-binary", "-md", "sha256",
            "-signer", str(key_and_certificate), "-outform", "DER",
            "-in", str(tmp_path / "content.txt"),
        ],
        capture_output=True,
        timeout=30,
        check=False,
    )  # fmt: skip
    assert signed.returncode == 0, signed.stderr.decode()
    anchor = x509.load_pem_x509_certificate(
        (
            RFC9216 / "Sample_LAMPS_RSA_Certification_Authority.selfsigned.pem"
        ).read_bytes()
    )

    result = verify(
        signed.stdout,
        detached_content=content,
        trust_anchors=[anchor],
        now=datetime.now(UTC),
        from_address="alice@smime.example",
    )

    [outcome] = result.signers
    assert outcome.signature == "valid"
    assert outcome.certificate_status == "trusted", outcome.certificate_reason
    assert outcome.signer is not None
    assert outcome.signer.email_addresses == ("alice@smime.example",)
    assert outcome.signer.from_matches is True

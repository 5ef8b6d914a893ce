"""Incoming S/MIME: detection on the interop corpus, extraction checked by OpenSSL."""

import base64
import binascii
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import pkcs12

from services.crypto.mime import (
    MalformedMimeError,
    SmimeKind,
    UnsupportedMimeError,
    cms_content_type,
    detect,
    kind_of_cms,
    normalize_micalg,
    replace_body,
)
from services.crypto.mime.encoding import decode_base64, looks_like_base64
from tests.crypto.test_mime_support import INTEROP, openssl_cms

THUNDERBIRD = INTEROP / "thunderbird"
RFC4134 = INTEROP / "rfc4134"
TEST_CA = THUNDERBIRD / "smime" / "TestCA.pem"

_NOT_MESSAGES = {".p12", ".pem", ".md", ".txt", ".tsv"}
_NONE_AT_TOP = {
    # S/MIME parts nested in multipart/mixed or multipart/alternative.
    "alice.dsig.SHA256.multipart.in.mixed.eml",
    "alice.dsig.SHA256.multipart.in.mixed.with.header.eml",
    "multipart-alternative.eml",
    # multipart/signed with protocol application/pgp-signature.
    "outer-pgp-sig-inner-smime-enc-sig.eml",
    "outer-pgp-sig-inner-smime-enc.eml",
    # Bare MIME entities that were signed or encrypted to make the corpus.
    "alice.mime",
    "alice.textplain",
}
_DETACHED_BY_NAME = {
    "nested-sigs.eml",
    "alice.dsig.SHA256.multipart.env.dsig.eml",
    "alice.env.mixed.dsig.SHA256.multipart.eml",
    "outer-smime-bad-sig-inner-smime-enc-sig.eml",
    "outer-smime-bad-sig-inner-smime-enc.eml",
}
# The RFC 4134 examples, by section: 4.8 multipart/signed, 4.9 opaque signed-data,
# 5.3 enveloped-data.
_RFC4134_KINDS = {
    "4.8.eml": SmimeKind.DETACHED_SIGNED,
    "4.9.eml": SmimeKind.OPAQUE_SIGNED,
    "5.3.eml": SmimeKind.ENVELOPED,
}


def expected_kind(path: Path) -> SmimeKind:
    """Return the kind of a corpus file, from its name and the corpus README.

    Names list the layers from the inside out, so the last of "env", "sig" (opaque)
    and "dsig" (multipart/signed) is the top-level one. Files without a header block
    are raw DER CMS objects.
    """
    name = path.name
    if path.parent == RFC4134:
        return _RFC4134_KINDS[name]
    if path.suffix in _NOT_MESSAGES or name in _NONE_AT_TOP:
        return SmimeKind.NONE
    if name in _DETACHED_BY_NAME:
        return SmimeKind.DETACHED_SIGNED
    if path.read_bytes().startswith(b"\x30"):
        return SmimeKind.NONE
    layers = [part for part in name.split(".") if part in {"env", "sig", "dsig"}]
    return {
        "env": SmimeKind.ENVELOPED,
        "sig": SmimeKind.OPAQUE_SIGNED,
        "dsig": SmimeKind.DETACHED_SIGNED,
    }[layers[-1]]


CORPUS = sorted(
    [path for path in THUNDERBIRD.rglob("*") if path.is_file()]
    + list(RFC4134.glob("*.eml"))
)


def test_corpus_is_present() -> None:
    assert len(CORPUS) > 100


@pytest.mark.parametrize("path", CORPUS, ids=lambda p: str(p.relative_to(INTEROP)))
def test_detect_corpus_kind(path: Path) -> None:
    assert detect(path.read_bytes()).kind is expected_kind(path)


def test_detect_rfc4134_examples() -> None:
    detached = detect((RFC4134 / "4.8.eml").read_bytes())
    opaque = detect((RFC4134 / "4.9.eml").read_bytes())
    enveloped = detect((RFC4134 / "5.3.eml").read_bytes())

    assert detached.kind is SmimeKind.DETACHED_SIGNED
    assert detached.micalg == "sha1"
    assert detached.micalg_parameter == "SHA1"
    assert opaque.kind is SmimeKind.OPAQUE_SIGNED
    assert opaque.der is not None
    assert cms_content_type(opaque.der) == "signed_data"
    assert enveloped.kind is SmimeKind.ENVELOPED
    assert enveloped.der is not None
    assert cms_content_type(enveloped.der) == "enveloped_data"


def _verify_detached(
    tmp_path: Path, content: bytes, der: bytes, ca: Path | None
) -> tuple[int, str]:
    """Verify with OpenSSL; without `ca`, only the signature, not the chain."""
    (tmp_path / "signed.bin").write_bytes(content)
    (tmp_path / "sig.der").write_bytes(der)
    trust = ["-noverify"] if ca is None else ["-CAfile", str(ca), "-purpose", "any"]
    result = openssl_cms(
        "-verify", "-binary", "-inform", "DER", "-in", tmp_path / "sig.der",
        "-content", tmp_path / "signed.bin", *trust, "-out", tmp_path / "out.bin",
    )  # fmt: skip
    return result.returncode, result.stderr.decode()


DSIG_FILES = sorted((THUNDERBIRD / "smime").glob("alice.dsig.SHA*.multipart*.eml"))
DSIG_FILES = [path for path in DSIG_FILES if ".env." not in path.name]
DSIG_FILES.append(THUNDERBIRD / "smime" / "alice.future.dsig.SHA256.multipart.eml")


@pytest.mark.parametrize("path", DSIG_FILES, ids=lambda p: p.name)
def test_detached_signature_verifies_with_openssl(path: Path, tmp_path: Path) -> None:
    found = detect(path.read_bytes())
    assert found.kind is SmimeKind.DETACHED_SIGNED
    assert found.signed_content is not None
    assert found.der is not None
    assert found.signed_content_crlf is None

    returncode, stderr = _verify_detached(
        tmp_path, found.signed_content, found.der, TEST_CA
    )

    # .bad changed the text after signing; .mismatch-econtent carries other content.
    if ".bad." in path.name or "mismatch-econtent" in path.name:
        assert returncode != 0
    else:
        assert returncode == 0, stderr


def test_dsig_files_cover_every_digest() -> None:
    names = {path.name for path in DSIG_FILES}
    for digest in ("SHA1", "SHA256", "SHA384", "SHA512"):
        assert f"alice.dsig.{digest}.multipart.eml" in names
        assert f"alice.dsig.{digest}.multipart.bad.eml" in names


@pytest.mark.parametrize("digest", ["SHA256", "SHA512"])
def test_lf_message_offers_crlf_variant(digest: str, tmp_path: Path) -> None:
    # The corpus stores these with LF line ends; they were signed with CRLF. Their
    # signer certificate comes from an earlier, expired test CA, so only the
    # signature itself is checked.
    path = THUNDERBIRD / "smime" / f"alice.dsig.{digest}.multipart"
    found = detect(path.read_bytes())
    assert found.signed_content is not None
    assert found.signed_content_crlf is not None
    assert found.der is not None

    as_received, _ = _verify_detached(tmp_path, found.signed_content, found.der, None)
    converted, stderr = _verify_detached(
        tmp_path, found.signed_content_crlf, found.der, None
    )

    assert as_received != 0
    assert converted == 0, stderr
    assert found.signed_content_crlf == found.signed_content.replace(b"\n", b"\r\n")


def test_rfc4134_part_without_headers_verifies(tmp_path: Path) -> None:
    found = detect((RFC4134 / "4.8.eml").read_bytes())
    assert found.signed_content == b"\nThis is some sample content."
    assert found.signed_content_crlf == b"\r\nThis is some sample content."
    assert found.der is not None

    returncode, stderr = _verify_detached(
        tmp_path, found.signed_content_crlf, found.der, RFC4134 / "CarlDSSSelf.pem"
    )

    assert returncode == 0, stderr


@pytest.fixture(scope="module")
def enveloped_der() -> bytes:
    der = detect((THUNDERBIRD / "smime" / "alice.env.eml").read_bytes()).der
    assert der is not None
    return der


@pytest.fixture(scope="module")
def signature_der() -> bytes:
    path = THUNDERBIRD / "smime" / "alice.dsig.SHA256.multipart.eml"
    der = detect(path.read_bytes()).der
    assert der is not None
    return der


def _base64(der: bytes) -> bytes:
    return base64.encodebytes(der).replace(b"\n", b"\r\n")


def _pkcs7_message(content_type: bytes, body: bytes, extra: bytes = b"") -> bytes:
    return (
        b"From: a@example.com\r\nContent-Type: "
        + content_type
        + b"\r\n"
        + extra
        + b"\r\n"
        + body
    )


@pytest.mark.parametrize(
    ("content_type", "kind", "smime_type"),
    [
        (
            b"application/pkcs7-mime; smime-type=enveloped-data",
            SmimeKind.ENVELOPED,
            "enveloped-data",
        ),
        (
            b"APPLICATION/PKCS7-MIME; SMIME-TYPE=ENVELOPED-DATA; NAME=SMIME.P7M",
            SmimeKind.ENVELOPED,
            "enveloped-data",
        ),
        (
            b'application/x-pkcs7-mime;\r\n\tsmime-type="enveloped-data"',
            SmimeKind.ENVELOPED,
            "enveloped-data",
        ),
        (
            b"application/pkcs7-mime; smime-type=authEnveloped-data",
            SmimeKind.ENVELOPED,
            "authenveloped-data",
        ),
        (
            b"Application/X-Pkcs7-Mime; smime-type=Signed-Data",
            SmimeKind.OPAQUE_SIGNED,
            "signed-data",
        ),
        (b"application/pkcs7-mime; name=smime.p7m", SmimeKind.PKCS7_MIME, None),
        (
            b"application/pkcs7-mime; smime-type=certs-only",
            SmimeKind.PKCS7_MIME,
            "certs-only",
        ),
        (b'application/octet-stream; name="SMIME.P7M"', SmimeKind.PKCS7_MIME, None),
    ],
)
def test_detect_pkcs7_mime_variants(
    content_type: bytes,
    kind: SmimeKind,
    smime_type: str | None,
    enveloped_der: bytes,
) -> None:
    message = _pkcs7_message(
        content_type,
        _base64(enveloped_der),
        b"Content-Transfer-Encoding: base64\r\n",
    )

    found = detect(message)

    assert found.kind is kind
    assert found.smime_type == smime_type
    assert found.der == enveloped_der


def test_detect_octet_stream_by_disposition_filename(enveloped_der: bytes) -> None:
    message = _pkcs7_message(
        b"application/octet-stream",
        _base64(enveloped_der),
        b"Content-Transfer-Encoding: BASE64\r\n"
        b'Content-Disposition: attachment; filename="Smime.P7m"\r\n',
    )

    found = detect(message)

    assert found.kind is SmimeKind.PKCS7_MIME
    assert found.der == enveloped_der
    assert kind_of_cms(enveloped_der) is SmimeKind.ENVELOPED


def test_detect_ignores_other_octet_stream(enveloped_der: bytes) -> None:
    message = _pkcs7_message(
        b'application/octet-stream; name="report.pdf"', _base64(enveloped_der)
    )

    assert detect(message).kind is SmimeKind.NONE


def test_detect_binary_pkcs7_mime(enveloped_der: bytes) -> None:
    message = _pkcs7_message(
        b"application/pkcs7-mime; smime-type=enveloped-data",
        enveloped_der,
        b"Content-Transfer-Encoding: binary\r\n",
    )

    assert detect(message).der == enveloped_der


def test_detect_base64_without_padding_or_label(enveloped_der: bytes) -> None:
    text = base64.b64encode(enveloped_der + b"\x00").rstrip(b"=")
    body = b"\n".join(text[i : i + 64] for i in range(0, len(text), 64)) + b"\n\n"
    message = _pkcs7_message(b"application/pkcs7-mime; smime-type=enveloped-data", body)

    assert detect(message).der == enveloped_der + b"\x00"


def test_detect_rejects_invalid_base64() -> None:
    message = _pkcs7_message(
        b"application/pkcs7-mime; smime-type=enveloped-data",
        b"MIIB*not base64*\r\n",
        b"Content-Transfer-Encoding: base64\r\n",
    )

    with pytest.raises(MalformedMimeError, match="not valid base64"):
        detect(message)


def _signed_message(
    parameters: bytes, signature: bytes, signature_encoding: bytes = b"base64"
) -> bytes:
    return (
        b"From: a@example.com\r\n"
        b"Content-Type: multipart/signed; " + parameters + b' boundary="sig"\r\n'
        b"\r\n"
        b"preamble\r\n"
        b"--sig\r\n"
        b"Content-Type: text/plain\r\n"
        b"\r\n"
        b"signed text\r\n"
        b"\r\n"
        b"--sig\r\n"
        b"Content-Type: application/pkcs7-signature; name=smime.p7s\r\n"
        b"Content-Transfer-Encoding: " + signature_encoding + b"\r\n"
        b"\r\n" + signature + b"\r\n"
        b"--sig--\r\n"
    )


@pytest.mark.parametrize(
    ("parameters", "micalg"),
    [
        (b'protocol="application/pkcs7-signature"; micalg=sha-256;', "sha256"),
        (b'protocol="application/x-pkcs7-signature"; micalg=SHA256;', "sha256"),
        (b'PROTOCOL="Application/PKCS7-Signature"; micalg="sha256";', "sha256"),
        (b"micalg=sha1;", "sha1"),
        (b'protocol="application/pkcs7-signature"; micalg=SHA1;', "sha1"),
        (b'protocol="application/pkcs7-signature";', None),
    ],
)
def test_detect_multipart_signed_variants(
    parameters: bytes, micalg: str | None, signature_der: bytes
) -> None:
    found = detect(_signed_message(parameters, _base64(signature_der)))

    assert found.kind is SmimeKind.DETACHED_SIGNED
    assert found.micalg == micalg
    assert found.der == signature_der
    assert found.signed_content == b"Content-Type: text/plain\r\n\r\nsigned text\r\n"
    assert found.signed_content_crlf is None


def test_detect_binary_signature_part(signature_der: bytes) -> None:
    message = _signed_message(b"micalg=sha-256;", signature_der, b"binary")

    assert detect(message).der == signature_der


def test_detect_ignores_pgp_multipart_signed(signature_der: bytes) -> None:
    message = _signed_message(
        b'protocol="application/pgp-signature"; micalg=pgp-sha256;',
        _base64(signature_der),
    )

    assert detect(message).kind is SmimeKind.NONE


def test_detect_keeps_unknown_micalg_raw(signature_der: bytes) -> None:
    found = detect(_signed_message(b"micalg=foo-512;", _base64(signature_der)))

    assert found.micalg is None
    assert found.micalg_parameter == "foo-512"


def test_detect_rejects_multipart_signed_with_one_part() -> None:
    message = (
        b'Content-Type: multipart/signed; boundary="b"\r\n\r\n'
        b"--b\r\n\r\ntext\r\n--b--\r\n"
    )

    with pytest.raises(MalformedMimeError, match="fewer than two"):
        detect(message)


def test_detect_rejects_multipart_signed_with_three_parts() -> None:
    message = (
        b'Content-Type: multipart/signed; boundary="b"\r\n\r\n'
        b"--b\r\n\r\none\r\n--b\r\n\r\ntwo\r\n--b\r\n\r\nthree\r\n--b--\r\n"
    )

    with pytest.raises(MalformedMimeError, match="more than two"):
        detect(message)


def test_detect_rejects_multipart_signed_without_boundary() -> None:
    message = b"Content-Type: multipart/signed; micalg=sha1\r\n\r\nx\r\n"

    with pytest.raises(MalformedMimeError, match="boundary"):
        detect(message)


def test_detect_only_reads_first_content_type() -> None:
    message = (
        b"Content-Type: text/plain\r\n"
        b"Content-Type: application/pkcs7-mime; smime-type=enveloped-data\r\n"
        b"\r\nMIIB\r\n"
    )

    assert detect(message).kind is SmimeKind.NONE


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("sha-256", "sha256"),
        ("SHA256", "sha256"),
        ("sha256", "sha256"),
        ("SHA-256", "sha256"),
        ("sha1", "sha1"),
        ("SHA1", "sha1"),
        ("sha-1", "sha1"),
        ('"sha-512"', "sha512"),
        ("sha-384", "sha384"),
    ],
)
def test_normalize_micalg(value: str, expected: str) -> None:
    assert normalize_micalg(value) == expected


def test_normalize_micalg_rejects_unknown() -> None:
    with pytest.raises(UnsupportedMimeError, match="pgp-sha1"):
        normalize_micalg("pgp-sha1")


def test_cms_content_type_rejects_garbage() -> None:
    with pytest.raises(MalformedMimeError, match="ContentInfo"):
        cms_content_type(b"not DER at all")


@pytest.mark.filterwarnings("ignore:PKCS#12 bundle could not be parsed as DER")
def test_replace_body_after_decryption(enveloped_der: bytes, tmp_path: Path) -> None:
    # NSS writes BER, which cryptography's pkcs7 decryption does not parse, so
    # OpenSSL decrypts with Bob's key taken from his PKCS#12 file.
    message = (THUNDERBIRD / "smime" / "alice.env.eml").read_bytes()
    key = pkcs12.load_key_and_certificates(
        (THUNDERBIRD / "smime" / "Bob.p12").read_bytes(), b"nss"
    )[0]
    assert key is not None
    (tmp_path / "bob.pem").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    (tmp_path / "env.der").write_bytes(enveloped_der)
    decrypted = openssl_cms(
        "-decrypt", "-binary", "-inform", "DER", "-in", tmp_path / "env.der",
        "-inkey", tmp_path / "bob.pem", "-out", tmp_path / "entity.bin",
    )  # fmt: skip
    assert decrypted.returncode == 0, decrypted.stderr.decode()
    entity = (tmp_path / "entity.bin").read_bytes()

    result = replace_body(message, entity)

    outer_end = message.index(b"Content-Type:")
    assert result.startswith(message[:outer_end])
    assert result.endswith(entity)
    assert len(result) == outer_end + len(entity)
    assert b"This is a test message from Alice to Bob." in result
    assert detect(result).kind is SmimeKind.NONE


def test_replace_body_drops_every_content_field() -> None:
    message = (
        b"Subject: s\r\n"
        b"Content-Type: application/pkcs7-mime;\r\n smime-type=enveloped-data\r\n"
        b"X-Kept: yes\r\n"
        b"Content-Transfer-Encoding: base64\r\n"
        b"Content-Disposition: attachment; filename=smime.p7m\r\n"
        b"\r\nMIIB\r\n"
    )
    entity = b"Content-Type: text/plain\r\n\r\nhello\r\n"

    assert replace_body(message, entity) == (
        b"Subject: s\r\nX-Kept: yes\r\nContent-Type: text/plain\r\n\r\nhello\r\n"
    )


def test_replace_body_with_headerless_entity() -> None:
    message = b"Subject: s\r\nContent-Type: application/pkcs7-mime\r\n\r\nMIIB\r\n"

    assert replace_body(message, b"hello\r\n") == b"Subject: s\r\n\r\nhello\r\n"


def test_detect_binary_der_without_trailing_line_end() -> None:
    # The RFC 4134 signature is DER with a definite length, unlike the NSS ones.
    signature = detect((RFC4134 / "4.8.eml").read_bytes()).der
    assert signature is not None
    assert signature[:2] == b"\x30\x82"
    message = _signed_message(b"micalg=sha-256;", signature + b"\r\n\r\n", b"binary")

    assert detect(message).der == signature


def test_detect_quoted_printable_pkcs7_mime(enveloped_der: bytes) -> None:
    body = binascii.b2a_qp(enveloped_der)
    message = _pkcs7_message(
        b"application/pkcs7-mime; smime-type=enveloped-data",
        body,
        b"Content-Transfer-Encoding: quoted-printable\r\n",
    )

    assert detect(message).der == enveloped_der


def test_base64_body_decodes_across_windows() -> None:
    """A body of several decoding windows, with line ends and padding, decodes whole."""
    payload = bytes(range(256)) * 12_289  # 3 MB, and 12289 * 256 % 3 leaves padding
    text = base64.encodebytes(payload).replace(b"\n", b"\r\n")
    message = (
        b"Content-Type: application/pkcs7-mime; smime-type=enveloped-data\r\n"
        b"Content-Transfer-Encoding: base64\r\n\r\n" + text
    )

    assert decode_base64(message, "body", len(message) - len(text)) == payload
    assert text.rstrip().endswith(b"=")


def test_base64_invalid_in_later_window() -> None:
    text = base64.encodebytes(bytes(3_000_000))
    broken = text[:2_500_000] + b"!" + text[2_500_000:]
    padded_early = text[:1_500_000] + b"==" + text[1_500_000:]

    with pytest.raises(MalformedMimeError, match="outside the base64 alphabet"):
        decode_base64(broken, "body")
    with pytest.raises(MalformedMimeError, match="padding before its end"):
        decode_base64(padded_early, "body")
    assert not looks_like_base64(broken)


def test_content_type_read_without_asn1crypto_matches() -> None:
    """The header shortcut and asn1crypto agree, and BER goes to asn1crypto."""
    enveloped_oid = bytes.fromhex("06092a864886f70d010703")
    definite = b"\x30\x11" + enveloped_oid + b"\xa0\x04\x04\x02ok"
    indefinite = b"\x30\x80" + enveloped_oid + b"\xa0\x80\x04\x02ok\x00\x00\x00\x00"

    assert cms_content_type(definite) == "enveloped_data"
    assert cms_content_type(indefinite) == "enveloped_data"
    with pytest.raises(MalformedMimeError):
        cms_content_type(b"\x30\x11" + enveloped_oid)

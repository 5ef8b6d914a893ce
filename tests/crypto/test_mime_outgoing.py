"""Outgoing S/MIME: split, canonical form and wrapping, checked with `openssl cms`."""

import base64
import email
import email.policy
from pathlib import Path

import pytest

from services.crypto.mime import (
    MalformedMimeError,
    SmimeKind,
    UnsupportedMimeError,
    build_pkcs7_mime,
    build_signed_multipart,
    canonicalize,
    detect,
    join_message,
    micalg_parameter,
    pkcs7_mime_entity,
    replace_body,
    signed_multipart_entity,
    split_message,
)
from tests.crypto.test_mime_support import Pki, make_pki, openssl_cms

MESSAGE = (
    b"Received: from client.example.com by mx.example.com;\r\n"
    b"  Fri, 4 Dec 2026 10:00:00 +0000\r\n"
    b"From: Alice <alice@example.com>\r\n"
    b"To: Bob <bob@example.net>\r\n"
    b"Subject: Quarterly report\r\n"
    b"MIME-Version: 1.0\r\n"
    b"Content-Type: text/plain;\r\n"
    b"\tcharset=utf-8\r\n"
    b"Content-Transfer-Encoding: 8bit\r\n"
    b"Message-ID: <1@example.com>\r\n"
    b"Content-Language: de\r\n"
    b"\r\n"
    b"Gr\xc3\xbc\xc3\x9fe aus M\xc3\xbcnchen\r\n"
)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


def _lines(data: bytes) -> list[bytes]:
    return data.split(b"\r\n")


def test_split_message_moves_content_fields() -> None:
    outer, entity = split_message(MESSAGE)

    assert outer == (
        b"Received: from client.example.com by mx.example.com;\r\n"
        b"  Fri, 4 Dec 2026 10:00:00 +0000\r\n"
        b"From: Alice <alice@example.com>\r\n"
        b"To: Bob <bob@example.net>\r\n"
        b"Subject: Quarterly report\r\n"
        b"MIME-Version: 1.0\r\n"
        b"Message-ID: <1@example.com>\r\n"
    )
    assert entity == (
        b"Content-Type: text/plain;\r\n"
        b"\tcharset=utf-8\r\n"
        b"Content-Transfer-Encoding: 8bit\r\n"
        b"Content-Language: de\r\n"
        b"\r\n"
        b"Gr\xc3\xbc\xc3\x9fe aus M\xc3\xbcnchen\r\n"
    )


def test_split_message_defaults_to_text_plain() -> None:
    outer, entity = split_message(b"From: a@example.com\nSubject: hi\n\nhello\n")

    assert outer == b"From: a@example.com\r\nSubject: hi\r\n"
    assert entity == b"Content-Type: text/plain; charset=us-ascii\r\n\nhello\n"


def test_split_message_without_body() -> None:
    outer, entity = split_message(b"Subject: empty\r\nContent-Type: text/plain")

    assert outer == b"Subject: empty\r\n"
    assert entity == b"Content-Type: text/plain\r\n\r\n"


def test_canonicalize_keeps_7bit_part_bytes() -> None:
    entity = (
        b"Content-Type: text/plain; charset=us-ascii\r\n"
        b"Content-Transfer-Encoding: quoted-printable\r\n"
        b"\r\n"
        b"Trailing space=20\r\nsoft=\r\nbreak\r\n"
    )

    assert canonicalize(entity) == entity


def test_canonicalize_converts_lf_and_cr_line_ends() -> None:
    lf = b"Content-Type: text/plain\n\none\ntwo\n"
    cr = b"Content-Type: text/plain\r\rone\rtwo\r"
    expected = b"Content-Type: text/plain\r\n\r\none\r\ntwo\r\n"

    assert canonicalize(lf) == expected
    assert canonicalize(cr) == expected


def test_canonicalize_8bit_text_becomes_quoted_printable() -> None:
    _, entity = split_message(MESSAGE)

    canonical = canonicalize(entity)

    assert canonical == (
        b"Content-Type: text/plain;\r\n"
        b"\tcharset=utf-8\r\n"
        b"Content-Transfer-Encoding: quoted-printable\r\n"
        b"Content-Language: de\r\n"
        b"\r\n"
        b"Gr=C3=BC=C3=9Fe aus M=C3=BCnchen\r\n"
    )


def test_canonicalize_long_text_line_becomes_quoted_printable() -> None:
    entity = b"Content-Type: text/plain\r\n\r\n" + b"x" * 2000 + b"\r\n"

    canonical = canonicalize(entity)

    assert b"Content-Transfer-Encoding: quoted-printable\r\n" in canonical
    assert max(map(len, _lines(canonical))) <= 76
    parsed = email.message_from_bytes(canonical, policy=email.policy.compat32)
    assert parsed.get_payload(decode=True) == b"x" * 2000 + b"\r\n"


def test_canonicalize_binary_part_becomes_base64() -> None:
    data = bytes(range(256)) * 4
    entity = (
        b"Content-Type: application/octet-stream\r\n"
        b"Content-Transfer-Encoding: binary\r\n"
        b"\r\n" + data
    )

    canonical = canonicalize(entity)

    head, body = canonical.split(b"\r\n\r\n", 1)
    assert head == (
        b"Content-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64"
    )
    assert base64.b64decode(body) == data
    assert max(map(len, _lines(body))) == 76


def test_canonicalize_8bit_attachment_becomes_base64() -> None:
    entity = b"Content-Type: application/x-data\r\n\r\n\xff\xfe\nend\n"

    canonical = canonicalize(entity)

    head, body = canonical.split(b"\r\n\r\n", 1)
    assert head.endswith(b"Content-Transfer-Encoding: base64")
    assert base64.b64decode(body) == b"\xff\xfe\r\nend\r\n"


def test_canonicalize_multipart_keeps_structure() -> None:
    entity = (
        b'Content-Type: multipart/mixed; boundary="b1"\n'
        b"Content-Transfer-Encoding: 8bit\n"
        b"\n"
        b"preamble\n"
        b"--b1\n"
        b"Content-Type: text/plain; charset=utf-8\n"
        b"\n"
        b"caf\xc3\xa9\n"
        b"--b1  \n"
        b"Content-Type: message/rfc822\n"
        b"\n"
        b"Subject: inner\n"
        b"Content-Type: text/plain; charset=latin-1\n"
        b"\n"
        b"na\xefve\n"
        b"--b1--\n"
        b"epilogue\n"
    )

    canonical = canonicalize(entity)

    assert canonical == (
        b'Content-Type: multipart/mixed; boundary="b1"\r\n'
        b"Content-Transfer-Encoding: 7bit\r\n"
        b"\r\n"
        b"preamble\r\n"
        b"--b1\r\n"
        b"Content-Type: text/plain; charset=utf-8\r\n"
        b"Content-Transfer-Encoding: quoted-printable\r\n"
        b"\r\n"
        b"caf=C3=A9\r\n"
        b"--b1  \r\n"
        b"Content-Type: message/rfc822\r\n"
        b"\r\n"
        b"Subject: inner\r\n"
        b"Content-Type: text/plain; charset=latin-1\r\n"
        b"Content-Transfer-Encoding: quoted-printable\r\n"
        b"\r\n"
        b"na=EFve\r\n"
        b"--b1--\r\n"
        b"epilogue\r\n"
    )
    assert canonicalize(canonical) == canonical


def test_canonicalize_drops_8bit_preamble() -> None:
    entity = (
        b'Content-Type: multipart/mixed; boundary="b"\r\n\r\n'
        b"\xe9t\xe9\r\n--b\r\n\r\nx\r\n--b--\r\n"
    )

    assert canonicalize(entity) == (
        b'Content-Type: multipart/mixed; boundary="b"\r\n\r\n'
        b"\r\n--b\r\n\r\nx\r\n--b--\r\n"
    )


def test_canonicalize_rejects_8bit_part_header() -> None:
    entity = (
        b'Content-Type: multipart/mixed; boundary="b"\r\n\r\n'
        b"--b\r\n"
        b'Content-Disposition: attachment; filename="r\xc3\xa9sum\xc3\xa9.pdf"\r\n'
        b"\r\nx\r\n--b--\r\n"
    )

    with pytest.raises(UnsupportedMimeError, match="Content-Disposition"):
        canonicalize(entity)


def test_canonicalize_rejects_multipart_without_delimiter() -> None:
    entity = b'Content-Type: multipart/mixed; boundary="b"\r\n\r\nno parts\r\n'

    with pytest.raises(MalformedMimeError, match="no delimiter"):
        canonicalize(entity)


def test_canonicalize_rejects_unknown_encoding_of_8bit() -> None:
    entity = (
        b"Content-Type: text/plain\r\nContent-Transfer-Encoding: x-custom\r\n\r\n\xff"
    )

    with pytest.raises(UnsupportedMimeError, match="x-custom"):
        canonicalize(entity)


def test_canonicalize_reencodes_base64_with_long_lines() -> None:
    data = bytes(range(256)) * 8
    entity = (
        b"Content-Type: image/png\r\nContent-Transfer-Encoding: base64\r\n\r\n"
        + base64.b64encode(data)
    )

    canonical = canonicalize(entity)

    body = canonical.split(b"\r\n\r\n", 1)[1]
    assert max(map(len, _lines(body))) == 76
    assert base64.b64decode(body) == data


@pytest.mark.parametrize(
    ("micalg", "expected"),
    [("sha256", "sha-256"), ("SHA-384", "sha-384"), ("sha1", "sha-1")],
)
def test_micalg_parameter_uses_rfc_8551_names(micalg: str, expected: str) -> None:
    assert micalg_parameter(micalg) == expected


def test_micalg_parameter_rejects_unknown_digest() -> None:
    with pytest.raises(UnsupportedMimeError, match="pgp-sha256"):
        micalg_parameter("pgp-sha256")


def test_signed_multipart_layout() -> None:
    entity = b"Content-Type: text/plain\r\n\r\nhello\r\n"
    signature = bytes(range(256)) * 3

    message = signed_multipart_entity(entity, signature, "sha256")

    parsed = email.message_from_bytes(message, policy=email.policy.compat32)
    assert parsed.get_content_type() == "multipart/signed"
    assert parsed.get_param("protocol") == "application/pkcs7-signature"
    assert parsed.get_param("micalg") == "sha-256"
    boundary = parsed.get_boundary()
    assert boundary is not None
    assert boundary.encode() not in entity
    content, signature_part = parsed.get_payload()
    assert signature_part.get_content_type() == "application/pkcs7-signature"
    assert signature_part.get_param("name") == "smime.p7s"
    assert signature_part.get_filename() == "smime.p7s"
    assert signature_part["Content-Disposition"].startswith("attachment")
    assert signature_part.get_payload(decode=True) == signature
    assert content.get_payload() == "hello\r\n"
    assert message.count(b"\n") == message.count(b"\r\n")


def test_signed_multipart_rejects_lf_entity() -> None:
    with pytest.raises(MalformedMimeError, match="canonicalize"):
        signed_multipart_entity(b"Content-Type: text/plain\n\nx\n", b"0", "sha256")


def test_pkcs7_mime_layout() -> None:
    der = bytes(range(256)) * 3

    message = build_pkcs7_mime(b"From: a@example.com\r\n", der, "authEnveloped-data")

    head, body = message.split(b"\r\n\r\n", 1)
    assert head == (
        b"From: a@example.com\r\n"
        b"MIME-Version: 1.0\r\n"
        b"Content-Type: application/pkcs7-mime; smime-type=authEnveloped-data; "
        b"name=smime.p7m\r\n"
        b"Content-Transfer-Encoding: base64\r\n"
        b"Content-Disposition: attachment; filename=smime.p7m\r\n"
        b"Content-Description: S/MIME Encrypted Message"
    )
    lines = _lines(body)
    assert lines[-1] == b""
    assert all(len(line) == 76 for line in lines[:-2])
    assert base64.b64decode(body) == der


def test_pkcs7_mime_rejects_unknown_smime_type() -> None:
    with pytest.raises(UnsupportedMimeError, match="compressed-data"):
        pkcs7_mime_entity(b"0", "compressed-data")


def test_outer_mime_version_is_replaced() -> None:
    outer, _ = split_message(MESSAGE)

    message = build_pkcs7_mime(outer, b"\x30\x00", "enveloped-data")

    assert message.count(b"MIME-Version:") == 1
    assert b"\r\nMIME-Version: 1.0\r\nContent-Type: application/pkcs7-mime" in message


def test_outer_headers_with_content_field_are_rejected() -> None:
    with pytest.raises(MalformedMimeError, match="Content-Type"):
        build_pkcs7_mime(b"Content-Type: text/plain\r\n", b"0", "signed-data")


def test_signed_message_verifies_with_openssl(pki: Pki, tmp_path: Path) -> None:
    outer, entity = split_message(MESSAGE)
    canonical = canonicalize(entity)
    message = build_signed_multipart(
        outer, canonical, pki.sign_detached(canonical), "sha-256"
    )
    (tmp_path / "msg.eml").write_bytes(message)

    result = openssl_cms(
        "-verify", "-CAfile", pki.ca_pem, "-in", tmp_path / "msg.eml",
        "-out", tmp_path / "content.bin",
    )  # fmt: skip

    assert result.returncode == 0, result.stderr.decode()
    assert (tmp_path / "content.bin").read_bytes() == canonical


def test_opaque_signed_message_verifies_with_openssl(pki: Pki, tmp_path: Path) -> None:
    outer, entity = split_message(MESSAGE)
    canonical = canonicalize(entity)
    message = build_pkcs7_mime(outer, pki.sign_opaque(canonical), "signed-data")
    (tmp_path / "msg.eml").write_bytes(message)

    result = openssl_cms(
        "-verify", "-binary", "-CAfile", pki.ca_pem, "-in", tmp_path / "msg.eml",
        "-out", tmp_path / "content.bin",
    )  # fmt: skip

    assert result.returncode == 0, result.stderr.decode()
    assert (tmp_path / "content.bin").read_bytes() == canonical


def test_encrypted_message_decrypts_with_openssl(pki: Pki, tmp_path: Path) -> None:
    outer, entity = split_message(MESSAGE)
    canonical = canonicalize(entity)
    message = build_pkcs7_mime(outer, pki.encrypt(canonical), "enveloped-data")
    (tmp_path / "msg.eml").write_bytes(message)

    result = openssl_cms(
        "-decrypt", "-in", tmp_path / "msg.eml",
        "-inkey", pki.recipient_key_pem, "-out", tmp_path / "entity.bin",
    )  # fmt: skip

    assert result.returncode == 0, result.stderr.decode()
    assert (tmp_path / "entity.bin").read_bytes() == canonical


def test_sign_then_encrypt_round_trip(pki: Pki, tmp_path: Path) -> None:
    outer, entity = split_message(MESSAGE)
    canonical = canonicalize(entity)
    signed = signed_multipart_entity(canonical, pki.sign_detached(canonical), "sha256")
    message = build_pkcs7_mime(outer, pki.encrypt(signed), "enveloped-data")
    (tmp_path / "msg.eml").write_bytes(message)

    decrypted = openssl_cms(
        "-decrypt", "-in", tmp_path / "msg.eml",
        "-inkey", pki.recipient_key_pem, "-out", tmp_path / "signed.eml",
    )  # fmt: skip
    assert decrypted.returncode == 0, decrypted.stderr.decode()
    assert (tmp_path / "signed.eml").read_bytes() == signed
    verified = openssl_cms(
        "-verify", "-CAfile", pki.ca_pem, "-in", tmp_path / "signed.eml",
        "-out", tmp_path / "content.bin",
    )  # fmt: skip
    assert verified.returncode == 0, verified.stderr.decode()

    restored = replace_body(message, signed)
    found = detect(restored)
    assert found.kind is SmimeKind.DETACHED_SIGNED
    assert found.signed_content == canonical
    assert restored == join_message(outer, signed)


def test_canonicalize_multipart_without_preamble() -> None:
    entity = (
        b'Content-Type: multipart/mixed; boundary="b"\r\n\r\n'
        b"--b\r\nContent-Type: text/plain\r\n\r\n\r\n--b--\r\n"
    )

    assert canonicalize(entity) == entity

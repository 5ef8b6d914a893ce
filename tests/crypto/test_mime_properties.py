"""Property tests: random MIME trees canonicalised, signed and checked by OpenSSL.

Also random and mutated bytes through every parser, which may raise MimeError only.
"""

import base64
import binascii
import contextlib
import email
import email.policy
from email.message import Message

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.crypto.mime import (
    MimeError,
    build_signed_multipart,
    canonicalize,
    detect,
    join_message,
    split_message,
)
from tests.crypto.test_mime_support import INTEROP, Pki, make_pki, openssl_cms

_CRLF = b"\r\n"
_OUTER = (
    b"Received: from client.example.com by mx.example.com; Fri, 4 Dec 2026\r\n"
    b"From: Alice <alice@example.com>\r\n"
    b"To: Bob <bob@example.net>\r\n"
    b"Subject: property test\r\n"
    b"Date: Fri, 04 Dec 2026 10:00:00 +0000\r\n"
    b"Message-ID: <property@example.com>\r\n"
    b"MIME-Version: 1.0\r\n"
)

# Text without control characters: the stdlib parser splits lines at some of them,
# which would make the comparison of decoded content test the stdlib, not the MIME
# layer.
_TEXT_LINE = st.text(
    alphabet=st.characters(codec="utf-8", exclude_categories=("Cc", "Cs")),
    max_size=40,
)


@st.composite
def _text_leaf(draw: st.DrawFn) -> tuple[bytes, bool]:
    lines = [line.encode() for line in draw(st.lists(_TEXT_LINE, max_size=5))]
    if draw(st.booleans()):
        long_line = b"y" * draw(st.integers(min_value=999, max_value=2500))
        lines.insert(draw(st.integers(0, len(lines))), long_line)
    body = _CRLF.join(lines) + (_CRLF if draw(st.booleans()) else b"")
    subtype = draw(st.sampled_from([b"plain", b"html"]))
    header = b"Content-Type: text/" + subtype + b"; charset=utf-8\r\n"
    if draw(st.booleans()):
        header = b"Content-Type: text/" + subtype + b";\r\n charset=utf-8\r\n"
    encoding = draw(st.sampled_from([None, b"7bit", b"8bit", b"quoted-printable"]))
    if encoding == b"quoted-printable":
        body = binascii.b2a_qp(body, istext=True)
    if encoding is not None:
        header += b"Content-Transfer-Encoding: " + encoding + _CRLF
    return header + _CRLF + body, False


@st.composite
def _binary_leaf(draw: st.DrawFn) -> tuple[bytes, bool]:
    data = draw(st.binary(max_size=300))
    encoding = draw(st.sampled_from([b"base64", b"binary", b"8bit"]))
    if encoding == b"base64":
        body = base64.encodebytes(data).replace(b"\n", _CRLF)
    elif encoding == b"binary":
        body = data
    else:
        # 8bit data is made of lines, so CR and NUL are left out.
        body = data.replace(b"\r", b"").replace(b"\x00", b"")
    header = (
        b"Content-Type: application/octet-stream\r\n"
        b'Content-Disposition: attachment; filename="data.bin"\r\n'
        b"Content-Transfer-Encoding: " + encoding + _CRLF
    )
    return header + _CRLF + body, encoding == b"binary"


def _free_text(draw: st.DrawFn) -> bytes:
    lines = draw(st.lists(_TEXT_LINE, max_size=2))
    return b"".join(line.encode() + _CRLF for line in lines)


def _node(draw: st.DrawFn, path: str, depth: int) -> tuple[bytes, bool]:
    """Return a random entity and whether it contains a binary part.

    Boundaries are made from the node's path in the tree, so they are unique.
    """
    kinds = ["text", "binary"] + (["multipart", "message"] if depth < 3 else [])
    kind = draw(st.sampled_from(kinds))
    if kind == "text":
        return draw(_text_leaf())
    if kind == "binary":
        return draw(_binary_leaf())
    if kind == "message":
        inner, binary = _node(draw, path + "m", depth + 1)
        header = b"Content-Type: message/rfc822\r\n"
        if draw(st.booleans()):
            header += b"Content-Transfer-Encoding: 8bit\r\n"
        inner_headers = b"Subject: forwarded\r\nFrom: carol@example.org\r\n"
        return header + _CRLF + inner_headers + inner, binary

    boundary = b"=_b" + path.encode()
    subtype = draw(st.sampled_from([b"mixed", b"alternative", b"related"]))
    children = [
        _node(draw, f"{path}.{index}", depth + 1)
        for index in range(draw(st.integers(1, 3)))
    ]
    pieces = [
        b"Content-Type: multipart/" + subtype + b'; boundary="' + boundary + b'"\r\n',
        _CRLF,
        _free_text(draw),
    ]
    for child, _ in children:
        pieces += [b"--", boundary, _CRLF, child, _CRLF]
    pieces += [b"--", boundary, b"--\r\n", _free_text(draw)]
    return b"".join(pieces), any(binary for _, binary in children)


@st.composite
def mime_messages(draw: st.DrawFn) -> bytes:
    """Return a random message; without binary parts, maybe with LF line ends."""
    entity, binary = _node(draw, "0", 0)
    message = _OUTER + entity
    if not binary and draw(st.booleans()):
        message = message.replace(_CRLF, b"\n")
    return message


def _leaves(message: bytes) -> list[tuple[str, str, bytes]]:
    """Return content type, transfer encoding and decoded body of every leaf part."""
    parsed = email.message_from_bytes(message, policy=email.policy.compat32)
    leaves = []
    for part in parsed.walk():
        if part.is_multipart():
            continue
        assert isinstance(part, Message)
        payload = part.get_payload(decode=True)
        assert isinstance(payload, bytes)
        encoding = str(part.get("Content-Transfer-Encoding", "7bit")).lower()
        leaves.append((part.get_content_type(), encoding, payload))
    return leaves


def _unify_line_ends(data: bytes) -> bytes:
    return data.replace(_CRLF, b"\n").replace(b"\r", b"\n")


def _assert_canonical(canonical: bytes) -> None:
    assert canonical.isascii()
    assert canonical.count(b"\n") == canonical.count(_CRLF)
    assert canonical.count(b"\r") == canonical.count(_CRLF)
    assert max(map(len, canonical.split(_CRLF))) <= 998


@settings(max_examples=150, deadline=None)
@given(mime_messages())
def test_canonical_form_properties(message: bytes) -> None:
    outer, entity = split_message(message)

    canonical = canonicalize(entity)

    _assert_canonical(canonical)
    assert canonicalize(canonical) == canonical
    before = _leaves(message)
    after = _leaves(join_message(outer, canonical))
    assert [leaf[0] for leaf in after] == [leaf[0] for leaf in before]
    for (_, encoding, old), (_, _, new) in zip(before, after, strict=True):
        if encoding in ("binary", "base64"):
            assert new == old
        else:
            assert _unify_line_ends(new) == _unify_line_ends(old)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(message=mime_messages())
def test_signed_canonical_form_verifies_with_openssl(pki: Pki, message: bytes) -> None:
    outer, entity = split_message(message)
    canonical = canonicalize(entity)
    signed = build_signed_multipart(
        outer, canonical, pki.sign_detached(canonical), "sha-256"
    )
    path = pki.folder / "msg.eml"
    path.write_bytes(signed)

    result = openssl_cms(
        "-verify", "-CAfile", pki.ca_pem, "-in", path,
        "-out", pki.folder / "content.bin",
    )  # fmt: skip

    assert result.returncode == 0, result.stderr.decode()
    assert (pki.folder / "content.bin").read_bytes() == canonical
    found = detect(signed)
    assert found.signed_content == canonical


def _exercise(data: bytes) -> None:
    """Run every parser on `data`; MimeError is the only exception allowed."""
    with contextlib.suppress(MimeError):
        detect(data)
    with contextlib.suppress(MimeError):
        _, entity = split_message(data)
        canonicalize(entity)
    with contextlib.suppress(MimeError):
        canonicalize(data)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=3000))
def test_random_bytes_raise_only_mime_errors(data: bytes) -> None:
    _exercise(data)


_SEED_FILES = [
    "thunderbird/smime/alice.dsig.SHA256.multipart.eml",
    "thunderbird/smime/alice.env.eml",
    "thunderbird/smime/alice.sig.SHA256.opaque.eml",
    "thunderbird/browser/multipart-alternative.eml",
    "thunderbird/browser/alice.dsig.SHA256.multipart.in.mixed.eml",
    "rfc4134/4.8.eml",
]
_NESTED_SEED = (
    _OUTER + b'Content-Type: multipart/mixed; boundary="outer"\r\n\r\n'
    b"--outer\r\nContent-Type: text/plain; charset=utf-8\r\n"
    b"Content-Transfer-Encoding: 8bit\r\n\r\nGr\xc3\xbc\xc3\x9fe\r\n"
    b"--outer\r\nContent-Type: message/rfc822\r\n\r\n"
    b'Subject: inner\r\nContent-Type: multipart/alternative; boundary="in"\r\n\r\n'
    b"--in\r\nContent-Type: text/html\r\n\r\n<p>x</p>\r\n--in--\r\n"
    b"--outer\r\nContent-Type: application/pdf\r\n"
    b"Content-Transfer-Encoding: binary\r\n\r\n%PDF\x00\xff\r\n"
    b"--outer--\r\n"
)
SEEDS = [(INTEROP / name).read_bytes() for name in _SEED_FILES] + [_NESTED_SEED]
_TOKENS = [
    b"\r\n",
    b"\n",
    b"\r",
    b"\r\n\r\n",
    b"--",
    b"--outer--",
    b"-----",
    b" ",
    b"\t",
    b":",
    b";",
    b'"',
    b"=",
    b"\x00",
    b"\xff",
    b"Content-Type: multipart/mixed; boundary=x\r\n",
    b"Content-Type: multipart/signed; boundary=\r\n",
    b"Content-Type: application/pkcs7-mime\r\n",
    b"Content-Transfer-Encoding: binary\r\n",
    b"Content-Transfer-Encoding: base64\r\n",
    b"Content-Type: message/rfc822\r\n\r\n",
    b"=?utf-8?q?=C3=A9?=",
    b"boundary*0*=utf-8''x; boundary*1=y",
    b"name*=bogus-charset''smime.p7m",
]


@st.composite
def _mutated(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(1, 6))):
        position = draw(st.integers(0, len(data)))
        operation = draw(st.sampled_from(["insert", "delete", "replace", "truncate"]))
        token = draw(st.sampled_from(_TOKENS) | st.binary(min_size=1, max_size=8))
        if operation == "insert":
            data[position:position] = token
        elif operation == "delete":
            del data[position : position + draw(st.integers(1, 64))]
        elif operation == "replace":
            data[position : position + len(token)] = token
        else:
            del data[position:]
    return bytes(data)


@settings(max_examples=400, deadline=None)
@given(_mutated())
def test_mutated_messages_raise_only_mime_errors(data: bytes) -> None:
    _exercise(data)


def test_seed_files_exist() -> None:
    for seed in SEEDS:
        assert len(seed) > 100

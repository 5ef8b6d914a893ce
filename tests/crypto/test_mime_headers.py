"""Raw header blocks: parsing, strip and prepend, and limits on hostile input."""

import time

import pytest

from services.crypto.mime import (
    MalformedMimeError,
    MimeLimitError,
    canonicalize,
    detect,
    prepend_headers,
    split_message,
    strip_headers,
)
from services.crypto.mime.headers import parse_header_block
from services.crypto.mime.limits import (
    MAX_BODY_PARTS,
    MAX_HEADER_BLOCK_BYTES,
    MAX_HEADER_FIELDS,
    MAX_NESTING_DEPTH,
)

# Generous bound for inputs of a few megabytes; quadratic work would take minutes.
LINEAR_SECONDS = 5.0

MESSAGE = (
    b"Received: from a.example.com\r\n"
    b"\tby b.example.com; Fri, 4 Dec 2026 10:00:00 +0000\r\n"
    b"X-Smime-Result: forged by the sender\r\n"
    b"From: alice@example.com\r\n"
    b"x-smime-result: second,\r\n"
    b"  folded\r\n"
    b"Subject: =?utf-8?q?Gr=C3=BC=C3=9Fe?=\r\n"
    b"Content-Type: multipart/mixed; boundary=b\r\n"
    b"\r\n"
    b"--b\r\n"
    b"X-Smime-Result: inside a body part\r\n"
    b"\r\n"
    b"text\r\n"
    b"--b--\r\n"
)


def test_parse_header_block_fields_and_offsets() -> None:
    block = parse_header_block(MESSAGE)

    assert [field.name for field in block.fields] == [
        "Received",
        "X-Smime-Result",
        "From",
        "x-smime-result",
        "Subject",
        "Content-Type",
    ]
    assert block.fields[0].value == (
        "from a.example.com\tby b.example.com; Fri, 4 Dec 2026 10:00:00 +0000"
    )
    assert block.fields[3].value == "second,  folded"
    assert MESSAGE[block.body_start :].startswith(b"--b\r\n")
    assert MESSAGE[block.end : block.body_start] == b"\r\n"
    assert b"".join(field.raw for field in block.fields) == MESSAGE[: block.end]


def test_parse_header_block_stops_at_non_header_line() -> None:
    data = b"Subject: x\nthis is body text\n\nmore\n"

    block = parse_header_block(data)

    assert [field.name for field in block.fields] == ["Subject"]
    assert block.body_start == block.end == len(b"Subject: x\n")


def test_parse_header_block_accepts_space_before_colon() -> None:
    block = parse_header_block(b"Subject : obsolete syntax\r\n\r\n")

    assert block.fields[0].name == "Subject"
    assert block.fields[0].value == "obsolete syntax"


def test_strip_headers_keeps_everything_else() -> None:
    result = strip_headers(MESSAGE, ["X-SMIME-Result"])

    assert result == (
        b"Received: from a.example.com\r\n"
        b"\tby b.example.com; Fri, 4 Dec 2026 10:00:00 +0000\r\n"
        b"From: alice@example.com\r\n"
        b"Subject: =?utf-8?q?Gr=C3=BC=C3=9Fe?=\r\n"
        b"Content-Type: multipart/mixed; boundary=b\r\n"
        b"\r\n"
        b"--b\r\n"
        b"X-Smime-Result: inside a body part\r\n"
        b"\r\n"
        b"text\r\n"
        b"--b--\r\n"
    )


def test_strip_headers_without_match_is_identity() -> None:
    assert strip_headers(MESSAGE, ["X-Absent"]) == MESSAGE


def test_strip_headers_keeps_lf_and_8bit_bytes() -> None:
    message = b"Subject: caf\xc3\xa9\nX-Drop: 1\n continued\nTo: b\n\nbody \xff\n"

    assert strip_headers(message, ["x-drop"]) == (
        b"Subject: caf\xc3\xa9\nTo: b\n\nbody \xff\n"
    )


def test_prepend_headers_adds_at_top() -> None:
    result = prepend_headers(
        MESSAGE, [("X-Smime-Result", "valid; signer=alice@example.com"), ("X-B", "2")]
    )

    assert result == (
        b"X-Smime-Result: valid; signer=alice@example.com\r\nX-B: 2\r\n" + MESSAGE
    )


def test_prepend_headers_follows_lf_line_ends() -> None:
    message = b"Subject: stored\n\nbody\n"

    assert prepend_headers(message, [("X-A", "1")]) == b"X-A: 1\n" + message


@pytest.mark.parametrize(
    ("name", "value", "match"),
    [
        ("X-A", "1\r\nBcc: victim@example.com", "line end"),
        ("X-A", "caf\u00e9", "non-ASCII"),
        ("X A", "1", "name"),
        ("X:A", "1", "name"),
        ("X-A", "v" * 1000, "998"),
    ],
)
def test_prepend_headers_rejects_injection(name: str, value: str, match: str) -> None:
    with pytest.raises(MalformedMimeError, match=match):
        prepend_headers(MESSAGE, [(name, value)])


def test_strip_then_prepend_replaces_result_field() -> None:
    stripped = strip_headers(MESSAGE, ["x-smime-result"])

    result = prepend_headers(stripped, [("X-Smime-Result", "none")])

    assert result == b"X-Smime-Result: none\r\n" + stripped
    top_level = result[: parse_header_block(result).end].lower()
    assert top_level.count(b"x-smime-result") == 1
    assert result.endswith(
        b"X-Smime-Result: inside a body part\r\n\r\ntext\r\n--b--\r\n"
    )


def _timed(action: object) -> float:
    start = time.monotonic()
    assert callable(action)
    action()
    return time.monotonic() - start


def test_too_many_header_fields() -> None:
    message = b"X-A: 1\r\n" * (MAX_HEADER_FIELDS + 1) + b"\r\nbody\r\n"

    with pytest.raises(MimeLimitError, match=str(MAX_HEADER_FIELDS)) as info:
        detect(message)

    assert info.value.limit == "header fields"


def test_header_block_too_long() -> None:
    message = b"X-A: " + b"a" * MAX_HEADER_BLOCK_BYTES + b"\r\n\r\nbody\r\n"

    with pytest.raises(MimeLimitError, match="header block") as info:
        split_message(message)

    assert info.value.maximum == MAX_HEADER_BLOCK_BYTES


def test_header_block_folded_too_long() -> None:
    message = b"X-A: 1\r\n" + b" folded\r\n" * (MAX_HEADER_BLOCK_BYTES // 9) + b"\r\n"

    with pytest.raises(MimeLimitError, match="header block"):
        detect(message)


def test_long_body_line_is_not_header() -> None:
    message = b"Subject: x\r\n\r\n" + b"b" * (4 * MAX_HEADER_BLOCK_BYTES)

    assert detect(message).kind == "none"


def test_million_boundary_lines_in_multipart_signed() -> None:
    message = (
        b'Content-Type: multipart/signed; boundary="b"\r\n\r\n' + b"--b\r\n" * 1_000_000
    )

    def run() -> None:
        with pytest.raises(MalformedMimeError, match="more than two"):
            detect(message)

    assert _timed(run) < LINEAR_SECONDS


def test_million_boundary_lines_in_multipart_mixed() -> None:
    entity = b'Content-Type: multipart/mixed; boundary="b"\r\n\r\n' + b"--b\r\n" * (
        1_000_000
    )

    def run() -> None:
        with pytest.raises(MimeLimitError, match=str(MAX_BODY_PARTS)):
            canonicalize(entity)

    assert _timed(run) < LINEAR_SECONDS


def test_many_parts_below_limit_are_linear() -> None:
    part = b"--b\r\nContent-Type: text/plain\r\n\r\ncaf\xc3\xa9\r\n"
    entity = (
        b'Content-Type: multipart/mixed; boundary="b"\r\n\r\n'
        + part * (MAX_BODY_PARTS - 1)
        + b"--b--\r\n"
    )
    result: list[bytes] = []

    assert _timed(lambda: result.append(canonicalize(entity))) < LINEAR_SECONDS
    assert result[0].count(b"caf=C3=A9\r\n") == MAX_BODY_PARTS - 1


def test_deep_multipart_nesting() -> None:
    depth = MAX_NESTING_DEPTH + 5
    opening = b"".join(
        b'Content-Type: multipart/mixed; boundary="b%d"\r\n\r\n--b%d\r\n' % (i, i)
        for i in range(depth)
    )
    closing = b"".join(b"\r\n--b%d--" % i for i in reversed(range(depth)))
    entity = opening + b"Content-Type: text/plain\r\n\r\nleaf" + closing

    with pytest.raises(MimeLimitError, match="nested") as info:
        canonicalize(entity)

    assert info.value.limit == "nesting depth"


def test_nesting_within_limit_is_accepted() -> None:
    depth = MAX_NESTING_DEPTH
    opening = b"".join(
        b'Content-Type: multipart/mixed; boundary="b%d"\r\n\r\n--b%d\r\n' % (i, i)
        for i in range(depth)
    )
    closing = b"".join(b"\r\n--b%d--" % i for i in reversed(range(depth)))
    entity = opening + b"Content-Type: text/plain\r\n\r\nleaf" + closing

    assert canonicalize(entity) == entity


def test_deep_message_rfc822_nesting() -> None:
    entity = b"Content-Type: message/rfc822\r\n\r\n" * 200 + b"\r\nleaf\r\n"

    with pytest.raises(MimeLimitError, match="nested"):
        canonicalize(entity)

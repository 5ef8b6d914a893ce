"""Decoding of untrusted DER/BER with asn1crypto, with its errors translated.

asn1crypto parses lazily: `load` reads only the outer header, and a field is decoded
when it is first accessed. Every access to a value decoded from untrusted input must
therefore happen inside `translate_errors`, or a malformed field escapes as a
ValueError, TypeError or IndexError from deep inside asn1crypto.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TypeVar

from asn1crypto import core

from services.crypto.cms.errors import MalformedCmsError

Asn1Value = TypeVar("Asn1Value", bound=core.Asn1Value)

# Exceptions asn1crypto 1.5.1 raises on bad input. RecursionError covers deeply
# nested constructed encodings, OverflowError huge lengths and tag numbers, and
# AttributeError universal types it decodes but cannot convert (ObjectDescriptor).
_DECODE_ERRORS = (
    AttributeError,
    ValueError,
    TypeError,
    IndexError,
    KeyError,
    OverflowError,
    RecursionError,
)


@contextmanager
def translate_errors(what: str) -> Iterator[None]:
    """Turn asn1crypto's decoding errors inside the block into MalformedCmsError."""
    try:
        yield
    except _DECODE_ERRORS as err:
        # asn1crypto's message names the field and the fault; the input is
        # ciphertext and public structure, so its first line is safe to show.
        detail = str(err).strip().splitlines()[0][:160] if str(err).strip() else ""
        raise MalformedCmsError(
            f"{what} is not valid DER/BER ({type(err).__name__}: {detail}); the "
            "sender produced a corrupt or non-standard structure"
        ) from err


def decode(spec: type[Asn1Value], data: bytes, what: str) -> Asn1Value:
    """Decode `data` as one complete `spec` value and reject trailing bytes."""
    with translate_errors(what):
        value: Asn1Value = spec.load(data, strict=True)
        # Touching `native` decodes every nested field now, inside the try.
        value.native  # noqa: B018
    return value


class AlgorithmIdentifier(core.Sequence):  # type: ignore[misc]
    """RFC 5280 AlgorithmIdentifier that keeps absent parameters absent.

    asn1crypto's own algorithm classes write NULL parameters for some OIDs; this one
    writes exactly what it is given, so encodings match what OpenSSL writes.
    """

    _fields = [  # noqa: RUF012 - asn1crypto's class-level schema
        ("algorithm", core.ObjectIdentifier),
        ("parameters", core.Any, {"optional": True}),
    ]


def der_header(tag: int, length: int) -> bytes:
    """Encode the identifier and length octets of a DER value of `length` bytes.

    `tag` is one identifier octet (low tag numbers, X.690 section 8.1.2.2); the
    length is in the definite form of X.690 section 8.1.3.
    """
    if length < 0x80:
        return bytes([tag, length])
    octets = length.to_bytes((length.bit_length() + 7) // 8, "big")
    return bytes([tag, 0x80 | len(octets)]) + octets


@dataclass(frozen=True)
class Tlv:
    """One DER value: its tag octet and where its header and contents lie."""

    tag: int
    start: int  # the tag octet
    contents: int
    end: int


def read_tlv(
    der: bytes | bytearray | memoryview, position: int, end: int
) -> Tlv | None:
    """Read the DER value at `position`, or return None when it is not minimal DER.

    Only one-octet tags and definite lengths in their shortest form are read. The
    callers use this to pass over large values that asn1crypto would copy, and
    hand anything else to asn1crypto.
    """
    if position + 2 > end or der[position] & 0x1F == 0x1F:
        return None
    first = der[position + 1]
    if first < 0x80:
        length, contents = first, position + 2
    else:
        count = first & 0x7F
        if count == 0 or count > 4 or position + 2 + count > end:
            return None
        length = int.from_bytes(der[position + 2 : position + 2 + count], "big")
        contents = position + 2 + count
    tlv = Tlv(der[position], position, contents, contents + length)
    if tlv.end > end or der_header(tlv.tag, length) != bytes(der[position:contents]):
        return None
    return tlv

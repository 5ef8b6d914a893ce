"""Content encryption: CBC with PKCS#7 padding (RFC 3370, RFC 3565) and AES-GCM.

AES-GCM is used only in AuthEnvelopedData (RFC 5083), with the parameters of RFC 5084
section 3.2: the authentication tag travels in the `mac` field, apart from the
ciphertext.
"""

from __future__ import annotations

import hmac
import os
from dataclasses import dataclass

from asn1crypto import core
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES
from cryptography.hazmat.primitives.ciphers import (
    AEADEncryptionContext,
    Cipher,
    CipherAlgorithm,
    CipherContext,
    modes,
)
from cryptography.hazmat.primitives.ciphers.algorithms import AES

from services.crypto.cms.algorithms import ContentCipher
from services.crypto.cms.der import decode, translate_errors
from services.crypto.cms.errors import MalformedCmsError, UnsupportedAlgorithmError

GCM_NONCE_SIZE = 12  # RFC 5084 section 3.2 recommends 12 octets
GCM_TAG_SIZE = 16
# RFC 5084 section 3.2: AES-GCM-ICVlen ::= INTEGER (12 | 13 | 14 | 15 | 16)
_GCM_TAG_SIZES = range(12, 17)
# cryptography 50's GCM mode takes nonces of 8 to 128 bytes.
_GCM_NONCE_SIZES = range(8, 129)


class _GcmParameters(core.Sequence):  # type: ignore[misc]
    """GCMParameters of RFC 5084, where the ICV length defaults to 12 octets."""

    _fields = [  # noqa: RUF012 - asn1crypto's class-level schema
        ("aes_nonce", core.OctetString),
        ("aes_icvlen", core.Integer, {"optional": True}),
    ]


@dataclass(frozen=True)
class ContentParameters:
    """The IV (CBC) or nonce (GCM), and for GCM the tag length in bytes."""

    iv: bytes
    tag_size: int | None


@dataclass(frozen=True)
class EncryptedContent:
    """Ciphertext, the contentEncryptionAlgorithm parameters, and the GCM tag."""

    parameters: core.Asn1Value
    ciphertext: bytes
    tag: bytes | None


def parse_parameters(
    cipher: ContentCipher, parameters: bytes | None
) -> ContentParameters:
    """Read the contentEncryptionAlgorithm parameters of `cipher`."""
    if parameters is None:
        raise MalformedCmsError(
            f"content-encryption algorithm {cipher.name} has no parameters; "
            "it needs an IV or GCM nonce"
        )
    if cipher.mode == "cbc":
        return _parse_cbc_parameters(cipher, parameters)
    return _parse_gcm_parameters(cipher, parameters)


def _parse_cbc_parameters(
    cipher: ContentCipher, parameters: bytes
) -> ContentParameters:
    iv_value = decode(core.OctetString, parameters, f"{cipher.name} IV")
    with translate_errors(f"{cipher.name} IV"):
        iv: bytes = iv_value.native
    if len(iv) != cipher.block_size:
        raise MalformedCmsError(
            f"{cipher.name} IV is {len(iv)} bytes long; it must be {cipher.block_size}"
        )
    return ContentParameters(iv, tag_size=None)


def _parse_gcm_parameters(
    cipher: ContentCipher, parameters: bytes
) -> ContentParameters:
    gcm = decode(_GcmParameters, parameters, f"{cipher.name} parameters")
    with translate_errors(f"{cipher.name} parameters"):
        nonce: bytes = gcm["aes_nonce"].native
        tag_size: int | None = gcm["aes_icvlen"].native
    if tag_size is None:
        tag_size = 12
    if tag_size not in _GCM_TAG_SIZES:
        raise MalformedCmsError(
            f"{cipher.name} ICV length {tag_size} is invalid; RFC 5084 allows 12 to 16"
        )
    if len(nonce) not in _GCM_NONCE_SIZES:
        raise UnsupportedAlgorithmError(
            cipher.oid,
            f"{cipher.name} nonce of {len(nonce)} bytes is not supported; the gateway "
            "reads nonces of 8 to 128 bytes (RFC 5084 recommends 12)",
        )
    return ContentParameters(nonce, tag_size)


def check_ciphertext(
    cipher: ContentCipher,
    params: ContentParameters,
    ciphertext: bytes | memoryview,
    tag: bytes | None,
) -> None:
    """Reject ciphertext and tag lengths that no key can decrypt.

    This depends on public lengths only, so it runs before any key is used.
    """
    if cipher.mode == "cbc":
        if not ciphertext or len(ciphertext) % cipher.block_size:
            raise MalformedCmsError(
                f"{cipher.name} ciphertext is {len(ciphertext)} bytes long; it must be "
                f"a positive multiple of {cipher.block_size}"
            )
        return
    if tag is None:
        raise MalformedCmsError(f"{cipher.name} content needs AuthEnvelopedData")
    if len(tag) != params.tag_size:
        raise MalformedCmsError(
            f"{cipher.name} authentication tag is {len(tag)} bytes long, but the "
            f"parameters state {params.tag_size}"
        )


def _algorithm(cipher: ContentCipher, key: bytes) -> CipherAlgorithm:
    if cipher.name == "3des-cbc":
        return TripleDES(key)
    return AES(key)


def decrypt(
    cipher: ContentCipher,
    key: bytes,
    params: ContentParameters,
    ciphertext: bytes | memoryview,
    tag: bytes | None,
    associated_data: bytes | None,
) -> bytes | memoryview | None:
    """Decrypt checked ciphertext, or return None for a bad padding or tag.

    CBC plaintext comes back as a view without its padding, which is not a copy.
    """
    if len(key) != cipher.key_size:
        return None
    if cipher.mode == "gcm":
        return _decrypt_gcm(key, params, ciphertext, tag or b"", associated_data)

    decryptor = Cipher(_algorithm(cipher, key), modes.CBC(params.iv)).decryptor()
    # check_ciphertext made the length a multiple of the block size, so finalize
    # returns nothing.
    padded = _update_in_windows(decryptor, ciphertext)
    decryptor.finalize()
    return _unpad(padded, cipher.block_size)


def _update_in_windows(context: CipherContext, data: bytes | memoryview) -> memoryview:
    """Run `context` over `data` into one buffer, a window at a time.

    With one update over a 30 MB ciphertext, the peak resident memory rose 21 MB
    more than Python's own allocations did (cryptography 50, measured with
    tests/outgoing/memory_probe.py). update_into writes each window straight into
    the final buffer instead.
    """
    size = len(data)
    # update_into needs block_size - 1 spare bytes after each window's output.
    out = bytearray(size + _MAX_BLOCK_SIZE - 1)
    source = memoryview(data)
    target = memoryview(out)
    written = 0
    for start in range(0, size, _DECRYPT_WINDOW):
        window = source[start : start + _DECRYPT_WINDOW]
        written += context.update_into(window, target[written:])
    return target[:written]


# The largest block size of the content ciphers (AES), and the input per update.
_MAX_BLOCK_SIZE = 16
_DECRYPT_WINDOW = 256 * 1024


def _unpad(padded: memoryview, block_size: int) -> memoryview | None:
    """Remove RFC 5652 section 6.3 padding, or return None when it is invalid.

    cryptography's PKCS7 unpadder would copy the plaintext twice, while this
    returns a view of it.
    """
    pad = padded[-1] if padded else 0
    if not 0 < pad <= block_size:
        return None
    if not hmac.compare_digest(bytes(padded[-pad:]), bytes([pad]) * pad):
        return None
    return padded[:-pad]


def _decrypt_gcm(
    key: bytes,
    params: ContentParameters,
    ciphertext: bytes | memoryview,
    tag: bytes,
    associated_data: bytes | None,
) -> memoryview | None:
    mode = modes.GCM(params.iv, tag, min_tag_length=len(tag))
    decryptor = Cipher(AES(key), mode).decryptor()
    if associated_data is not None:
        decryptor.authenticate_additional_data(associated_data)
    plaintext = _update_in_windows(decryptor, ciphertext)
    try:
        # GCM keeps back no bytes, so finalize only checks the tag.
        decryptor.finalize()
    except InvalidTag:
        return None
    return plaintext


def encrypt(cipher: ContentCipher, key: bytes, plaintext: bytes) -> EncryptedContent:
    """Encrypt `plaintext` under a fresh IV or nonce."""
    encryptor = ContentEncryptor(cipher, key, len(plaintext))
    ciphertext = encryptor.update(plaintext) + encryptor.finalize()
    return EncryptedContent(encryptor.parameters, ciphertext, encryptor.tag)


class ContentEncryptor:
    """Encrypt content of a known size given in chunks, under a fresh IV or nonce.

    The ciphertext size is known before the first chunk, so the DER around it can
    be written first and the ciphertext passed on chunk by chunk.
    """

    def __init__(self, cipher: ContentCipher, key: bytes, size: int) -> None:
        self.size = size
        self.tag: bytes | None = None
        self._read = 0
        self._gcm: AEADEncryptionContext | None = None
        if cipher.mode == "gcm":
            nonce = os.urandom(GCM_NONCE_SIZE)
            self.parameters: core.Asn1Value = _GcmParameters(
                {"aes_nonce": nonce, "aes_icvlen": GCM_TAG_SIZE}
            )
            self._gcm = Cipher(AES(key), modes.GCM(nonce)).encryptor()
            self._context: CipherContext = self._gcm
            self._padding = b""
        else:
            iv = os.urandom(cipher.block_size)
            self.parameters = core.OctetString(iv)
            self._context = Cipher(_algorithm(cipher, key), modes.CBC(iv)).encryptor()
            # RFC 5652 section 6.3: k - (l mod k) octets, each of that value.
            pad = cipher.block_size - size % cipher.block_size
            self._padding = bytes([pad]) * pad
        self.ciphertext_size = size + len(self._padding)

    def update(self, chunk: bytes | memoryview) -> bytes:
        """Encrypt the next chunk; return the ciphertext that is complete so far."""
        self._read += len(chunk)
        return self._context.update(chunk)

    def finalize(self) -> bytes:
        """Return the last ciphertext, with the padding; for AES-GCM, set `tag`."""
        if self._read != self.size:
            raise ValueError(
                f"content of {self._read} bytes was encrypted, but the encryptor was "
                f"made for {self.size}; the DER written before it states that size"
            )
        last = self._context.update(self._padding) + self._context.finalize()
        if self._gcm is not None:
            self.tag = self._gcm.tag
        return last

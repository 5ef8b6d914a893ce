"""Key wrap of content-encryption keys: AES (RFC 3394, RFC 5649), 3DES (RFC 3217)."""

from __future__ import annotations

import hashlib
import hmac

from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES
from cryptography.hazmat.primitives.ciphers import Cipher, modes
from cryptography.hazmat.primitives.keywrap import (
    InvalidUnwrap,
    aes_key_unwrap,
    aes_key_unwrap_with_padding,
    aes_key_wrap,
)

from services.crypto.cms.algorithms import KeyWrap

# RFC 3217 section 3.1, step 8: the fixed IV of the outer encryption.
_TRIPLE_DES_WRAP_IV = bytes.fromhex("4adda22c79e82105")
_TRIPLE_DES_WRAPPED_SIZE = 40  # a 24-byte key, its 8-byte checksum and an 8-byte IV


def unwrap(wrap: KeyWrap, key_encryption_key: bytes, wrapped: bytes) -> bytes | None:
    """Unwrap a content-encryption key, or return None when its check fails."""
    if wrap.kind == "3des":
        return _unwrap_triple_des(key_encryption_key, wrapped)
    unwrap_aes = (
        aes_key_unwrap_with_padding if wrap.kind == "aes-pad" else aes_key_unwrap
    )
    try:
        return unwrap_aes(key_encryption_key, wrapped)
    except (InvalidUnwrap, ValueError):
        return None


def wrap_aes(key_encryption_key: bytes, content_key: bytes) -> bytes:
    """Wrap a content-encryption key with the RFC 3394 AES key wrap."""
    return aes_key_wrap(key_encryption_key, content_key)


def _unwrap_triple_des(key_encryption_key: bytes, wrapped: bytes) -> bytes | None:
    # RFC 3217 section 3.2, steps 1 to 7.
    if len(wrapped) != _TRIPLE_DES_WRAPPED_SIZE:
        return None
    reversed_temp = _cbc_decrypt(key_encryption_key, _TRIPLE_DES_WRAP_IV, wrapped)
    temp = reversed_temp[::-1]
    iv, inner = temp[:8], temp[8:]
    key_and_checksum = _cbc_decrypt(key_encryption_key, iv, inner)
    content_key, checksum = key_and_checksum[:24], key_and_checksum[24:]
    # Section 2: the checksum is the first 8 bytes of SHA-1 over the key.
    expected = hashlib.sha1(content_key).digest()[:8]  # noqa: S324 - RFC 3217 checksum
    if not hmac.compare_digest(checksum, expected):
        return None
    # NOTE: step 8 (reject a key without odd DES parity) is skipped: DES ignores
    # the parity bits, and the checksum already protects the key.
    return content_key


def _cbc_decrypt(key: bytes, iv: bytes, data: bytes) -> bytes:
    decryptor = Cipher(TripleDES(key), modes.CBC(iv)).decryptor()
    return decryptor.update(data) + decryptor.finalize()

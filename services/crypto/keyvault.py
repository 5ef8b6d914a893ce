"""Encryption of private keys at rest under the operator's key-encryption key (KEK).

A sealed key is this byte string:

    version (1 byte, 0x01) | KEK id (8 bytes) | nonce (12 bytes) | AES-256-GCM output

The KEK id is the first 8 bytes of SHA-256 of the KEK, so a blob sealed under another
KEK is recognised before decryption. The GCM associated data is the 21-byte header
followed by the UTF-8 key id, so a blob copied to another key id, or with an edited
header, fails authentication. The plaintext is the private key as unencrypted PKCS#8
DER.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import stat
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

__all__ = [
    "KEK_SIZE",
    "KekFileError",
    "KeyEncryptionKey",
    "KeyVaultError",
    "SealedKeyError",
    "create_kek",
    "load_kek",
    "next_kek_path",
    "open_sealed",
    "retired_kek_path",
    "seal",
    "sealed_kek_id",
]

KEK_SIZE = 32
FORMAT_VERSION = 1
KEK_ID_SIZE = 8
NONCE_SIZE = 12
_HEADER_SIZE = 1 + KEK_ID_SIZE + NONCE_SIZE
_TAG_SIZE = 16


class KeyVaultError(Exception):
    """Base of key vault errors. Their messages never contain key bytes."""


class KekFileError(KeyVaultError):
    """The KEK file is missing, has the wrong size or is open to other users."""

    def __init__(self, path: Path, message: str) -> None:
        super().__init__(message)
        self.path = path


class SealedKeyError(KeyVaultError):
    """A sealed key cannot be opened with this KEK and key id."""

    def __init__(self, key_id: str, message: str) -> None:
        super().__init__(message)
        self.key_id = key_id


class KeyEncryptionKey:
    """A 32-byte AES-256 key that encrypts private keys, shown only by its id.

    `path` is the file it was loaded from, if any, so that a key store can look
    for the next KEK beside it during a rotation (`next_kek_path`).
    """

    __slots__ = ("_secret", "kek_id", "path")

    def __init__(self, secret: bytes, path: Path | None = None) -> None:
        if len(secret) != KEK_SIZE:
            raise ValueError(
                f"a key-encryption key has {KEK_SIZE} bytes, got {len(secret)}"
            )
        self._secret = bytes(secret)
        self.kek_id = hashlib.sha256(self._secret).digest()[:KEK_ID_SIZE]
        self.path = path

    def __repr__(self) -> str:
        return f"KeyEncryptionKey(kek_id={self.kek_id.hex()})"

    __str__ = __repr__


def create_kek(path: Path) -> KeyEncryptionKey:
    """Write a new random KEK to `path` with mode 0600, keeping any existing file.

    Raises KekFileError when `path` exists.
    """
    secret = secrets.token_bytes(KEK_SIZE)
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError as err:
        raise KekFileError(
            path,
            f"KEK file {str(path)!r} already exists and was kept: replacing it would "
            "make every sealed key unreadable. Remove it first only if no key was "
            "sealed with it.",
        ) from err
    try:
        # The umask can only clear bits of 0600, and fchmod makes the mode exact
        # whatever the umask.
        os.fchmod(descriptor, 0o600)
        os.write(descriptor, secret)
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
    return KeyEncryptionKey(secret, path)


def next_kek_path(path: Path) -> Path:
    """Return where a KEK rotation keeps the new KEK until every key uses it."""
    return path.with_name(path.name + ".new")


def retired_kek_path(path: Path) -> Path:
    """Return where a finished KEK rotation keeps a copy of the KEK it replaced."""
    return path.with_name(path.name + ".old")


def load_kek(path: Path) -> KeyEncryptionKey:
    """Read the KEK at `path`, which must hold 32 bytes and be private to its owner.

    Raises KekFileError otherwise.
    """
    try:
        descriptor = os.open(path, os.O_RDONLY)
    except OSError as err:
        raise KekFileError(
            path,
            f"KEK file {str(path)!r} cannot be opened ({err.strerror}). Create one "
            "with create_kek, or give the path of the existing one.",
        ) from err
    try:
        info = os.fstat(descriptor)
        if not stat.S_ISREG(info.st_mode):
            raise KekFileError(path, f"KEK file {str(path)!r} is not a regular file.")
        mode = stat.S_IMODE(info.st_mode)
        if mode & 0o077:
            raise KekFileError(
                path,
                f"KEK file {str(path)!r} has mode {mode:04o}, so group or other "
                f"users can access it. Run: chmod 600 {path}",
            )
        secret = os.read(descriptor, KEK_SIZE + 1)
    finally:
        os.close(descriptor)
    if len(secret) != KEK_SIZE:
        raise KekFileError(
            path,
            f"KEK file {str(path)!r} holds {len(secret)}"
            f"{' or more' if len(secret) > KEK_SIZE else ''} bytes, but a KEK has "
            f"exactly {KEK_SIZE}. Give the file that create_kek wrote.",
        )
    return KeyEncryptionKey(secret, path)


def sealed_kek_id(blob: bytes) -> bytes | None:
    """The id of the KEK that sealed `blob`, or None when it has no valid header."""
    if len(blob) < _HEADER_SIZE + _TAG_SIZE or blob[0] != FORMAT_VERSION:
        return None
    return blob[1 : 1 + KEK_ID_SIZE]


def seal(kek: KeyEncryptionKey, key_id: str, private_key: PrivateKeyTypes) -> bytes:
    """Encrypt `private_key` for storage under `key_id`."""
    plaintext = private_key.private_bytes(
        serialization.Encoding.DER,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    nonce = secrets.token_bytes(NONCE_SIZE)
    header = bytes([FORMAT_VERSION]) + kek.kek_id + nonce
    ciphertext = AESGCM(kek._secret).encrypt(
        nonce, plaintext, _associated_data(header, key_id)
    )
    return header + ciphertext


def open_sealed(kek: KeyEncryptionKey, key_id: str, blob: bytes) -> PrivateKeyTypes:
    """Decrypt a blob made by `seal` for the same `key_id`.

    Raises SealedKeyError when the blob is malformed, was sealed under another KEK
    or key id, or was altered.
    """
    if len(blob) < _HEADER_SIZE + _TAG_SIZE:
        raise SealedKeyError(
            key_id,
            f"Sealed key {key_id!r} is {len(blob)} bytes long, shorter than any "
            "sealed key. The stored copy is truncated.",
        )
    version = blob[0]
    if version != FORMAT_VERSION:
        raise SealedKeyError(
            key_id,
            f"Sealed key {key_id!r} has format version {version}; this release "
            f"reads version {FORMAT_VERSION}. Upgrade, or seal the key again.",
        )
    kek_id = blob[1 : 1 + KEK_ID_SIZE]
    if kek_id != kek.kek_id:
        raise SealedKeyError(
            key_id,
            f"Sealed key {key_id!r} was sealed under KEK {kek_id.hex()}, but the "
            f"loaded KEK is {kek.kek_id.hex()}. Load the KEK file it was sealed with.",
        )
    header, ciphertext = blob[:_HEADER_SIZE], blob[_HEADER_SIZE:]
    nonce = header[1 + KEK_ID_SIZE :]
    try:
        plaintext = AESGCM(kek._secret).decrypt(
            nonce, ciphertext, _associated_data(header, key_id)
        )
    except InvalidTag as err:
        raise SealedKeyError(
            key_id,
            f"Sealed key {key_id!r} fails authentication: it was sealed for another "
            "key id or altered in storage. Import the key again.",
        ) from err
    return serialization.load_der_private_key(plaintext, None)


def _associated_data(header: bytes, key_id: str) -> bytes:
    return header + key_id.encode("utf-8")

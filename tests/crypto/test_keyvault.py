"""Sealing private keys under a key-encryption key, and the KEK file."""

from __future__ import annotations

import hashlib
import os
import stat
import traceback
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from services.crypto.keyvault import (
    KekFileError,
    KeyEncryptionKey,
    SealedKeyError,
    create_kek,
    load_kek,
    open_sealed,
    seal,
)


def pkcs8_der(key: PrivateKeyTypes) -> bytes:
    return key.private_bytes(
        serialization.Encoding.DER,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture
def kek(tmp_path: Path) -> KeyEncryptionKey:
    return create_kek(tmp_path / "kek")


# KEK file


def test_create_kek_writes_private_file(tmp_path: Path) -> None:
    path = tmp_path / "kek"
    kek = create_kek(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    secret = path.read_bytes()
    assert len(secret) == 32
    assert kek.kek_id == hashlib.sha256(secret).digest()[:8]
    assert load_kek(path).kek_id == kek.kek_id


def test_create_kek_ignores_permissive_umask(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        create_kek(tmp_path / "kek")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "kek").stat().st_mode) == 0o600


def test_create_kek_keeps_existing_file(tmp_path: Path) -> None:
    path = tmp_path / "kek"
    create_kek(path)
    before = path.read_bytes()
    with pytest.raises(KekFileError, match="already exists"):
        create_kek(path)
    assert path.read_bytes() == before


def test_two_keks_differ(tmp_path: Path) -> None:
    assert create_kek(tmp_path / "a").kek_id != create_kek(tmp_path / "b").kek_id


@pytest.mark.parametrize("size", [0, 16, 31, 33, 64])
def test_load_kek_rejects_wrong_size(tmp_path: Path, size: int) -> None:
    path = tmp_path / "kek"
    path.write_bytes(b"k" * size)
    path.chmod(0o600)
    with pytest.raises(KekFileError) as error:
        load_kek(path)
    assert str(size if size <= 32 else 33) in str(error.value)
    assert "32" in str(error.value)
    assert error.value.path == path


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o644, 0o660, 0o602])
def test_load_kek_rejects_group_or_other_access(tmp_path: Path, mode: int) -> None:
    path = tmp_path / "kek"
    create_kek(path)
    path.chmod(mode)
    with pytest.raises(KekFileError) as error:
        load_kek(path)
    assert f"{mode:04o}" in str(error.value)
    assert "chmod 600" in str(error.value)


def test_load_kek_accepts_read_only_owner(tmp_path: Path) -> None:
    path = tmp_path / "kek"
    kek = create_kek(path)
    path.chmod(0o400)
    assert load_kek(path).kek_id == kek.kek_id


def test_load_kek_missing_file(tmp_path: Path) -> None:
    with pytest.raises(KekFileError, match="cannot be opened"):
        load_kek(tmp_path / "absent")


def test_load_kek_rejects_directory(tmp_path: Path) -> None:
    directory = tmp_path / "dir"
    directory.mkdir(mode=0o700)
    with pytest.raises(KekFileError):
        load_kek(directory)


def test_kek_repr_hides_secret(tmp_path: Path) -> None:
    path = tmp_path / "kek"
    kek = create_kek(path)
    secret = path.read_bytes()
    for shown in (repr(kek), str(kek)):
        assert secret.hex() not in shown
        assert kek.kek_id.hex() in shown


def test_kek_constructor_checks_size() -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        KeyEncryptionKey(b"short")


# Sealing


@pytest.mark.parametrize("kind", ["rsa", "ec", "ed25519"])
def test_seal_round_trip(
    kek: KeyEncryptionKey, rsa_key: rsa.RSAPrivateKey, kind: str
) -> None:
    key: PrivateKeyTypes = {
        "rsa": rsa_key,
        "ec": ec.generate_private_key(ec.SECP384R1()),
        "ed25519": ed25519.Ed25519PrivateKey.generate(),
    }[kind]
    blob = seal(kek, "alice@example.com", key)
    opened = open_sealed(kek, "alice@example.com", blob)
    assert pkcs8_der(opened) == pkcs8_der(key)


def test_blob_format(tmp_path: Path, rsa_key: rsa.RSAPrivateKey) -> None:
    path = tmp_path / "kek"
    kek = create_kek(path)
    secret = path.read_bytes()
    blob = seal(kek, "key-1", rsa_key)
    der = pkcs8_der(rsa_key)
    assert blob[0] == 1
    assert blob[1:9] == hashlib.sha256(secret).digest()[:8]
    assert len(blob) == 1 + 8 + 12 + len(der) + 16
    # The documented layout decrypts with AES-GCM alone.
    header, nonce = blob[:21], blob[9:21]
    plaintext = AESGCM(secret).decrypt(nonce, blob[21:], header + b"key-1")
    assert plaintext == der


def test_seal_uses_fresh_nonce(
    kek: KeyEncryptionKey, rsa_key: rsa.RSAPrivateKey
) -> None:
    first, second = seal(kek, "k", rsa_key), seal(kek, "k", rsa_key)
    assert first[9:21] != second[9:21]
    assert first != second


def test_blob_moved_to_other_key_id_fails(
    kek: KeyEncryptionKey, rsa_key: rsa.RSAPrivateKey
) -> None:
    blob = seal(kek, "alice@example.com", rsa_key)
    with pytest.raises(SealedKeyError) as error:
        open_sealed(kek, "bob@example.com", blob)
    assert "authentication" in str(error.value)
    assert error.value.key_id == "bob@example.com"


def test_blob_under_other_kek_fails(
    tmp_path: Path, kek: KeyEncryptionKey, rsa_key: rsa.RSAPrivateKey
) -> None:
    other = create_kek(tmp_path / "other")
    blob = seal(kek, "k", rsa_key)
    with pytest.raises(SealedKeyError) as error:
        open_sealed(other, "k", blob)
    assert kek.kek_id.hex() in str(error.value)
    assert other.kek_id.hex() in str(error.value)


@pytest.mark.parametrize("position", [0, 5, 15, 40, -1])
def test_altered_blob_fails(
    kek: KeyEncryptionKey, rsa_key: rsa.RSAPrivateKey, position: int
) -> None:
    blob = bytearray(seal(kek, "k", rsa_key))
    blob[position] ^= 0x01
    with pytest.raises(SealedKeyError):
        open_sealed(kek, "k", bytes(blob))


@pytest.mark.parametrize("length", [0, 1, 20, 36])
def test_truncated_blob_fails(
    kek: KeyEncryptionKey, rsa_key: rsa.RSAPrivateKey, length: int
) -> None:
    blob = seal(kek, "k", rsa_key)
    with pytest.raises(SealedKeyError):
        open_sealed(kek, "k", blob[:length])


def test_vault_errors_hold_no_key_bytes(
    tmp_path: Path, kek: KeyEncryptionKey, rsa_key: rsa.RSAPrivateKey
) -> None:
    der = pkcs8_der(rsa_key)
    secret = (tmp_path / "kek").read_bytes()
    blob = seal(kek, "k", rsa_key)
    assert der not in blob
    assert all(der[i : i + 16] not in blob for i in range(0, len(der) - 16, 16))
    other = create_kek(tmp_path / "other")
    for call in (
        lambda: open_sealed(kek, "x", blob),
        lambda: open_sealed(other, "k", blob),
        lambda: open_sealed(kek, "k", blob[:-1]),
    ):
        with pytest.raises(SealedKeyError) as error:
            call()
        text = "".join(traceback.format_exception(error.value))
        for value in (der.hex(), secret.hex(), blob[21:].hex()):
            assert value not in text

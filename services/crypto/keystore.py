"""Private keys sealed under the KEK in the `keys` bucket, shared by crypto replicas."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from nats.js import JetStreamContext
from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError, NoKeysError
from nats.js.kv import KeyValue

from services.crypto import keyvault
from smimegw import streams


class KeyMissingError(LookupError):
    def __init__(self, key_id: str) -> None:
        super().__init__(
            f"private key {key_id} is not in the {streams.KEYS_BUCKET} bucket; "
            "import the binding again"
        )
        self.key_id = key_id


def key_id_of(private_key: PrivateKeyTypes) -> str:
    """Derive an id from the public key, so one key is stored once."""
    public = private_key.public_key().public_bytes(
        Encoding.DER, PublicFormat.SubjectPublicKeyInfo
    )
    return "k" + hashlib.sha256(public).hexdigest()[:24]


class KeyStore:
    """Sealed keys in the bucket, opened with the KEK or, during a rotation, the next.

    While a rotation runs (`smimegw keys rotate-kek`), the next KEK is in a file
    beside the KEK file, and a blob may be sealed under either. Each blob names
    its KEK by id, so the store opens it with the right one. New keys are
    sealed under the next KEK. A blob under a KEK id that the store does not
    have makes it read the files again, to pick up a rotation that started or
    finished since.
    """

    def __init__(self, js: JetStreamContext, kek: keyvault.KeyEncryptionKey) -> None:
        self._js = js
        self._kek = kek
        self._keks: dict[bytes, keyvault.KeyEncryptionKey] = {}
        self._sealing = kek
        self._bucket: KeyValue | None = None
        self._cache: dict[str, PrivateKeyTypes] = {}
        self._load_keks()

    def _load_keks(self) -> None:
        keks = [self._kek]
        if self._kek.path is not None:
            current = keyvault.load_kek(self._kek.path)
            keks = [self._kek, current]
            retired = keyvault.retired_kek_path(self._kek.path)
            if retired.exists():
                # Read only: a key sealed under it after a rotation's last pass.
                keks.insert(0, keyvault.load_kek(retired))
            upcoming = keyvault.next_kek_path(self._kek.path)
            if upcoming.exists():
                keks.append(keyvault.load_kek(upcoming))
        for kek in keks:
            self._keks.setdefault(kek.kek_id, kek)
        self._sealing = keks[-1]

    async def _kv(self) -> KeyValue:
        if self._bucket is None:
            self._bucket = await self._js.key_value(streams.KEYS_BUCKET)
        return self._bucket

    async def put(self, private_key: PrivateKeyTypes) -> str:
        key_id = key_id_of(private_key)
        sealed = keyvault.seal(self._sealing, key_id, private_key)
        await (await self._kv()).put(key_id, sealed)
        self._cache[key_id] = private_key
        return key_id

    async def get(self, key_id: str) -> PrivateKeyTypes:
        cached = self._cache.get(key_id)
        if cached is not None:
            return cached
        try:
            entry = await (await self._kv()).get(key_id)
        except KeyNotFoundError as err:
            raise KeyMissingError(key_id) from err
        blob = entry.value or b""
        kek_id = keyvault.sealed_kek_id(blob)
        if kek_id is not None and kek_id not in self._keks:
            self._load_keks()
        kek = self._keks.get(kek_id or b"", self._kek)
        private_key = keyvault.open_sealed(kek, key_id, blob)
        self._cache[key_id] = private_key
        return private_key


class RotationError(Exception):
    """A KEK rotation stopped before replacing the KEK file; run it again."""


@dataclass(frozen=True)
class Rotation:
    """Counts and KEK ids of a finished KEK rotation."""

    old_kek_id: str
    new_kek_id: str
    resealed: int
    unchanged: int


# Passes over the bucket: a key that crypto seals under the old KEK while a
# pass runs is picked up by the next one.
_ROTATION_PASSES = 5


async def rotate_kek(js: JetStreamContext, kek_path: Path) -> Rotation:
    """Seal every stored key under a new KEK, then make it the KEK file.

    Safe to interrupt and run again: the new KEK waits beside the old one
    (`next_kek_path`) until every key is sealed under it, each blob names the
    KEK that sealed it, and the crypto service reads both meanwhile. The
    replaced KEK is kept at `retired_kek_path` for backups sealed under it.
    """
    old = keyvault.load_kek(kek_path)
    upcoming = keyvault.next_kek_path(kek_path)
    new = (
        keyvault.load_kek(upcoming)
        if upcoming.exists()
        else keyvault.create_kek(upcoming)
    )
    keks = {old.kek_id: old, new.kek_id: new}
    retired = keyvault.retired_kek_path(kek_path)
    if retired.exists():
        previous = keyvault.load_kek(retired)
        keks.setdefault(previous.kek_id, previous)
    bucket = await js.key_value(streams.KEYS_BUCKET)
    resealed = 0
    unchanged: int | None = None
    for _ in range(_ROTATION_PASSES):
        changed, already = await _reseal_pass(bucket, keks, new)
        # Keys already under the new KEK when the command started.
        unchanged = already if unchanged is None else unchanged
        resealed += changed
        if changed == 0:
            break
    else:
        raise RotationError(
            f"keys were still being sealed under the old KEK after "
            f"{_ROTATION_PASSES} passes; run the rotation again"
        )
    _retire(kek_path, retired)
    os.replace(upcoming, kek_path)
    _sync_directory(kek_path.parent)
    return Rotation(old.kek_id.hex(), new.kek_id.hex(), resealed, unchanged or 0)


async def _reseal_pass(
    bucket: KeyValue,
    keks: dict[bytes, keyvault.KeyEncryptionKey],
    new: keyvault.KeyEncryptionKey,
) -> tuple[int, int]:
    """Reseal the keys not yet under `new`; return (resealed, already under new)."""
    try:
        key_ids = await bucket.keys()
    except NoKeysError:
        return 0, 0
    resealed = unchanged = 0
    for key_id in key_ids:
        entry = await bucket.get(key_id)
        blob = entry.value or b""
        kek_id = keyvault.sealed_kek_id(blob)
        if kek_id == new.kek_id:
            unchanged += 1
            continue
        kek = keks.get(kek_id or b"")
        if kek is None:
            raise RotationError(
                f"sealed key {key_id!r} names KEK {(kek_id or b'').hex() or '?'}, "
                "which is neither the KEK file nor the new KEK; nothing was "
                "replaced. Restore the KEK it was sealed with."
            )
        private_key = keyvault.open_sealed(kek, key_id, blob)
        sealed = keyvault.seal(new, key_id, private_key)
        try:
            # Only if the blob is unchanged since it was read.
            await bucket.update(key_id, sealed, last=entry.revision)
        except KeyWrongLastSequenceError:
            continue  # changed meanwhile; the next pass looks again
        resealed += 1
    return resealed, unchanged


def _retire(kek_path: Path, retired: Path) -> None:
    """Copy the KEK file to `retired` (mode 0600) before it is replaced."""
    temporary = retired.with_name(retired.name + ".tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(descriptor, 0o600)
        os.write(descriptor, kek_path.read_bytes())
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
    os.replace(temporary, retired)


def _sync_directory(directory: Path) -> None:
    descriptor = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)

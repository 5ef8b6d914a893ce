"""Private keys sealed under the KEK in the `keys` bucket, shared by crypto replicas."""

from __future__ import annotations

import hashlib

from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from nats.js import JetStreamContext
from nats.js.errors import KeyNotFoundError
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
    """An id derived from the public key, so one key is stored once."""
    public = private_key.public_key().public_bytes(
        Encoding.DER, PublicFormat.SubjectPublicKeyInfo
    )
    return "k" + hashlib.sha256(public).hexdigest()[:24]


class KeyStore:
    def __init__(self, js: JetStreamContext, kek: keyvault.KeyEncryptionKey) -> None:
        self._js = js
        self._kek = kek
        self._bucket: KeyValue | None = None
        self._cache: dict[str, PrivateKeyTypes] = {}

    async def _kv(self) -> KeyValue:
        if self._bucket is None:
            self._bucket = await self._js.key_value(streams.KEYS_BUCKET)
        return self._bucket

    async def put(self, private_key: PrivateKeyTypes) -> str:
        key_id = key_id_of(private_key)
        sealed = keyvault.seal(self._kek, key_id, private_key)
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
        private_key = keyvault.open_sealed(self._kek, key_id, entry.value or b"")
        self._cache[key_id] = private_key
        return private_key

"""KEK rotation: every key resealed, old mail still decrypts, a crash is harmless."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import nats
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from nats.js.kv import KeyValue

from services.admin.api import create_app
from services.admin.bus import AdminBus
from services.admin.tokens import TokenStore
from services.crypto import keystore, keyvault
from smimegw import streams
from smimegw.cli import build_parser
from tests.config.conftest import THUNDERBIRD
from tests.conftest import gateway_settings
from tests.harness import REPO, NatsServer
from tests.incoming import conftest as incoming_setup
from tests.incoming.conftest import BOB, Incoming

# The gateway with Bob's key imported, from the incoming S/MIME tests.
incoming = incoming_setup.incoming

ENCRYPTED_TO_BOB = THUNDERBIRD / "alice.dsig.SHA1.multipart.env.eml"


async def _sealed_kek_ids(url: str) -> list[str]:
    """The KEK id of every blob in the keys bucket."""
    nc = await nats.connect(url)
    try:
        bucket = await nc.jetstream().key_value(streams.KEYS_BUCKET)
        blobs = [(await bucket.get(key)).value or b"" for key in await bucket.keys()]
    finally:
        await nc.close()
    return [(keyvault.sealed_kek_id(blob) or b"").hex() for blob in blobs]


async def test_old_mail_decrypts_after_rotation(incoming: Incoming) -> None:
    gateway = incoming.gateway
    settings = gateway.settings
    kek_path = settings.kek_path
    old_id = keyvault.load_kek(kek_path).kek_id.hex()
    assert await _sealed_kek_ids(gateway.url) == [old_id]

    # The command line, as an operator runs it beside the KEK file.
    config = Path(settings.data_dir) / "smimegw.toml"
    config.write_text(
        f'data_dir = "{settings.data_dir}"\n[nats]\nurl = "{gateway.url}"\n'
    )
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "smimegw",
            "keys",
            "rotate-kek",
            "--config",
            str(config),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "sealed 1 key " in done.stdout

    new_id = keyvault.load_kek(kek_path).kek_id.hex()
    assert new_id != old_id
    assert await _sealed_kek_ids(gateway.url) == [new_id]
    assert not keyvault.next_kek_path(kek_path).exists()
    retired = keyvault.retired_kek_path(kek_path)
    assert keyvault.load_kek(retired).kek_id.hex() == old_id

    # The operator retires the old KEK; crypto starts again with the new only.
    retired.unlink()
    await gateway.stop_one("crypto")
    await gateway.start_one("crypto")
    sender = await incoming.send(ENCRYPTED_TO_BOB.read_bytes(), BOB)
    delivered = (await incoming.delivered([sender]))[sender]
    [fields] = delivered.decryptions
    assert fields["status"] == "decrypted", fields


class _CrashingBucket:
    """Passes calls to the real bucket but fails the update after `allowed` ones."""

    def __init__(self, bucket: KeyValue, allowed: int) -> None:
        self._bucket = bucket
        self.allowed = allowed

    def __getattr__(self, name: str) -> object:
        return getattr(self._bucket, name)

    async def update(self, key: str, value: bytes, last: int) -> int:
        if self.allowed == 0:
            raise OSError("simulated crash during the rotation")
        self.allowed -= 1
        return await self._bucket.update(key, value, last=last)


async def test_interrupted_rotation_resumes(
    tmp_path: Path, nats_server: NatsServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = gateway_settings(tmp_path)
    kek_path = settings.kek_path
    nc = await nats.connect(nats_server.url)
    try:
        js = nc.jetstream()
        await streams.provision(js, settings)
        store = keystore.KeyStore(js, keyvault.load_kek(kek_path))
        private_keys = [ec.generate_private_key(ec.SECP256R1()) for _ in range(3)]
        key_ids = [await store.put(key) for key in private_keys]
        old_id = keyvault.load_kek(kek_path).kek_id

        real_key_value = js.key_value

        async def crashing_key_value(bucket: str) -> object:
            return _CrashingBucket(await real_key_value(bucket), allowed=1)

        monkeypatch.setattr(js, "key_value", crashing_key_value)
        with pytest.raises(OSError, match="simulated crash"):
            await keystore.rotate_kek(js, kek_path)
        monkeypatch.undo()

        # Nothing replaced yet: the KEK file is the old one, the new waits beside.
        assert keyvault.load_kek(kek_path).kek_id == old_id
        assert keyvault.next_kek_path(kek_path).exists()
        # A crypto service starting now reads keys under either KEK.
        reader = keystore.KeyStore(js, keyvault.load_kek(kek_path))
        for key_id, key in zip(key_ids, private_keys, strict=True):
            opened = await reader.get(key_id)
            assert opened.public_key() == key.public_key()

        result = await keystore.rotate_kek(js, kek_path)
        assert (result.resealed, result.unchanged) == (2, 1)
        new_id = keyvault.load_kek(kek_path).kek_id
        assert new_id != old_id
        bucket = await js.key_value(streams.KEYS_BUCKET)
        for key_id in key_ids:
            blob = (await bucket.get(key_id)).value or b""
            assert keyvault.sealed_kek_id(blob) == new_id

        keyvault.retired_kek_path(kek_path).unlink()
        fresh = keystore.KeyStore(js, keyvault.load_kek(kek_path))
        for key_id, key in zip(key_ids, private_keys, strict=True):
            assert (await fresh.get(key_id)).public_key() == key.public_key()
    finally:
        await nc.close()


async def test_unknown_kek_stops_rotation(
    tmp_path: Path, nats_server: NatsServer
) -> None:
    settings = gateway_settings(tmp_path)
    nc = await nats.connect(nats_server.url)
    try:
        js = nc.jetstream()
        await streams.provision(js, settings)
        stranger = keyvault.KeyEncryptionKey(b"\x07" * keyvault.KEK_SIZE)
        key = ec.generate_private_key(ec.SECP256R1())
        bucket = await js.key_value(streams.KEYS_BUCKET)
        await bucket.put("kforeign", keyvault.seal(stranger, "kforeign", key))
        before = settings.kek_path.read_bytes()
        with pytest.raises(keystore.RotationError, match="kforeign"):
            await keystore.rotate_kek(js, settings.kek_path)
        assert settings.kek_path.read_bytes() == before
    finally:
        await nc.close()


def _command_names(parser: argparse.ArgumentParser, prefix: str = "") -> set[str]:
    names = set()
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                names.add(f"{prefix}{name}")
                names |= _command_names(sub, f"{prefix}{name} ")
    return names


def test_no_command_exports_keys() -> None:
    names = _command_names(build_parser())
    assert "keys rotate-kek" in names
    # `audit export` writes the event log, which holds no key.
    exports = [n for n in names if "export" in n or "private" in n]
    assert exports == ["audit export"] or not exports, exports
    app = create_app(
        AdminBus(None),  # type: ignore[arg-type]
        TokenStore(Path("unused")),
        max_upload=1,
        max_request=1,
    )
    paths = app.openapi()["paths"]
    assert "/api/v1/bindings" in paths
    assert not [p for p in paths if "export" in p or "key" in p]

"""The certificate CLI as operators run it, and no secret anywhere it could leak."""

from __future__ import annotations

import asyncio
import base64
import logging
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import nats
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import pkcs12

from smimegw import streams
from tests.config.conftest import THUNDERBIRD, Admin
from tests.harness import REPO, audit_events, wait_until

PASSWORD = "Correct-Horse-7391-Battery"


async def run_cli(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    # In a thread: the services under test run in this test's event loop.
    return await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "smimegw", *args, "--config", str(config)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin"},
    )


@pytest.fixture
def config(admin: Admin, tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "cli.toml"
    path.write_text(f'[nats]\nurl = "{admin.gateway.url}"\n')
    yield path


@pytest.fixture
def protected_p12(tmp_path: Path) -> Path:
    """Bob's key and certificate, re-exported under PASSWORD."""
    key, certificate, extra = pkcs12.load_key_and_certificates(
        (THUNDERBIRD / "Bob.p12").read_bytes(), b"nss"
    )
    assert key is not None
    data = pkcs12.serialize_key_and_certificates(
        b"bob",
        key,  # type: ignore[arg-type]
        certificate,
        extra,
        serialization.BestAvailableEncryption(PASSWORD.encode()),
    )
    path = tmp_path / "bob-protected.p12"
    path.write_bytes(data)
    return path


async def test_cli_import_list_delete(config: Path, tmp_path: Path) -> None:
    imported = await run_cli(config, "ca", "import", str(THUNDERBIRD / "TestCA.pem"))
    assert imported.returncode == 0, imported.stderr
    assert imported.stdout.startswith("imported CA ")
    password_file = tmp_path / "password"
    password_file.write_text("nss\n")
    created = await run_cli(
        config,
        "binding",
        "create",
        "internal",
        "bob@example.com",
        "--pkcs12",
        str(THUNDERBIRD / "Bob.p12"),
        "--password-file",
        str(password_file),
    )
    assert created.returncode == 0, created.stderr
    binding_id = created.stdout.split()[2]

    listed = await run_cli(config, "binding", "list")
    assert binding_id in listed.stdout
    assert "valid" in listed.stdout
    shown = await run_cli(config, "binding", "show", binding_id, "--json")
    assert '"pattern": "bob@example.com"' in shown.stdout

    ca_id = imported.stdout.split()[2]
    refused = await run_cli(config, "ca", "delete", ca_id)
    assert refused.returncode == 1
    assert "in use by binding" in refused.stderr
    assert (await run_cli(config, "binding", "delete", binding_id)).returncode == 0
    assert (await run_cli(config, "ca", "delete", ca_id)).returncode == 0

    history = await run_cli(config, "config", "history", "--json")
    assert '"type": "config.binding.deleted"' in history.stdout


async def test_cli_failure_exit_status(config: Path, tmp_path: Path) -> None:
    password_file = tmp_path / "password"
    password_file.write_text("not-the-password\n")
    failed = await run_cli(
        config,
        "binding",
        "create",
        "internal",
        "bob@example.com",
        "--pkcs12",
        str(THUNDERBIRD / "Bob.p12"),
        "--password-file",
        str(password_file),
    )
    assert failed.returncode == 1
    assert failed.stderr.startswith("smimegw: ")
    assert "[wrong-password]" in failed.stderr
    assert "not-the-password" not in failed.stderr


async def test_cli_rejects_oversized_file(config: Path, tmp_path: Path) -> None:
    big = tmp_path / "big.pem"
    big.write_bytes(b"x" * (600 * 1024))
    result = await run_cli(config, "ca", "import", str(big))
    assert result.returncode == 1
    assert "big.pem" in result.stderr


async def test_no_secret_leaks(
    admin: Admin,
    protected_p12: Path,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    key, _, _ = pkcs12.load_key_and_certificates(
        protected_p12.read_bytes(), PASSWORD.encode()
    )
    assert key is not None
    der = key.private_bytes(
        serialization.Encoding.DER,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    private_number = key.private_numbers().d.to_bytes(256, "big")  # type: ignore[union-attr]
    needles = {
        "password": PASSWORD.encode(),
        "key DER": der[40:80],
        "key base64": base64.b64encode(der)[60:120],
        "private exponent": private_number[:32],
    }

    await admin.import_ca(THUNDERBIRD / "TestCA.pem")
    ok = await admin.internal("bob@example.com", protected_p12, PASSWORD)
    assert ok.ok, ok.error
    wrong = await admin.internal("bob@example.com", protected_p12, PASSWORD[::-1])
    assert not wrong.ok

    async def audited() -> bool:
        events = await audit_events(admin.gateway.url, type="config.*")
        return any(e["type"] == "config.certificate.import_failed" for e in events)

    await wait_until(audited, timeout=60)

    haystacks: dict[str, bytes] = {
        "logs": caplog.text.encode(),
        "replies": ok.model_dump_json().encode() + wrong.model_dump_json().encode(),
        "audit database": b"".join(
            p.read_bytes() for p in admin.gateway.settings.data_dir.glob("audit*")
        ),
    }
    nc = await nats.connect(admin.gateway.url)
    try:
        js = nc.jetstream()
        for stream in (streams.CONFIG, streams.MAIL, f"KV_{streams.KEYS_BUCKET}"):
            info = await js.stream_info(stream)
            data = b""
            for sequence in range(
                max(info.state.first_seq, 1), info.state.last_seq + 1
            ):
                message = await js.get_msg(stream, seq=sequence)
                data += (message.data or b"") + str(message.headers).encode()
            haystacks[stream] = data
    finally:
        await nc.close()
    assert haystacks[f"KV_{streams.KEYS_BUCKET}"], "the sealed key should be stored"
    for place, haystack in haystacks.items():
        for name, needle in needles.items():
            assert needle not in haystack, f"{name} found in {place}"

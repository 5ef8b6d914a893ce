"""A key import without a password names the ways to give one."""

from __future__ import annotations

from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import pkcs12

from tests.cli.conftest import Cli
from tests.config.conftest import THUNDERBIRD


def assert_names_password_options(stderr: str) -> None:
    assert stderr.startswith("smimegw: "), stderr
    assert "[password-required]" in stderr
    assert "--password-file FILE" in stderr
    assert "SMIMEGW_PASSWORD" in stderr


async def test_pkcs12_without_password(smimegw: Cli) -> None:
    for command in (
        ("binding", "create", "internal", "bob@example.com"),
        ("cert", "import", "gateway"),
    ):
        result = await smimegw(*command, "--pkcs12", str(THUNDERBIRD / "Bob.p12"))
        assert result.status == 1
        assert_names_password_options(result.err)


async def test_encrypted_pem_key_without_password(smimegw: Cli, tmp_path: Path) -> None:
    key, certificate, _ = pkcs12.load_key_and_certificates(
        (THUNDERBIRD / "Bob.p12").read_bytes(), b"nss"
    )
    assert key is not None
    assert certificate is not None
    key_file = tmp_path / "bob.key"
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"Key-Password-5821"),
        )
    )
    cert_file = tmp_path / "bob.pem"
    cert_file.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))

    result = await smimegw(
        "binding",
        "create",
        "internal",
        "bob@example.com",
        "--cert",
        str(cert_file),
        "--key",
        str(key_file),
    )
    assert result.status == 1
    assert_names_password_options(result.err)
    assert "bob.key" in result.err


async def test_wrong_password_has_no_hint(smimegw: Cli, tmp_path: Path) -> None:
    password_file = tmp_path / "password"
    password_file.write_text("not-the-password\n")
    result = await smimegw(
        "binding",
        "create",
        "internal",
        "bob@example.com",
        "--pkcs12",
        str(THUNDERBIRD / "Bob.p12"),
        "--password-file",
        str(password_file),
    )
    assert result.status == 1
    assert "[wrong-password]" in result.err
    assert "--password-file" not in result.err

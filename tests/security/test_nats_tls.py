"""NATS over TLS: the embedded configuration's tls block and the clients' CA."""

from __future__ import annotations

import datetime
import ipaddress
from pathlib import Path

import nats
import nats.errors
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from pydantic import SecretStr

from smimegw import embedded, natsauth
from smimegw.settings import Settings
from tests.conftest import gateway_settings
from tests.harness import Gateway, free_port


def write_server_certificate(directory: Path) -> tuple[Path, Path, Path]:
    """A CA and a server certificate for 127.0.0.1; returns (ca, cert, key)."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test NATS CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "nats")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    paths = (directory / "ca.pem", directory / "server.pem", directory / "server.key")
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return paths


async def test_services_connect_over_tls(tmp_path: Path) -> None:
    ca, cert, key = write_server_certificate(tmp_path)
    port = free_port()
    url = f"nats://127.0.0.1:{port}"
    passwords = natsauth.new_passwords()
    tls = {"tls_cert": cert, "tls_key": key, "tls_ca": ca}
    server_settings = Settings(nats={"url": url, **tls})
    config = tmp_path / "nats.json"
    natsauth.write_server_config(
        config, natsauth.server_config(passwords, server_settings)
    )
    server = embedded.start_server(
        tmp_path / "store", port, extra_args=("-c", str(config))
    )
    try:
        # A client that does not speak TLS is refused.
        with pytest.raises((nats.errors.Error, OSError)):
            await nats.connect(
                url,
                user="audit",
                password=passwords["audit"],
                allow_reconnect=False,
                connect_timeout=2,
            )
        settings = gateway_settings(
            tmp_path,
            nats={
                "url": url,
                "user": "audit",
                "password": SecretStr(passwords["audit"]),
                **tls,
            },
        )
        gateway = Gateway(settings, url)
        await gateway.start_one("audit")
        runtime = gateway.services["audit"][0]
        assert runtime.nc.is_connected
        assert runtime.nc._server_info.get("tls_required") is True
        await gateway.stop()
    finally:
        server.terminate()
        server.wait(timeout=15)


def test_tls_cert_needs_key() -> None:
    with pytest.raises(ValueError, match="go together"):
        Settings(nats={"tls_cert": "/etc/nats/server.pem"})

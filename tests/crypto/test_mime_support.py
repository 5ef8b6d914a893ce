"""Test PKI and OpenSSL helpers shared by the MIME tests, with a check of the PKI."""

import datetime
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import pkcs7
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

REPO = Path(__file__).resolve().parents[2]
INTEROP = REPO.parent / "shared" / "interop"
OPENSSL_TIMEOUT = 30


@dataclass(frozen=True)
class Pki:
    """A CA, an EC signer and an RSA recipient, with their PEM files in `folder`."""

    folder: Path
    ca_pem: Path
    signer_cert: x509.Certificate
    signer_key: ec.EllipticCurvePrivateKey
    recipient_cert: x509.Certificate
    recipient_key: rsa.RSAPrivateKey
    recipient_key_pem: Path

    def sign_detached(self, content: bytes) -> bytes:
        """Return a DER detached SignedData over exactly `content`."""
        return (
            pkcs7.PKCS7SignatureBuilder()
            .set_data(content)
            .add_signer(self.signer_cert, self.signer_key, hashes.SHA256())
            .sign(
                serialization.Encoding.DER,
                [pkcs7.PKCS7Options.Binary, pkcs7.PKCS7Options.DetachedSignature],
            )
        )

    def sign_opaque(self, content: bytes) -> bytes:
        """Return a DER SignedData that carries `content`."""
        return (
            pkcs7.PKCS7SignatureBuilder()
            .set_data(content)
            .add_signer(self.signer_cert, self.signer_key, hashes.SHA256())
            .sign(serialization.Encoding.DER, [pkcs7.PKCS7Options.Binary])
        )

    def encrypt(self, content: bytes) -> bytes:
        """Return a DER EnvelopedData of `content` for the RSA recipient."""
        return (
            pkcs7.PKCS7EnvelopeBuilder()
            .set_data(content)
            .add_recipient(self.recipient_cert)
            .encrypt(serialization.Encoding.DER, [pkcs7.PKCS7Options.Binary])
        )


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _certificate(
    subject: str,
    public_key: ec.EllipticCurvePublicKey | rsa.RSAPublicKey,
    issuer_key: ec.EllipticCurvePrivateKey,
    *,
    ca: bool,
    email: str | None = None,
    encipherment: bool = False,
) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(_name("MIME Test CA"))
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=not ca,
                content_commitment=False,
                key_encipherment=encipherment,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=ca,
                crl_sign=ca,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
    )
    if email is not None:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.RFC822Name(email)]), critical=False
        ).add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION]),
            critical=False,
        )
    return builder.sign(issuer_key, hashes.SHA256())


def make_pki(folder: Path) -> Pki:
    """Create the test PKI and write ca.pem and recipient-key.pem into `folder`."""
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_cert = _certificate("MIME Test CA", ca_key.public_key(), ca_key, ca=True)
    signer_key = ec.generate_private_key(ec.SECP256R1())
    signer_cert = _certificate(
        "Signer", signer_key.public_key(), ca_key, ca=False, email="signer@example.com"
    )
    recipient_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    recipient_cert = _certificate(
        "Recipient",
        recipient_key.public_key(),
        ca_key,
        ca=False,
        email="recipient@example.com",
        encipherment=True,
    )
    ca_pem = folder / "ca.pem"
    ca_pem.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    key_pem = folder / "recipient-key.pem"
    key_pem.write_bytes(
        recipient_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return Pki(
        folder, ca_pem, signer_cert, signer_key, recipient_cert, recipient_key, key_pem
    )


def openssl_cms(*args: str | Path) -> subprocess.CompletedProcess[bytes]:
    """Run `openssl cms` with these arguments and return its result, never raising."""
    return subprocess.run(
        ["openssl", "cms", *map(str, args)],
        capture_output=True,
        timeout=OPENSSL_TIMEOUT,
        check=False,
    )


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


def test_test_pki_signature_verifies_with_openssl(pki: Pki) -> None:
    content = b"Content-Type: text/plain\r\n\r\nhello\r\n"
    (pki.folder / "content.bin").write_bytes(content)
    (pki.folder / "sig.der").write_bytes(pki.sign_detached(content))
    result = openssl_cms(
        "-verify", "-binary", "-inform", "DER", "-in", pki.folder / "sig.der",
        "-content", pki.folder / "content.bin", "-CAfile", pki.ca_pem,
        "-out", pki.folder / "out.bin",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr.decode()

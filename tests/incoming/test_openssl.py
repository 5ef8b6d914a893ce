"""Messages made by `openssl cms` and `openssl smime`, opened end to end over SMTP.

A private CA, imported into the gateway, issues the signers; a second CA, never
imported, issues a stranger. Bob's Thunderbird key is the internal binding that
decrypts.
"""

from __future__ import annotations

import base64
import re
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tests.incoming.conftest import THUNDERBIRD, Delivered, Incoming, wire_form

SigningKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
ENTITY = b"Content-Type: text/plain; charset=us-ascii\r\n\r\nHello Bob, a test.\r\n"
TEXT = b"Hello Bob, a test."
HEADERS = ["-from", "carol@example.net", "-to", "bob@example.com", "-subject", "test"]


@dataclass(frozen=True)
class Identity:
    certificate: Path
    key: Path


@dataclass(frozen=True)
class Pki:
    ca: Path
    carol: Identity  # issued by the imported CA
    dan: Identity  # issued by the imported CA
    expired: Identity  # issued by the imported CA, notAfter yesterday
    future: Identity  # issued by the imported CA, notBefore tomorrow
    stranger: Identity  # issued by a CA that is not imported
    self_signed: Identity
    server: Identity  # issued by the imported CA for serverAuth only
    erin: Identity  # ECDSA P-256, issued by the imported CA
    retired: Identity  # an expired internal binding for retired@example.com
    bob: Path  # Bob's certificate from Bob.p12


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _certificate(
    subject: str,
    key: SigningKey,
    issuer: tuple[x509.Certificate, rsa.RSAPrivateKey] | None,
    *,
    address: str | None,
    days: tuple[int, int] = (-1, 365),
    usage: x509.ObjectIdentifier = ExtendedKeyUsageOID.EMAIL_PROTECTION,
) -> x509.Certificate:
    now = datetime.now(UTC)
    issuer_name = issuer[0].subject if issuer else _name(subject)
    signing_key = issuer[1] if issuer else key
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now + timedelta(days=days[0]))
        .not_valid_after(now + timedelta(days=days[1]))
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False
        )
    )
    if address is None:
        builder = builder.add_extension(x509.BasicConstraints(True, None), True)
        builder = builder.add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            True,
        )
    else:
        builder = (
            builder.add_extension(x509.BasicConstraints(False, None), True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=True,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=False,
                    crl_sign=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                True,
            )
            .add_extension(x509.ExtendedKeyUsage([usage]), False)
            .add_extension(
                x509.SubjectAlternativeName([x509.RFC822Name(address)]), False
            )
        )
    if issuer is not None:
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer[1].public_key()),
            False,
        )
    return builder.sign(signing_key, hashes.SHA256())


def _write(
    directory: Path, name: str, certificate: x509.Certificate, key: SigningKey
) -> Identity:
    cert_path, key_path = directory / f"{name}.pem", directory / f"{name}.key"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return Identity(cert_path, key_path)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    directory = tmp_path_factory.mktemp("pki")
    keys = [rsa.generate_private_key(65537, 2048) for _ in range(9)]
    ca = _certificate("Incoming Test CA", keys[0], None, address=None, days=(-800, 800))
    other_ca = _certificate("Other CA", keys[1], None, address=None)
    issuer = (ca, keys[0])

    def issued(
        name: str, key: SigningKey, days: tuple[int, int] = (-1, 365)
    ) -> Identity:
        address = f"{name}@example.net"
        certificate = _certificate(name, key, issuer, address=address, days=days)
        return _write(directory, name, certificate, key)

    ca_path = directory / "ca.pem"
    ca_path.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    stranger = _certificate(
        "stranger", keys[5], (other_ca, keys[1]), address="stranger@example.net"
    )
    self_signed = _certificate(
        "selfie", keys[6], None, address="selfie@example.net", days=(-1, 30)
    )
    retired = _certificate(
        "retired", keys[7], issuer, address="retired@example.com", days=(-400, -2)
    )
    server = _certificate(
        "server",
        keys[8],
        issuer,
        address="server@example.net",
        usage=ExtendedKeyUsageOID.SERVER_AUTH,
    )
    _, bob, _ = pkcs12.load_key_and_certificates(
        (THUNDERBIRD / "Bob.p12").read_bytes(), b"nss"
    )
    assert bob is not None
    bob_path = directory / "bob.pem"
    bob_path.write_bytes(bob.public_bytes(serialization.Encoding.PEM))
    return Pki(
        ca=ca_path,
        carol=issued("carol", keys[2]),
        dan=issued("dan", keys[3]),
        expired=issued("expired", keys[4], days=(-400, -1)),
        future=issued("future", ec.generate_private_key(ec.SECP384R1()), (1, 400)),
        stranger=_write(directory, "stranger", stranger, keys[5]),
        self_signed=_write(directory, "selfie", self_signed, keys[6]),
        retired=_write(directory, "retired", retired, keys[7]),
        server=_write(directory, "server", server, keys[8]),
        erin=issued("erin", ec.generate_private_key(ec.SECP256R1())),
        bob=bob_path,
    )


def openssl(*args: str | Path, data: bytes) -> bytes:
    done = subprocess.run(
        ["openssl", *map(str, args)],
        input=data,
        capture_output=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    return wire_form(done.stdout)


def signed(
    tool: str,
    *signers: Identity,
    opaque: bool = False,
    data: bytes = ENTITY,
    headers: bool = True,
    key_options: tuple[str, ...] = (),
) -> bytes:
    args: list[str | Path] = [tool, "-sign", "-md", "sha256"]
    for signer in signers:
        args += ["-signer", signer.certificate, "-inkey", signer.key]
        for option in key_options:
            args += ["-keyopt", option]
    if opaque:
        args.append("-nodetach")
    if headers:
        args += HEADERS
    return openssl(*args, data=data)


def encrypted(
    tool: str,
    recipient: Path,
    *options: str,
    key_options: tuple[str, ...] = (),
    data: bytes = ENTITY,
    headers: bool = True,
) -> bytes:
    args: list[str | Path] = [tool, "-encrypt", *options]
    if headers:
        args += HEADERS
    if key_options:
        # -keyopt applies to the -recip before it.
        args += ["-recip", recipient]
        for option in key_options:
            args += ["-keyopt", option]
        return openssl(*args, data=data)
    return openssl(*args, recipient, data=data)


def replace_header(message: bytes, pattern: bytes, replacement: bytes) -> bytes:
    head, separator, body = message.partition(b"\r\n\r\n")
    changed, count = re.subn(pattern, replacement, head, flags=re.IGNORECASE)
    assert count == 1, (pattern, head)
    return changed + separator + body


def tamper_opaque(message: bytes) -> bytes:
    """Change one byte of the content inside an opaque SignedData."""
    head, separator, body = message.partition(b"\r\n\r\n")
    der = base64.b64decode(body)
    assert der.count(b"Hello Bob") == 1
    der = der.replace(b"Hello Bob", b"Jello Bob")
    return head + separator + base64.encodebytes(der).replace(b"\n", b"\r\n")


def tamper_last_byte(message: bytes) -> bytes:
    """Flip the last byte of the DER in a base64 body."""
    head, separator, body = message.partition(b"\r\n\r\n")
    der = bytearray(base64.b64decode(body))
    der[-1] ^= 0x01
    return head + separator + base64.encodebytes(der).replace(b"\n", b"\r\n")


@dataclass(frozen=True)
class Expected:
    """Per signer: (layer, result, certificate); then the decryption status."""

    signers: tuple[tuple[int, str, str], ...] = ()
    decryption: str | None = None
    text: bool = False  # the plain text is readable in the delivered message
    # The entity that a decrypted message must end with, byte for byte.
    entity: bytes | None = None


def signed_forms(signer: Identity) -> Iterator[tuple[str, bytes, bool]]:
    """Yield (form, message, detached) for every way senders label a signature."""
    smime_detached = signed("smime", signer)
    cms_detached = signed("cms", signer)
    opaque = signed("cms", signer, opaque=True)
    yield "smime detached", smime_detached, True
    yield "cms detached", cms_detached, True
    yield "cms opaque", opaque, False
    yield "smime opaque", signed("smime", signer, opaque=True), False
    yield (
        "no protocol",
        replace_header(cms_detached, rb'protocol="application/pkcs7-signature"; ', b""),
        True,
    )
    yield "no micalg", replace_header(smime_detached, rb' micalg="sha-256";', b""), True
    for spelling in (b"SHA256", b"sha256"):
        yield (
            f"micalg {spelling.decode()}",
            replace_header(smime_detached, rb'micalg="sha-256"', b"micalg=" + spelling),
            True,
        )
    yield (
        "opaque letter case",
        replace_header(opaque, rb"application/pkcs7-mime", b"Application/PKCS7-MIME"),
        False,
    )
    yield (
        "opaque without smime-type",
        replace_header(opaque, rb" smime-type=signed-data;", b""),
        False,
    )
    yield (
        "opaque as octet-stream",
        replace_header(
            opaque,
            rb"application/pkcs7-mime; smime-type=signed-data; name=\"?smime.p7m\"?",
            b'application/octet-stream; name="smime.p7m"',
        ),
        False,
    )


def sent_messages(pki: Pki) -> Iterator[tuple[str, bytes, Expected]]:
    signers = [
        (pki.carol, "trusted"),
        (pki.expired, "expired"),
        (pki.future, "not-yet-valid"),
        # Issued by a CA that the gateway never imported.
        (pki.stranger, "untrusted"),
        (pki.self_signed, "untrusted"),
        # RFC 8550 section 4.4.4: the extended key usage must allow email.
        (pki.server, "untrusted"),
    ]
    for signer, status in signers:
        name = signer.certificate.stem
        for form, message, detached in signed_forms(signer):
            yield (
                f"{form} by {name}",
                message,
                Expected(((1, "valid", status),), text=True),
            )
            tampered = (
                message.replace(b"Hello Bob", b"Jello Bob")
                if detached
                else tamper_opaque(message)
            )
            yield (
                f"{form} by {name}, tampered",
                tampered,
                Expected(((1, "invalid", status),)),
            )
    yield (
        "ECDSA signer",
        signed("cms", pki.erin),
        Expected(((1, "valid", "trusted"),), text=True),
    )
    yield (
        "RSA-PSS signer",
        signed("cms", pki.carol, key_options=("rsa_padding_mode:pss",)),
        Expected(((1, "valid", "trusted"),), text=True),
    )
    yield (
        "two signers",
        signed("cms", pki.carol, pki.dan),
        Expected(((1, "valid", "trusted"), (1, "valid", "trusted")), text=True),
    )

    decrypted = Expected(decryption="decrypted", text=True)
    enveloped = encrypted("cms", pki.bob, "-aes256")
    yield "cms enveloped", enveloped, decrypted
    yield "smime enveloped", encrypted("smime", pki.bob, "-aes128"), decrypted
    yield "3DES enveloped", encrypted("cms", pki.bob, "-des3"), decrypted
    yield (
        # Bob's certificate has no subject key identifier; the retired one has.
        "enveloped by key id, OAEP",
        encrypted(
            "cms",
            pki.retired.certificate,
            "-aes256",
            "-keyid",
            key_options=("rsa_padding_mode:oaep", "rsa_oaep_md:sha256"),
        ),
        decrypted,
    )
    auth_enveloped = encrypted("cms", pki.bob, "-aes-128-gcm")
    yield "auth-enveloped AES-GCM", auth_enveloped, decrypted
    yield (
        # The last byte of the DER is the last byte of the GCM tag.
        "auth-enveloped, tampered",
        tamper_last_byte(auth_enveloped),
        Expected(decryption="failed"),
    )
    yield (
        "enveloped letter case",
        replace_header(
            enveloped, rb"application/pkcs7-mime", b"APPLICATION/x-pkcs7-MIME"
        ),
        decrypted,
    )
    yield (
        "enveloped without smime-type",
        replace_header(enveloped, rb" smime-type=enveloped-data;", b""),
        decrypted,
    )
    yield (
        "enveloped as octet-stream",
        replace_header(
            enveloped,
            rb"application/pkcs7-mime; smime-type=enveloped-data; name=\"?smime.p7m\"?",
            b"application/octet-stream; name=smime.p7m",
        ),
        decrypted,
    )
    yield (
        "expired internal key",
        encrypted("cms", pki.retired.certificate, "-aes256"),
        decrypted,
    )

    inner_detached = signed("cms", pki.carol, headers=False)
    yield (
        "signed then encrypted",
        encrypted("cms", pki.bob, "-aes256", data=inner_detached),
        Expected(((1, "valid", "trusted"),), "decrypted", True, inner_detached),
    )
    inner_enveloped = encrypted("cms", pki.bob, "-aes256", headers=False)
    yield (
        "encrypted then signed",
        signed("cms", pki.carol, opaque=True, data=inner_enveloped),
        Expected(((1, "valid", "trusted"),), "decrypted", True, ENTITY),
    )
    yield (
        "signed, encrypted, signed",
        signed(
            "cms",
            pki.dan,
            data=encrypted(
                "cms", pki.bob, "-aes256", data=inner_detached, headers=False
            ),
        ),
        Expected(
            ((1, "valid", "trusted"), (2, "valid", "trusted")),
            "decrypted",
            True,
            inner_detached,
        ),
    )


def check(name: str, delivered: Delivered, expected: Expected) -> None:
    signers = tuple(
        (int(f["layer"]), f["result"], f["certificate"]) for f in delivered.signatures
    )
    assert signers == expected.signers, (name, delivered.signatures)
    statuses = tuple(f["status"] for f in delivered.decryptions)
    assert statuses == ((expected.decryption,) if expected.decryption else ()), name
    if expected.text:
        assert TEXT in readable(delivered.message), name
    if expected.entity is not None:
        assert delivered.message.endswith(expected.entity), name
        assert delivered.message.count(b"MIME-Version:") == 1, name


def readable(message: bytes) -> bytes:
    """The message, and for opaque SignedData its DER, which contains the content."""
    head, _, body = message.partition(b"\r\n\r\n")
    if b"pkcs7-mime" not in head.lower() and b"smime.p7m" not in head.lower():
        return message
    return base64.b64decode(body)


async def test_openssl_forms(incoming: Incoming, pki: Pki) -> None:
    admin = incoming.admin
    assert (await admin.import_ca(pki.ca)).ok
    reply = await admin.internal_pem(
        "retired@example.com", pki.retired.certificate, pki.retired.key
    )
    assert reply.ok, reply.error
    cases = list(sent_messages(pki))
    senders = [await incoming.send(message) for _, message, _ in cases]
    delivered = await incoming.delivered(senders)

    for (name, message, expected), sender in zip(cases, senders, strict=True):
        check(name, delivered[sender], expected)
        if expected.decryption in (None, "failed"):
            # Signed only, or not decrypted: delivered byte for byte, result fields
            # aside.
            assert delivered[sender].message == message, name

    # Triple DES decrypts, and its operation in mail.processed is marked weak.
    await incoming.wait_for_events("mail.processed", len(cases))
    processed = await incoming.events("mail.processed")
    weak_by_name = {}
    for (name, _, expected), sender in zip(cases, senders, strict=True):
        if expected.decryption == "decrypted":
            [event] = processed[sender]
            [operation] = [
                op for op in event["operations"] if op["operation"] == "decrypt"
            ]
            weak_by_name[name] = operation["weak"]
    assert weak_by_name["3DES enveloped"] is True
    assert weak_by_name["cms enveloped"] is False
    assert weak_by_name["auth-enveloped AES-GCM"] is False

    verified = await incoming.events("mail.verified")
    algorithms = {
        name: verified[sender][0]["layers"][0][0]["signature_algorithm"]
        for (name, _, _), sender in zip(cases, senders, strict=True)
        if name in ("ECDSA signer", "RSA-PSS signer", "cms detached by carol")
    }
    assert algorithms == {
        "ECDSA signer": "ecdsa",
        "RSA-PSS signer": "rsa-pss",
        "cms detached by carol": "rsa-pkcs1v15",
    }

    # The signed entity left after decryption still verifies with OpenSSL.
    checked = 0
    for (name, _, expected), sender in zip(cases, senders, strict=True):
        if expected.entity is None or expected.entity == ENTITY:
            continue
        checked += 1
        done = subprocess.run(
            ["openssl", "cms", "-verify", "-CAfile", str(pki.ca), "-purpose", "any"],
            input=delivered[sender].message,
            capture_output=True,
            timeout=30,
            check=False,
        )
        assert done.returncode == 0, (name, done.stderr.decode(errors="replace"))
        assert done.stdout.replace(b"\r\n", b"\n") == ENTITY.replace(b"\r\n", b"\n")
    assert checked == 2

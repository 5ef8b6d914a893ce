"""Seed inputs and keys for the CMS fuzz targets, from the S/MIME interop corpus.

The corpus contains whole messages (`.eml`), bare MIME entities and raw DER. A CMS
target wants the DER inside, so each file is read as MIME first and as DER second.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import ExtensionOID, NameOID

from services.crypto.cms import envelope
from services.crypto.cms.envelope import RecipientKey
from services.crypto.cms.recipients import RECIPIENT_ID_KINDS, RecipientIdKind
from services.crypto.mime import MimeError, SmimeKind, detect, kind_of_cms

REPO = Path(__file__).resolve().parent.parent
INTEROP = REPO.parent / "shared" / "interop"
KEY_FOLDER = REPO / "var" / "fuzz" / "keys"
THUNDERBIRD = INTEROP / "thunderbird"
# The corpus README gives this password for every NSS PKCS#12 file.
NSS_PASSWORD = b"nss"
ENVELOPED_KINDS = (SmimeKind.ENVELOPED,)
SIGNED_KINDS = (SmimeKind.OPAQUE_SIGNED, SmimeKind.DETACHED_SIGNED)


def recipient_keys() -> list[RecipientKey]:
    """Bob's, Fran's and Fran-ec's keys, and the generated keys of `extra_keys`."""
    paths = [
        THUNDERBIRD / "smime" / "Bob.p12",
        THUNDERBIRD / "smime-interop" / "Fran.p12",
        THUNDERBIRD / "smime-interop" / "Fran-ec.p12",
    ]
    keys = []
    for path in paths:
        with warnings.catch_warnings():
            # The NSS files are BER; cryptography warns that it falls back to BER.
            warnings.simplefilter("ignore", UserWarning)
            key, certificate, _ = pkcs12.load_key_and_certificates(
                path.read_bytes(), NSS_PASSWORD
            )
        assert isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey)
        assert certificate is not None
        keys.append(RecipientKey(certificate, key))
    return keys + extra_keys()


def extra_keys() -> list[RecipientKey]:
    """RSA, P-384 and P-521 keys with a subject key identifier, which no corpus key has.

    They are generated once into var/fuzz/keys, so that the seeds written by one
    process decrypt in the fuzzing process.
    """
    KEY_FOLDER.mkdir(parents=True, exist_ok=True)
    keys = []
    for name, generate in _EXTRA_KEYS.items():
        key_path = KEY_FOLDER / f"{name}.key"
        cert_path = KEY_FOLDER / f"{name}.crt"
        if not cert_path.exists():
            private_key = generate()
            key_path.write_bytes(
                private_key.private_bytes(
                    serialization.Encoding.PEM,
                    serialization.PrivateFormat.PKCS8,
                    serialization.NoEncryption(),
                )
            )
            cert_path.write_bytes(
                _self_signed(name, private_key).public_bytes(serialization.Encoding.PEM)
            )
        loaded = serialization.load_pem_private_key(key_path.read_bytes(), None)
        assert isinstance(loaded, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey)
        certificate = x509.load_pem_x509_certificate(cert_path.read_bytes())
        keys.append(RecipientKey(certificate, loaded))
    return keys


def _self_signed(
    name: str, key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
) -> x509.Certificate:
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"fuzz {name}")])
    start = datetime(2026, 1, 1, tzinfo=UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + timedelta(days=3650))
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False
        )
        .sign(key, hashes.SHA256())
    )


_EXTRA_KEYS: dict[str, Callable[[], rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey]] = {
    "rsa": lambda: rsa.generate_private_key(65537, 2048),
    "p384": lambda: ec.generate_private_key(ec.SECP384R1()),
    "p521": lambda: ec.generate_private_key(ec.SECP521R1()),
}


def trust_anchors() -> list[x509.Certificate]:
    """Load the NSS test CA and the RFC 4134 and RFC 9216 root CAs."""
    pem_files = [
        THUNDERBIRD / "smime" / "TestCA.pem",
        INTEROP / "rfc4134" / "CarlRSASelf.pem",
        *sorted((INTEROP / "rfc9216").glob("*Authority.selfsigned.pem")),
    ]
    anchors: list[x509.Certificate] = []
    for path in pem_files:
        anchors.extend(x509.load_pem_x509_certificates(path.read_bytes()))
    return anchors


def cms_seeds(kinds: tuple[SmimeKind, ...]) -> Iterator[tuple[str, bytes]]:
    """Yield (file name, DER) for each corpus file whose CMS is one of `kinds`."""
    for path in sorted(p for p in INTEROP.rglob("*") if p.is_file()):
        der = _cms_of(path.read_bytes())
        if der is not None and _kind_of(der) in kinds:
            yield path.name, der


def _can_name(certificate: x509.Certificate, kind: RecipientIdKind) -> bool:
    if kind == "issuer-serial":
        return True
    extensions = certificate.extensions
    return any(e.oid == ExtensionOID.SUBJECT_KEY_IDENTIFIER for e in extensions)


def _kind_of(der: bytes) -> SmimeKind:
    """Return the CMS kind of `der`, NONE for DER that is no ContentInfo."""
    try:
        return kind_of_cms(der)
    except MimeError:
        return SmimeKind.NONE


def generated_envelopes() -> Iterator[tuple[str, bytes]]:
    """Yield what the gateway writes to the corpus keys, for every algorithm.

    The corpus has no AuthEnvelopedData, AES-192, OAEP-SHA-256 written by the
    gateway or subject key identifiers, so these seeds lead the fuzzer there.
    """
    certificates = [key.certificate for key in recipient_keys()]
    for algorithm in envelope.CONTENT_ALGORITHMS:
        for transport in envelope.RSA_KEY_TRANSPORTS:
            for kind in RECIPIENT_ID_KINDS:
                named = [c for c in certificates if _can_name(c, kind)]
                der = envelope.encrypt(
                    b"Content-Type: text/plain\r\n\r\nfuzz seed\r\n",
                    named,
                    content_algorithm=algorithm,
                    rsa_key_transport=transport,
                    recipient_id=kind,
                )
                yield f"gateway-{algorithm}-{transport}-{kind}", der


def _cms_of(data: bytes) -> bytes | None:
    if data[:1] == b"\x30":
        return data
    try:
        smime = detect(data)
    except MimeError:
        return None
    return smime.der


def write_seeds(target: str, kinds: tuple[SmimeKind, ...], folder: Path) -> Path:
    """Write the seeds of `target` into `folder`/`target` and return that folder."""
    seeds = folder / target
    seeds.mkdir(parents=True, exist_ok=True)
    found = list(cms_seeds(kinds))
    if SmimeKind.ENVELOPED in kinds:
        found += generated_envelopes()
    for index, (name, der) in enumerate(found):
        (seeds / f"{index:03d}-{name}.der").write_bytes(der)
    return seeds

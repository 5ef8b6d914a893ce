"""EnvelopedData and AuthEnvelopedData against OpenSSL's `cms` command and a corpus.

OpenSSL 3.0 reads and writes AuthEnvelopedData with AES-GCM, so GCM output is
checked by `openssl cms -decrypt` like every other content algorithm.
"""

from __future__ import annotations

import dataclasses
import datetime
import email
import itertools
import os
import subprocess
import warnings
from dataclasses import dataclass
from pathlib import Path

import pytest
from asn1crypto import cms, core
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import NameOID

from services.crypto.cms import envelope, envelope_reader
from services.crypto.cms.envelope import RecipientId, RecipientKey
from services.crypto.cms.errors import (
    CmsLimitError,
    DecryptionFailedError,
    MalformedCmsError,
    NoMatchingRecipientError,
    UnsupportedAlgorithmError,
)

REPO = Path(__file__).resolve().parents[2]
INTEROP = REPO.parent / "shared" / "interop"
FRAN_DIR = INTEROP / "thunderbird" / "smime-interop"
RFC4134 = INTEROP / "rfc4134"
MESSAGE = b"Gateway test message\r\nwith two lines and \x00 binary \xff bytes\r\n"
FRAN_TEXT = b"This is a test message to Fran."
RFC4134_TEXT = b"This is some sample content."

requires_corpus = pytest.mark.skipif(
    not INTEROP.is_dir(), reason="the S/MIME interop corpus is not next to the repo"
)


@dataclass(frozen=True)
class Party:
    name: str
    key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
    certificate: x509.Certificate
    key_path: Path
    cert_path: Path

    @property
    def recipient_key(self) -> RecipientKey:
        return RecipientKey(self.certificate, self.key)


def _write_party(
    directory: Path,
    name: str,
    key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey,
    ca_key: ec.EllipticCurvePrivateKey,
    ca_name: x509.Name,
) -> Party:
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    key_path = directory / f"{name}.key"
    cert_path = directory / f"{name}.crt"
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    return Party(name, key, certificate, key_path, cert_path)


@pytest.fixture(scope="session")
def parties(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Party]:
    """One RSA-2048 and one P-256/P-384/P-521 recipient, issued by a test CA."""
    directory = tmp_path_factory.mktemp("envelope-keys")
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Gateway Test, Inc."),
            x509.NameAttribute(NameOID.COMMON_NAME, "Envelope Test CA"),
        ]
    )
    keys: dict[str, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey] = {
        "rsa": rsa.generate_private_key(public_exponent=65537, key_size=2048),
        "p256": ec.generate_private_key(ec.SECP256R1()),
        "p384": ec.generate_private_key(ec.SECP384R1()),
        "p521": ec.generate_private_key(ec.SECP521R1()),
        "p256-other": ec.generate_private_key(ec.SECP256R1()),
    }
    return {
        name: _write_party(directory, name, key, ca_key, ca_name)
        for name, key in keys.items()
    }


@pytest.fixture(scope="session")
def fran() -> dict[str, RecipientKey]:
    """Fran's RSA and EC keys from the NSS interop corpus (3DES PBE PKCS#12)."""
    if not FRAN_DIR.is_dir():
        pytest.skip("the S/MIME interop corpus is not next to the repository")
    keys = {}
    for name in ("Fran.p12", "Fran-ec.p12"):
        key, certificate, _ = pkcs12.load_key_and_certificates(
            (FRAN_DIR / name).read_bytes(), b"nss"
        )
        assert isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey)
        assert certificate is not None
        keys[name] = RecipientKey(certificate, key)
    return keys


def openssl(*args: str | Path, stdin: bytes | None = None) -> bytes:
    result = subprocess.run(
        ["openssl", *map(str, args)],
        input=stdin,
        capture_output=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stderr.decode(errors="replace")
    return result.stdout


def openssl_decrypt(der: bytes, party: Party, tmp_path: Path) -> bytes:
    message = tmp_path / "message.der"
    message.write_bytes(der)
    return openssl(
        "cms", "-decrypt", "-binary", "-inform", "DER", "-in", message,
        "-inkey", party.key_path, "-recip", party.cert_path,
    )  # fmt: skip


def openssl_encrypt(
    tmp_path: Path, cipher: str, recipients: list[tuple[Party, list[str]]], *flags: str
) -> bytes:
    source = tmp_path / "plain.bin"
    source.write_bytes(MESSAGE)
    args: list[str | Path] = ["cms", "-encrypt", "-binary", "-outform", "DER"]
    args += [cipher, *flags, "-in", source]
    for party, keyopts in recipients:
        args += ["-recip", party.cert_path]
        for keyopt in keyopts:
            args += ["-keyopt", keyopt]
    return openssl(*args)


def mime_payload(path: Path) -> bytes:
    """Return the decoded body of an application/pkcs7-mime message."""
    message = email.message_from_bytes(path.read_bytes())
    payload = message.get_payload(decode=True)
    assert isinstance(payload, bytes)
    return payload


# --- The gateway encrypts, OpenSSL decrypts ----------------------------------------

GATEWAY_CASES = [
    (party, algorithm, transport)
    for algorithm in envelope.CONTENT_ALGORITHMS
    for party, transport in [
        ("rsa", "rsa-pkcs1v15"),
        ("rsa", "rsa-oaep-sha1"),
        ("rsa", "rsa-oaep-sha256"),
        ("p256", "rsa-pkcs1v15"),
        ("p384", "rsa-pkcs1v15"),
        ("p521", "rsa-pkcs1v15"),
    ]
]


@pytest.mark.parametrize(("party_name", "algorithm", "transport"), GATEWAY_CASES)
@pytest.mark.parametrize("recipient_id", ["issuer-serial", "subject-key-identifier"])
def test_openssl_decrypts_gateway_output(
    parties: dict[str, Party],
    tmp_path: Path,
    party_name: str,
    algorithm: str,
    transport: str,
    recipient_id: str,
) -> None:
    party = parties[party_name]
    der = envelope.encrypt(
        MESSAGE,
        [party.certificate],
        content_algorithm=algorithm,
        rsa_key_transport=transport,
        recipient_id=recipient_id,  # type: ignore[arg-type]
    )

    assert openssl_decrypt(der, party, tmp_path) == MESSAGE
    decrypted = envelope.decrypt(der, [party.recipient_key])
    assert decrypted.content == MESSAGE
    assert decrypted.content_algorithm == algorithm
    assert decrypted.auth_enveloped == algorithm.endswith("-gcm")


def test_gateway_output_structure(parties: dict[str, Party]) -> None:
    der = envelope.encrypt(
        MESSAGE,
        [parties["rsa"].certificate, parties["p384"].certificate],
        content_algorithm="aes256-gcm",
        rsa_key_transport="rsa-oaep-sha256",
    )
    content_info = cms.ContentInfo.load(der)
    assert content_info["content_type"].native == "authenticated_enveloped_data"
    auth_enveloped = content_info["content"]
    assert auth_enveloped["version"].native == "v0"
    ktri, kari = (info.chosen for info in auth_enveloped["recipient_infos"])
    assert (
        ktri["key_encryption_algorithm"]["algorithm"].dotted == "1.2.840.113549.1.1.7"
    )
    # RFC 5754: SHA-256 inside the OAEP parameters has absent parameters.
    oaep = ktri["key_encryption_algorithm"]["parameters"]
    assert oaep["hash_algorithm"].dump().hex() == "a00d300b0609608648016503040201"
    assert kari["version"].native == "v3"
    # dhSinglePass-stdDH-sha384kdf-scheme with id-aes256-wrap for P-384.
    assert kari["key_encryption_algorithm"]["algorithm"].dotted == "1.3.132.1.11.2"
    content_algorithm = auth_enveloped["auth_encrypted_content_info"][
        "content_encryption_algorithm"
    ]
    assert content_algorithm["algorithm"].dotted == "2.16.840.1.101.3.4.1.46"
    assert len(auth_enveloped["mac"].native) == 16


def test_enveloped_data_versions(parties: dict[str, Party]) -> None:
    rsa_only = envelope.encrypt(MESSAGE, [parties["rsa"].certificate])
    by_ski = envelope.encrypt(
        MESSAGE, [parties["rsa"].certificate], recipient_id="subject-key-identifier"
    )
    with_ec = envelope.encrypt(
        MESSAGE, [parties["rsa"].certificate, parties["p256"].certificate]
    )

    # RFC 5652 section 6.1: 0 when every RecipientInfo is version 0, otherwise 2.
    assert cms.ContentInfo.load(rsa_only)["content"]["version"].native == "v0"
    assert cms.ContentInfo.load(by_ski)["content"]["version"].native == "v2"
    assert cms.ContentInfo.load(with_ec)["content"]["version"].native == "v2"


@pytest.mark.parametrize("algorithm", envelope.CONTENT_ALGORITHMS)
@pytest.mark.parametrize("size", [0, 15, 16, 100, 70_000])
def test_streamed_der_matches_asn1crypto(
    parties: dict[str, Party], algorithm: str, size: int
) -> None:
    """The DER written around streamed ciphertext is asn1crypto's DER of it.

    The content goes in as uneven chunks; lengths cross the one-, two- and
    three-octet length forms.
    """
    content = os.urandom(size)
    cuts = [0, size // 3, size // 3 + 1, size]
    chunks = [memoryview(content)[a:b] for a, b in itertools.pairwise(cuts)]
    encrypted = envelope.encrypt_chunks(
        size,
        chunks,
        [parties["rsa"].certificate, parties["p256"].certificate],
        content_algorithm=algorithm,
    )
    der = b"".join(encrypted.chunks)

    assert len(der) == encrypted.size
    loaded = cms.ContentInfo.load(der, strict=True)
    fields = loaded["content"]
    if algorithm.endswith("-gcm"):
        rebuilt_content: core.Asn1Value = cms.AuthEnvelopedData(
            {
                "version": fields["version"].native,
                "recipient_infos": fields["recipient_infos"],
                "auth_encrypted_content_info": fields["auth_encrypted_content_info"],
                "mac": fields["mac"].native,
            }
        )
    else:
        rebuilt_content = cms.EnvelopedData(
            {
                "version": fields["version"].native,
                "recipient_infos": fields["recipient_infos"],
                "encrypted_content_info": fields["encrypted_content_info"],
            }
        )
    rebuilt = cms.ContentInfo(
        {"content_type": loaded["content_type"].native, "content": rebuilt_content}
    )
    assert rebuilt.dump(force=True) == der
    decrypted = envelope.decrypt(der, [parties["p256"].recipient_key])
    assert decrypted.content == content


@pytest.mark.parametrize("algorithm", ["aes256-cbc", "aes128-gcm"])
def test_ciphertext_read_in_place(parties: dict[str, Party], algorithm: str) -> None:
    """DER is read without copying the ciphertext, and as asn1crypto reads it."""
    der = envelope.encrypt(
        MESSAGE * 1000,
        [parties["rsa"].certificate, parties["p256"].certificate],
        content_algorithm=algorithm,
    )

    in_place = envelope_reader.read_envelope(der, envelope.DEFAULT_MAX_SIZE)
    # The reader's fallback, which asn1crypto parses whole.
    parsed = envelope_reader._read_content_info(der)

    assert isinstance(in_place.ciphertext, memoryview)
    assert in_place.ciphertext.obj is der
    assert bytes(in_place.ciphertext) == parsed.ciphertext
    assert dataclasses.replace(in_place, ciphertext=parsed.ciphertext) == parsed


def test_streamed_content_of_wrong_size_fails(parties: dict[str, Party]) -> None:
    encrypted = envelope.encrypt_chunks(
        10, [b"123456789"], [parties["rsa"].certificate]
    )

    with pytest.raises(ValueError, match="9 bytes was encrypted"):
        b"".join(encrypted.chunks)


def test_openssl_decrypts_mixed_recipients(
    parties: dict[str, Party], tmp_path: Path
) -> None:
    names = ["rsa", "p256", "p384", "p521"]
    der = envelope.encrypt(
        MESSAGE,
        [parties[name].certificate for name in names],
        content_algorithm="aes128-gcm",
        rsa_key_transport="rsa-oaep-sha256",
    )

    for name in names:
        assert openssl_decrypt(der, parties[name], tmp_path) == MESSAGE, name
        assert envelope.decrypt(der, [parties[name].recipient_key]).content == MESSAGE


# --- OpenSSL encrypts, the gateway decrypts ----------------------------------------

OPENSSL_CASES = [
    # party, openssl cipher, keyopts, flags, content algorithm, key algorithm
    ("rsa", "-aes-256-cbc", [], [], "aes256-cbc", "rsa-pkcs1v15"),
    ("rsa", "-aes128", [], [], "aes128-cbc", "rsa-pkcs1v15"),
    ("rsa", "-aes192", [], [], "aes192-cbc", "rsa-pkcs1v15"),
    ("rsa", "-des3", [], [], "3des-cbc", "rsa-pkcs1v15"),
    ("rsa", "-aes-128-gcm", [], [], "aes128-gcm", "rsa-pkcs1v15"),
    ("rsa", "-aes-256-gcm", [], [], "aes256-gcm", "rsa-pkcs1v15"),
    ("rsa", "-aes-192-gcm", [], [], "aes192-gcm", "rsa-pkcs1v15"),
    ("rsa", "-aes-256-cbc", [], ["-keyid"], "aes256-cbc", "rsa-pkcs1v15"),
    (
        "rsa",
        "-aes-256-cbc",
        ["rsa_padding_mode:oaep"],
        [],
        "aes256-cbc",
        "rsa-oaep-sha1",
    ),
    (
        "rsa",
        "-aes-256-cbc",
        ["rsa_padding_mode:oaep", "rsa_oaep_md:sha256"],
        [],
        "aes256-cbc",
        "rsa-oaep-sha256",
    ),
    (
        "rsa",
        "-aes-256-gcm",
        ["rsa_padding_mode:oaep", "rsa_oaep_md:sha256"],
        ["-keyid"],
        "aes256-gcm",
        "rsa-oaep-sha256",
    ),
    (
        "rsa",
        "-aes-128-cbc",
        ["rsa_padding_mode:oaep", "rsa_oaep_md:sha256", "rsa_mgf1_md:sha1"],
        [],
        "aes128-cbc",
        "rsa-oaep-sha256-mgf1-sha1",
    ),
    (
        "rsa",
        "-aes-128-cbc",
        ["rsa_padding_mode:oaep", "rsa_oaep_md:sha384", "rsa_oaep_label:0011223344"],
        [],
        "aes128-cbc",
        "rsa-oaep-sha384",
    ),
    ("p256", "-aes-128-cbc", [], [], "aes128-cbc", "ecdh-p256-sha1-aes128-wrap"),
    (
        "p256",
        "-aes-256-cbc",
        ["ecdh_kdf_md:sha256"],
        [],
        "aes256-cbc",
        "ecdh-p256-sha256-aes256-wrap",
    ),
    (
        "p256",
        "-aes-128-gcm",
        ["ecdh_kdf_md:sha256"],
        ["-keyid"],
        "aes128-gcm",
        "ecdh-p256-sha256-aes128-wrap",
    ),
    (
        "p384",
        "-aes-256-gcm",
        ["ecdh_kdf_md:sha384"],
        [],
        "aes256-gcm",
        "ecdh-p384-sha384-aes256-wrap",
    ),
    (
        "p384",
        "-des3",
        ["ecdh_kdf_md:sha384"],
        [],
        "3des-cbc",
        # OpenSSL 3.0 wraps a 3DES key with the RFC 3217 3DES key wrap.
        "ecdh-p384-sha384-3des-wrap",
    ),
    (
        "p384",
        "-aes-192-gcm",
        ["ecdh_kdf_md:sha512"],
        ["-keyid"],
        "aes192-gcm",
        "ecdh-p384-sha512-aes192-wrap",
    ),
    (
        "p521",
        "-aes192",
        ["ecdh_kdf_md:sha512"],
        ["-keyid"],
        "aes192-cbc",
        "ecdh-p521-sha512-aes192-wrap",
    ),
    (
        "p521",
        "-aes-256-cbc",
        ["ecdh_kdf_md:sha224", "ecdh_cofactor_mode:1"],
        [],
        "aes256-cbc",
        "ecdh-cofactor-p521-sha224-aes256-wrap",
    ),
]


def test_round_trip_tables_cover_every_algorithm() -> None:
    encrypted_by_gateway = {algorithm for _, algorithm, _ in GATEWAY_CASES}
    encrypted_by_openssl = {case[4] for case in OPENSSL_CASES}
    assert encrypted_by_gateway == set(envelope.CONTENT_ALGORITHMS)
    assert encrypted_by_openssl == set(envelope.CONTENT_ALGORITHMS)
    transports_by_gateway = {transport for _, _, transport in GATEWAY_CASES}
    assert transports_by_gateway == set(envelope.RSA_KEY_TRANSPORTS)
    curves_by_openssl = {case[0] for case in OPENSSL_CASES}
    assert curves_by_openssl == {"rsa", "p256", "p384", "p521"}


@pytest.mark.parametrize(
    ("party_name", "cipher", "keyopts", "flags", "algorithm", "key_algorithm"),
    OPENSSL_CASES,
)
def test_gateway_decrypts_openssl_output(
    parties: dict[str, Party],
    tmp_path: Path,
    party_name: str,
    cipher: str,
    keyopts: list[str],
    flags: list[str],
    algorithm: str,
    key_algorithm: str,
) -> None:
    party = parties[party_name]
    der = openssl_encrypt(tmp_path, cipher, [(party, keyopts)], *flags)

    decrypted = envelope.decrypt(der, [party.recipient_key])

    assert decrypted.content == MESSAGE
    assert decrypted.content_algorithm == algorithm
    assert decrypted.key_algorithm == key_algorithm
    assert decrypted.auth_enveloped == algorithm.endswith("-gcm")
    expected_fingerprint = party.certificate.fingerprint(hashes.SHA256()).hex()
    assert decrypted.recipient_fingerprint == expected_fingerprint


@pytest.mark.parametrize(
    ("party_name", "cipher"), [("rsa", "-aes-128-gcm"), ("p521", "-aes-256-cbc")]
)
def test_gateway_decrypts_streamed_ber(
    parties: dict[str, Party], tmp_path: Path, party_name: str, cipher: str
) -> None:
    party = parties[party_name]
    content = os.urandom(100_000)
    source = tmp_path / "large.bin"
    source.write_bytes(content)
    # -stream writes indefinite lengths and the content in 4096-byte OCTET STRING
    # chunks, as NSS and other streaming encoders do.
    der = openssl(
        "cms", "-encrypt", "-binary", "-stream", "-outform", "DER", cipher,
        "-in", source, "-recip", party.cert_path,
    )  # fmt: skip
    assert der[1] == 0x80  # indefinite length

    assert envelope.decrypt(der, [party.recipient_key]).content == content


def test_gateway_decrypts_openssl_mixed_recipients(
    parties: dict[str, Party], tmp_path: Path, fran: dict[str, RecipientKey]
) -> None:
    der = openssl_encrypt(
        tmp_path,
        "-aes-256-cbc",
        [
            (parties["p384"], []),
            (parties["rsa"], ["rsa_padding_mode:oaep", "rsa_oaep_md:sha256"]),
            (parties["p256"], []),
            (parties["p521"], []),
        ],
    )
    unrelated = list(fran.values())

    for name, key_algorithm in [
        ("rsa", "rsa-oaep-sha256"),
        ("p256", "ecdh-p256-sha1-aes256-wrap"),
        ("p384", "ecdh-p384-sha1-aes256-wrap"),
        ("p521", "ecdh-p521-sha1-aes256-wrap"),
    ]:
        # Keys that match no RecipientInfo come first and are skipped.
        decrypted = envelope.decrypt(der, [*unrelated, parties[name].recipient_key])
        assert decrypted.content == MESSAGE
        assert decrypted.key_algorithm == key_algorithm

    ids = envelope.recipient_ids(der)
    assert len(ids) == 4
    assert all(rid.kind == "issuer-serial" for rid in ids)
    assert {rid.serial for rid in ids} == {
        parties[name].certificate.serial_number
        for name in ("rsa", "p256", "p384", "p521")
    }


def test_recipient_ids_by_subject_key_identifier(
    parties: dict[str, Party], tmp_path: Path
) -> None:
    der = openssl_encrypt(
        tmp_path,
        "-aes-128-cbc",
        [(parties["rsa"], []), (parties["p256"], [])],
        "-keyid",
    )

    ids = envelope.recipient_ids(der)

    expected = [
        parties[name]
        .certificate.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
        .value.digest
        for name in ("rsa", "p256")
    ]
    assert [rid.kind for rid in ids] == ["subject-key-identifier"] * 2
    assert [rid.subject_key_identifier for rid in ids] == expected
    assert ids[0].matches(parties["rsa"].certificate)
    assert not ids[0].matches(parties["p256"].certificate)


# --- Interoperability corpus -------------------------------------------------------

FRAN_CASES = [
    ("fran-oaep_ossl.env", "Fran.p12", "3des-cbc", "rsa-oaep-sha1"),
    ("fran-oaep-label_ossl.env", "Fran.p12", "aes256-cbc", "rsa-oaep-sha1"),
    ("fran-oaep-sha256hash_ossl.env", "Fran.p12", "aes128-cbc", "rsa-oaep-sha256"),
    (
        "fran-oaep-sha256hash-sha256mgf_ossl.env",
        "Fran.p12",
        "aes256-cbc",
        "rsa-oaep-sha256",
    ),
    (
        "fran-ec_ossl-aes128-sha256.env",
        "Fran-ec.p12",
        "aes128-cbc",
        "ecdh-p384-sha256-aes128-wrap",
    ),
    (
        "fran-ec_ossl-aes256-sha512.env",
        "Fran-ec.p12",
        "aes256-cbc",
        "ecdh-p384-sha512-aes256-wrap",
    ),
]


@requires_corpus
@pytest.mark.parametrize(("file_name", "p12", "algorithm", "key_algorithm"), FRAN_CASES)
def test_fran_corpus_decrypts(
    fran: dict[str, RecipientKey],
    file_name: str,
    p12: str,
    algorithm: str,
    key_algorithm: str,
) -> None:
    der = mime_payload(FRAN_DIR / file_name)

    # Both of Fran's keys are offered; only the one the message names is used.
    decrypted = envelope.decrypt(der, list(fran.values()))

    assert bytes(decrypted.content).rstrip(b"\r\n") == FRAN_TEXT
    assert decrypted.content_algorithm == algorithm
    assert decrypted.key_algorithm == key_algorithm
    fingerprint = fran[p12].certificate.fingerprint(hashes.SHA256()).hex()
    assert decrypted.recipient_fingerprint == fingerprint


@pytest.fixture(scope="session")
def bob() -> RecipientKey:
    """Bob's RSA-1024 key and certificate from RFC 4134."""
    if not RFC4134.is_dir():
        pytest.skip("the S/MIME interop corpus is not next to the repository")
    key = serialization.load_pem_private_key(
        (RFC4134 / "BobPrivRSAEncrypt.pem").read_bytes(), password=None
    )
    assert isinstance(key, rsa.RSAPrivateKey)
    certificate = x509.load_pem_x509_certificate(
        (RFC4134 / "BobRSASignByCarl.pem").read_bytes()
    )
    return RecipientKey(certificate, key)


@requires_corpus
def test_rfc4134_5_3_eml_decrypts(bob: RecipientKey) -> None:
    decrypted = envelope.decrypt(mime_payload(RFC4134 / "5.3.eml"), [bob])

    assert decrypted.content == RFC4134_TEXT
    assert decrypted.content_algorithm == "3des-cbc"
    assert decrypted.key_algorithm == "rsa-pkcs1v15"


@requires_corpus
def test_rfc4134_5_1_bin_decrypts(bob: RecipientKey) -> None:
    decrypted = envelope.decrypt((RFC4134 / "5.1.bin").read_bytes(), [bob])

    assert decrypted.content == RFC4134_TEXT


@requires_corpus
def test_rfc4134_5_2_rc2_is_unsupported(bob: RecipientKey) -> None:
    der = (RFC4134 / "5.2.bin").read_bytes()

    with pytest.raises(UnsupportedAlgorithmError) as caught:
        envelope.decrypt(der, [bob])

    assert caught.value.algorithm == "1.2.840.113549.3.2"
    assert "RC2-CBC" in str(caught.value)
    assert "RFC 3370" in str(caught.value)
    # The KEKRecipientInfo (a shared key, no certificate) is not listed.
    ids = envelope.recipient_ids(der)
    assert [(rid.issuer, rid.serial) for rid in ids] == [
        ("CN=CarlRSA", 0x46346BC7800056BC11D36E2ECD5D71D0)
    ]


@requires_corpus
@pytest.mark.parametrize("file_name", ["4.2.bin", "6.0.bin", "7.1.bin", "3.2.bin"])
def test_rfc4134_other_content_types_are_rejected(
    bob: RecipientKey, file_name: str
) -> None:
    with pytest.raises(MalformedCmsError, match="neither EnvelopedData"):
        envelope.decrypt((RFC4134 / file_name).read_bytes(), [bob])


@requires_corpus
def test_thunderbird_message_to_bob_decrypts() -> None:
    smime = INTEROP / "thunderbird" / "smime"
    with warnings.catch_warnings():
        # NSS wrote Bob.p12 in BER, which cryptography reads with a warning.
        warnings.simplefilter("ignore", UserWarning)
        key, certificate, _ = pkcs12.load_key_and_certificates(
            (smime / "Bob.p12").read_bytes(), b"nss"
        )
    assert isinstance(key, rsa.RSAPrivateKey)
    assert certificate is not None

    decrypted = envelope.decrypt(
        mime_payload(smime / "alice.env.eml"), [RecipientKey(certificate, key)]
    )

    assert b"This is a test message from Alice to Bob." in bytes(decrypted.content)


# --- Errors ------------------------------------------------------------------------


def test_no_matching_recipient_lists_ids(
    parties: dict[str, Party], fran: dict[str, RecipientKey]
) -> None:
    der = envelope.encrypt(
        MESSAGE, [parties["rsa"].certificate, parties["p256"].certificate]
    )

    with pytest.raises(NoMatchingRecipientError) as caught:
        envelope.decrypt(der, list(fran.values()))

    error = caught.value
    assert [rid.serial for rid in error.recipient_ids] == [
        parties["rsa"].certificate.serial_number,
        parties["p256"].certificate.serial_number,
    ]
    message = str(error)
    assert "CN=Envelope Test CA,O=Gateway Test\\, Inc." in message
    assert f"{parties['rsa'].certificate.serial_number:#x}" in message


def test_no_matching_recipient_by_ski_shows_hex(
    parties: dict[str, Party], fran: dict[str, RecipientKey]
) -> None:
    der = envelope.encrypt(
        MESSAGE, [parties["p384"].certificate], recipient_id="subject-key-identifier"
    )
    ski = (
        parties["p384"]
        .certificate.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
        .value.digest
    )

    with pytest.raises(NoMatchingRecipientError, match=ski.hex(":")):
        envelope.decrypt(der, list(fran.values()))


def test_no_keys_at_all(parties: dict[str, Party]) -> None:
    der = envelope.encrypt(MESSAGE, [parties["rsa"].certificate])

    with pytest.raises(NoMatchingRecipientError):
        envelope.decrypt(der, [])


def test_wrong_rsa_key_fails(
    parties: dict[str, Party], fran: dict[str, RecipientKey]
) -> None:
    certificate = parties["rsa"].certificate
    wrong_key = fran["Fran.p12"].private_key
    for transport in envelope.RSA_KEY_TRANSPORTS:
        der = envelope.encrypt(MESSAGE, [certificate], rsa_key_transport=transport)
        with pytest.raises(DecryptionFailedError) as caught:
            envelope.decrypt(der, [RecipientKey(certificate, wrong_key)])
        fingerprint = certificate.fingerprint(hashes.SHA256()).hex()
        assert caught.value.certificate_fingerprint == fingerprint


def test_wrong_ec_key_fails(parties: dict[str, Party]) -> None:
    certificate = parties["p256"].certificate
    der = envelope.encrypt(MESSAGE, [certificate])

    with pytest.raises(DecryptionFailedError):
        envelope.decrypt(der, [RecipientKey(certificate, parties["p256-other"].key)])


def _replace_ciphertext(der: bytes, change: bytes) -> bytes:
    """XOR `change` into the start of the encrypted content."""
    content_info = cms.ContentInfo.load(der)
    enveloped = content_info["content"]
    field = (
        "auth_encrypted_content_info"
        if content_info["content_type"].native == "authenticated_enveloped_data"
        else "encrypted_content_info"
    )
    old = enveloped[field]["encrypted_content"].native
    new = bytes(a ^ b for a, b in zip(old, change.ljust(len(old), b"\0"), strict=True))
    return der.replace(old, new)


def test_padding_and_key_errors_match(parties: dict[str, Party]) -> None:
    party = parties["p256"]
    plain = b"A" * 16  # padded with a full block of 0x10 bytes
    der = envelope.encrypt(plain, [party.certificate], content_algorithm="aes128-cbc")
    # CBC: flipping ciphertext byte 15 flips plaintext byte 31, the last pad byte,
    # from 0x10 to 0x00, which no valid padding has.
    bad_padding = _replace_ciphertext(der, bytes(15) + b"\x10")

    with pytest.raises(DecryptionFailedError) as padding_error:
        envelope.decrypt(bad_padding, [party.recipient_key])
    with pytest.raises(DecryptionFailedError) as key_error:
        envelope.decrypt(
            der, [RecipientKey(party.certificate, parties["p256-other"].key)]
        )

    assert str(padding_error.value) == str(key_error.value)


@pytest.mark.parametrize("algorithm", ["aes128-gcm", "aes256-gcm"])
def test_gcm_tampering_fails(parties: dict[str, Party], algorithm: str) -> None:
    party = parties["rsa"]
    der = envelope.encrypt(MESSAGE, [party.certificate], content_algorithm=algorithm)

    with pytest.raises(DecryptionFailedError):
        envelope.decrypt(_replace_ciphertext(der, b"\x01"), [party.recipient_key])


def test_unknown_key_transport_oid(parties: dict[str, Party]) -> None:
    party = parties["rsa"]
    der = envelope.encrypt(MESSAGE, [party.certificate])
    rsa_encryption = bytes.fromhex("06092a864886f70d010101")
    assert der.count(rsa_encryption) == 1
    # 1.2.840.113549.1.1.2 is md2WithRSAEncryption, a signature algorithm.
    changed = der.replace(rsa_encryption, bytes.fromhex("06092a864886f70d010102"))

    with pytest.raises(UnsupportedAlgorithmError) as caught:
        envelope.decrypt(changed, [party.recipient_key])

    assert caught.value.algorithm == "1.2.840.113549.1.1.2"
    assert "1.2.840.113549.1.1.2" in str(caught.value)
    assert "RFC 8017" in str(caught.value)


def test_unknown_content_algorithm_oid(parties: dict[str, Party]) -> None:
    party = parties["rsa"]
    der = envelope.encrypt(MESSAGE, [party.certificate], content_algorithm="aes128-cbc")
    aes128_cbc = bytes.fromhex("0609608648016503040102")
    # 2.16.840.1.101.3.4.1.4 is AES-128-CFB.
    changed = der.replace(aes128_cbc, bytes.fromhex("0609608648016503040104"))

    with pytest.raises(
        UnsupportedAlgorithmError, match=r"2\.16\.840\.1\.101\.3\.4\.1\.4"
    ):
        envelope.decrypt(changed, [party.recipient_key])


def test_oversized_input_is_rejected(parties: dict[str, Party]) -> None:
    der = envelope.encrypt(MESSAGE, [parties["p256"].certificate])

    with pytest.raises(CmsLimitError, match=str(len(der))):
        envelope.decrypt(der, [parties["p256"].recipient_key], max_size=len(der) - 1)
    with pytest.raises(CmsLimitError):
        envelope.recipient_ids(der, max_size=100)


def test_trailing_bytes_are_rejected(parties: dict[str, Party]) -> None:
    der = envelope.encrypt(MESSAGE, [parties["p256"].certificate])

    with pytest.raises(MalformedCmsError):
        envelope.decrypt(der + b"\x00", [parties["p256"].recipient_key])


@pytest.mark.parametrize(
    ("option", "value", "accepted"),
    [
        ("content_algorithm", "aes-256-cbc", "aes256-cbc"),
        ("rsa_key_transport", "rsa-oaep", "rsa-oaep-sha256"),
        ("recipient_id", "ski", "subject-key-identifier"),
    ],
)
def test_encrypt_rejects_unknown_option(
    parties: dict[str, Party], option: str, value: str, accepted: str
) -> None:
    with pytest.raises(ValueError, match=value) as caught:
        envelope.encrypt(MESSAGE, [parties["rsa"].certificate], **{option: value})  # type: ignore[arg-type]

    assert accepted in str(caught.value)


def test_encrypt_needs_recipients() -> None:
    with pytest.raises(ValueError, match="at least one"):
        envelope.encrypt(MESSAGE, [])


def test_encrypt_by_ski_needs_the_extension(fran: dict[str, RecipientKey]) -> None:
    certificate = fran["Fran.p12"].certificate

    with pytest.raises(ValueError, match="no subject key identifier"):
        envelope.encrypt(MESSAGE, [certificate], recipient_id="subject-key-identifier")


def test_encrypt_rejects_ed25519_certificate(parties: dict[str, Party]) -> None:
    key = ed25519.Ed25519PrivateKey.generate()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "ed25519")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, None)
    )

    with pytest.raises(UnsupportedAlgorithmError, match="Ed25519"):
        envelope.encrypt(MESSAGE, [parties["rsa"].certificate, certificate])


# --- AES-GCM parameter encodings and authenticated attributes ----------------------


class _GcmParameters(core.Sequence):  # type: ignore[misc]
    _fields = [  # noqa: RUF012
        ("aes_nonce", core.OctetString),
        ("aes_icvlen", core.Integer, {"optional": True}),
    ]


def _auth_enveloped(
    party: Party,
    *,
    nonce_size: int,
    tag_size: int,
    write_icvlen: bool,
    auth_attrs: cms.CMSAttributes | None = None,
) -> bytes:
    """Build AuthEnvelopedData by hand, the way other implementations may write it."""
    key = os.urandom(16)
    nonce = os.urandom(nonce_size)
    associated_data = auth_attrs.dump() if auth_attrs is not None else None
    sealed = AESGCM(key).encrypt(nonce, MESSAGE, associated_data)
    ciphertext, full_tag = sealed[:-16], sealed[-16:]

    parameters = {"aes_nonce": nonce}
    if write_icvlen:
        parameters["aes_icvlen"] = tag_size

    public_key = party.certificate.public_key()
    assert isinstance(public_key, rsa.RSAPublicKey)
    certificate = asn1_x509.Certificate.load(
        party.certificate.public_bytes(serialization.Encoding.DER)
    )
    recipient_info = cms.RecipientInfo(
        name="ktri",
        value={
            "version": "v0",
            "rid": cms.RecipientIdentifier(
                name="issuer_and_serial_number",
                value={
                    "issuer": certificate.issuer,
                    "serial_number": certificate.serial_number,
                },
            ),
            "key_encryption_algorithm": {"algorithm": "rsaes_pkcs1v15"},
            "encrypted_key": public_key.encrypt(key, padding.PKCS1v15()),
        },
    )

    fields = {
        "version": "v0",
        "recipient_infos": [recipient_info],
        "auth_encrypted_content_info": {
            "content_type": "data",
            "content_encryption_algorithm": {
                "algorithm": "aes128_gcm",
                "parameters": _GcmParameters(parameters),
            },
            "encrypted_content": ciphertext,
        },
        # A shorter GCM tag is the leading bytes of the full tag.
        "mac": full_tag[:tag_size],
    }
    if auth_attrs is not None:
        fields["auth_attrs"] = auth_attrs
    return bytes(
        cms.ContentInfo(
            {
                "content_type": "authenticated_enveloped_data",
                "content": cms.AuthEnvelopedData(fields),
            }
        ).dump()
    )


@pytest.mark.parametrize(
    ("nonce_size", "tag_size", "write_icvlen"),
    [
        (12, 12, False),  # ICV length absent: the DER default of 12
        (12, 12, True),  # the default written anyway, as some encoders do
        (12, 16, True),  # OpenSSL's encoding
        (16, 16, True),  # a nonce longer than 12 bytes
        (8, 14, True),
    ],
)
def test_gcm_parameter_encodings(
    parties: dict[str, Party], nonce_size: int, tag_size: int, write_icvlen: bool
) -> None:
    der = _auth_enveloped(
        parties["rsa"],
        nonce_size=nonce_size,
        tag_size=tag_size,
        write_icvlen=write_icvlen,
    )

    decrypted = envelope.decrypt(der, [parties["rsa"].recipient_key])

    assert decrypted.content == MESSAGE
    assert decrypted.auth_enveloped


def test_gcm_tag_length_must_match_parameters(parties: dict[str, Party]) -> None:
    # 16-byte tag, but the absent ICV length means 12.
    der = _auth_enveloped(
        parties["rsa"], nonce_size=12, tag_size=16, write_icvlen=False
    )

    with pytest.raises(MalformedCmsError, match="tag is 16 bytes"):
        envelope.decrypt(der, [parties["rsa"].recipient_key])


def test_gcm_auth_attrs_enter_tag(
    parties: dict[str, Party],
) -> None:
    attributes = cms.CMSAttributes([{"type": "content_type", "values": ["data"]}])
    der = _auth_enveloped(
        parties["rsa"],
        nonce_size=12,
        tag_size=16,
        write_icvlen=True,
        auth_attrs=attributes,
    )

    assert envelope.decrypt(der, [parties["rsa"].recipient_key]).content == MESSAGE
    # Changing the attributes (id-data to id-signedData) breaks the tag.
    changed = der.replace(
        bytes.fromhex("06092a864886f70d010701"), bytes.fromhex("06092a864886f70d010702")
    )
    assert changed != der
    with pytest.raises(DecryptionFailedError):
        envelope.decrypt(changed, [parties["rsa"].recipient_key])


# --- Recipient identifiers and secrets ---------------------------------------------


def test_recipient_id_matches_issuer_and_serial(parties: dict[str, Party]) -> None:
    der = envelope.encrypt(MESSAGE, [parties["rsa"].certificate])

    (rid,) = envelope.recipient_ids(der)

    assert rid.kind == "issuer-serial"
    assert rid.issuer == parties["rsa"].certificate.issuer.rfc4514_string()
    assert rid.serial == parties["rsa"].certificate.serial_number
    assert rid.matches(parties["rsa"].certificate)
    assert not rid.matches(parties["p256"].certificate)


def test_recipient_id_built_by_hand_matches(parties: dict[str, Party]) -> None:
    certificate = parties["p384"].certificate

    rid = RecipientId(
        "issuer-serial",
        issuer=certificate.issuer.rfc4514_string(),
        serial=certificate.serial_number,
    )

    assert rid.matches(certificate)
    assert not rid.matches(parties["p521"].certificate)


def test_ski_without_extension_matches(
    fran: dict[str, RecipientKey],
) -> None:
    # Fran's certificates have no SKI extension, so RFC 5280 method 1 names them.
    certificate = fran["Fran-ec.p12"].certificate
    computed = x509.SubjectKeyIdentifier.from_public_key(certificate.public_key())

    rid = RecipientId("subject-key-identifier", subject_key_identifier=computed.digest)

    assert rid.matches(certificate)
    assert not rid.matches(fran["Fran.p12"].certificate)


def test_reprs_hold_no_secrets(parties: dict[str, Party]) -> None:
    party = parties["rsa"]
    der = envelope.encrypt(MESSAGE, [party.certificate])

    decrypted = envelope.decrypt(der, [party.recipient_key])

    assert "Gateway test message" not in repr(decrypted)
    assert "private_key" not in repr(party.recipient_key)


# --- Structures other implementations or attackers may send ------------------------


def _rebuild(
    der: bytes,
    *,
    recipient_infos: list[cms.RecipientInfo] | None = None,
    encrypted_content_info: cms.EncryptedContentInfo | None = None,
) -> bytes:
    """Re-encode EnvelopedData `der` with some of its parts replaced."""
    enveloped = cms.ContentInfo.load(der)["content"]
    new = cms.EnvelopedData(
        {
            "version": "v2",
            "recipient_infos": recipient_infos
            if recipient_infos is not None
            else [info.copy() for info in enveloped["recipient_infos"]],
            "encrypted_content_info": encrypted_content_info
            if encrypted_content_info is not None
            else enveloped["encrypted_content_info"].copy(),
        }
    )
    content_info = cms.ContentInfo({"content_type": "enveloped_data", "content": new})
    return bytes(content_info.dump())


def test_other_recipients_algorithm_ignored(
    parties: dict[str, Party],
) -> None:
    der = envelope.encrypt(
        MESSAGE, [parties["rsa"].certificate, parties["p256"].certificate]
    )
    std_dh_sha256 = bytes.fromhex("06062b8104010b01")
    assert der.count(std_dh_sha256) == 1
    # 1.3.132.1.15.1 is mqvSinglePass-sha256kdf-scheme (RFC 5753).
    changed = der.replace(std_dh_sha256, bytes.fromhex("06062b8104010f01"))

    assert envelope.decrypt(changed, [parties["rsa"].recipient_key]).content == MESSAGE
    with pytest.raises(UnsupportedAlgorithmError, match="ECMQV") as caught:
        envelope.decrypt(changed, [parties["p256"].recipient_key])
    assert caught.value.algorithm == "1.3.132.1.15.1"


def test_static_originator_is_unsupported(parties: dict[str, Party]) -> None:
    der = envelope.encrypt(MESSAGE, [parties["p256"].certificate])
    info = cms.ContentInfo.load(der)["content"]["recipient_infos"][0].chosen
    static = cms.KeyAgreeRecipientInfo(
        {
            "version": "v3",
            "originator": cms.OriginatorIdentifierOrKey(
                name="subject_key_identifier", value=b"\x01" * 20
            ),
            "key_encryption_algorithm": info["key_encryption_algorithm"].copy(),
            "recipient_encrypted_keys": info["recipient_encrypted_keys"].copy(),
        }
    )
    changed = _rebuild(
        der, recipient_infos=[cms.RecipientInfo(name="kari", value=static)]
    )

    with pytest.raises(UnsupportedAlgorithmError, match="static-static"):
        envelope.decrypt(changed, [parties["p256"].recipient_key])


def test_detached_content_is_rejected(parties: dict[str, Party]) -> None:
    der = envelope.encrypt(MESSAGE, [parties["p256"].certificate])
    content = cms.ContentInfo.load(der)["content"]["encrypted_content_info"]
    detached = cms.EncryptedContentInfo(
        {
            "content_type": "data",
            "content_encryption_algorithm": content[
                "content_encryption_algorithm"
            ].copy(),
        }
    )

    with pytest.raises(MalformedCmsError, match="detached"):
        envelope.decrypt(
            _rebuild(der, encrypted_content_info=detached),
            [parties["p256"].recipient_key],
        )


def test_gcm_inside_enveloped_data_is_rejected(parties: dict[str, Party]) -> None:
    der = envelope.encrypt(MESSAGE, [parties["p256"].certificate])
    gcm = envelope.encrypt(
        MESSAGE, [parties["p256"].certificate], content_algorithm="aes128-gcm"
    )
    gcm_content = cms.ContentInfo.load(gcm)["content"]["auth_encrypted_content_info"]

    with pytest.raises(MalformedCmsError, match="AES-GCM"):
        envelope.decrypt(
            _rebuild(der, encrypted_content_info=gcm_content.copy()),
            [parties["p256"].recipient_key],
        )


def test_recipient_count_is_limited(parties: dict[str, Party]) -> None:
    der = envelope.encrypt(MESSAGE, [parties["rsa"].certificate])
    info = cms.ContentInfo.load(der)["content"]["recipient_infos"][0]
    at_limit = _rebuild(der, recipient_infos=[info.copy()] * envelope.MAX_RECIPIENTS)
    over_limit = _rebuild(
        der, recipient_infos=[info.copy()] * (envelope.MAX_RECIPIENTS + 1)
    )

    assert len(envelope.recipient_ids(at_limit)) == envelope.MAX_RECIPIENTS
    with pytest.raises(CmsLimitError, match=str(envelope.MAX_RECIPIENTS)):
        envelope.recipient_ids(over_limit)


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\x30\x80" * 5000 + b"\x00\x00" * 5000,
        b"\x30\x84\xff\xff\xff\xff" + bytes(10),
        b"\x30\x88" + b"\xff" * 8 + bytes(10),
        b"\x1f" + b"\xff" * 100 + b"\x01\x00",
    ],
    ids=["empty", "deep-nesting", "huge-length", "huge-length-8", "huge-tag"],
)
def test_hostile_encodings_are_malformed(data: bytes) -> None:
    with pytest.raises(MalformedCmsError):
        envelope.decrypt(data, [])
    with pytest.raises(MalformedCmsError):
        envelope.recipient_ids(data)


def test_key_of_other_type_fails(parties: dict[str, Party]) -> None:
    der = envelope.encrypt(MESSAGE, [parties["rsa"].certificate])
    # The RSA certificate bound to an EC key by mistake.
    mismatched = RecipientKey(parties["rsa"].certificate, parties["p256"].key)

    with pytest.raises(DecryptionFailedError):
        envelope.decrypt(der, [mismatched])

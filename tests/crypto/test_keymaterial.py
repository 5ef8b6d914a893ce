"""PKCS#12 and PEM key import: the interop corpus, OpenSSL output and each failure."""

from __future__ import annotations

import base64
import hashlib
import hmac
import subprocess
import traceback
from collections.abc import Callable
from pathlib import Path

import pytest
from asn1crypto import cms as asn1_cms
from asn1crypto import core as asn1_core
from asn1crypto import keys as asn1_keys
from asn1crypto import pkcs12 as asn1_pkcs12
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, padding, rsa

from services.crypto import keymaterial
from services.crypto.keymaterial import (
    KeyImportError,
    KeyMaterial,
    load_pem_key,
    load_pem_pair,
    load_pkcs12,
)
from services.crypto.keyvault import KeyEncryptionKey, seal

REPO = Path(__file__).resolve().parents[2]
INTEROP = REPO.parent / "shared" / "interop"
THUNDERBIRD = INTEROP / "thunderbird"
RFC4134 = INTEROP / "rfc4134"
RFC9216 = INTEROP / "rfc9216"
PASSWORD = b"Tr0ub4dor&3-known-secret"

requires_corpus = pytest.mark.skipif(
    not INTEROP.is_dir(), reason="the S/MIME interop corpus is not next to the repo"
)


def openssl(*args: str | Path, cwd: Path) -> bytes:
    result = subprocess.run(
        ["openssl", *map(str, args)], cwd=cwd, capture_output=True, check=False
    )
    assert result.returncode == 0, result.stderr.decode(errors="replace")
    return result.stdout


def import_error(call: Callable[[], object]) -> KeyImportError:
    with pytest.raises(KeyImportError) as error:
        call()
    return error.value


def assert_key_matches(material: KeyMaterial) -> None:
    """Sign with the private key and verify with the certificate's public key."""
    key = material.private_key
    public_key = material.certificate.public_key()
    data = b"proof of possession"
    if isinstance(key, rsa.RSAPrivateKey):
        assert isinstance(public_key, rsa.RSAPublicKey)
        signature = key.sign(data, padding.PKCS1v15(), hashes.SHA256())
        public_key.verify(signature, data, padding.PKCS1v15(), hashes.SHA256())
    elif isinstance(key, ec.EllipticCurvePrivateKey):
        assert isinstance(public_key, ec.EllipticCurvePublicKey)
        signature = key.sign(data, ec.ECDSA(hashes.SHA256()))
        public_key.verify(signature, data, ec.ECDSA(hashes.SHA256()))
    elif isinstance(key, dsa.DSAPrivateKey):
        assert isinstance(public_key, dsa.DSAPublicKey)
        public_key.verify(key.sign(data, hashes.SHA256()), data, hashes.SHA256())
    else:
        raise AssertionError(f"unexpected key type {type(key).__name__}")


# Interop corpus


THUNDERBIRD_P12 = sorted(THUNDERBIRD.glob("*/*.p12"))


@requires_corpus
@pytest.mark.parametrize(
    "path", THUNDERBIRD_P12, ids=lambda path: f"{path.parent.name}/{path.name}"
)
def test_thunderbird_p12_imports(path: Path) -> None:
    material = load_pkcs12(path.read_bytes(), b"nss", path.name)
    assert_key_matches(material)
    identity = material.certificate.subject.rfc4514_string()
    assert identity.startswith(f"CN={path.stem.split('-')[0]},")
    assert material.warnings == ()
    if path.stem.startswith("Fran"):
        # Fran's files use 3DES PBE and hold no CA certificate.
        assert material.extra_certificates == ()
    else:
        assert len(material.extra_certificates) == 1
        ca = material.extra_certificates[0]
        kind = "ECC" if path.stem.endswith("-ec") else "RSA"
        assert ca.subject.rfc4514_string().startswith(f"CN=NSS Test CA ({kind})")
    if path.stem.endswith("-ec"):
        assert isinstance(material.private_key, ec.EllipticCurvePrivateKey)
    else:
        assert isinstance(material.private_key, rsa.RSAPrivateKey)


@requires_corpus
def test_thunderbird_corpus_has_expected_files() -> None:
    names = {f"{path.parent.name}/{path.name}" for path in THUNDERBIRD_P12}
    assert {
        "smime/Fran.p12",
        "smime/Fran-ec.p12",
        "smime-interop/Fran.p12",
        "browser/Alice.p12",
        "browser/Bob.p12",
    } <= names


@requires_corpus
@pytest.mark.parametrize("password", [b"wrong", None])
def test_thunderbird_p12_wrong_or_missing_password(password: bytes | None) -> None:
    path = THUNDERBIRD / "smime" / "Fran.p12"
    error = import_error(lambda: load_pkcs12(path.read_bytes(), password, path.name))
    expected = "wrong-password" if password else "password-required"
    assert error.category == expected


RFC4134_PAIRS = [
    ("AliceRSASignByCarl.pem", "AlicePrivRSASign.pem"),
    ("AliceDSSSignByCarlNoInherit.pem", "AlicePrivDSSSign.pem"),
    ("BobRSASignByCarl.pem", "BobPrivRSAEncrypt.pem"),
    ("CarlRSASelf.pem", "CarlPrivRSASign.pem"),
    ("CarlDSSSelf.pem", "CarlPrivDSSSign.pem"),
    ("DianeRSASignByCarl.pem", "DianePrivRSASignEncrypt.pem"),
]


@requires_corpus
@pytest.mark.parametrize(
    ("cert", "key"), RFC4134_PAIRS, ids=[k for _, k in RFC4134_PAIRS]
)
def test_rfc4134_pem_pair_imports(cert: str, key: str) -> None:
    material = load_pem_pair(
        (RFC4134 / cert).read_bytes(), (RFC4134 / key).read_bytes(), None, cert, key
    )
    assert_key_matches(material)
    assert material.warnings == ()


@requires_corpus
def test_rfc4134_inherited_dsa_parameters_unsupported() -> None:
    cert, key = "DianeDSSSignByCarlInherit.pem", "DianePrivDSSSign.pem"
    # The key alone loads; its certificate cannot be read.
    private_key, _ = load_pem_key((RFC4134 / key).read_bytes(), None, key)
    assert isinstance(private_key, dsa.DSAPrivateKey)
    error = import_error(
        lambda: load_pem_pair(
            (RFC4134 / cert).read_bytes(), (RFC4134 / key).read_bytes(), None, cert, key
        )
    )
    assert error.category == "unsupported-algorithm"
    assert cert in error.message


@requires_corpus
def test_rfc4134_key_of_other_certificate() -> None:
    cert, key = "BobRSASignByCarl.pem", "AlicePrivRSASign.pem"
    error = import_error(
        lambda: load_pem_pair(
            (RFC4134 / cert).read_bytes(), (RFC4134 / key).read_bytes(), None, cert, key
        )
    )
    assert error.category == "key-mismatch"
    assert "CN=BobRSA" in error.message
    assert key in error.message


@requires_corpus
def test_rfc9216_alice_certificate_and_key_in_one_file() -> None:
    path = RFC9216 / "alice@smime.example.sig.pem"
    data = path.read_bytes()
    material = load_pem_pair(data, data, None, path.name, path.name)
    assert_key_matches(material)
    assert material.source == path.name


@requires_corpus
@pytest.mark.parametrize(
    "path",
    [
        p
        for p in sorted(RFC9216.glob("*.pem"))
        if p.name != "alice@smime.example.sig.pem"
    ],
    ids=lambda path: path.name,
)
def test_rfc9216_files_without_key(path: Path) -> None:
    error = import_error(lambda: load_pem_key(path.read_bytes(), None, path.name))
    assert error.category == "no-private-key"


# Files made by the openssl command


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An RSA key and certificate, an unrelated EC pair, and PEM encodings of them."""
    directory = tmp_path_factory.mktemp("keys")
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "user.key",
            "-out", "user.pem", "-subj", "/CN=User/emailAddress=user@example.com",
            "-days", "30", cwd=directory)  # fmt: skip
    openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
            "-nodes", "-keyout", "other.key", "-out", "other.pem", "-subj",
            "/CN=Other", "-days", "30", cwd=directory)  # fmt: skip
    return directory


def export_p12(pki: Path, *options: str, password: bytes = PASSWORD) -> bytes:
    args = ["pkcs12", "-export", "-passout", "pass:" + password.decode(), *options]
    if "-nocerts" not in options:
        args += ["-in", "user.pem"]
    if "-nokeys" not in options:
        args += ["-inkey", "user.key"]
    return openssl(*args, cwd=pki)


def warning_codes(material: KeyMaterial) -> list[str]:
    return [warning.code for warning in material.warnings]


@pytest.mark.parametrize(
    ("options", "warnings"),
    [
        ((), []),
        (("-legacy",), []),
        (("-nomac",), ["no-mac"]),
        (("-legacy", "-macalg", "md5"), ["weak-mac-digest"]),
        (("-iter", "500"), ["low-mac-iterations", "low-key-iterations"]),
        (("-iter", "500", "-maciter"), ["low-mac-iterations", "low-key-iterations"]),
        (("-keypbe", "NONE", "-certpbe", "NONE"), ["unencrypted-key"]),
        (("-legacy", "-keypbe", "PBE-SHA1-RC2-40"), ["weak-key-encryption"]),
    ],
    ids=[
        "aes256",
        "legacy",
        "nomac",
        "md5-mac",
        "iter500",
        "maciter",
        "none",
        "rc2-40",
    ],
)
def test_openssl_p12_imports_with_warnings(
    pki: Path, options: tuple[str, ...], warnings: list[str]
) -> None:
    material = load_pkcs12(export_p12(pki, *options), PASSWORD, "user.p12")
    assert_key_matches(material)
    assert warning_codes(material) == warnings
    for warning in material.warnings:
        assert "user.p12" in warning.message


def p12_info(data: bytes) -> str:
    """Return what `openssl pkcs12 -info` prints about a file's algorithms and MAC."""
    result = subprocess.run(
        ["openssl", "pkcs12", "-info", "-noout", "-nokeys", "-legacy", "-passin",
         "pass:" + PASSWORD.decode()],
        input=data, capture_output=True, check=False,
    )  # fmt: skip
    return result.stderr.decode(errors="replace")


def test_legacy_p12_algorithms(pki: Path) -> None:
    data = export_p12(pki, "-legacy")
    info = p12_info(data)
    assert "pbeWithSHA1And40BitRC2-CBC" in info
    assert "pbeWithSHA1And3-KeyTripleDES-CBC" in info
    assert "MAC: sha1" in info
    assert_key_matches(load_pkcs12(data, PASSWORD, "legacy.p12"))


# Every PBE that `openssl pkcs12 -keypbe/-certpbe` (3.0) writes, all of which
# cryptography 50 reads. Names as OpenSSL spells them.
OPENSSL_PKCS12_PBES = [
    "PBE-SHA1-3DES",
    "PBE-SHA1-2DES",
    "PBE-SHA1-RC2-40",
    "PBE-SHA1-RC2-128",
    "PBE-SHA1-RC4-40",
    "PBE-SHA1-RC4-128",
    "PBE-MD5-DES",
    "PBE-SHA1-DES",
    "PBE-SHA1-RC2-64",
    "PBE-MD5-RC2-64",
    "aes-128-cbc",
    "aes-192-cbc",
    "aes-256-cbc",
    "des-ede3-cbc",
    "des-cbc",
    "rc2-cbc",
    "camellia-128-cbc",
    "camellia-192-cbc",
    "camellia-256-cbc",
    "aria-128-cbc",
    "aria-256-cbc",
    "sm4-cbc",
    "bf-cbc",
    "seed-cbc",
]


@pytest.mark.parametrize("pbe", OPENSSL_PKCS12_PBES)
def test_every_openssl_pbe_is_readable(pki: Path, pbe: str) -> None:
    data = export_p12(pki, "-legacy", "-keypbe", pbe, "-certpbe", pbe)
    material = load_pkcs12(data, PASSWORD, "pbe.p12")
    assert_key_matches(material)
    # A wrong password on a readable algorithm is a wrong password.
    assert import_error(lambda: load_pkcs12(data, b"other", "pbe.p12")).category == (
        "wrong-password"
    )


def replace_key_bag(data: bytes, encrypted_key: bytes) -> bytes:
    """Put another EncryptedPrivateKeyInfo into a PKCS#12 file made with -nomac."""
    pfx = asn1_pkcs12.Pfx.load(data)
    assert isinstance(pfx["mac_data"], asn1_core.Void)
    infos = []
    for info in pfx.authenticated_safe:
        if info["content_type"].native == "data":
            bags = []
            for bag in asn1_pkcs12.SafeContents.load(info["content"].native):
                if bag["bag_id"].native == "pkcs8_shrouded_key_bag":
                    bag = asn1_pkcs12.SafeBag(
                        {
                            "bag_id": "pkcs8_shrouded_key_bag",
                            "bag_value": asn1_keys.EncryptedPrivateKeyInfo.load(
                                encrypted_key
                            ),
                            "bag_attributes": bag["bag_attributes"],
                        }
                    )
                bags.append(bag)
            content = asn1_pkcs12.SafeContents(bags).dump()
            info = asn1_cms.ContentInfo({"content_type": "data", "content": content})
        infos.append(info)
    authenticated_safe = asn1_pkcs12.AuthenticatedSafe(infos).dump()
    return asn1_pkcs12.Pfx(
        {
            "version": "v3",
            "auth_safe": {"content_type": "data", "content": authenticated_safe},
        }
    ).dump()


@pytest.mark.parametrize(
    "options",
    [("-v2prf", prf) for prf in ("hmacWithMD5", "hmacWithSHA1", "hmacWithSHA224",
     "hmacWithSHA384", "hmacWithSHA512", "hmacWithSHA512-224", "hmacWithSHA512-256")]
    + [("-scrypt",)],
    ids=" ".join,
)  # fmt: skip
def test_p12_key_bag_kdfs_are_readable(pki: Path, options: tuple[str, ...]) -> None:
    # `openssl pkcs12` always writes hmacWithSHA256, so other PBES2 key derivations
    # come from `openssl pkcs8` and replace the key bag.
    encrypted_key = pkcs8(pki, "-v2", "aes-256-cbc", *options, "-outform", "DER")
    data = replace_key_bag(export_p12(pki, "-nomac"), encrypted_key)
    material = load_pkcs12(data, PASSWORD, "kdf.p12")
    assert_key_matches(material)
    error = import_error(lambda: load_pkcs12(data, b"wrong", "kdf.p12"))
    assert error.category == "wrong-password"


@pytest.mark.parametrize("password", [b"wrong password", None, b""])
def test_p12_wrong_or_missing_password(pki: Path, password: bytes | None) -> None:
    data = export_p12(pki)
    error = import_error(lambda: load_pkcs12(data, password, "user.p12"))
    if password:
        assert error.category == "wrong-password"
        assert "is wrong" in error.message
    else:
        assert error.category == "password-required"
    assert "user.p12" in error.message


def test_p12_without_mac_wrong_password(pki: Path) -> None:
    data = export_p12(pki, "-nomac")
    error = import_error(lambda: load_pkcs12(data, b"wrong", "nomac.p12"))
    assert error.category == "wrong-password"
    assert "no MAC" in error.message


def test_p12_empty_password(pki: Path) -> None:
    data = export_p12(pki, password=b"")
    assert_key_matches(load_pkcs12(data, b"", "empty.p12"))
    assert_key_matches(load_pkcs12(data, None, "empty.p12"))


def test_p12_utf8_password(pki: Path) -> None:
    password = "pässwörd-ü".encode()
    data = export_p12(pki, password=password)
    assert_key_matches(load_pkcs12(data, password, "utf8.p12"))
    error = import_error(lambda: load_pkcs12(data, b"passwort", "utf8.p12"))
    assert error.category == "wrong-password"


def test_truncated_p12_is_corrupted(pki: Path) -> None:
    data = export_p12(pki)
    error = import_error(lambda: load_pkcs12(data[: len(data) // 2], PASSWORD, "t.p12"))
    assert error.category == "corrupted"
    assert "truncated" in error.message


def test_pem_given_as_p12(pki: Path) -> None:
    data = (pki / "user.pem").read_bytes() + (pki / "user.key").read_bytes()
    error = import_error(lambda: load_pkcs12(data, PASSWORD, "user.pem"))
    assert error.category == "not-pkcs12"
    assert "--cert" in error.message
    assert "--key" in error.message


def test_der_certificate_given_as_p12(pki: Path) -> None:
    der = openssl("x509", "-in", "user.pem", "-outform", "DER", cwd=pki)
    error = import_error(lambda: load_pkcs12(der, PASSWORD, "user.der"))
    assert error.category == "not-pkcs12"
    assert "certificate" in error.message


def test_base64_p12_gets_decode_hint(pki: Path) -> None:
    data = base64.encodebytes(export_p12(pki))
    error = import_error(lambda: load_pkcs12(data, PASSWORD, "user.p12.b64"))
    assert error.category == "not-pkcs12"
    assert "base64" in error.message


@pytest.mark.parametrize("data", [b"", b"\x00\x01garbage", b"\x04\x02ab"])
def test_non_der_given_as_p12(data: bytes) -> None:
    assert import_error(lambda: load_pkcs12(data, None, "x.p12")).category == (
        "not-pkcs12"
    )


def test_p12_without_key(pki: Path) -> None:
    error = import_error(lambda: load_pkcs12(export_p12(pki, "-nokeys"), PASSWORD, "c"))
    assert error.category == "no-private-key"


def test_p12_without_certificate(pki: Path) -> None:
    error = import_error(
        lambda: load_pkcs12(export_p12(pki, "-nocerts"), PASSWORD, "k.p12")
    )
    assert error.category == "no-certificate"


def test_p12_key_with_other_certificate(pki: Path) -> None:
    data = export_p12(pki, "-nocerts", "-certfile", "other.pem")
    error = import_error(lambda: load_pkcs12(data, PASSWORD, "mixed.p12"))
    assert error.category == "key-mismatch"
    assert "CN=Other" in error.message


def damaged_certificate(pki: Path, stem: str, old: bytes, new: bytes) -> Path:
    """Issue a certificate for other.key with user.key, then replace `old` by `new`.

    Its subject is CN=Damaged with emailAddress damaged@example.com, and its
    public key is not the one of user.key. cryptography decodes a certificate's
    names only when they are first used, so a PKCS#12 file with this copy loads.
    """
    openssl("req", "-new", "-key", "other.key", "-subj",
            "/CN=Damaged/emailAddress=damaged@example.com", "-addext",
            "keyUsage=digitalSignature", "-out", f"{stem}.csr", cwd=pki)  # fmt: skip
    # The extension makes it a version 3 certificate.
    der = openssl("x509", "-req", "-in", f"{stem}.csr", "-copy_extensions", "copy",
                  "-CA", "user.pem", "-CAkey", "user.key", "-days", "30",
                  "-outform", "DER", cwd=pki)  # fmt: skip
    assert len(old) == len(new)
    assert der.count(old) == 1
    path = pki / f"{stem}.der"
    path.write_bytes(der.replace(old, new))
    openssl("x509", "-inform", "DER", "-in", path, "-out", f"{stem}.pem", cwd=pki)
    return pki / f"{stem}.pem"


def test_p12_mismatch_names_undecodable_subject_by_fingerprint(pki: Path) -> None:
    # emailAddress is an IA5String, which allows only ASCII, so the subject of
    # this certificate cannot be decoded.
    path = damaged_certificate(
        pki, "bad-subject", b"damaged@example.com", b"dam\xffged@example.com"
    )
    der = (pki / "bad-subject.der").read_bytes()
    data = export_p12(pki, "-nocerts", "-certfile", path.name)
    error = import_error(lambda: load_pkcs12(data, PASSWORD, "bad-subject.p12"))
    assert error.category == "key-mismatch"
    fingerprint = hashlib.sha256(der).hexdigest()
    assert f"(certificate with SHA-256 fingerprint {fingerprint})" in error.message
    assert "'bad-subject.p12'" in error.message


def test_p12_certificate_with_invalid_version(pki: Path) -> None:
    version_3, version_18 = bytes.fromhex("a003020102"), bytes.fromhex("a003020112")
    path = damaged_certificate(pki, "version-18", version_3, version_18)
    data = export_p12(pki, "-nocerts", "-certfile", path.name)
    error = import_error(lambda: load_pkcs12(data, PASSWORD, "version.p12"))
    assert error.category == "corrupted"
    assert error.message.startswith(
        "A certificate in PKCS#12 file 'version.p12' has X.509 version number 18"
    )


OID_PBE_MD5_DES = bytes.fromhex("06092a864886f70d010503")
OID_PBE_MD2_DES = bytes.fromhex("06092a864886f70d010501")


@pytest.mark.parametrize("mac", ["-nomac", "with-mac"])
def test_unsupported_pbe_is_named(pki: Path, mac: str) -> None:
    # pbeWithMD2AndDES-CBC (RFC 8018) has an OID of the same length as
    # pbeWithMD5AndDES-CBC, and cryptography cannot read it: OpenSSL is built
    # without MD2. With a MAC, the patch also breaks the MAC; the algorithm is
    # still reported, never a wrong password.
    options = ["-legacy", "-keypbe", "PBE-MD5-DES", "-certpbe", "PBE-MD5-DES"]
    if mac == "-nomac":
        options.append("-nomac")
    data = export_p12(pki, *options)
    assert OID_PBE_MD5_DES in data
    patched = data.replace(OID_PBE_MD5_DES, OID_PBE_MD2_DES)
    for password in (PASSWORD, b"wrong"):
        error = import_error(lambda: load_pkcs12(patched, password, "md2.p12"))  # noqa: B023
        assert error.category == "unsupported-algorithm"
        assert "pbeWithMD2AndDES-CBC" in error.message
        assert error.algorithm == "pbeWithMD2AndDES-CBC"


@pytest.fixture(scope="module")
def sm2(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An SM2 key and certificate: a curve that cryptography 50 does not support."""
    directory = tmp_path_factory.mktemp("sm2")
    openssl("genpkey", "-algorithm", "SM2", "-out", "sm2.key", cwd=directory)
    openssl("req", "-x509", "-new", "-key", "sm2.key", "-subj", "/CN=SM2 User",
            "-days", "30", "-out", "sm2.pem", cwd=directory)  # fmt: skip
    return directory


SM2_CURVE = "1.2.156.10197.1.301"


def test_unsupported_key_algorithm_in_p12(sm2: Path) -> None:
    data = openssl("pkcs12", "-export", "-in", "sm2.pem", "-inkey", "sm2.key",
                   "-passout", "pass:" + PASSWORD.decode(), cwd=sm2)  # fmt: skip
    error = import_error(lambda: load_pkcs12(data, PASSWORD, "sm2.p12"))
    assert error.category == "unsupported-algorithm"
    assert SM2_CURVE in error.message


def test_unsupported_key_algorithm_in_pem(sm2: Path) -> None:
    plain = (sm2 / "sm2.key").read_bytes()
    encrypted = openssl("pkcs8", "-topk8", "-v2", "aes-256-cbc", "-in", "sm2.key",
                        "-passout", "pass:" + PASSWORD.decode(), cwd=sm2)  # fmt: skip
    for data, password in ((plain, None), (encrypted, PASSWORD)):
        error = import_error(lambda: load_pem_key(data, password, "sm2.key"))  # noqa: B023
        assert error.category == "unsupported-algorithm"
        assert SM2_CURVE in error.message
    pair_error = import_error(
        lambda: load_pem_pair(
            (sm2 / "sm2.pem").read_bytes(), plain, None, "sm2.pem", "sm2.key"
        )
    )
    assert pair_error.category == "unsupported-algorithm"
    assert "sm2.pem" in pair_error.message


def remac(data: bytes, password: bytes) -> bytes:
    """Recompute the SHA-256 MAC of an OpenSSL-made (DER) PKCS#12 file."""
    pfx = asn1_pkcs12.Pfx.load(data)
    content = pfx["auth_safe"]["content"].native
    mac_data = pfx["mac_data"]
    salt = mac_data["mac_salt"].native
    iterations = mac_data["iterations"].native
    old = mac_data["mac"]["digest"].native
    bmp = password.decode().encode("utf-16-be") + b"\x00\x00"
    key = keymaterial._pkcs12_kdf(
        "sha256", 64, bmp, salt, purpose=3, iterations=iterations, length=32
    )
    new = hmac.new(key, content, hashlib.sha256).digest()
    assert data.count(old) == 1
    return data.replace(old, new)


def test_damaged_key_valid_mac_corrupted(pki: Path) -> None:
    data = export_p12(pki)
    pfx = asn1_pkcs12.Pfx.load(data)
    bags = [
        bag
        for info in pfx.authenticated_safe
        if info["content_type"].native == "data"
        for bag in asn1_pkcs12.SafeContents.load(info["content"].native)
    ]
    key_bag = next(b for b in bags if b["bag_id"].native == "pkcs8_shrouded_key_bag")
    ciphertext = key_bag["bag_value"]["encrypted_data"].native
    assert data.count(ciphertext) == 1
    damaged = bytearray(ciphertext)
    damaged[-1] ^= 0xFF  # breaks the CBC padding of the key
    data = remac(data.replace(ciphertext, bytes(damaged)), PASSWORD)
    # OpenSSL agrees that the recomputed MAC is valid.
    info = p12_info(data)
    assert "MAC: sha256" in info
    assert "Mac verify error" not in info
    error = import_error(lambda: load_pkcs12(data, PASSWORD, "damaged.p12"))
    assert error.category == "corrupted"
    assert "MAC" in error.message


def test_p12_iteration_limit(pki: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(keymaterial, "MAX_ITERATIONS", 1000)
    error = import_error(lambda: load_pkcs12(export_p12(pki), PASSWORD, "slow.p12"))
    assert error.category == "limit-exceeded"
    assert "2048" in error.message


# PEM keys


def pkcs8(pki: Path, *options: str) -> bytes:
    return openssl("pkcs8", "-topk8", "-provider", "legacy", "-provider", "default",
                   "-in", "user.key", "-passout", "pass:" + PASSWORD.decode(),
                   *options, cwd=pki)  # fmt: skip


def traditional(pki: Path, cipher: str) -> bytes:
    return openssl("rsa", "-provider", "legacy", "-provider", "default", "-in",
                   "user.key", "-traditional", f"-{cipher}", "-passout",
                   "pass:" + PASSWORD.decode(), cwd=pki)  # fmt: skip


# The PKCS#8 encryptions cryptography 50 reads, as `openssl pkcs8` options.
READABLE_PKCS8 = [
    ("-v2", "aes-128-cbc"),
    ("-v2", "aes-192-cbc"),
    ("-v2", "aes-256-cbc"),
    ("-v2", "des-ede3-cbc"),
    ("-v2", "rc2-cbc"),
    ("-v2prf", "hmacWithSHA1"),
    ("-v2prf", "hmacWithSHA224"),
    ("-v2prf", "hmacWithSHA384"),
    ("-v2prf", "hmacWithSHA512"),
    ("-v1", "PBE-SHA1-3DES"),
    ("-v1", "PBE-SHA1-RC2-40"),
    ("-v1", "PBE-SHA1-RC4-128"),
    ("-v1", "PBE-MD5-DES"),
    ("-scrypt",),
]
# And those it does not, with the name the error must give.
UNREADABLE_PKCS8 = [
    (("-v2", "des-cbc"), "desCBC"),
    (("-v2", "camellia-256-cbc"), "camellia256-cbc"),
    (("-v2", "sm4-cbc"), "sm4-cbc"),
    (("-v2", "bf-cbc"), "bf-cbc"),
    (("-v2prf", "hmacWithMD5"), "hmacWithMD5"),
    (("-v2prf", "hmacWithSHA512-256"), "hmacWithSHA512-256"),
    (("-v1", "PBE-SHA1-2DES"), "pbeWithSHAAnd2-KeyTripleDES-CBC"),
    (("-v1", "PBE-SHA1-RC2-128"), "pbeWithSHAAnd128BitRC2-CBC"),
    (("-v1", "PBE-SHA1-RC4-40"), "pbeWithSHAAnd40BitRC4"),
    (("-v1", "PBE-SHA1-DES"), "pbeWithSHA1AndDES-CBC"),
    (("-v1", "PBE-MD5-RC2-64"), "pbeWithMD5AndRC2-CBC"),
]


@pytest.mark.parametrize("options", READABLE_PKCS8, ids=" ".join)
def test_encrypted_pkcs8_readable(pki: Path, options: tuple[str, ...]) -> None:
    data = pkcs8(pki, *options)
    assert b"ENCRYPTED PRIVATE KEY" in data
    key, _ = load_pem_key(data, PASSWORD, "user.key")
    assert isinstance(key, rsa.RSAPrivateKey)
    error = import_error(lambda: load_pem_key(data, b"wrong", "user.key"))
    assert error.category == "wrong-password"
    error = import_error(lambda: load_pem_key(data, None, "user.key"))
    assert error.category == "password-required"


@pytest.mark.parametrize(
    ("options", "algorithm"), UNREADABLE_PKCS8, ids=[a for _, a in UNREADABLE_PKCS8]
)
def test_encrypted_pkcs8_unreadable(
    pki: Path, options: tuple[str, ...], algorithm: str
) -> None:
    data = pkcs8(pki, *options)
    for password in (PASSWORD, b"wrong"):
        error = import_error(lambda: load_pem_key(data, password, "user.key"))  # noqa: B023
        assert error.category == "unsupported-algorithm"
        assert algorithm in error.message


def test_pem_key_cost_limits(pki: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # OpenSSL's -scrypt uses N=16384 and r=8, so 16 MiB of memory.
    monkeypatch.setattr(keymaterial, "MAX_SCRYPT_MEMORY", 1 << 20)
    error = import_error(lambda: load_pem_key(pkcs8(pki, "-scrypt"), PASSWORD, "s"))
    assert error.category == "limit-exceeded"
    assert str(128 * 16384 * 8) in error.message
    monkeypatch.setattr(keymaterial, "MAX_ITERATIONS", 100)
    error = import_error(lambda: load_pem_key(pkcs8(pki), PASSWORD, "slow.key"))
    assert error.category == "limit-exceeded"
    assert "2048" in error.message


def test_pkcs8_weak_and_low_iteration_warnings(pki: Path) -> None:
    _, warnings = load_pem_key(pkcs8(pki, "-v1", "PBE-MD5-DES"), PASSWORD, "k")
    assert [w.code for w in warnings] == ["weak-key-encryption"]
    _, warnings = load_pem_key(pkcs8(pki, "-iter", "10"), PASSWORD, "k")
    assert [w.code for w in warnings] == ["low-key-iterations"]
    _, warnings = load_pem_key(pkcs8(pki), PASSWORD, "k")
    assert warnings == []


@pytest.mark.parametrize("cipher", ["aes128", "aes256", "des3"])
def test_traditional_encrypted_pem(pki: Path, cipher: str) -> None:
    data = traditional(pki, cipher)
    assert b"Proc-Type: 4,ENCRYPTED" in data
    key, warnings = load_pem_key(data, PASSWORD, "trad.key")
    assert isinstance(key, rsa.RSAPrivateKey)
    assert [w.code for w in warnings] == ["weak-key-encryption"]
    assert "MD5" in warnings[0].message
    assert import_error(lambda: load_pem_key(data, b"x", "t")).category == (
        "wrong-password"
    )
    assert import_error(lambda: load_pem_key(data, None, "t")).category == (
        "password-required"
    )


@pytest.mark.parametrize("cipher", ["camellia256", "aes192", "des"])
def test_traditional_unreadable_cipher(pki: Path, cipher: str) -> None:
    data = traditional(pki, cipher)
    error = import_error(lambda: load_pem_key(data, PASSWORD, "trad.key"))
    assert error.category == "unsupported-algorithm"
    dek_info = data.split(b"DEK-Info: ")[1].split(b",")[0].decode()
    assert dek_info in error.message


def test_unencrypted_key_ignores_password(pki: Path) -> None:
    data = (pki / "user.key").read_bytes()
    key, warnings = load_pem_key(data, PASSWORD, "user.key")
    assert isinstance(key, rsa.RSAPrivateKey)
    assert warnings == []


def test_pem_pair_with_encrypted_key(pki: Path) -> None:
    material = load_pem_pair(
        (pki / "user.pem").read_bytes(),
        pkcs8(pki),
        PASSWORD,
        "user.pem",
        "user.key",
    )
    assert_key_matches(material)
    assert material.source == "user.pem, user.key"


def test_pem_pair_mismatch(pki: Path) -> None:
    error = import_error(
        lambda: load_pem_pair(
            (pki / "other.pem").read_bytes(),
            (pki / "user.key").read_bytes(),
            None,
            "other.pem",
            "user.key",
        )
    )
    assert error.category == "key-mismatch"


def test_pem_pair_picks_matching_certificate_from_bundle(pki: Path) -> None:
    bundle = (pki / "other.pem").read_bytes() + (pki / "user.pem").read_bytes()
    material = load_pem_pair(
        bundle, (pki / "user.key").read_bytes(), None, "bundle.pem", "user.key"
    )
    assert "CN=User" in material.certificate.subject.rfc4514_string()
    assert len(material.extra_certificates) == 1


def test_pem_key_file_failures(pki: Path) -> None:
    two_keys = (pki / "user.key").read_bytes() + (pki / "other.key").read_bytes()
    cases = [
        (two_keys, "multiple-private-keys"),
        ((pki / "user.pem").read_bytes(), "no-private-key"),
        (export_p12(pki), "not-pem"),
        (b"no pem here", "not-pem"),
        (b"", "not-pem"),
        (
            b"-----BEGIN PRIVATE KEY-----\nMAMCAQE=\n-----END PRIVATE KEY-----\n",
            "corrupted",
        ),
        (
            b"-----BEGIN ENCRYPTED PRIVATE KEY-----\nMAMCAQE=\n"
            b"-----END ENCRYPTED PRIVATE KEY-----\n",
            "corrupted",
        ),
    ]
    for data, category in cases:
        error = import_error(lambda: load_pem_key(data, PASSWORD, "in.key"))  # noqa: B023
        assert error.category == category, data[:40]
        assert "in.key" in error.message


def test_pem_certificate_failure_becomes_key_import_error(pki: Path) -> None:
    error = import_error(
        lambda: load_pem_pair(
            b"not a certificate", (pki / "user.key").read_bytes(), None, "c", "k"
        )
    )
    assert error.category == "not-certificate"


# Secrets never leak


def secret_encodings(material: KeyMaterial) -> list[bytes]:
    key = material.private_key
    assert isinstance(key, rsa.RSAPrivateKey)
    der = key.private_bytes(
        serialization.Encoding.DER,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    d = key.private_numbers().d
    return [
        PASSWORD,
        PASSWORD.hex().encode(),
        der,
        der.hex().encode(),
        base64.b64encode(der),
        base64.b64encode(der)[100:160],
        str(d).encode(),
        f"{d:x}".encode(),
    ]


def test_secrets_never_leak(pki: Path) -> None:
    data = export_p12(pki)
    material = load_pkcs12(data, PASSWORD, "user.p12")
    secrets = secret_encodings(material)
    rendered = (repr(material) + str(material) + repr(material.warnings)).encode()
    for secret in secrets:
        assert secret not in rendered

    failures: list[Callable[[], object]] = [
        lambda: load_pkcs12(data, PASSWORD + b"x", "user.p12"),
        lambda: load_pkcs12(data[:-300], PASSWORD, "user.p12"),
        lambda: load_pkcs12(export_p12(pki, "-nomac"), PASSWORD[:-1], "user.p12"),
        lambda: load_pkcs12(export_p12(pki, "-nocerts"), PASSWORD, "user.p12"),
        lambda: load_pkcs12(
            export_p12(pki, "-nocerts", "-certfile", "other.pem"), PASSWORD, "u"
        ),
        lambda: load_pkcs12(
            export_p12(pki, "-keypbe", "NONE", "-nocerts", "-certfile", "other.pem"),
            PASSWORD,
            "u",
        ),
        lambda: load_pem_key(pkcs8(pki), PASSWORD + b"x", "user.key"),
        lambda: load_pem_key(traditional(pki, "aes256"), b"wrong", "user.key"),
        lambda: load_pem_key(pkcs8(pki, "-v2", "des-cbc"), PASSWORD, "user.key"),
        lambda: load_pem_pair(
            (pki / "other.pem").read_bytes(),
            (pki / "user.key").read_bytes(),
            None,
            "other.pem",
            "user.key",
        ),
        lambda: load_pem_key(
            (pki / "user.key").read_bytes()[:-200] + b"\n-----END PRIVATE KEY-----\n",
            None,
            "user.key",
        ),
    ]
    for failure in failures:
        error = import_error(failure)
        text = "".join(traceback.format_exception(error)).encode()
        for secret in secrets:
            assert secret not in text, error.category

    kek = KeyEncryptionKey(bytes(range(32)))
    blob = seal(kek, "user", material.private_key)
    for secret in secrets:
        assert secret not in blob

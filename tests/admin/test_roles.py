"""Every endpoint: 401 without a valid token, 403 for a read token that writes."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.admin.conftest import Admin

pytestmark = pytest.mark.asyncio(loop_scope="module")

# (method, path, needs read-write, request arguments for an authorised call)
ENDPOINTS: list[tuple[str, str, bool, dict[str, Any]]] = [
    ("GET", "/api/v1/cas", False, {}),
    ("POST", "/api/v1/cas", True, {"files": {"files": ("x.pem", b"not a cert")}}),
    ("DELETE", "/api/v1/cas/ca-unknown", True, {}),
    ("GET", "/api/v1/certs", False, {}),
    ("POST", "/api/v1/certs", True, {"data": {"name": "x"}}),
    ("DELETE", "/api/v1/certs/unknown", True, {}),
    ("GET", "/api/v1/bindings", False, {}),
    ("GET", "/api/v1/bindings/b-unknown", False, {}),
    (
        "POST",
        "/api/v1/bindings",
        True,
        {"data": {"kind": "external", "pattern": "@x.test"}},
    ),
    ("DELETE", "/api/v1/bindings/b-unknown", True, {}),
    ("GET", "/api/v1/profiles", False, {}),
    ("POST", "/api/v1/profiles", True, {"json": {"name": "p", "action": "sign"}}),
    ("DELETE", "/api/v1/profiles/unknown", True, {}),
    ("GET", "/api/v1/rules", False, {}),
    ("POST", "/api/v1/rules", True, {"json": {"profile": "unknown"}}),
    ("POST", "/api/v1/rules/r-unknown/move", True, {"json": {"position": 1}}),
    ("DELETE", "/api/v1/rules/r-unknown", True, {}),
    ("GET", "/api/v1/config/history", False, {}),
    ("GET", "/api/v1/audit", False, {}),
    ("GET", "/api/v1/messages/Q-unknown/trace", False, {}),
    ("GET", "/api/v1/parked", False, {}),
    ("POST", "/api/v1/parked/999/retry", True, {}),
    ("DELETE", "/api/v1/parked/999", True, {}),
]

_IDS = [f"{method} {path}" for method, path, _, _ in ENDPOINTS]


async def test_table_covers_every_route(admin: Admin) -> None:
    app = admin.service.app
    assert app is not None
    routes = {
        (method.upper(), path)
        for path, operations in app.openapi()["paths"].items()
        for method in operations
    }
    tested = set()
    for method, path, _, _ in ENDPOINTS:
        matches = {(m, p) for m, p in routes if m == method and _matches(p, path)}
        assert len(matches) == 1, f"{method} {path} matches {matches}"
        tested |= matches
    assert routes == tested


def _matches(template: str, path: str) -> bool:
    parts, concrete = template.split("/"), path.split("/")
    if len(parts) != len(concrete):
        return False
    return all(
        p == c or p.startswith("{") for p, c in zip(parts, concrete, strict=True)
    )


async def _call(
    client: httpx.AsyncClient,
    method: str,
    path: str,
    headers: dict[str, str],
    **kw: Any,
) -> httpx.Response:
    return await client.request(method, path, headers=headers, **kw)


@pytest.mark.parametrize(("method", "path", "write", "kwargs"), ENDPOINTS, ids=_IDS)
async def test_missing_token(
    admin: Admin, method: str, path: str, write: bool, kwargs: dict[str, Any]
) -> None:
    response = await _call(admin.client, method, path, {}, **kwargs)
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"


@pytest.mark.parametrize(("method", "path", "write", "kwargs"), ENDPOINTS, ids=_IDS)
async def test_invalid_token(
    admin: Admin, method: str, path: str, write: bool, kwargs: dict[str, Any]
) -> None:
    # Right id, wrong secret: the hash comparison must fail.
    forged = admin.read_token[:-4] + "AAAA"
    for token in ("nonsense", forged, admin.read_token + "x"):
        headers = admin.headers(token)
        response = await _call(admin.client, method, path, headers, **kwargs)
        assert response.status_code == 401, token


@pytest.mark.parametrize(("method", "path", "write", "kwargs"), ENDPOINTS, ids=_IDS)
async def test_read_token(
    admin: Admin, method: str, path: str, write: bool, kwargs: dict[str, Any]
) -> None:
    response = await _call(admin.client, method, path, admin.reader, **kwargs)
    if write:
        assert response.status_code == 403
        assert "read-write" in response.json()["detail"]
    else:
        assert response.status_code not in (401, 403), response.text


@pytest.mark.parametrize(("method", "path", "write", "kwargs"), ENDPOINTS, ids=_IDS)
async def test_read_write_token(
    admin: Admin, method: str, path: str, write: bool, kwargs: dict[str, Any]
) -> None:
    response = await _call(admin.client, method, path, admin.writer, **kwargs)
    assert response.status_code not in (401, 403, 500, 503), response.text

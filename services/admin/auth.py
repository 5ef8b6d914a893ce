"""Bearer-token checks: 401 without a valid token, 403 for a write with `read`."""

from __future__ import annotations

import logging
from typing import Annotated

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from services.admin.tokens import Role, TokenStore, TokenStoreError

log = logging.getLogger("smimegw.admin")

_bearer = HTTPBearer(
    auto_error=False, description="a token from `smimegw admin token create`"
)

Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]


def _unauthorized(detail: str) -> HTTPException:
    return HTTPException(
        status.HTTP_401_UNAUTHORIZED,
        detail=detail,
        headers={"WWW-Authenticate": "Bearer"},
    )


def _role(request: Request, credentials: HTTPAuthorizationCredentials | None) -> Role:
    if credentials is None:
        raise _unauthorized("missing bearer token in the Authorization header")
    tokens: TokenStore = request.app.state.tokens
    try:
        role = tokens.verify(credentials.credentials)
    except TokenStoreError as err:
        log.error("admin token check failed: %s", err)
        raise HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE, detail="token store unavailable"
        ) from err
    if role is None:
        client = request.client.host if request.client else "unknown"
        log.info("rejected an invalid admin token from %s", client)
        raise _unauthorized("invalid bearer token")
    return role


async def require_read(request: Request, credentials: Credentials) -> Role:
    """Any valid token may read configuration and logs."""
    return _role(request, credentials)


async def require_write(request: Request, credentials: Credentials) -> Role:
    """Only a `read-write` token may change configuration or parked messages."""
    role = _role(request, credentials)
    if role is not Role.READ_WRITE:
        raise HTTPException(
            status.HTTP_403_FORBIDDEN,
            detail="this token has the read role; changes need a read-write token",
        )
    return role


Reader = Depends(require_read)
Writer = Depends(require_write)

"""The FastAPI application: routes, request size limit and error bodies."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from services.admin import handlers
from services.admin.bus import AdminBus
from services.admin.tokens import TokenStore

DESCRIPTION = """Manage the S/MIME gateway over HTTP: CA and local certificates,
bindings, profiles, rules, parked messages, the audit log and message traces.

Every endpoint under /api/v1 needs `Authorization: Bearer TOKEN`, with a token
from `smimegw admin token create --role read|read-write`. A `read` token sees
configuration and logs; changes need a `read-write` token."""


class BodyLimit:
    """Reject request bodies over `limit` bytes with 413, whether or not
    the client sent Content-Length."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", []):
            too_large = value.isdigit() and int(value) > self.limit
            if name == b"content-length" and too_large:
                await self._reject(send)
                return
        received = 0
        exceeded = False
        rejected = False

        async def limited() -> Message:
            nonlocal received, exceeded
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    # End the body here; the app's reply is replaced below.
                    exceeded = True
                    return {"type": "http.request", "body": b"", "more_body": False}
            return message

        async def replace_reply(message: Message) -> None:
            nonlocal rejected
            if not exceeded:
                await send(message)
            elif not rejected:
                rejected = True
                await self._reject(send)

        await self.app(scope, limited, replace_reply)

    async def _reject(self, send: Send) -> None:
        body = (
            b'{"detail":"request body larger than the %d bytes allowed"}' % self.limit
        )
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


async def _validation_error(request: Request, error: Exception) -> JSONResponse:
    # FastAPI's default body echoes each invalid input, which may be a password.
    assert isinstance(error, RequestValidationError)
    errors: list[dict[str, Any]] = [
        {"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type")}
        for e in error.errors()
    ]
    return JSONResponse({"detail": errors}, status_code=422)


def create_app(
    bus: AdminBus, tokens: TokenStore, *, max_upload: int, max_request: int
) -> FastAPI:
    app = FastAPI(
        title="smimegw admin API",
        version="1",
        description=DESCRIPTION,
    )
    app.state.bus = bus
    app.state.tokens = tokens
    app.state.max_upload = max_upload
    app.include_router(handlers.router)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_middleware(BodyLimit, limit=max_request)
    return app

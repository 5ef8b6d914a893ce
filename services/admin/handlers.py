"""Endpoints of the admin API, one per CLI command.

Each endpoint builds the same `schemas.commands` model that the CLI sends and
passes it to the owning service; the service validates it and records the
change. Replies keep the service's result; a rejected command becomes a 4xx
with the service's category and message. Reads need any token, changes a
`read-write` token (`services.admin.auth`).
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated, Any, Literal

from fastapi import APIRouter, File, Form, HTTPException, Query, Request, UploadFile
from fastapi import status as http
from pydantic import BaseModel, ConfigDict, SecretStr

from schemas.base import Model
from schemas.commands import (
    CRYPTO_COMMANDS,
    POLICY_COMMANDS,
    BindingCreate,
    BindingDelete,
    CaDelete,
    CaImport,
    CertDelete,
    CertImport,
    ProfileCreate,
    ProfileDelete,
    RuleCreate,
    RuleDelete,
    RuleMove,
    Upload,
)
from schemas.commands import Query as ConfigQuery
from services.admin.auth import Reader, Writer
from services.admin.bus import AdminBus, BusUnavailableError
from smimegw import parking
from smimegw.commands import trace

router = APIRouter(prefix="/api/v1")

# HTTP status of a rejected command, by the category the service gave.
_STATUS_OF_CATEGORY = {
    "not-found": http.HTTP_404_NOT_FOUND,
    "exists": http.HTTP_409_CONFLICT,
    "in-use": http.HTTP_409_CONFLICT,
    "conflict": http.HTTP_409_CONFLICT,
}

_TRACE_LIMIT = 10_000

OptionalFile = Annotated[UploadFile | None, File()]
OptionalText = Annotated[str | None, Form()]


class Outcome(BaseModel):
    """A command's result, with the warnings the service added."""

    model_config = ConfigDict(extra="forbid")

    result: Any = None
    warnings: list[str] = []


def _bus(request: Request) -> AdminBus:
    bus: AdminBus = request.app.state.bus
    return bus


async def _send(request: Request, subject: str, command: Model) -> Outcome:
    try:
        reply = await _bus(request).command(subject, command)
    except BusUnavailableError as err:
        raise HTTPException(http.HTTP_503_SERVICE_UNAVAILABLE, str(err)) from err
    if not reply.ok:
        assert reply.error is not None
        code = _STATUS_OF_CATEGORY.get(
            reply.error.category, http.HTTP_422_UNPROCESSABLE_CONTENT
        )
        detail = {"category": reply.error.category, "message": reply.error.message}
        raise HTTPException(code, detail)
    return Outcome(result=reply.result, warnings=list(reply.warnings))


async def _query(request: Request, what: str, entry_id: str | None = None) -> Any:
    query = ConfigQuery(command=what, entry_id=entry_id)  # type: ignore[arg-type]
    return (await _send(request, POLICY_COMMANDS, query)).result


async def _upload(request: Request, file: UploadFile) -> Upload:
    """Read an uploaded file up to `admin.max_upload` bytes; 413 beyond."""
    limit: int = request.app.state.max_upload
    content = await file.read(limit + 1)
    name = file.filename or "upload"
    if len(content) > limit:
        raise HTTPException(
            http.HTTP_413_CONTENT_TOO_LARGE,
            f"{name} is larger than the {limit} bytes allowed per file; is it "
            "really a certificate or key file?",
        )
    return Upload.of(name, content)


async def _material(
    request: Request,
    pkcs12: UploadFile | None,
    cert: UploadFile | None,
    key: UploadFile | None,
) -> dict[str, Upload]:
    if pkcs12 is not None and cert is None and key is None:
        return {"pkcs12": await _upload(request, pkcs12)}
    if pkcs12 is None and cert is not None and key is not None:
        return {
            "cert": await _upload(request, cert),
            "key": await _upload(request, key),
        }
    raise HTTPException(
        http.HTTP_422_UNPROCESSABLE_CONTENT,
        "give the file pkcs12, or the files cert and key together",
    )


def _secret(password: str | None) -> SecretStr | None:
    return None if password is None else SecretStr(password)


# CA certificates


@router.get("/cas", dependencies=[Reader], tags=["CA certificates"])
async def list_cas(request: Request) -> Any:
    return await _query(request, "ca.list")


@router.post("/cas", dependencies=[Writer], tags=["CA certificates"], status_code=201)
async def import_cas(
    request: Request, files: Annotated[list[UploadFile], File()]
) -> Outcome:
    """Import CA certificates from PEM, DER or PKCS#7 (.p7b) files."""
    uploads = tuple([await _upload(request, file) for file in files])
    return await _send(
        request, POLICY_COMMANDS, CaImport(command="ca.import", files=uploads)
    )


@router.delete("/cas/{ca_id}", dependencies=[Writer], tags=["CA certificates"])
async def delete_ca(request: Request, ca_id: str) -> Outcome:
    return await _send(
        request, POLICY_COMMANDS, CaDelete(command="ca.delete", ca_id=ca_id)
    )


# Local certificates


@router.get("/certs", dependencies=[Reader], tags=["local certificates"])
async def list_certs(request: Request) -> Any:
    return await _query(request, "cert.list")


@router.post(
    "/certs", dependencies=[Writer], tags=["local certificates"], status_code=201
)
async def import_cert(
    request: Request,
    name: Annotated[str, Form()],
    pkcs12: OptionalFile = None,
    cert: OptionalFile = None,
    key: OptionalFile = None,
    password: OptionalText = None,
) -> Outcome:
    """Import a certificate with its private key: PKCS#12, or PEM cert and key."""
    command = CertImport(
        command="cert.import",
        name=name,
        password=_secret(password),
        **await _material(request, pkcs12, cert, key),
    )
    return await _send(request, CRYPTO_COMMANDS, command)


@router.delete("/certs/{name}", dependencies=[Writer], tags=["local certificates"])
async def delete_cert(request: Request, name: str) -> Outcome:
    return await _send(
        request, POLICY_COMMANDS, CertDelete(command="cert.delete", name=name)
    )


# Bindings


@router.get("/bindings", dependencies=[Reader], tags=["bindings"])
async def list_bindings(request: Request) -> Any:
    return await _query(request, "binding.list")


@router.get("/bindings/{binding_id}", dependencies=[Reader], tags=["bindings"])
async def show_binding(request: Request, binding_id: str) -> Any:
    return await _query(request, "binding.show", binding_id)


@router.post("/bindings", dependencies=[Writer], tags=["bindings"], status_code=201)
async def create_binding(
    request: Request,
    kind: Annotated[Literal["internal", "external"], Form()],
    pattern: Annotated[str, Form()],
    pkcs12: OptionalFile = None,
    cert: OptionalFile = None,
    key: OptionalFile = None,
    local_cert: OptionalText = None,
    password: OptionalText = None,
) -> Outcome:
    """Bind an address or @domain: external with cert; internal with key material."""
    if kind == "external":
        if cert is None or pkcs12 is not None or key is not None or local_cert:
            raise HTTPException(
                http.HTTP_422_UNPROCESSABLE_CONTENT,
                "an external binding takes the file cert only",
            )
        command = BindingCreate(
            command="binding.create",
            kind="external",
            pattern=pattern,
            cert=await _upload(request, cert),
        )
        return await _send(request, POLICY_COMMANDS, command)
    material = {} if local_cert else await _material(request, pkcs12, cert, key)
    command = BindingCreate(
        command="binding.create",
        kind="internal",
        pattern=pattern,
        local_cert=local_cert,
        password=None if local_cert else _secret(password),
        **material,
    )
    return await _send(request, CRYPTO_COMMANDS, command)


@router.delete("/bindings/{binding_id}", dependencies=[Writer], tags=["bindings"])
async def delete_binding(request: Request, binding_id: str) -> Outcome:
    command = BindingDelete(command="binding.delete", binding_id=binding_id)
    return await _send(request, POLICY_COMMANDS, command)


# Encryption profiles and delivery rules: JSON bodies are the command's fields.


class ProfileBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    action: Literal["encrypt", "sign", "sign-and-encrypt"]
    algorithm: str = "aes256-cbc"
    digest: Literal["sha256", "sha384", "sha512"] = "sha256"
    signature: Literal["detached", "opaque"] = "detached"
    on_failure: Literal["send-plain", "bounce", "hold"] = "bounce"
    encrypt_to_self: bool = False
    hold_timeout: str | None = None


class RuleBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    profile: str
    sender: str | None = None
    recipient: str | None = None
    client_ip: str | None = None
    position: int | None = None


class RuleMoveBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    position: int


@router.get("/profiles", dependencies=[Reader], tags=["profiles and rules"])
async def list_profiles(request: Request) -> Any:
    return await _query(request, "profile.list")


@router.post(
    "/profiles", dependencies=[Writer], tags=["profiles and rules"], status_code=201
)
async def create_profile(request: Request, body: ProfileBody) -> Outcome:
    command = ProfileCreate(command="profile.create", **body.model_dump())
    return await _send(request, POLICY_COMMANDS, command)


@router.delete("/profiles/{name}", dependencies=[Writer], tags=["profiles and rules"])
async def delete_profile(request: Request, name: str) -> Outcome:
    command = ProfileDelete(command="profile.delete", name=name)
    return await _send(request, POLICY_COMMANDS, command)


@router.get("/rules", dependencies=[Reader], tags=["profiles and rules"])
async def list_rules(request: Request) -> Any:
    return await _query(request, "rule.list")


@router.post(
    "/rules", dependencies=[Writer], tags=["profiles and rules"], status_code=201
)
async def create_rule(request: Request, body: RuleBody) -> Outcome:
    command = RuleCreate(command="rule.create", **body.model_dump())
    return await _send(request, POLICY_COMMANDS, command)


@router.post(
    "/rules/{rule_id}/move", dependencies=[Writer], tags=["profiles and rules"]
)
async def move_rule(request: Request, rule_id: str, body: RuleMoveBody) -> Outcome:
    command = RuleMove(command="rule.move", rule_id=rule_id, position=body.position)
    return await _send(request, POLICY_COMMANDS, command)


@router.delete("/rules/{rule_id}", dependencies=[Writer], tags=["profiles and rules"])
async def delete_rule(request: Request, rule_id: str) -> Outcome:
    command = RuleDelete(command="rule.delete", rule_id=rule_id)
    return await _send(request, POLICY_COMMANDS, command)


# Configuration history, audit log and message traces


@router.get("/config/history", dependencies=[Reader], tags=["logs"])
async def config_history(request: Request) -> Any:
    return await _query(request, "history")


async def _audit(request: Request, query: dict[str, Any]) -> dict[str, Any]:
    try:
        reply = await _bus(request).audit(query)
    except BusUnavailableError as err:
        raise HTTPException(http.HTTP_503_SERVICE_UNAVAILABLE, str(err)) from err
    if "error" in reply:
        raise HTTPException(http.HTTP_422_UNPROCESSABLE_CONTENT, reply["error"])
    return reply


@router.get("/audit", dependencies=[Reader], tags=["logs"])
async def audit_log(
    request: Request,
    type: Annotated[
        str | None, Query(description="e.g. mail.delivered or mail.*")
    ] = None,
    queue_id: str | None = None,
    since: Annotated[
        str | None, Query(description="ISO 8601 time or a duration such as 2h")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 1000,
) -> dict[str, Any]:
    """Audit events oldest first, as `smimegw audit list` shows them."""
    query = {"type": type, "queue_id": queue_id, "since": since, "limit": limit}
    return await _audit(request, query)


@router.get("/messages/{queue_id}/trace", dependencies=[Reader], tags=["logs"])
async def message_trace(request: Request, queue_id: str) -> dict[str, Any]:
    """One message's path through the gateway, as `smimegw trace` shows it."""
    query = {"queue_id": queue_id, "records": True, "limit": _TRACE_LIMIT}
    reply = await _audit(request, query)
    steps = [asdict(trace.step_of(record)) for record in reply.get("records", [])]
    if not steps:
        raise HTTPException(
            http.HTTP_404_NOT_FOUND,
            f"no audit events for queue id {queue_id!r}; check the id in the 250 "
            "reply or the Received header",
        )
    return {
        "queue_id": queue_id,
        "steps": steps,
        "truncated": bool(reply.get("truncated")),
    }


# Parked messages


def _parking_error(err: parking.ParkingError) -> HTTPException:
    if isinstance(err, parking.ParkedNotFoundError):
        return HTTPException(http.HTTP_404_NOT_FOUND, str(err))
    return HTTPException(http.HTTP_409_CONFLICT, str(err))


@router.get("/parked", dependencies=[Reader], tags=["parked messages"])
async def list_parked(
    request: Request,
    stage: str | None = None,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 1000,
) -> list[dict[str, Any]]:
    return await _bus(request).parked(stage, limit)


@router.post(
    "/parked/{sequence}/retry", dependencies=[Writer], tags=["parked messages"]
)
async def retry_parked(request: Request, sequence: int) -> dict[str, Any]:
    """Publish the message on its original subject again and unpark it."""
    try:
        return await _bus(request).retry_parked(sequence)
    except parking.ParkingError as err:
        raise _parking_error(err) from err


@router.delete("/parked/{sequence}", dependencies=[Writer], tags=["parked messages"])
async def drop_parked(request: Request, sequence: int) -> dict[str, Any]:
    try:
        return await _bus(request).drop_parked(sequence)
    except parking.ParkingError as err:
        raise _parking_error(err) from err

"""Configuration commands owned by policy: CA certificates, external bindings,
deletions, and the read-only views of the configuration.
"""

from __future__ import annotations

import json
import logging
import uuid
from datetime import UTC, datetime
from typing import Any

from cryptography import x509
from nats.js.errors import NotFoundError

from schemas.commands import (
    BindingCreate,
    BindingDelete,
    CaDelete,
    CaImport,
    CertDelete,
    CommandReply,
    ProfileCreate,
    ProfileDelete,
    Query,
    RuleCreate,
    RuleDelete,
    RuleMove,
    Upload,
)
from schemas.config import (
    BindingDeleted,
    CaDeleted,
    CaImported,
    CertificateImportFailed,
    LocalCertDeleted,
    ProfileCreated,
    ProfileDeleted,
    RuleCreated,
    RuleDeleted,
    RuleMoved,
)
from services.crypto.cms.envelope import CONTENT_ALGORITHMS
from services.policy import rules
from smimegw import streams
from smimegw import x509 as certs
from smimegw.configbus import (
    CommandRejected,
    Handler,
    create_binding,
    file_type,
    publish_config,
    publish_unchecked,
)
from smimegw.configstate import (
    ConfigFollower,
    ConfigState,
    PatternError,
    normalise_pattern,
    pem_of,
)
from smimegw.runtime import Runtime
from smimegw.settings import parse_duration

log = logging.getLogger("smimegw.policy")

_HISTORY_LIMIT = 10_000
_NAME_CHARS = frozenset(
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_."
)
# Content encryption that profiles may choose but every event reports as weak.
WEAK_ALGORITHMS = frozenset({"3des-cbc"})


def split_bundle(
    certificates: list[x509.Certificate], file_name: str
) -> tuple[x509.Certificate, list[x509.Certificate]]:
    """Split a file into its one personal certificate and the CA certificates."""
    personal = [c for c in certificates if not certs.facts_of(c).is_ca]
    if len(personal) != 1:
        raise certs.CertificateImportError(
            certs.ImportErrorCategory.NO_CERTIFICATE
            if not personal
            else certs.ImportErrorCategory.NOT_CERTIFICATE,
            f"{file_name!r} holds {len(personal)} personal certificates; give a file "
            "with exactly one (CA certificates beside it are fine)",
            filename=file_name,
        )
    return personal[0], [c for c in certificates if c is not personal[0]]


class PolicyConfig:
    def __init__(self, runtime: Runtime, follower: ConfigFollower) -> None:
        self.runtime = runtime
        self.follower = follower

    @property
    def state(self) -> ConfigState:
        return self.follower.state

    def handlers(self) -> dict[str, Handler]:
        return {
            "ca.import": self.ca_import,
            "ca.delete": self.ca_delete,
            "binding.create": self.binding_create,
            "binding.delete": self.binding_delete,
            "cert.delete": self.cert_delete,
            "ca.list": self.query,
            "cert.list": self.query,
            "binding.list": self.query,
            "binding.show": self.query,
            "history": self.query,
            "profile.create": self.profile_create,
            "profile.delete": self.profile_delete,
            "rule.create": self.rule_create,
            "rule.move": self.rule_move,
            "rule.delete": self.rule_delete,
            "profile.list": self.query,
            "rule.list": self.query,
        }

    async def _failed(
        self,
        command: str,
        upload: Upload,
        err: certs.MaterialImportError,
        pattern: str | None = None,
    ) -> CommandRejected:
        await publish_unchecked(
            self.runtime,
            CertificateImportFailed.create(
                command=command,
                pattern=pattern,
                name=None,
                file_name=upload.name,
                file_type=file_type(upload.name),
                category=str(err.category),
                message=err.message,
                algorithm=err.algorithm,
            ),
        )
        log.warning("%s of %s failed: %s", command, upload.name, err.category)
        return CommandRejected(str(err.category), err.message)

    async def ca_import(self, command: CaImport) -> CommandReply:
        loaded: list[tuple[Upload, x509.Certificate]] = []
        for upload in command.files:
            try:
                certificates = certs.load_certificates(upload.content(), upload.name)
            except certs.CertificateImportError as err:
                raise await self._failed("ca.import", upload, err) from err
            for certificate in certificates:
                facts = certs.facts_of(certificate)
                if not facts.is_ca and certificate.issuer != certificate.subject:
                    error = certs.CertificateImportError(
                        certs.ImportErrorCategory.NOT_CERTIFICATE,
                        f"{facts.identity!r} in {upload.name!r} is not a CA "
                        "certificate (basicConstraints cA is not set); import a "
                        "personal certificate with `smimegw binding create`",
                        filename=upload.name,
                    )
                    raise await self._failed("ca.import", upload, error)
                loaded.append((upload, certificate))

        events = []
        imported: list[dict[str, str]] = []
        known = {e.facts.sha256_fingerprint for e in self.state.cas.values()}
        for upload, certificate in loaded:
            facts = certs.facts_of(certificate)
            if facts.sha256_fingerprint in known:
                continue
            known.add(facts.sha256_fingerprint)
            ca_id = facts.sha256_fingerprint[:16]
            events.append(
                CaImported.create(
                    ca_id=ca_id, certificate=pem_of(certificate), file_name=upload.name
                )
            )
            imported.append({"id": ca_id, "subject": facts.subject})
        if events:
            await publish_config(self.runtime, events, self.state.last_sequence)
        skipped = len(loaded) - len(imported)
        warnings = (
            (f"{skipped} certificate(s) were already imported",) if skipped else ()
        )
        return CommandReply(ok=True, result={"imported": imported}, warnings=warnings)

    async def ca_delete(self, command: CaDelete) -> CommandReply:
        entry = self.state.find_ca(command.ca_id)
        if entry is None:
            raise CommandRejected(
                "not-found",
                f"no CA with id {command.ca_id!r}; `smimegw ca list` shows the ids "
                "(a unique prefix of at least 8 digits works)",
            )
        users = self.state.ca_users(entry.ca_id)
        if users:
            raise CommandRejected(
                "in-use",
                f"CA {entry.ca_id} is in use by {', '.join(users)}; delete those first",
            )
        event = CaDeleted.create(ca_id=entry.ca_id)
        await publish_config(self.runtime, [event], self.state.last_sequence)
        return CommandReply(ok=True, result={"deleted": entry.ca_id})

    async def binding_create(self, command: BindingCreate) -> CommandReply:
        if command.kind != "external":
            raise CommandRejected(
                "invalid-command", "internal bindings are created by the crypto service"
            )
        if command.cert is None:
            raise CommandRejected(
                "invalid-command", "an external binding needs --cert FILE"
            )
        try:
            pattern = normalise_pattern(command.pattern)
        except PatternError as err:
            raise CommandRejected("invalid-pattern", str(err)) from err
        upload = command.cert
        try:
            certificates = certs.load_certificates(upload.content(), upload.name)
            certificate, chain = split_bundle(certificates, upload.name)
        except certs.CertificateImportError as err:
            raise await self._failed("binding.create", upload, err, pattern) from err

        return await create_binding(
            self.runtime,
            self.follower,
            kind="external",
            pattern=pattern,
            certificate=certificate,
            chain=chain,
            key_id=None,
            local_cert=None,
            file_name=upload.name,
        )

    async def binding_delete(self, command: BindingDelete) -> CommandReply:
        if command.binding_id not in self.state.bindings:
            raise CommandRejected(
                "not-found",
                f"no binding with id {command.binding_id!r}; "
                "`smimegw binding list` shows the ids",
            )
        users = self.state.binding_users(command.binding_id)
        if users:
            raise CommandRejected(
                "in-use",
                f"binding {command.binding_id} is in use by {', '.join(users)}",
            )
        event = BindingDeleted.create(binding_id=command.binding_id)
        await publish_config(self.runtime, [event], self.state.last_sequence)
        return CommandReply(ok=True, result={"deleted": command.binding_id})

    async def cert_delete(self, command: CertDelete) -> CommandReply:
        if command.name not in self.state.local_certs:
            raise CommandRejected(
                "not-found",
                f"no local certificate named {command.name!r}; "
                "`smimegw cert list` shows the names",
            )
        users = self.state.local_cert_users(command.name)
        if users:
            raise CommandRejected(
                "in-use",
                f"local certificate {command.name!r} is used by {', '.join(users)}; "
                "delete those bindings first",
            )
        event = LocalCertDeleted.create(name=command.name)
        await publish_config(self.runtime, [event], self.state.last_sequence)
        return CommandReply(ok=True, result={"deleted": command.name})

    async def profile_create(self, command: ProfileCreate) -> CommandReply:
        if not command.name or not set(command.name) <= _NAME_CHARS:
            raise CommandRejected(
                "invalid-name",
                f"profile name {command.name!r} is invalid: use letters, digits, "
                "'-', '_' and '.'",
            )
        if command.name in self.state.profiles:
            raise CommandRejected(
                "exists", f"profile {command.name!r} exists; delete it first"
            )
        if command.algorithm not in CONTENT_ALGORITHMS:
            raise CommandRejected(
                "invalid-algorithm",
                f"content encryption {command.algorithm!r} is not supported; choose "
                f"one of {', '.join(CONTENT_ALGORITHMS)}",
            )
        try:
            hold_timeout = parse_duration(
                command.hold_timeout or self.runtime.settings.policy.hold_timeout
            )
        except ValueError as err:
            raise CommandRejected("invalid-duration", str(err)) from err
        event = ProfileCreated.create(
            name=command.name,
            action=command.action,
            algorithm=command.algorithm,
            digest=command.digest,
            signature=command.signature,
            on_failure=command.on_failure,
            encrypt_to_self=command.encrypt_to_self,
            hold_timeout=hold_timeout.total_seconds(),
            rsa_padding=command.rsa_padding,
        )
        await publish_config(self.runtime, [event], self.state.last_sequence)
        warnings: tuple[str, ...] = ()
        if command.algorithm in WEAK_ALGORITHMS:
            warnings = (f"{command.algorithm} is weak; prefer aes256-cbc",)
        return CommandReply(ok=True, result={"name": command.name}, warnings=warnings)

    async def profile_delete(self, command: ProfileDelete) -> CommandReply:
        if command.name not in self.state.profiles:
            raise CommandRejected(
                "not-found",
                f"no profile named {command.name!r}; `smimegw profile list` shows them",
            )
        users = self.state.profile_users(command.name)
        if users:
            raise CommandRejected(
                "in-use",
                f"profile {command.name!r} is used by {', '.join(users)}; "
                "delete or change those rules first",
            )
        event = ProfileDeleted.create(name=command.name)
        await publish_config(self.runtime, [event], self.state.last_sequence)
        return CommandReply(ok=True, result={"deleted": command.name})

    async def rule_create(self, command: RuleCreate) -> CommandReply:
        if command.profile not in self.state.profiles:
            raise CommandRejected(
                "not-found",
                f"no profile named {command.profile!r}; create it with "
                "`smimegw profile create` first",
            )
        try:
            sender = (
                rules.check_address_pattern(command.sender) if command.sender else None
            )
            recipient = (
                rules.check_address_pattern(command.recipient)
                if command.recipient
                else None
            )
            client = (
                rules.check_client_pattern(command.client_ip)
                if command.client_ip
                else None
            )
        except rules.RulePatternError as err:
            raise CommandRejected("invalid-pattern", str(err)) from err
        position = command.position or len(self.state.rules) + 1
        if position < 1:
            raise CommandRejected(
                "invalid-position",
                f"position {position} is invalid: rules count from 1",
            )
        rule_id = "r" + uuid.uuid4().hex[:8]
        event = RuleCreated.create(
            rule_id=rule_id,
            position=position,
            profile=command.profile,
            sender=sender,
            recipient=recipient,
            client_ip=client,
        )
        await publish_config(self.runtime, [event], self.state.last_sequence)
        return CommandReply(ok=True, result={"id": rule_id, "position": position})

    def _rule(self, rule_id: str) -> RuleCreated:
        rule = self.state.find_rule(rule_id)
        if rule is None:
            raise CommandRejected(
                "not-found", f"no rule {rule_id!r}; `smimegw rule list` shows the ids"
            )
        return rule

    async def rule_move(self, command: RuleMove) -> CommandReply:
        self._rule(command.rule_id)
        if command.position < 1:
            raise CommandRejected(
                "invalid-position",
                f"position {command.position} is invalid: rules count from 1",
            )
        event = RuleMoved.create(rule_id=command.rule_id, position=command.position)
        await publish_config(self.runtime, [event], self.state.last_sequence)
        return CommandReply(ok=True, result={"id": command.rule_id})

    async def rule_delete(self, command: RuleDelete) -> CommandReply:
        self._rule(command.rule_id)
        event = RuleDeleted.create(rule_id=command.rule_id)
        await publish_config(self.runtime, [event], self.state.last_sequence)
        return CommandReply(ok=True, result={"deleted": command.rule_id})

    async def query(self, command: Query) -> CommandReply:
        now = datetime.now(UTC)
        state = self.state
        result: Any
        if command.command == "ca.list":
            result = [state.ca_view(e, now) for e in state.cas.values()]
        elif command.command == "cert.list":
            result = [state.local_cert_view(e, now) for e in state.local_certs.values()]
        elif command.command == "binding.list":
            result = [state.binding_view(e, now) for e in state.bindings.values()]
        elif command.command == "profile.list":
            result = [
                {
                    **profile.model_dump(
                        include={
                            "name",
                            "action",
                            "algorithm",
                            "digest",
                            "signature",
                            "on_failure",
                            "encrypt_to_self",
                            "hold_timeout",
                            "rsa_padding",
                        }
                    ),
                    "weak": profile.algorithm in WEAK_ALGORITHMS,
                    "in_use": bool(state.profile_users(profile.name)),
                }
                for profile in state.profiles.values()
            ]
        elif command.command == "rule.list":
            result = [
                {
                    "position": index,
                    "id": rule.rule_id,
                    "profile": rule.profile,
                    "sender": rule.sender,
                    "recipient": rule.recipient,
                    "client_ip": rule.client_ip,
                }
                for index, rule in enumerate(state.rules, start=1)
            ]
        elif command.command == "binding.show":
            entry = state.bindings.get(command.entry_id or "")
            if entry is None:
                raise CommandRejected(
                    "not-found",
                    f"no binding with id {command.entry_id!r}; "
                    "`smimegw binding list` shows the ids",
                )
            result = state.binding_view(entry, now)
        else:
            result = await self.history()
        return CommandReply(ok=True, result=result)

    async def history(self) -> list[dict[str, Any]]:
        """Read the CONFIG events, oldest first, without certificate bodies."""
        js = self.runtime.js
        info = await js.stream_info(streams.CONFIG)
        events: list[dict[str, Any]] = []
        # An empty stream reports sequence 0, which no message has.
        first = max(info.state.first_seq, info.state.last_seq - _HISTORY_LIMIT + 1, 1)
        for sequence in range(first, info.state.last_seq + 1):
            try:
                message = await js.get_msg(streams.CONFIG, seq=sequence)
            except NotFoundError:
                continue
            event = json.loads(message.data or b"{}")
            for bulky in ("certificate", "chain"):
                event.pop(bulky, None)
            event["sequence"] = sequence
            events.append(event)
        return events

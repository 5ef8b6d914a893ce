"""Configuration commands owned by crypto, the only service that parses private keys:
local certificates and internal bindings.
"""

from __future__ import annotations

import logging

from schemas.commands import BindingCreate, CertImport, CommandReply, Upload
from schemas.config import (
    CertificateImportFailed,
    ConfigWarning,
    LocalCertImported,
)
from services.crypto import keymaterial
from services.crypto.keystore import KeyStore
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
    PatternError,
    normalise_pattern,
    pem_of,
)
from smimegw.runtime import Runtime

log = logging.getLogger("smimegw.crypto")

_NAME_CHARS = frozenset(
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_."
)


def _password(command: CertImport | BindingCreate) -> bytes | None:
    if command.password is None:
        return None
    return command.password.get_secret_value().encode()


class CryptoConfig:
    def __init__(
        self, runtime: Runtime, follower: ConfigFollower, keys: KeyStore
    ) -> None:
        self.runtime = runtime
        self.follower = follower
        self.keys = keys

    def handlers(self) -> dict[str, Handler]:
        return {"cert.import": self.cert_import, "binding.create": self.binding_create}

    def _load(
        self, command: CertImport | BindingCreate
    ) -> tuple[keymaterial.KeyMaterial, Upload]:
        """Parse the key material of a command; raises KeyImportError."""
        if command.pkcs12 is not None:
            return (
                keymaterial.load_pkcs12(
                    command.pkcs12.content(), _password(command), command.pkcs12.name
                ),
                command.pkcs12,
            )
        if command.cert is not None and command.key is not None:
            material = keymaterial.load_pem_pair(
                command.cert.content(),
                command.key.content(),
                _password(command),
                command.cert.name,
                command.key.name,
            )
            return material, command.key
        raise CommandRejected(
            "invalid-command", "give --pkcs12 FILE, or --cert FILE with --key FILE"
        )

    async def _import_failed(
        self,
        command: CertImport | BindingCreate,
        err: keymaterial.KeyImportError,
        pattern: str | None,
        name: str | None,
    ) -> CommandRejected:
        upload = command.pkcs12 or command.key or command.cert
        file_name = err.filename or (upload.name if upload else "")
        await publish_unchecked(
            self.runtime,
            CertificateImportFailed.create(
                command=command.command,
                pattern=pattern,
                name=name,
                file_name=file_name,
                file_type=file_type(file_name),
                category=str(err.category),
                message=err.message,
                algorithm=err.algorithm,
            ),
        )
        log.warning("%s failed: %s", command.command, err.category)
        return CommandRejected(str(err.category), err.message)

    async def cert_import(self, command: CertImport) -> CommandReply:
        if not command.name or not set(command.name) <= _NAME_CHARS:
            raise CommandRejected(
                "invalid-name",
                f"local certificate name {command.name!r} is invalid: use letters, "
                "digits, '-', '_' and '.'",
            )
        if command.name in self.follower.state.local_certs:
            raise CommandRejected(
                "exists",
                f"a local certificate named {command.name!r} exists; delete it first "
                "or choose another name",
            )
        try:
            material, upload = self._load(command)
        except keymaterial.KeyImportError as err:
            raise await self._import_failed(command, err, None, command.name) from err
        key_id = await self.keys.put(material.private_key)
        imported = LocalCertImported.create(
            name=command.name,
            certificate=pem_of(material.certificate),
            chain=tuple(pem_of(c) for c in material.extra_certificates),
            key_id=key_id,
            file_name=upload.name,
        )
        warnings = [
            ConfigWarning.create(
                entry_kind="localcert",
                entry_id=command.name,
                code=w.code,
                message=w.message,
            )
            for w in material.warnings
        ]
        await publish_config(
            self.runtime, [imported, *warnings], self.follower.state.last_sequence
        )
        facts = certs.facts_of(material.certificate)
        return CommandReply(
            ok=True,
            result={"name": command.name, "identity": facts.identity},
            warnings=tuple(w.message for w in warnings),
        )

    async def binding_create(self, command: BindingCreate) -> CommandReply:
        if command.kind != "internal":
            raise CommandRejected(
                "invalid-command", "external bindings are created by the policy service"
            )
        try:
            pattern = normalise_pattern(command.pattern)
        except PatternError as err:
            raise CommandRejected("invalid-pattern", str(err)) from err

        key_warnings: list[tuple[str, str]] = []
        if command.local_cert is not None:
            local = self.follower.state.local_certs.get(command.local_cert)
            if local is None:
                raise CommandRejected(
                    "not-found",
                    f"no local certificate named {command.local_cert!r}; "
                    "`smimegw cert list` shows the names",
                )
            certificate, chain, key_id = local.certificate, local.chain, local.key_id
            file_name = local.file_name
        else:
            try:
                material, upload = self._load(command)
            except keymaterial.KeyImportError as err:
                raise await self._import_failed(command, err, pattern, None) from err
            certificate = material.certificate
            chain = material.extra_certificates
            key_id = await self.keys.put(material.private_key)
            file_name = upload.name
            key_warnings = [(w.code, w.message) for w in material.warnings]

        return await create_binding(
            self.runtime,
            self.follower,
            kind="internal",
            pattern=pattern,
            certificate=certificate,
            chain=chain,
            key_id=key_id,
            local_cert=command.local_cert,
            file_name=file_name,
            key_warnings=key_warnings,
        )

"""Outgoing S/MIME: sign and/or encrypt a message as the plan's profile specifies.

The entity to protect is put in canonical form first (CRLF line ends, 7-bit
transfer encodings), because relays re-encode 8-bit parts and would break the
signature. Nothing re-encodes it afterwards: the DER comes from the CMS engine
and the MIME wrapping is written here, not by cryptography's S/MIME writer,
whose text output costs several times the cryptography itself.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes

from schemas import CryptoOperation, MailRouted, ProfileSpec
from services.crypto.cms import envelope, signed
from services.crypto.cms.errors import CmsError
from services.crypto.handlers import Transformed
from services.crypto.keystore import KeyStore
from services.crypto.mime import canonical, outgoing
from services.crypto.mime.errors import MimeError
from smimegw.configstate import BindingEntry, ConfigFollower
from smimegw.runtime import PermanentError

log = logging.getLogger("smimegw.crypto")

# Content encryption that is allowed but reported as weak in every event.
WEAK_CONTENT = frozenset({"3des-cbc"})


@dataclass(frozen=True)
class Signer:
    certificate: x509.Certificate
    key: PrivateKeyTypes
    chain: tuple[x509.Certificate, ...]
    binding: BindingEntry


def protect_message(
    message: bytes,
    profile: ProfileSpec,
    signer: Signer | None,
    recipients: list[x509.Certificate],
    content_algorithm: str | None = None,
) -> bytes:
    """Sign, then encrypt, as `profile` specifies. CPU-bound: run it in a thread.

    `content_algorithm` replaces the profile's algorithm, as the plan chose it.
    """
    algorithm = content_algorithm or profile.algorithm
    outer, entity = outgoing.split_message(message)
    entity = canonical.canonicalize(entity)
    if signer is not None:
        detached = profile.signature == "detached"
        der = signed.sign(
            entity,
            signer.certificate,
            signer.key,  # type: ignore[arg-type]
            digest=profile.digest,
            detached=detached,
            rsa_padding=_rsa_padding(profile, signer.key),
            extra_certificates=signer.chain,
        )
        if detached:
            entity = outgoing.signed_multipart_entity(entity, der, profile.digest)
        else:
            entity = outgoing.pkcs7_mime_entity(der, "signed-data")
    if recipients:
        der = envelope.encrypt(entity, recipients, content_algorithm=algorithm)
        smime_type = (
            "authEnveloped-data" if algorithm.endswith("-gcm") else "enveloped-data"
        )
        entity = outgoing.pkcs7_mime_entity(der, smime_type)
    return outgoing.join_message(outer, entity)


def _rsa_padding(profile: ProfileSpec, key: PrivateKeyTypes) -> signed.RsaPadding:
    """Return the profile's RSA padding for an RSA key; other keys take no padding."""
    return profile.rsa_padding if isinstance(key, rsa.RSAPrivateKey) else "pkcs1v15"


class OutgoingProcessor:
    def __init__(self, follower: ConfigFollower, keys: KeyStore) -> None:
        self.follower = follower
        self.keys = keys

    async def _binding(self, binding_id: str) -> BindingEntry:
        binding = self.follower.state.bindings.get(binding_id)
        if binding is None:
            # Policy may have seen a newer CONFIG event than this replica.
            await self.follower.sync()
            binding = self.follower.state.bindings.get(binding_id)
        if binding is None:
            raise PermanentError(
                f"binding {binding_id} was deleted after the message was planned"
            )
        return binding

    async def protect(self, plan: MailRouted, message: bytes) -> Transformed:
        profile = plan.profile
        if profile is None:
            raise PermanentError(f"plan {plan.plan_id} has no profile to protect with")
        operations: list[CryptoOperation] = []

        signer = None
        if plan.signer_binding is not None:
            binding = await self._binding(plan.signer_binding)
            if binding.key_id is None:
                raise PermanentError(f"binding {binding.binding_id} has no private key")
            key = await self.keys.get(binding.key_id)
            chain = tuple(self.follower.state.chain_of(binding.certificate) or ())[1:]
            signer = Signer(binding.certificate, key, chain, binding)
            operations.append(
                CryptoOperation(
                    operation="sign",
                    algorithm=f"{profile.digest} {profile.signature}",
                    certificates=(binding.facts.sha256_fingerprint,),
                    binding_ids=(binding.binding_id,),
                    detail=f"rsa padding {_rsa_padding(profile, key)}"
                    if isinstance(key, rsa.RSAPrivateKey)
                    else "",
                )
            )

        recipients: list[x509.Certificate] = []
        bindings: list[BindingEntry] = []
        for entry in plan.encrypt_to:
            binding = await self._binding(entry.binding_id)
            recipients.append(binding.certificate)
            bindings.append(binding)
        algorithm = plan.content_algorithm or profile.algorithm
        if recipients:
            detail = f"{len(recipients)} RecipientInfo(s)"
            if plan.algorithm_reason:
                detail = f"{detail}; {plan.algorithm_reason}"
            operations.append(
                CryptoOperation(
                    operation="encrypt",
                    algorithm=algorithm,
                    certificates=tuple(b.facts.sha256_fingerprint for b in bindings),
                    binding_ids=tuple(b.binding_id for b in bindings),
                    weak=algorithm in WEAK_CONTENT,
                    detail=detail,
                )
            )
        try:
            body = await asyncio.to_thread(
                protect_message, message, profile, signer, recipients, algorithm
            )
        except (MimeError, CmsError) as err:
            # Retrying cannot change the message: park it with the reason.
            # TODO: bounce with a DSN instead once operators ask for it.
            raise PermanentError(f"cannot protect plan {plan.plan_id}: {err}") from err
        return Transformed(body=body, operations=tuple(operations))

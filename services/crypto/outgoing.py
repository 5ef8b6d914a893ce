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
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from itertools import chain

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes

from schemas import CryptoOperation, MailRouted, ProfileSpec
from services.crypto.cms import envelope, signed
from services.crypto.cms.errors import CmsError
from services.crypto.handlers import StreamedBody, Transformed
from services.crypto.keystore import KeyStore
from services.crypto.mime import canonical, encoding, outgoing
from services.crypto.mime.errors import MimeError
from services.crypto.pieces import gather
from smimegw.configstate import BindingEntry, ConfigFollower
from smimegw.runtime import PermanentError

log = logging.getLogger("smimegw.crypto")

# Results of more bytes than this are stored while they are produced. Smaller ones
# are made in one go, which takes one hop to a worker thread instead of several.
STREAM_ABOVE = 1024 * 1024

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
) -> bytearray:
    """Sign, then encrypt, as `profile` specifies. CPU-bound: run it in a thread.

    `content_algorithm` replaces the profile's algorithm, as the plan chose it.
    The result is written once into a buffer of its final size, so a large 7-bit
    message costs about its own size again for the result, plus a few MiB.
    """
    size, chunks = protect_chunks(
        message, profile, signer, recipients, content_algorithm
    )
    return gather(size, chunks)


def protect_chunks(
    message: bytes,
    profile: ProfileSpec,
    signer: Signer | None,
    recipients: list[x509.Certificate],
    content_algorithm: str | None = None,
) -> tuple[int, Iterator[bytes | memoryview]]:
    """Protect as protect_message does; return the result's size and its chunks.

    Canonical form and the signature are made now. Encryption and base64 run as
    the chunks are read, which is CPU-bound work too. The body of `message` is read
    in place wherever canonical form keeps it, so the chunks refer to `message`.
    """
    algorithm = content_algorithm or profile.algorithm
    outer, head, body_start = outgoing.split_fields(message)
    entity = canonical.canonical_split_pieces(head, message, body_start)
    size = len(entity)
    chunks: Iterable[bytes | memoryview] = entity.views()
    if signer is not None:
        detached = profile.signature == "detached"
        der = signed.sign_pieces(
            entity,
            signer.certificate,
            signer.key,  # type: ignore[arg-type]
            digest=profile.digest,
            detached=detached,
            rsa_padding=_rsa_padding(profile, signer.key),
            extra_certificates=signer.chain,
        )
        if detached:
            entity = outgoing.signed_multipart_pieces(
                entity, der.join(), profile.digest
            )
            size, chunks = len(entity), entity.views()
        else:
            size, chunks = _pkcs7_mime(len(der), der.views(), "signed-data")
    if recipients:
        encrypted = envelope.encrypt_chunks(
            size, chunks, recipients, content_algorithm=algorithm
        )
        smime_type = (
            "authEnveloped-data" if algorithm.endswith("-gcm") else "enveloped-data"
        )
        size, chunks = _pkcs7_mime(encrypted.size, encrypted.chunks, smime_type)
    message_head = outgoing.message_head(outer)
    return len(message_head) + size, chain([message_head], chunks)


def _pkcs7_mime(
    der_size: int, der: Iterable[bytes | memoryview], smime_type: str
) -> tuple[int, Iterator[bytes]]:
    """Return the size and chunks of an application/pkcs7-mime entity around `der`."""
    head = outgoing.pkcs7_mime_head(smime_type)
    size = len(head) + encoding.base64_lines_size(der_size)
    return size, chain([head], encoding.encode_base64_chunks(der))


def protect_body(
    message: bytes,
    profile: ProfileSpec,
    signer: Signer | None,
    recipients: list[x509.Certificate],
    content_algorithm: str,
) -> bytearray | StreamedBody:
    """Protect a message whole, or as chunks to store while they are made when large.

    A large result is never held whole: only the chunks that wait to be stored.
    """
    size, chunks = protect_chunks(
        message, profile, signer, recipients, content_algorithm
    )
    if size > STREAM_ABOVE:
        return StreamedBody(size, chunks)
    return gather(size, chunks)


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
                protect_body, message, profile, signer, recipients, algorithm
            )
        except (MimeError, CmsError) as err:
            # Retrying cannot change the message: park it with the reason, where
            # the operator sees it and can drop it (`smimegw parked drop`).
            raise PermanentError(f"cannot protect plan {plan.plan_id}: {err}") from err
        return Transformed(body=body, operations=tuple(operations))

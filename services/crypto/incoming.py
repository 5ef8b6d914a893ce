"""The `open` transform: decrypt and verify incoming S/MIME for internal recipients.

Layers are opened from the outside in, for as long as the top-level body of a layer
is S/MIME. An enveloped body is decrypted with the key of an internal binding, and a
signature layer is verified over its content exactly as received. The delivered
message is the received one with the gateway's result header fields at the top. When
a layer was decrypted, its decrypted entity replaces the body, and any signature
inside that entity is kept byte for byte. Bad input from outside never raises: it is
reported in the events and header fields, and the message is delivered unchanged.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Callable
from datetime import UTC, datetime

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from schemas import Event, MailDecrypted, MailRouted, SignerReport
from services.crypto.cms.envelope import (
    Decrypted,
    RecipientId,
    RecipientKey,
    decrypt,
    recipient_ids,
)
from services.crypto.cms.errors import CmsError, NoMatchingRecipientError
from services.crypto.cms.signed import Verification, verify
from services.crypto.handlers import Transformed
from services.crypto.incoming_results import (
    Outcome,
    failed_report,
    record_decrypted,
    record_decryption,
    record_signers,
    signer_report,
    verified_event,
)
from services.crypto.keystore import KeyMissingError, KeyStore
from services.crypto.mime import (
    MimeError,
    Smime,
    SmimeKind,
    detect,
    kind_of_cms,
    prepend_headers,
    replace_body,
    strip_headers,
)
from services.crypto.mime.headers import (
    MediaInfo,
    parse_header_block,
    parse_header_block_at,
)
from services.crypto.result_headers import RESULT_HEADERS, signer_verdict
from smimegw.configstate import BindingEntry, ConfigFollower
from smimegw.telemetry import AttributeValue, checked_attributes, crypto_span

log = logging.getLogger("smimegw.crypto")

# S/MIME layers opened per message. Real mail has at most three (signed, encrypted,
# signed again); the bound stops a hostile message of thousands of nested layers.
MAX_LAYERS = 8


class IncomingProcessor:
    """Opens incoming S/MIME with the internal bindings' keys and imported CAs."""

    def __init__(self, follower: ConfigFollower, keys: KeyStore) -> None:
        self.follower = follower
        self.keys = keys

    async def open(self, event: MailRouted, message: bytes) -> Transformed:
        """Decrypt and verify `message` for the recipients of an "open" plan."""
        try:
            received = strip_headers(message, RESULT_HEADERS)
        except MimeError as err:
            # Beyond the MIME parser's limits nothing is opened, but forged result
            # fields are still removed.
            log.warning("plan %s: header block not parsed: %s", event.plan_id, err)
            return Transformed(_strip_result_fields_by_line(message), ())

        outcome = Outcome(event.plan_id, delivered=received, entity=received)
        sender = parse_header_block(received).value("From")
        for _ in range(MAX_LAYERS):
            if not await self._open_layer(event, outcome, sender):
                break
        else:
            log.warning(
                "plan %s: stopped after %d S/MIME layers; any inner layer stays closed",
                event.plan_id,
                MAX_LAYERS,
            )

        # The innermost entity is not delivered: released before the result is built.
        outcome.entity = b""
        events: list[Event] = [*outcome.decryptions]
        if outcome.signature_layers:
            events.append(verified_event(event, outcome.signature_layers))
        body = received
        if outcome.fields:
            # A decrypted entity may carry forged result fields of its own.
            try:
                body = strip_headers(outcome.delivered, RESULT_HEADERS)
            except MimeError:
                # The outer fields and the decrypted entity's fields, each within
                # the limits, can together exceed them.
                body = _strip_result_fields_by_line(outcome.delivered)
            body = prepend_headers(body, outcome.fields)
        log.info(
            "plan %s: opened %d signature layer(s), %d enveloped layer(s)",
            event.plan_id,
            len(outcome.signature_layers),
            len(outcome.decryptions),
        )
        return Transformed(body, tuple(outcome.operations), tuple(events))

    async def _sync_config(self, outcome: Outcome) -> None:
        """Read every configuration event stored so far, once per message.

        A binding or CA imported just before the message is then used. Mail without
        S/MIME never waits for this.
        """
        if not outcome.config_synced:
            await self.follower.sync()
            outcome.config_synced = True

    async def _open_layer(
        self, event: MailRouted, outcome: Outcome, sender: str | None
    ) -> bool:
        """Open the S/MIME layer at the top of `outcome.entity`.

        Returns whether an inner entity was reached that may hold another layer.
        """
        try:
            smime = await asyncio.to_thread(
                _detect, outcome.entity, outcome.entity_start
            )
        except MimeError as err:
            _report_unreadable(event, outcome, str(err))
            return False

        if smime.kind is SmimeKind.ENVELOPED:
            assert smime.der is not None
            der = smime.der
            # Only `der` refers to the DER now, so it is freed once decrypted.
            del smime
            with crypto_span("decrypt", None, None) as span:
                decrypted = await self._decrypt(event, outcome, der)
                del der
                opened = decrypted is not None and self._deliver_decrypted(
                    event, outcome, *decrypted
                )
                span.set_attributes(_decryption_attributes(outcome.decryptions[-1]))
            return opened
        if smime.kind in (SmimeKind.OPAQUE_SIGNED, SmimeKind.DETACHED_SIGNED):
            with crypto_span("verify", None, None) as span:
                inner = await self._verify(outcome, smime, sender)
                span.set_attributes(_layer_attributes(outcome.signature_layers))
            if inner is None:
                return False
            outcome.entity = inner
            outcome.entity_start = 0
            return True
        return False

    async def _decrypt(
        self, event: MailRouted, outcome: Outcome, der: bytes
    ) -> tuple[Decrypted, BindingEntry] | None:
        """Decrypt an enveloped layer; return the result and the binding whose key fit.

        A failure is reported in `outcome`, and None returned.
        """
        index = len(outcome.decryptions)
        await self._sync_config(outcome)
        try:
            recipients = await asyncio.to_thread(recipient_ids, der)
        except CmsError as err:
            record_decryption(outcome, event, index, "failed", str(err))
            return None

        candidates = _matching_bindings(self.follower.state.bindings, recipients)
        keys: dict[str, tuple[BindingEntry, RecipientKey]] = {}
        for binding in candidates:
            assert binding.key_id is not None
            try:
                private_key = await self.keys.get(binding.key_id)
            except KeyMissingError as err:
                log.error("binding %s: %s", binding.binding_id, err)
                continue
            if isinstance(private_key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
                fingerprint = binding.certificate.fingerprint(hashes.SHA256()).hex()
                key = RecipientKey(binding.certificate, private_key)
                keys.setdefault(fingerprint, (binding, key))
        if not keys:
            listed = "; ".join(str(rid) for rid in recipients) or "none"
            reason = (
                "no internal binding holds the key of a recipient of the message; "
                f"its recipients are: {listed}"
            )
            record_decryption(outcome, event, index, "no-key", reason)
            return None

        try:
            result = await asyncio.to_thread(
                decrypt, der, [key for _, key in keys.values()]
            )
        except NoMatchingRecipientError as err:
            record_decryption(outcome, event, index, "no-key", str(err))
            return None
        except CmsError as err:
            record_decryption(outcome, event, index, "failed", str(err))
            return None

        binding, _ = keys[result.recipient_fingerprint]
        return result, binding

    def _deliver_decrypted(
        self,
        event: MailRouted,
        outcome: Outcome,
        result: Decrypted,
        binding: BindingEntry,
    ) -> bool:
        """Put the decrypted entity in place of the body of `outcome.delivered`.

        The entity of the next layer is then read inside the new message, so the
        decrypted content is not kept twice. Returns False when the entity is not
        readable MIME, which is reported as a failed decryption.
        """
        index = len(outcome.decryptions)
        content = _wire_line_ends(result.content)
        try:
            delivered = outcome.delivered
            if parse_header_block_at(content).first("MIME-Version") is not None:
                # The entity brings its own MIME-Version field; one is enough.
                delivered = strip_headers(delivered, ("MIME-Version",))
            delivered = replace_body(delivered, content)
        except MimeError as err:
            reason = f"the decrypted entity is not a readable MIME entity: {err}"
            record_decryption(outcome, event, index, "failed", reason)
            return False
        record_decrypted(outcome, event, index, result, binding)
        outcome.delivered = delivered
        # replace_body puts the entity last, byte for byte.
        outcome.entity = delivered
        outcome.entity_start = len(delivered) - len(content)
        return True

    async def _verify(
        self, outcome: Outcome, smime: Smime, sender: str | None
    ) -> bytes | None:
        """Verify one signature layer; report it and return its signed content."""
        layer = len(outcome.signature_layers) + 1
        await self._sync_config(outcome)
        anchors = self.follower.state.ca_certificates()
        now = datetime.now(UTC)
        assert smime.der is not None
        der = smime.der

        def run(content: bytes | None) -> Verification:
            return verify(
                der,
                detached_content=content,
                trust_anchors=anchors,
                now=now,
                from_address=sender,
            )

        try:
            if smime.kind is SmimeKind.DETACHED_SIGNED:
                verification = await self._verify_detached(smime, run)
            else:
                verification = await asyncio.to_thread(run, None)
        except CmsError as err:
            log.warning(
                "plan %s: signature layer %d unreadable: %s",
                outcome.plan_id,
                layer,
                err,
            )
            record_signers(outcome, layer, (failed_report(str(err)),))
            return None

        reports = tuple(signer_report(signer) for signer in verification.signers)
        if not reports:
            reports = (failed_report("the SignedData has no SignerInfo"),)
        record_signers(outcome, layer, reports)
        return verification.content

    async def _verify_detached(
        self, smime: Smime, run: Callable[[bytes | None], Verification]
    ) -> Verification:
        """Verify multipart/signed over the first part as received.

        A part stored with bare LF line ends is checked again in its CRLF form when
        the digest does not match, because RFC 8551 section 3.1.1 signs CRLF text.
        """
        assert smime.signed_content is not None
        verification = await asyncio.to_thread(run, smime.signed_content)
        if smime.signed_content_crlf is None or not _digest_mismatch(verification):
            return verification
        crlf = await asyncio.to_thread(run, smime.signed_content_crlf)
        return verification if _digest_mismatch(crlf) else crlf


_RESULT_FIELD_START = re.compile(
    b"(?:"
    + b"|".join(re.escape(name.encode()) for name in RESULT_HEADERS)
    + rb")[ \t]*:",
    re.IGNORECASE,
)


def _strip_result_fields_by_line(message: bytes) -> bytes:
    """Remove result fields from a header block of any size, line by line.

    The MIME parser rejects header blocks beyond its limits; this scan has none and
    keeps every other byte. Lines end with LF or CRLF, as SMTP delivers them.
    """
    kept: list[bytes] = []
    position = 0
    dropping = False
    while position < len(message):
        end = message.find(b"\n", position)
        end = len(message) if end < 0 else end + 1
        line = message[position:end]
        if line in (b"\r\n", b"\n"):
            break
        if line[:1] not in (b" ", b"\t"):
            dropping = _RESULT_FIELD_START.match(line) is not None
        if not dropping:
            kept.append(line)
        position = end
    return b"".join(kept) + message[position:]


def _decryption_attributes(decrypted: MailDecrypted) -> dict[str, AttributeValue]:
    return checked_attributes(
        {
            "smimegw.crypto.status": decrypted.status,
            "smimegw.crypto.algorithm": decrypted.content_algorithm,
            "smimegw.certificate.fingerprint": decrypted.fingerprint,
            "smimegw.binding.id": decrypted.binding_id,
        }
    )


def _layer_attributes(
    layers: list[tuple[SignerReport, ...]],
) -> dict[str, AttributeValue]:
    """Describe the newest signature layer by its first signer and its worst result."""
    reports = layers[-1]
    first = reports[0]
    verdicts = {signer_verdict(report) for report in reports}
    worst = next(v for v in ("invalid", "weak", "valid") if v in verdicts)
    return checked_attributes(
        {
            "smimegw.crypto.layer": len(layers),
            "smimegw.crypto.signers": len(reports),
            "smimegw.crypto.result": worst,
            "smimegw.crypto.algorithm": (
                f"{first.signature_algorithm}-{first.digest_algorithm}"
            ),
            "smimegw.certificate.fingerprint": first.fingerprint or None,
            "smimegw.certificate.status": first.certificate_status,
        }
    )


def _detect(entity: bytes, start: int) -> Smime:
    """Recognise the S/MIME layer of `entity[start:]`, trusting the CMS content type.

    The ContentInfo of an application/pkcs7-mime body decides its kind, whatever
    the smime-type parameter states, and also when that parameter is missing.
    """
    smime = detect(entity, start)
    if smime.der is None or smime.kind is SmimeKind.DETACHED_SIGNED:
        return smime
    if smime.smime_type == "certs-only":
        # RFC 8551 section 3.6: a degenerate SignedData that carries certificates
        # and no signature, so there is nothing to verify.
        return Smime(SmimeKind.NONE, smime_type=smime.smime_type)
    kind = kind_of_cms(smime.der)
    if kind is SmimeKind.NONE and smime.kind is not SmimeKind.PKCS7_MIME:
        return smime
    return Smime(kind, smime_type=smime.smime_type, der=smime.der)


def _digest_mismatch(verification: Verification) -> bool:
    return any(
        signer.signature_reason == "digest mismatch" for signer in verification.signers
    )


def _matching_bindings(
    bindings: dict[str, BindingEntry], recipients: list[RecipientId]
) -> list[BindingEntry]:
    """Internal bindings, expired ones included, named by a RecipientInfo."""
    return [
        binding
        for binding in bindings.values()
        if binding.kind == "internal"
        and binding.key_id is not None
        and any(rid.matches(binding.certificate) for rid in recipients)
    ]


def _wire_line_ends(entity: bytes | memoryview) -> bytes | memoryview:
    """Return a decrypted entity with CRLF line ends when it has only bare LF.

    Some senders (NSS among them) encrypt the entity with LF line ends, while mail
    travels with CRLF. A body sent with Content-Transfer-Encoding binary is left as
    it is, since its bytes are not lines.
    """
    # Searched with re, which reads a memoryview in place.
    if _CR.search(entity) is not None or _LF.search(entity) is None:
        return entity
    try:
        encoding = MediaInfo(parse_header_block_at(entity)).transfer_encoding
    except MimeError:
        return entity
    if encoding == "binary":
        return entity
    return bytes(entity).replace(b"\n", b"\r\n")


_CR = re.compile(b"\r")
_LF = re.compile(b"\n")


def _report_unreadable(event: MailRouted, outcome: Outcome, reason: str) -> None:
    """Report an S/MIME layer whose MIME structure could not be read.

    Its Content-Type shows whether it claimed to be signed or enveloped.
    """
    try:
        media = MediaInfo(parse_header_block_at(outcome.entity, outcome.entity_start))
    except MimeError:
        media = None
    smime_type = (media.param("smime-type") or "").strip().lower() if media else ""
    signed = media is not None and (
        media.media_type == "multipart/signed" or smime_type == "signed-data"
    )
    if signed:
        log.warning("plan %s: signed layer unreadable: %s", outcome.plan_id, reason)
        layer = len(outcome.signature_layers) + 1
        record_signers(outcome, layer, (failed_report(reason),))
    else:
        index = len(outcome.decryptions)
        record_decryption(outcome, event, index, "failed", reason)

"""SMTP transaction hooks: relay control, size, and the durable hand-off to the bus."""

from __future__ import annotations

import asyncio
import ipaddress
import logging
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Any

import nats.errors
from aiosmtpd.smtp import SMTP, Envelope, Session
from opentelemetry.trace import Span, SpanKind

from schemas import ClientInfo, MailReceived
from services.crypto.mime.errors import MimeLimitError
from services.crypto.mime.headers import parse_header_block
from services.crypto.mime.limits import MAX_HEADER_FIELDS
from smimegw import metrics
from smimegw.ids import new_queue_id
from smimegw.logs import message_context
from smimegw.runtime import Runtime
from smimegw.telemetry import Attributes, stage_span

log = logging.getLogger("smimegw.ingress")

# Replies; none of them carries exception text to the client.
REPLY_TEMPFAIL = "451 4.3.0 Requested action aborted: try again later"
REPLY_RELAY_DENIED = "554 5.7.1 <{address}>: Relay access denied"
REPLY_TOO_MANY_RECIPIENTS = "452 4.5.3 Too many recipients"
REPLY_NUL = (
    "554 5.6.0 Message contains NUL bytes, which RFC 5322 does not allow; "
    "send binary content base64-encoded"
)
# RFC 3463 X.3.4: the message is too big for the system, here its header.
REPLY_HEADER_TOO_LARGE = (
    "552 5.3.4 Message header exceeds {limit} (at most {maximum}); "
    "send it with fewer or shorter header fields"
)


class IngressHandler:
    """aiosmtpd handler: one instance shared by every SMTP session."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        settings = runtime.settings
        self.hostname = settings.smtp.hostname
        self.internal_domains = frozenset(settings.internal_domains)
        self.trusted_networks = settings.trusted_ip_networks
        self.publish_timeout = settings.smtp.publish_timeout.total_seconds()
        self.max_recipients = settings.smtp.max_recipients
        self.in_flight = 0
        self.idle = asyncio.Event()
        self.idle.set()

    def is_trusted(self, session: Session) -> bool:
        peer = _peer_ip(session)
        if session.authenticated:
            return True
        try:
            address = ipaddress.ip_address(peer) if peer else None
        except ValueError:
            return False
        return address is not None and any(address in n for n in self.trusted_networks)

    async def handle_EHLO(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        hostname: str,
        responses: list[str],
    ) -> list[str]:
        session.host_name = hostname
        if server._authenticator is None:
            responses = [r for r in responses if not r.startswith("250-AUTH")]
        return responses

    async def handle_RCPT(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        domain = address.rpartition("@")[2].lower().rstrip(".")
        if domain not in self.internal_domains and not self.is_trusted(session):
            log.info("relay denied for a recipient from %s", _peer_ip(session))
            metrics.record_rejected(554)
            return REPLY_RELAY_DENIED.format(address=printable(address))
        if len(envelope.rcpt_tos) >= self.max_recipients:
            # RFC 5321 section 4.5.3.1.10: 452 for too many recipients.
            return REPLY_TOO_MANY_RECIPIENTS
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return "250 2.1.5 OK"

    async def handle_DATA(
        self, server: SMTP, session: Session, envelope: Envelope
    ) -> str:
        """Store the message; the root span of its trace covers this transaction."""
        content = envelope.original_content or b""
        attributes: Attributes = {
            "smimegw.message.size": len(content),
            "smimegw.smtp.recipients": len(envelope.rcpt_tos),
            "smimegw.smtp.tls": session.ssl is not None,
            "network.peer.address": _peer_ip(session),
        }
        with (
            stage_span(
                "smtp.transaction",
                attributes,
                tracer=self.runtime.tracer,
                kind=SpanKind.SERVER,
            ) as span,
            metrics.time_stage("ingress"),
        ):
            reply = await self._data(server, session, envelope, content, span)
            code = int(reply[:3])
            span.set_attribute("smimegw.smtp.reply_code", code)
        if code == 250:
            metrics.record_accepted()
        else:
            metrics.record_rejected(code)
        return reply

    async def _data(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        content: bytes,
        span: Span,
    ) -> str:
        if b"\x00" in content:
            log.info("rejected a message with NUL bytes from %s", _peer_ip(session))
            return REPLY_NUL
        oversized = _header_over_limits(content)
        if oversized is not None:
            log.info(
                "rejected a message whose header exceeds %s from %s",
                oversized.limit,
                _peer_ip(session),
            )
            return REPLY_HEADER_TOO_LARGE.format(
                limit=oversized.limit, maximum=oversized.maximum
            )
        queue_id = new_queue_id()
        span.set_attribute("smimegw.queue_id", queue_id)
        self.in_flight += 1
        self.idle.clear()
        try:
            with message_context(queue_id, None):
                return await self._store(queue_id, server, session, envelope, content)
        finally:
            self.in_flight -= 1
            if self.in_flight == 0:
                self.idle.set()

    async def _store(
        self,
        queue_id: str,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        content: bytes,
    ) -> str:
        tls = session.ssl is not None
        # The Received header goes in front of the content as the body is
        # stored, so a large message is never held twice.
        header = self._received_header(queue_id, session, envelope, tls)
        client = ClientInfo(
            address=str(_peer_ip(session)),
            helo=session.host_name or "",
            tls=tls,
            authenticated=bool(session.authenticated),
        )
        options = [o.upper() for o in envelope.mail_options]
        try:
            async with asyncio.timeout(self.publish_timeout):
                ref = await self.runtime.bodies.put(
                    queue_id,
                    content,
                    prefix=header,
                    head_size=_header_section_size(content, len(header)),
                )
                event = MailReceived.create(
                    queue_id=queue_id,
                    sender=_reverse_path(envelope.mail_from),
                    recipients=tuple(envelope.rcpt_tos),
                    client=client,
                    body=ref,
                    smtputf8=bool(envelope.smtp_utf8),
                    body_8bitmime="BODY=8BITMIME" in options,
                )
                await self.runtime.publish(event, timeout=self.publish_timeout)
        except (TimeoutError, nats.errors.Error, OSError) as err:
            log.warning(
                "could not store message (%s: %s); replied 451",
                type(err).__name__,
                err,
            )
            return REPLY_TEMPFAIL
        log.info(
            "accepted message of %d bytes for %d recipient%s from %s",
            ref.size,
            len(envelope.rcpt_tos),
            "" if len(envelope.rcpt_tos) == 1 else "s",
            client.address,
        )
        return f"250 2.0.0 Ok: queued as {queue_id}"

    def _received_header(
        self, queue_id: str, session: Session, envelope: Envelope, tls: bool
    ) -> bytes:
        # RFC 5321 section 4.4 trace field. "for" only with a single recipient, so
        # the header never lists Bcc recipients to the others.
        protocol = "ESMTP" if session.extended_smtp else "SMTP"
        if tls:
            protocol += "S"
        if session.authenticated:
            protocol += "A"
        if envelope.smtp_utf8:
            protocol = "UTF8" + protocol.replace("E", "", 1)
        recipient = (
            f"\r\n\tfor <{envelope.rcpt_tos[0]}>" if len(envelope.rcpt_tos) == 1 else ""
        )
        helo = session.host_name or "unknown"
        header = (
            f"Received: from {helo} ([{_peer_ip(session)}])\r\n"
            f"\tby {self.hostname} (smimegw) with {protocol} id {queue_id}"
            f"{recipient};\r\n\t{format_datetime(datetime.now(UTC))}\r\n"
        )
        return header.encode("utf-8", "surrogateescape")

    async def handle_exception(self, error: BaseException) -> str:
        # aiosmtpd's default reply carries the exception text; never send that.
        log.error("SMTP session failed: %s", type(error).__name__, exc_info=error)
        return "421 4.3.0 Service temporarily unavailable, closing connection"


def printable(text: str) -> str:
    """`text` for an SMTP reply: ASCII, with other characters as escapes.

    aiosmtpd decodes arguments with surrogateescape, and a reply with a lone
    surrogate cannot be encoded, so echoing an address verbatim can fail.
    """
    raw = text.encode("utf-8", "surrogateescape")
    escaped = raw.decode("ascii", "backslashreplace")
    return "".join(c if c.isprintable() else f"\\x{ord(c):02x}" for c in escaped)


def _reverse_path(mail_from: str | None) -> str:
    """Return the envelope sender, "" for the null sender (aiosmtpd reports "<>")."""
    return "" if mail_from in (None, "", "<>") else mail_from


def _peer_ip(session: Session) -> str:
    peer = session.peer
    return str(peer[0]) if isinstance(peer, tuple) else str(peer or "")


def smtp_kwargs(runtime: Runtime) -> dict[str, Any]:
    """Options for GatewaySMTP from the settings."""
    smtp = runtime.settings.smtp
    return {
        "data_size_limit": smtp.max_message_size,
        "max_line": smtp.max_message_size + 1024,
        "enable_SMTPUTF8": True,
        "decode_data": False,
        "hostname": smtp.hostname,
        "ident": "smimegw",
        "timeout": smtp.command_timeout.total_seconds(),
        "data_timeout": smtp.data_timeout.total_seconds(),
        "max_messages": smtp.max_messages_per_connection,
        "auth_require_tls": True,
    }


# Header sections longer than this are stored in the ordinary chunks.
_MAX_HEADER_SECTION = 256 * 1024


def _header_section_size(content: bytes, prefix: int) -> int | None:
    """Return the size of the header section with the empty line that ends it.

    `prefix` bytes of header fields go in front of `content` as it is stored.
    Policy reads only this part of a message, so the body store keeps it as a
    chunk of its own. Lines may end in CRLF or, as received, in bare LF.
    """
    ends = [
        found + len(blank)
        for blank in (b"\r\n\r\n", b"\n\n")
        if (found := content.find(blank, 0, _MAX_HEADER_SECTION)) >= 0
    ]
    if not ends:
        return None
    return prefix + min(ends)


def _header_over_limits(content: bytes) -> MimeLimitError | None:
    """Return the limit that the header section exceeds, or None.

    The crypto service refuses such a message as hostile; refused here, the
    client gets the reply, instead of a message accepted and then parked. The
    Received field that ingress adds counts as one more field.
    """
    try:
        block = parse_header_block(content)
    except MimeLimitError as err:
        return err
    if len(block.fields) >= MAX_HEADER_FIELDS:
        return MimeLimitError("header fields", MAX_HEADER_FIELDS - 1, "")
    return None

"""SMTP hand-off to the next hop, with a reply per recipient."""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Literal

import aiosmtplib
from aiosmtplib.typing import Default

log = logging.getLogger("smimegw.delivery")

# DATA goes to the socket in pieces of about this size. aiosmtplib 5.1's
# sendmail converts the whole message with re.sub three times (for SIZE, line
# ends, leading periods), and each pass keeps a list of every line: delivery
# of a 30 MB message peaked at about 200 MB above idle.
_DATA_PIECE = 256 * 1024
_LINE_ENDING = re.compile(rb"\r\n|\n|\r(?!\n)")
_LEADING_PERIOD = re.compile(rb"(?m)^\.")


@dataclass(frozen=True)
class Reply:
    code: int
    text: str

    @property
    def accepted(self) -> bool:
        return 200 <= self.code < 300

    @property
    def permanent(self) -> bool:
        return self.code >= 500

    def enhanced_status(self) -> str:
        """Return the RFC 3463 code of the reply text, or one the reply code implies."""
        first = self.text.split(" ", 1)[0]
        parts = first.split(".")
        if len(parts) == 3 and all(p.isdigit() for p in parts):
            return first
        return "5.0.0" if self.permanent else "4.0.0"

    def __str__(self) -> str:
        return f"{self.code} {self.text}".strip()


def data_pieces(message: bytes) -> Iterator[bytes]:
    """Yield the DATA payload of `message` in pieces that end at line ends.

    Lone CR and LF become CRLF, a period that starts a line is doubled (RFC 5321
    section 4.5.2), and the payload ends with CRLF . CRLF: the bytes that
    aiosmtplib's own DATA sends, without building them as one copy.
    """
    size = len(message)
    start = 0
    while start < size:
        newline = message.find(b"\n", min(start + _DATA_PIECE, size) - 1)
        end = size if newline < 0 else newline + 1
        yield _to_wire(message[start:end])
        start = end
    if not message.endswith((b"\n", b"\r")):
        yield b"\r\n"
    yield b".\r\n"


def _to_wire(piece: bytes) -> bytes:
    """Convert one piece that starts at a line start; most need no conversion.

    The counts and the search run in C over the bytes, while re.sub builds a
    list of every line even when nothing changes.
    """
    crlf = piece.count(b"\r\n")
    if piece.count(b"\n") != crlf or piece.count(b"\r") != crlf:
        piece = _LINE_ENDING.sub(b"\r\n", piece)
    if piece.startswith(b".") or b"\n." in piece:
        piece = _LEADING_PERIOD.sub(b"..", piece)
    return piece


class StreamingSMTP(aiosmtplib.SMTP):
    """aiosmtplib's client with DATA written in pieces, under flow control."""

    async def data(
        self,
        message: str | bytes,
        /,
        *,
        timeout: float | Literal[Default.token] | None = Default.token,
    ) -> aiosmtplib.SMTPResponse:
        protocol = self.protocol
        if protocol is None:
            raise aiosmtplib.SMTPServerDisconnected("Connection lost")
        if isinstance(message, str):
            message = message.encode("ascii")
        wait = self.timeout if timeout is Default.token else timeout
        try:
            start = await protocol.execute_command(b"DATA", timeout=wait)
            if start.code != aiosmtplib.SMTPStatus.start_input:
                raise aiosmtplib.SMTPDataError(start.code, start.message)
            for piece in data_pieces(message):
                # aiosmtplib 5.1 has no public drain; its protocol carries the
                # stdlib's flow control, which waits until the transport's
                # buffer is below its low-water mark.
                async with asyncio.timeout(wait):
                    await protocol._drain_helper()
                protocol.write(piece)
            # No await between the last write and read_response: the protocol
            # drops a reply that arrives before read_response waits for one.
            response = await protocol.read_response(timeout=wait)
        except (aiosmtplib.SMTPServerDisconnected, aiosmtplib.SMTPTimeoutError):
            self.close()
            raise
        except TimeoutError as err:
            self.close()
            raise aiosmtplib.SMTPTimeoutError("Timed out writing DATA") from err
        if response.code != aiosmtplib.SMTPStatus.completed:
            raise aiosmtplib.SMTPDataError(response.code, response.message)
        return response


def payload_size(message: bytes) -> int:
    """Count the RFC 1870 SIZE of `message`, its octets once line ends are CRLF.

    The count needs no converted copy, unlike aiosmtplib's sendmail.
    """
    crlf = message.count(b"\r\n")
    lone_lf = message.count(b"\n") - crlf
    lone_cr = message.count(b"\r") - crlf
    ending = 0 if message.endswith((b"\n", b"\r")) else 2
    return len(message) + lone_lf + lone_cr + ending


async def _transaction(
    client: StreamingSMTP,
    sender: str,
    recipients: Sequence[str],
    message: bytes,
    mail_options: Sequence[str],
) -> tuple[dict[str, aiosmtplib.SMTPResponse], str]:
    """Send MAIL, RCPT and DATA as aiosmtplib's sendmail does, with SIZE counted.

    Raises SMTPRecipientsRefused when every recipient is refused, and
    SMTPResponseException when MAIL or DATA is.
    """
    if client.is_ehlo_or_helo_needed:
        try:
            await client.ehlo()
        except aiosmtplib.SMTPHeloError:
            await client.helo()
    options = list(mail_options)
    if client.supports_extension("size"):
        options.insert(0, f"SIZE={payload_size(message)}")
    utf8 = any(option.lower() == "smtputf8" for option in options)
    encoding = "utf-8" if utf8 else "ascii"
    await client.mail(sender, options=options, encoding=encoding)
    refused: list[aiosmtplib.SMTPRecipientRefused] = []
    for recipient in recipients:
        try:
            await client.rcpt(recipient, encoding=encoding)
        except aiosmtplib.SMTPRecipientRefused as err:
            refused.append(err)
    if len(refused) == len(recipients):
        raise aiosmtplib.SMTPRecipientsRefused(refused)
    response = await client.data(message)
    errors = {e.recipient: aiosmtplib.SMTPResponse(e.code, e.message) for e in refused}
    return errors, response.message


async def send(
    *,
    host: str,
    port: int,
    helo: str,
    sender: str,
    recipients: Sequence[str],
    message: bytes,
    mail_options: Sequence[str],
    timeout: float,
) -> dict[str, Reply]:
    """Send one transaction; return the reply that decides each recipient.

    Connection failures and timeouts are reported as a 4xx reply for every
    recipient, so the caller defers them. STARTTLS is used when the next hop
    offers it, without certificate checks, like an MTA's opportunistic TLS
    (RFC 7435): a failed check would only make the hop fall back to plain text.
    """
    client = StreamingSMTP(
        hostname=host,
        port=port,
        local_hostname=helo,
        timeout=timeout,
        start_tls=None,
        validate_certs=False,
    )
    try:
        async with client:
            refused, data_reply = await _transaction(
                client, sender, recipients, message, mail_options
            )
    except aiosmtplib.SMTPRecipientsRefused as err:
        return {r.recipient: Reply(r.code, r.message) for r in err.recipients}
    except aiosmtplib.SMTPResponseException as err:
        # MAIL FROM or DATA rejected: the same reply for every recipient.
        return dict.fromkeys(recipients, Reply(err.code, err.message))
    except (aiosmtplib.SMTPException, OSError, TimeoutError) as err:
        reason = f"connection to {host}:{port} failed: {type(err).__name__}: {err}"
        return dict.fromkeys(recipients, Reply(451, f"4.4.1 {reason}"))
    replies = {r: Reply(250, data_reply) for r in recipients}
    for recipient, response in refused.items():
        replies[recipient] = Reply(response.code, response.message)
    return replies

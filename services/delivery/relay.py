"""SMTP hand-off to the next hop, with a reply per recipient."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import aiosmtplib

log = logging.getLogger("smimegw.delivery")


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
        """The RFC 3463 code from the reply text, or one implied by the reply code."""
        first = self.text.split(" ", 1)[0]
        parts = first.split(".")
        if len(parts) == 3 and all(p.isdigit() for p in parts):
            return first
        return "5.0.0" if self.permanent else "4.0.0"

    def __str__(self) -> str:
        return f"{self.code} {self.text}".strip()


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
    client = aiosmtplib.SMTP(
        hostname=host,
        port=port,
        local_hostname=helo,
        timeout=timeout,
        start_tls=None,
        validate_certs=False,
    )
    try:
        async with client:
            refused, data_reply = await client.sendmail(
                sender, list(recipients), message, mail_options=list(mail_options)
            )
    except aiosmtplib.SMTPRecipientsRefused as err:
        return {r.recipient: Reply(r.code, r.message) for r in err.recipients}
    except aiosmtplib.SMTPResponseException as err:
        # MAIL FROM or DATA refused: the same answer for every recipient.
        return dict.fromkeys(recipients, Reply(err.code, err.message))
    except (aiosmtplib.SMTPException, OSError, TimeoutError) as err:
        reason = f"connection to {host}:{port} failed: {type(err).__name__}: {err}"
        return dict.fromkeys(recipients, Reply(451, f"4.4.1 {reason}"))
    replies = {r: Reply(250, data_reply) for r in recipients}
    for recipient, response in refused.items():
        replies[recipient] = Reply(response.code, response.message)
    return replies
